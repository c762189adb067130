"""Incremental reruns: after each kind of change, Snakemake plans exactly the jobs it touches.

The real workflow runs once, end to end, on a tiny config in a temporary copy of the
workflow (so editing package code there cannot disturb this checkout); each test then makes
one change, asks Snakemake for a dry run, compares the planned rules, and undoes the change.
See docs/incremental.md.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sys
from pathlib import Path

import matplotlib
import pytest
import yaml
from PIL import Image, ImageDraw, ImageFont
from schema_defaults import synth_line_knobs
from snakemake_forks import run

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
COPY = ["Snakefile", "rules", "workflow_scripts", "config", "report", "envs", "profiles", "effocr"]

DATA = {"check_coco", "split_coco", "crop_glyphs", "build_recognizer_dataset"}
RECOGNIZER = {"train_recognizer", "mine_hard_negatives", "train_recognizer_hard_negatives"}
RECOGNIZER |= {"build_reference_index"}
LOCALIZER = {"train_localizer", "evaluate_localizer"}
FINAL = {"export_bundle", "evaluate", "report"}
ALL = DATA | RECOGNIZER | LOCALIZER | FINAL | {"render_glyphs", "train_lm"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CONFIG = {
    "seed": 1,
    "language": "en",
    "results_dir": "results",
    # Annotated data of "the user": not the synth_lines output, so synth_lines is not needed.
    "init_from": None,  # from scratch: no synthetic base for few lines
    "dataset": {"coco_json": "userdata/lines.json", "image_dir": "userdata/images"},
    "synth": {"coco_json": "synthdata/lines.json", "n_lines": 4},
    "split": {"ratios": [0.6, 0.2, 0.2]},
    "fonts": {
        "include": ["DejaVuSans", "DejaVuSerif"],
        "reference": ["DejaVuSerif"],
        "max_fonts": 2,
    },
    "render": {"size": 32},
    "recognizer": {
        "input_size": 32,
        "batch_size": 16,
        "m": 2,
        "num_passes": 1,
        "epochs": 1,
        "hard_negatives_epochs": 1,
        "hard_negatives_k": 2,
        "device": "cpu",
    },
    "localizer": {"epochs": 1, "batch_size": 4, "device": "cpu"},
    # The line detector as small as test_pages' tiny_detector: its rules still run (and must
    # not rerun), but its default training would be most of the run.
    "line_detector": {
        "n_train_pages": 2,
        "n_val_pages": 1,
        "n_test_pages": 1,
        "dpi": [60, 72],
        "input_height": 192,
        "crop_size": 96,
        "crops_per_page": 2,
        "batch_size": 4,
        "epochs": 1,
        "device": "cpu",
        "arch": {"widths": [8, 8, 16, 16, 16], "fpn_channels": 8},
    },
    "export": {"parity_lines": 2},
    "evaluate": {
        "sets": [{"name": "extra", "path": "extra_set", "type": "gt_dir"}],
        "worst_lines": 3,
    },
}


def copy_workflow(wf: Path) -> None:
    """The workflow's files (`COPY`) under `wf`, without caches or results."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".snakemake")
    for name in COPY:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, wf / name, ignore=ignore)
        elif src.exists():
            wf.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, wf / name)


def _env() -> dict[str, str]:
    # Two cores are shared with everything else: keep every library to one thread.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_THREAD_LIMIT": "1"}


def snakemake(wf: Path, config: Path, *args: str, timeout: int = 600) -> str:
    """Run Snakemake in `wf` with `config`; return its output (fails the test on error)."""
    # One thread per job: OpenMP barriers crawl when a busy 2-core machine is oversubscribed.
    cmd = SNAKEMAKE + ["--cores", "2", "--max-threads", "1", "--configfile", str(config), *args]
    proc = run(cmd, cwd=wf, env=_env(), timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-6000:]}")
    return out


def planned(wf: Path, config: Path, *targets: str) -> tuple[dict[str, int], str]:
    """Rules (with job counts) a dry run would execute, and the dry run's output."""
    out = snakemake(wf, config, "--dry-run", *targets, timeout=300)
    if "Nothing to be done" in out:
        return {}, out
    stats = out.split("Job stats:", 1)
    assert len(stats) == 2, f"no job stats in the dry run:\n{out[-3000:]}"
    jobs: dict[str, int] = {}
    for line in stats[1].splitlines()[3:]:
        m = re.fullmatch(r"\s*(\S+)\s+(\d+)\s*", line)
        if not m or m.group(1) == "total":
            break
        if m.group(1) != "all":  # the target rule, not work
            jobs[m.group(1)] = int(m.group(2))
    return jobs, out


def write_config(wf: Path, name: str, **changes: dict) -> Path:
    """The test config with some sections updated, written to `wf/config/NAME.yaml`."""
    cfg = json.loads(json.dumps(CONFIG))
    for section, values in changes.items():
        cfg[section].update(values)
    path = wf / "config" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


class Edit:
    """Change a file for one dry run, then restore its bytes and its times exactly."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Path:
        self.data = self.path.read_bytes()
        self.stat = self.path.stat()
        return self.path

    def __exit__(self, *exc) -> None:
        self.path.write_bytes(self.data)
        os.utime(self.path, ns=(self.stat.st_atime_ns, self.stat.st_mtime_ns))


def _render_gt_line(text: str, path: Path) -> None:
    font = ImageFont.truetype(str(FONT), 28)
    x0, y0, x1, y1 = font.getbbox(text)
    img = Image.new("L", (x1 + 16, y1 - y0 + 16), 255)
    ImageDraw.Draw(img).text((8, 8 - y0), text, font=font, fill=0)
    img.save(path)


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    """A copy of the workflow, its tiny data, and one complete run: (wf dir, base config, held-back line)."""
    from effocr.synth.lines import synth_lines

    wf = tmp_path_factory.mktemp("incremental") / "wf"
    copy_workflow(wf)

    # 13 annotated lines; the last one is held back for the "add one line" case.
    coco_path = wf / "userdata" / "lines.json"
    synth_lines(
        coco_path,
        13,
        "en",
        font_paths=[FONT],
        seed=5,
        **synth_line_knobs(font_sizes=(24, 28), max_chars=16, degrade=False),
    )
    coco = json.loads(coco_path.read_text(encoding="utf-8"))
    held_image = coco["images"][-1]
    held = {
        "image": held_image,
        "annotations": [a for a in coco["annotations"] if a["image_id"] == held_image["id"]],
    }
    coco["images"] = coco["images"][:-1]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != held_image["id"]]
    coco_path.write_text(json.dumps(coco, ensure_ascii=False), encoding="utf-8")

    extra = wf / "extra_set"
    extra.mkdir()
    for i, text in enumerate(["Incremental", "reruns 42"]):
        _render_gt_line(text, extra / f"l{i}.png")
        (extra / f"l{i}.gt.txt").write_text(text + "\n", encoding="utf-8")

    base = write_config(wf, "base")
    snakemake(wf, base, timeout=900)
    return wf, base, held


def test_full_run_outputs(workflow):
    wf, base, _ = workflow
    report = wf / "results" / "report"
    assert (report / "index.html").stat().st_size > 10_000
    summary = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    assert set(summary["sets"]) == {"test", "extra"}
    # One epoch of training reads next to nothing (CER about 1 on these 2-line sets), so no
    # accuracy bound belongs here: test_accuracy.py and test_japanese.py bound the CER of
    # bundles trained for it. Here the summary must be the figures of the lines evaluated.
    for name, m in summary["sets"].items():
        effocr = m["effocr"]
        with open(wf / "results" / "eval" / name / "lines.csv", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert effocr["lines"] == len(rows) == 2
        assert effocr["char_errors"] == sum(int(r["distance"]) for r in rows)
        assert effocr["cer"] == pytest.approx(effocr["char_errors"] / effocr["ref_chars"])
        assert effocr["lines_per_second"] > 0
        assert "available" in m["tesseract"]
    # Nothing changed: nothing to do (otherwise every case below would be meaningless).
    jobs, out = planned(wf, base)
    assert jobs == {}, out[-3000:]


def test_adding_an_annotated_line(workflow):
    wf, base, held = workflow
    coco_path = wf / "userdata" / "lines.json"
    with Edit(coco_path):
        coco = json.loads(coco_path.read_text(encoding="utf-8"))
        coco["images"].append(held["image"])
        coco["annotations"].extend(held["annotations"])
        coco_path.write_text(json.dumps(coco, ensure_ascii=False), encoding="utf-8")
        jobs, out = planned(wf, base)
    rules = set(jobs)
    assert ALL - {"render_glyphs"} <= rules, out[-4000:]
    assert "render_glyphs" not in rules and "synth_lines" not in rules, out[-4000:]
    assert jobs["evaluate"] == 2


def test_fixing_an_annotated_line(workflow):
    """Correcting one box of an existing line reruns the same jobs as adding a line."""
    wf, base, _ = workflow
    coco_path = wf / "userdata" / "lines.json"
    with Edit(coco_path):
        coco = json.loads(coco_path.read_text(encoding="utf-8"))
        box = coco["annotations"][0]["bbox"]
        box[2] = box[2] + 1  # one pixel wider, as a user fixing an annotation would
        coco_path.write_text(json.dumps(coco, ensure_ascii=False), encoding="utf-8")
        jobs, out = planned(wf, base)
    rules = set(jobs)
    assert ALL - {"render_glyphs"} <= rules, out[-4000:]
    assert "render_glyphs" not in rules and "synth_lines" not in rules, out[-4000:]


def test_snakemake_report(workflow):
    """`snakemake --report` builds Snakemake's self-contained report from the run."""
    wf, base, _ = workflow
    out_html = wf / "snakemake-report.html"
    snakemake(wf, base, "--report", str(out_html), timeout=300)
    html = out_html.read_text(encoding="utf-8")
    assert len(html) > 100_000  # self-contained: scripts, styles and the marked outputs inline
    # Captions of outputs marked with report() in rules/evaluate.smk are in it.
    for caption in ("CER, WER, exact-match accuracy", "Training curves"):
        assert caption in html, caption


def test_changing_an_evaluation_setting(workflow):
    wf, _, _ = workflow
    jobs, out = planned(wf, write_config(wf, "eval_case", evaluate={"ignore_case": True}))
    assert jobs == {"evaluate": 2, "report": 1}, out[-4000:]
    # A report-only setting reruns only the report.
    jobs, out = planned(wf, write_config(wf, "report_case", evaluate={"worst_lines": 5}))
    assert jobs == {"report": 1}, out[-4000:]


def test_changing_a_recognizer_hyperparameter(workflow):
    wf, _, _ = workflow
    jobs, out = planned(wf, write_config(wf, "rec_case", recognizer={"lr": 0.001}))
    rules = set(jobs)
    assert RECOGNIZER | FINAL <= rules, out[-4000:]
    assert not rules & (DATA | LOCALIZER | {"render_glyphs"}), out[-4000:]


@pytest.mark.parametrize(
    ("recognizer", "reads_crops"),
    [({"reference_crops": 3}, True), ({"reference_prototypes": 4}, False)],
)
def test_changing_the_reference_vectors(workflow, recognizer, reads_crops):
    """Crops in the reference vectors, or prototypes beside them, rebuild the index (which
    then reads the recognizer dataset, for crops) and what reads it, not the models."""
    wf, _, _ = workflow
    jobs, out = planned(wf, write_config(wf, "index_case", recognizer=recognizer))
    assert jobs == {"build_reference_index": 1, "export_bundle": 1, "evaluate": 2, "report": 1}, (
        out[-4000:]
    )
    reads = re.search(
        r"rule build_reference_index:\n\s+input: [^\n]*recognizer_dataset/manifest", out
    )
    assert bool(reads) == reads_crops, out[-4000:]


def test_changing_package_code(workflow):
    wf, base, _ = workflow
    # The scoring code: evaluate, export_bundle (it scores validation lines to fit the
    # confidence calibration) and the report; no training, nothing upstream.
    with Edit(wf / "effocr" / "metrics.py") as f:
        f.write_text(f.read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
        jobs, out = planned(wf, base)
    assert jobs == {"export_bundle": 1, "evaluate": 2, "report": 1}, out[-4000:]
    # The language model's code: the LM, the bundle that ships it and what reads the bundle.
    with Edit(wf / "effocr" / "lm.py") as f:
        f.write_text(f.read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
        jobs, out = planned(wf, base)
    assert jobs == {"train_lm": 1, "export_bundle": 1, "evaluate": 2, "report": 1}, out[-4000:]
    # Code of the data validation: validation and everything downstream, not the renders.
    with Edit(wf / "effocr" / "data" / "validate.py") as f:
        f.write_text(f.read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
        jobs, out = planned(wf, base)
    rules = set(jobs)
    assert ALL - {"render_glyphs"} <= rules, out[-4000:]
    assert "render_glyphs" not in rules, out[-4000:]
    # Restored code: nothing to do again.
    jobs, out = planned(wf, base)
    assert jobs == {}, out[-3000:]


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    """A copy of the workflow whose glyph renders (only) were made, from a font folder and a
    charset file of its own: (wf dir, config, target). Quick: no data stage, no training."""
    wf = tmp_path_factory.mktemp("renders") / "wf"
    copy_workflow(wf)
    (wf / "fonts").mkdir()
    for stem in ("DejaVuSans", "DejaVuSerif"):
        shutil.copy2(FONT.with_name(f"{stem}.ttf"), wf / "fonts")
    (wf / "userdata").mkdir()
    (wf / "userdata" / "charset.txt").write_text("U+0061\nU+0062\nU+0063\n", encoding="utf-8")
    cfg = json.loads(json.dumps(CONFIG))
    cfg["fonts"] = {"dirs": ["fonts"], "include": [], "reference": ["DejaVuSerif"], "max_fonts": 5}
    cfg["render"]["charset"] = "userdata/charset.txt"
    config = wf / "config" / "renders.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    target = "results/renders/manifest.csv"
    # A flag before the target: `--configfile` would take it as a second config file.
    snakemake(wf, config, "--keep-going", target, timeout=300)
    return wf, config, target


def test_new_fonts_or_charset_rerun_the_renders(renders):
    """The positive case: a font added to (or replaced in) the font folder, or a character
    added to the charset file, reruns render_glyphs; restoring them leaves nothing to do."""
    wf, config, target = renders
    assert planned(wf, config, target)[0] == {}, "the first run left work to do"
    new_font = wf / "fonts" / "DejaVuSansMono.ttf"
    shutil.copy2(FONT.with_name(new_font.name), new_font)
    jobs, out = planned(wf, config, target)
    new_font.unlink()
    assert jobs == {"render_glyphs": 1}, out[-3000:]
    # The same font name, another file (an updated font package).
    with Edit(wf / "fonts" / "DejaVuSans.ttf") as font:
        shutil.copy2(FONT.with_name("DejaVuSans-Bold.ttf"), font)
        jobs, out = planned(wf, config, target)
    assert jobs == {"render_glyphs": 1}, out[-3000:]
    with Edit(wf / "userdata" / "charset.txt") as charset:
        charset.write_text(charset.read_text(encoding="utf-8") + "U+0064\n", encoding="utf-8")
        jobs, out = planned(wf, config, target)
    assert jobs == {"render_glyphs": 1}, out[-3000:]
    assert planned(wf, config, target)[0] == {}
