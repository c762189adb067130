"""Bad inputs: a clear error per file, the rest of the batch goes on, no mixed or partial outputs.

Inference runs on the session's `tiny_bundle` (real ONNX Runtime and FAISS); the Tesseract
baseline runs the installed Tesseract 5.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import missing_dependency
from PIL import Image, ImageDraw
from snakemake_forks import run

from effocr.cli import main
from effocr.config import load_config, validate_config
from effocr.evaluate import load_eval_set, load_page_xml, tesseract_baseline, write_results
from effocr.infer import decode_image, expand_inputs, glob_files
from effocr.recognizer.transforms import as_rgb_array
from effocr.utils import EffOCRError, open_rgb

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lines_dir(tiny_coco_factory, tmp_path_factory) -> Path:
    """Four good line images (read-only; copy them into a test's folder)."""
    _, image_dir = tiny_coco_factory(8, "en", 5, degrade=False, max_chars=14)
    out = tmp_path_factory.mktemp("good_lines")
    for p in sorted(image_dir.glob("*.png"))[:4]:
        shutil.copy(p, out / f"line_{p.name}")
    return out


def _records(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "predictions.jsonl").read_text().splitlines()]


def _infer(bundle: Path, out: Path, *inputs, extra=()) -> int:
    return main(["infer", "--model", str(bundle), "--output", str(out), *extra, *map(str, inputs)])


# -- decoding ------------------------------------------------------------------------


def test_text_only_in_alpha_is_composited_on_white(tmp_path):
    # Black RGB everywhere; the text is where alpha is opaque (how some tools export ink).
    alpha = Image.new("L", (60, 20), 0)
    ImageDraw.Draw(alpha).rectangle([10, 5, 30, 15], fill=255)
    rgba = Image.merge("RGBA", (*[Image.new("L", (60, 20), 0)] * 3, alpha))
    rgba.save(tmp_path / "alpha.png")
    Image.merge("LA", (Image.new("L", (60, 20), 0), alpha)).save(tmp_path / "la.png")
    for name in ("alpha.png", "la.png"):
        for arr in (
            decode_image(tmp_path / name),
            decode_image(tmp_path / name, keep_grey=True),
            np.asarray(open_rgb(tmp_path / name)),  # training, crops, evaluation, the report
            as_rgb_array(Image.open(tmp_path / name)),  # glyph renders and crops
        ):
            assert arr[0, 0].min() == 255, name  # background: white, not black
            assert arr[10, 20].max() == 0, name  # the text: black
    as_array = decode_image(np.asarray(rgba))
    assert as_array[0, 0].min() == 255 and as_array[10, 20].max() == 0


def test_decompression_bomb_is_one_failed_line_and_outputs_are_one_run(
    tiny_bundle, lines_dir, tmp_path, capsys
):
    folder = tmp_path / "lines"
    shutil.copytree(lines_dir, folder)
    # Beyond twice PIL's limit (PIL raises) and between once and twice (PIL only warns).
    Image.new("1", (20000, 10000)).save(folder / "bomb_error.png")
    Image.new("1", (12000, 8000)).save(folder / "bomb_warning.png")
    out = tmp_path / "out"
    (out / "text").mkdir(parents=True)
    (out / "predictions.jsonl").write_text('{"image": "old.png", "text": "old"}\n')
    (out / "text" / "old.txt").write_text("old\n")
    (out / "predictions_coco.json").write_text("{}")
    rc = _infer(tiny_bundle, out, folder)
    err = capsys.readouterr().err
    assert rc == 1 and "2 of 6 image(s) failed" in err and "Traceback" not in err
    records = _records(out)
    assert len(records) == 6
    failed = {Path(r["image"]).name: r["error"] for r in records if r.get("error")}
    assert set(failed) == {"bomb_error.png", "bomb_warning.png"}
    assert all("too large" in e for e in failed.values())
    assert "bomb_error.png" in err
    # This run's outputs only: the previous run's text file and COCO file are gone.
    texts = sorted(p.name for p in (out / "text").iterdir())
    assert texts == sorted(f"{p.stem}.txt" for p in lines_dir.iterdir())
    assert not (out / "predictions_coco.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["predictions.jsonl", "text"]


def test_a_run_that_fails_leaves_the_previous_outputs_untouched(
    tiny_bundle, lines_dir, tmp_path, monkeypatch, capsys
):
    from effocr.infer import Engine

    out = tmp_path / "out"
    assert _infer(tiny_bundle, out, lines_dir) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def dying(real):
        def dies_after_two(self, images, **kw):
            for i, res in enumerate(real(self, images, **kw)):
                if i == 2:
                    raise EffOCRError("an inference worker process died")
                yield res

        return dies_after_two

    # Both ways `effocr infer` reads: --layout line, and auto/page (the default).
    monkeypatch.setattr(Engine, "iter_infer", dying(Engine.iter_infer))
    monkeypatch.setattr(Engine, "iter_pages", dying(Engine.iter_pages))
    assert _infer(tiny_bundle, out, lines_dir, extra=["--coco"]) == 1
    assert "worker process died" in capsys.readouterr().err
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # no new text files beside the old JSONL, no staging folder left


def test_output_that_is_a_file_or_not_writable_is_an_error_before_any_work(
    tiny_bundle, lines_dir, tmp_path, monkeypatch, capsys
):
    import effocr.infer as infer

    def no_engine(*a, **kw):
        raise AssertionError("models loaded before the output was checked")

    monkeypatch.setattr(infer, "Engine", no_engine)
    a_file = tmp_path / "out.txt"
    a_file.write_text("mine\n")
    assert _infer(tiny_bundle, a_file, lines_dir) == 1
    err = capsys.readouterr().err
    assert "out.txt: output path exists and is not a directory" in err
    assert "Traceback" not in err and a_file.read_text() == "mine\n"
    assert _infer(tiny_bundle, a_file / "sub", lines_dir) == 1
    assert "cannot create output directory" in capsys.readouterr().err
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        tempfile.mkdtemp(dir=read_only)
    except OSError:
        pass
    else:  # root ignores the mode bits; /sys is read-only for root too
        read_only = Path("/sys")
        try:
            tempfile.mkdtemp(dir=read_only)
            missing_dependency("no read-only directory to test with")
        except OSError:
            pass
    assert _infer(tiny_bundle, read_only, lines_dir) == 1
    assert "output directory is not writable" in capsys.readouterr().err


def test_inputs_inside_the_replaced_outputs_are_refused(tiny_bundle, lines_dir, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(lines_dir, out / "text")
    assert _infer(tiny_bundle, out, out / "text") == 1
    assert "which this run replaces" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "text").iterdir()) == sorted(
        p.name for p in lines_dir.iterdir()
    )


# -- inputs ----------------------------------------------------------------------------


def _glob_in_subprocess(pattern: str) -> list[str]:
    code = (
        "import json, sys; from effocr.infer import expand_inputs; "
        "print(json.dumps(expand_inputs([sys.argv[1]])))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, pattern], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_recursive_glob_does_not_follow_symlink_loops(tmp_path):
    root = tmp_path / "scans"
    (root / "a" / "b").mkdir(parents=True)
    for rel in ("one.png", "a/two.png", "a/b/three.png"):
        Image.new("L", (20, 10), 255).save(root / rel)
    # Two links back up: glob.glob(recursive=True) follows both at every level (2^40 paths).
    (root / "a" / "b" / "up").symlink_to(root, target_is_directory=True)
    (root / "a" / "loop").symlink_to(root / "a", target_is_directory=True)
    found = _glob_in_subprocess(f"{root}/**/*.png")
    assert found == sorted(str(root / rel) for rel in ("a/b/three.png", "a/two.png", "one.png"))
    assert sorted(glob_files(f"{root}/a/**/*.png")) == [
        str(root / "a" / "b" / "three.png"),
        str(root / "a" / "two.png"),
    ]


def test_non_utf8_file_names_are_read_and_recorded(tiny_bundle, lines_dir, tmp_path, capsys):
    folder = tmp_path / "lines"
    shutil.copytree(lines_dir, folder)
    raw = os.fsencode(folder) + b"/caf\xe9_latin1.png"  # Latin-1 bytes, not UTF-8
    shutil.copy(next(lines_dir.iterdir()), raw)
    listing = tmp_path / "list.txt"
    listing.write_bytes(raw + b"\n")
    out = tmp_path / "out"
    assert _infer(tiny_bundle, out, folder) == 0
    records = _records(out)
    assert len(records) == 5 and not any(r.get("error") for r in records)
    name = os.fsdecode(raw)
    assert name in [r["image"] for r in records]
    assert os.fsencode(next(r["image"] for r in records if r["image"] == name)) == raw
    assert (os.fsencode(out / "text") + b"/caf\xe9_latin1.txt") in [
        os.fsencode(p) for p in (out / "text").iterdir()
    ]
    capsys.readouterr()
    # The same name through @list.txt, and to stdout (JSON Lines without --output).
    assert expand_inputs([f"@{listing}"]) == [name]
    assert main(["infer", "--model", str(tiny_bundle), f"@{listing}"]) == 0
    assert json.loads(capsys.readouterr().out)["image"] == name


# -- evaluation sets -------------------------------------------------------------------


def _line_image(path: Path, text: str = "Hello world") -> None:
    img = Image.new("L", (220, 40), 255)
    ImageDraw.Draw(img).text((8, 10), text, fill=0)
    img.save(path)


def test_empty_transcription_is_skipped_and_listed(tmp_path):
    gt = tmp_path / "gt"
    gt.mkdir()
    for name, text in (("a", "Hello world\n"), ("b", "\n"), ("c", "Again\n")):
        _line_image(gt / f"{name}.png")
        (gt / f"{name}.gt.txt").write_text(text, encoding="utf-8")
    eval_set = load_eval_set({"name": "gt", "path": str(gt)}, tmp_path / "work")
    assert [line.id for line in eval_set.lines] == ["a", "c"]
    (skipped,) = eval_set.skipped
    assert skipped["id"] == "b" and skipped["image"] == str(gt / "b.png")
    assert skipped["problem"].startswith("empty transcription")
    m = write_results(eval_set, ["Hello world", "Again"], tmp_path / "out")
    assert m["lines"] == 2 and m["effocr"]["cer"] == 0.0
    assert [s["id"] for s in m["skipped_lines"]] == ["b"]
    (gt / "a.gt.txt").write_text("", encoding="utf-8")
    (gt / "c.gt.txt").write_text(" \n", encoding="utf-8")
    with pytest.raises(EffOCRError, match="no lines .3 skipped: empty transcription"):
        load_eval_set({"name": "gt", "path": str(gt)}, tmp_path / "work")


PAGE = """<?xml version="1.0" encoding="UTF-8"?>
<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15">
  <Page imageFilename="page.png" imageWidth="300" imageHeight="100">
    <TextRegion id="r1">
      <TextLine id="{id1}"><Coords points="0,0 99,0 99,49 0,49"/>
        <TextEquiv><Unicode>one</Unicode></TextEquiv></TextLine>
      <TextLine id="{id2}"><Coords points="100,50 299,50 299,99 100,99"/>
        <TextEquiv><Unicode>two</Unicode></TextEquiv></TextLine>
    </TextRegion>
  </Page>
</PcGts>
"""


def test_page_xml_crops_never_collide(tmp_path):
    pages = tmp_path / "pages"
    # The same stem in two folders, a duplicate line id, and an id with a slash.
    for folder, shade, ids in (("a", 10, ("l1", "l1")), ("b", 200, ("l1", "r/l2"))):
        (pages / folder).mkdir(parents=True)
        img = Image.new("L", (300, 100), shade)
        ImageDraw.Draw(img).rectangle([100, 50, 299, 99], fill=shade + 40)
        img.save(pages / folder / "page.png")
        text = PAGE.replace("{id1}", ids[0]).replace("{id2}", ids[1])
        (pages / folder / "page.xml").write_text(text, encoding="utf-8")
    lines = load_page_xml(pages, tmp_path / "crops")
    assert [line.id for line in lines] == [
        "a/page.xml#l1",
        "a/page.xml#l1",
        "b/page.xml#l1",
        "b/page.xml#r/l2",
    ]
    assert len({line.image for line in lines}) == 4
    assert all(line.image.parent == tmp_path / "crops" for line in lines)
    shades = [int(np.asarray(Image.open(line.image)).mean()) for line in lines]
    assert shades == [10, 50, 200, 240]  # each crop is its own line's pixels


def test_zero_byte_image_is_a_per_line_tesseract_error(
    needs_tesseract, tiny_bundle, tmp_path, capsys
):
    gt = tmp_path / "gt"
    gt.mkdir()
    _line_image(gt / "good.png", "Hello world")
    (gt / "good.gt.txt").write_text("Hello world\n", encoding="utf-8")
    (gt / "empty.png").write_bytes(b"")
    (gt / "empty.gt.txt").write_text("Nothing\n", encoding="utf-8")
    eval_set = load_eval_set({"name": "gt", "path": str(gt)}, tmp_path / "work")
    tess = tesseract_baseline(eval_set.lines, "eng", True, allows_vertical=False)
    assert [line.id for line in eval_set.lines] == ["empty", "good"]
    assert tess["texts"][0] is None and "Hello" in tess["texts"][1]
    assert "cannot read the line image" in tess["errors"]["empty"]
    m = write_results(eval_set, [None, "Hello world"], tmp_path / "out", tesseract=tess)
    assert m["tesseract"]["failed_lines"] == 1 and m["tesseract"]["lines"] == 2
    # The whole command: both systems score the set, the bad line counted as failed by each.
    args = ["evaluate", "--model", str(tiny_bundle), "--set", f"gt={gt}", "--output"]
    capsys.readouterr()  # earlier tests' log handlers may write here; judge the command alone
    assert main([*args, str(tmp_path / "eval")]) == 0
    assert "Traceback" not in capsys.readouterr().err
    metrics = json.loads((tmp_path / "eval" / "gt" / "metrics.json").read_text())
    assert metrics["effocr"]["failed_lines"] == 1 and metrics["tesseract"]["failed_lines"] == 1


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ratios", "problem"),
    [
        ([0, 0, 0], "split/ratios: [0, 0, 0]: at least one value must be above 0"),
        ([float("nan"), 0.5, 0.5], "split/ratios/0: not a finite number"),
        ([0.7, float("inf"), 0.1], "split/ratios/1: not a finite number"),
    ],
)
def test_degenerate_split_ratios_are_rejected(ratios, problem):
    with pytest.raises(EffOCRError) as exc:
        validate_config({"split": {"ratios": ratios}})
    assert problem in str(exc.value)


def test_nan_from_yaml_is_rejected(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("split:\n  ratios: [.nan, 0.5, 0.5]\n", encoding="utf-8")
    with pytest.raises(EffOCRError, match="split/ratios/0: not a finite number"):
        load_config(cfg)


def test_unknown_top_level_key_names_it_and_the_allowed_keys():
    with pytest.raises(EffOCRError) as exc:
        validate_config({"lanugage": "en"})
    msg = str(exc.value)
    assert "unknown key 'lanugage' (allowed: seed, language, results_dir" in msg
    assert len(msg.splitlines()) == 2


def test_workflow_prints_the_short_message_for_an_unknown_key(tmp_path):
    (tmp_path / "bad.yaml").write_text(
        textwrap.dedent(
            """
            lanugage: en
            """
        ),
        encoding="utf-8",
    )
    proc = run(
        [
            *(sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")),
            *("--directory", str(tmp_path), "--configfile", str(tmp_path / "bad.yaml")),
            *("--workflow-profile", "none", "--dry-run", "--cores", "1"),
        ],
        timeout=180,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "unknown key 'lanugage' (allowed: seed, language" in out
    assert "additionalProperties" not in out and len(out.splitlines()) < 30, out[-2000:]
