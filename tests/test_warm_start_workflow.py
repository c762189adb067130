"""`init_from` through the real workflow: a tiny Snakemake run fine-tunes conftest's bundle.

The training rules take the base's weight files as inputs (a new base reruns them, only the
rules of the model that changed), the logs say what was warm-started, and the fine-tuned
bundle's index holds the run's whole charset, characters the base never knew included.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml
from schema_defaults import synth_line_knobs
from snakemake_forks import run
from test_incremental import CONFIG, FONT, SNAKEMAKE, _env, copy_workflow, planned, snakemake

from effocr.bundle import Manifest
from effocr.synth.charsets import write_charset
from effocr.utils import label_to_codepoints, load_checkpoint, save_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
TARGET = "results/bundle"
# A small charset keeps the run short; `ß` is not in the base's index (its lines are English).
CHARS = "acdehilmnorstuß"


def labels(path) -> set[str]:
    return {ln.split("\t")[0] for ln in path.read_text(encoding="utf-8").splitlines() if ln}


def charset(path) -> set[str]:
    rows = path.read_text(encoding="utf-8").splitlines()
    return {ln.split("\t")[0] for ln in rows if ln and not ln.startswith("#")}


def write_config(wf, name: str, init_from) -> object:
    cfg = json.loads(json.dumps(CONFIG))
    cfg["init_from"] = init_from
    cfg["render"]["charset"] = "userdata/charset.txt"
    # The base's recognizer (conftest's tiny_bundle): the configured one must be the same.
    cfg["recognizer"].update(encoder="mobilenetv3_small_050", encoder_args={})
    path = wf / "config" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


class NewBase:
    """Replace one weight file of the base bundle by other weights (and re-record its
    checksum, as a new export would), then put back the bytes and times of both files."""

    def __init__(self, bundle, name: str):
        self.bundle, self.name = bundle, name

    def __enter__(self):
        self.saved = {}
        for n in (self.name, "model.yaml"):
            p = self.bundle / n
            self.saved[n] = (p.read_bytes(), p.stat())
        ckpt = load_checkpoint(self.bundle / self.name, "test")
        key = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
        ckpt["model"][key] = ckpt["model"][key] + 0.01
        save_checkpoint(ckpt, self.bundle / self.name)
        Manifest.read(self.bundle, verify=False).write(self.bundle)

    def __exit__(self, *exc):
        for n, (data, st) in self.saved.items():
            (self.bundle / n).write_bytes(data)
            os.utime(self.bundle / n, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture(scope="module")
def workflow(tmp_path_factory, tiny_bundle):
    from effocr.synth.lines import synth_lines

    wf = tmp_path_factory.mktemp("warm_start") / "wf"
    copy_workflow(wf)
    synth_lines(
        wf / "userdata" / "lines.json",
        10,
        "en",
        font_paths=[FONT],
        seed=8,
        **synth_line_knobs(font_sizes=(24, 28), max_chars=16, degrade=False),
        charset=list(CHARS),
    )
    write_charset(wf / "userdata" / "charset.txt", CHARS)
    base = wf / "base_bundle"  # outside results_dir, as the workflow requires
    shutil.copytree(tiny_bundle, base)
    config = write_config(wf, "warm", "base_bundle")
    snakemake(wf, config, "--printshellcmds", TARGET, timeout=900)
    return wf, base, config


def test_training_rules_start_from_the_bundle(workflow):
    wf, base, _ = workflow
    logs = wf / "results" / "logs"
    for rule, kind in [
        ("train_recognizer", "recognizer"),
        ("train_recognizer_hard_negatives", "recognizer"),
        ("train_localizer", "localizer"),
    ]:
        text = (logs / f"{rule}.log").read_text(encoding="utf-8")
        assert f"{kind} warm-started from base_bundle/{kind}.pt" in text, text[-2000:]
    # The fine-tuned bundle carries its own weights: it can be the next fine-tune's base.
    assert Manifest.read(wf / TARGET).weights == {
        "recognizer": "recognizer.pt",
        "localizer": "localizer.pt",
    }


def test_new_characters_reach_the_index(workflow):
    """The index is rebuilt from renders of the run's charset, whatever the base knew."""
    wf, base, _ = workflow
    run_chars = charset(wf / "results" / "data" / "charset.txt")
    new = run_chars - labels(base / "ref_labels.txt")
    assert label_to_codepoints("ß") in new, sorted(new)
    assert labels(wf / TARGET / "ref_labels.txt") == run_chars


def test_a_new_base_reruns_the_training_of_its_model(workflow):
    wf, base, config = workflow
    jobs, out = planned(wf, config, TARGET)
    assert jobs == {}, out[-3000:]
    with NewBase(base, "recognizer.pt"):
        jobs, out = planned(wf, config, TARGET)
    assert {"train_recognizer", "train_recognizer_hard_negatives", "export_bundle"} <= set(jobs), (
        out[-3000:]
    )
    assert "train_localizer" not in jobs and "crop_glyphs" not in jobs, out[-3000:]
    with NewBase(base, "localizer.pt"):
        jobs, out = planned(wf, config, TARGET)
    assert {"train_localizer", "export_bundle"} <= set(jobs), out[-3000:]
    assert "train_recognizer" not in jobs, out[-3000:]
    # Back to the base the run used: nothing to do.
    jobs, out = planned(wf, config, TARGET)
    assert jobs == {}, out[-3000:]


def test_a_bundle_without_weights_stops_the_workflow(workflow):
    wf, base, _ = workflow
    old = wf / "old_bundle"
    shutil.copytree(base, old)
    data = yaml.safe_load((old / "model.yaml").read_text(encoding="utf-8"))
    for name in data.pop("weights").values():
        (old / name).unlink()
        del data["files"][name]
    (old / "model.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    config = write_config(wf, "old", "old_bundle")
    cmd = SNAKEMAKE + ["--cores", "1", "--configfile", str(config), "--dry-run", TARGET]
    proc = run(cmd, cwd=wf, env=_env(), timeout=300)
    assert proc.returncode != 0
    assert "old_bundle: this bundle carries no PyTorch weights" in proc.stdout + proc.stderr
