"""Evaluation sets, scoring files and `effocr evaluate` (effocr.evaluate)."""

import csv
import json
from pathlib import Path

import matplotlib
import pytest
from PIL import Image, ImageDraw, ImageFont

from effocr.cli import main
from effocr.evaluate import (
    format_table,
    infer_set_type,
    load_coco_set,
    load_eval_set,
    load_gt_dir,
    load_page_xml,
    parse_set_spec,
    set_input_files,
    tesseract_baseline,
    workflow_set_spec,
    write_results,
)
from effocr.utils import EffOCRError

FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
TEXTS = ["Evaluation sets", "read the same way", "by both systems."]


def render_line(text: str, path: Path, size: int = 32) -> Path:
    font = ImageFont.truetype(str(FONT), size)
    x0, y0, x1, y1 = font.getbbox(text)
    img = Image.new("L", (x1 + 20, y1 - y0 + 20), 255)
    ImageDraw.Draw(img).text((10, 10 - y0), text, font=font, fill=0)
    img.save(path)
    return path


@pytest.fixture
def gt_dir(tmp_path):
    d = tmp_path / "gt"
    d.mkdir()
    for i, text in enumerate(TEXTS):
        suffix = ".bin.png" if i == 0 else ".png"
        render_line(text, d / f"line{i}{suffix}")
        (d / f"line{i}.gt.txt").write_text(text + "\n", encoding="utf-8")
    return d


def test_parse_set_spec():
    assert parse_set_spec("uw3=data/uw3") == {"name": "uw3", "path": "data/uw3"}
    assert parse_set_spec("t=a.json:coco:imgs") == {
        "name": "t",
        "path": "a.json",
        "type": "coco",
        "image_dir": "imgs",
    }
    for bad in ("nopath", "=x", "bad name=x"):
        with pytest.raises(EffOCRError):
            parse_set_spec(bad)


def test_infer_set_type(tmp_path, gt_dir):
    assert infer_set_type("x.json") == "coco"
    assert infer_set_type("x.xml") == "page"
    assert infer_set_type(gt_dir) == "gt_dir"
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "a.xml").write_text("<x/>")
    assert infer_set_type(tmp_path / "p") == "page"


def test_gt_dir(gt_dir):
    lines = load_gt_dir(gt_dir)
    assert [line.reference for line in lines] == TEXTS
    assert lines[0].image.name == "line0.bin.png" and lines[1].image.name == "line1.png"
    assert lines[0].id == "line0"


def test_gt_dir_errors(tmp_path, gt_dir):
    (gt_dir / "orphan.gt.txt").write_text("no image", encoding="utf-8")
    with pytest.raises(EffOCRError, match=r"orphan\.gt\.txt: no line image"):
        load_gt_dir(gt_dir)
    (gt_dir / "orphan.gt.txt").unlink()
    (gt_dir / "line1.gt.txt").write_bytes(b"\xff\xfe bad")
    with pytest.raises(EffOCRError, match=r"line1\.gt\.txt: not UTF-8"):
        load_gt_dir(gt_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EffOCRError, match="no \\*.gt.txt"):
        load_gt_dir(tmp_path / "empty")


def test_coco_set(tmp_path, gt_dir):
    images = [
        {"id": i, "file_name": p.name, "text": t}
        for i, (p, t) in enumerate(zip(sorted(gt_dir.glob("*.png")), TEXTS, strict=True))
    ]
    js = tmp_path / "set.json"
    js.write_text(json.dumps({"images": images}), encoding="utf-8")
    lines = load_coco_set(js, gt_dir)
    assert [line.reference for line in lines] == TEXTS
    assert all(line.char_boxes is None for line in lines)  # no boxes: no box-level diagnosis
    spec = {"name": "c", "path": str(js), "image_dir": str(gt_dir)}
    assert load_eval_set(spec, tmp_path / "work").type == "coco"
    del images[1]["text"]
    js.write_text(json.dumps({"images": images}), encoding="utf-8")
    with pytest.raises(EffOCRError, match=r"image 1 \(line1.png\) has no `text`"):
        load_coco_set(js, gt_dir)
    images[1]["text"] = "x"
    images[1]["file_name"] = "missing.png"
    js.write_text(json.dumps({"images": images}), encoding="utf-8")
    with pytest.raises(EffOCRError, match="missing.png does not exist"):
        load_coco_set(js, gt_dir)


PAGE = """<?xml version="1.0" encoding="UTF-8"?>
<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15">
  <Page imageFilename="page.png" imageWidth="400" imageHeight="120">
    <TextRegion id="r1">
      <TextLine id="l1">
        <Coords points="10,5 300,5 300,45 10,45"/>
        <Word id="w1"><TextEquiv><Unicode>ignored</Unicode></TextEquiv></Word>
        <TextEquiv><Unicode>First line</Unicode></TextEquiv>
      </TextLine>
      <TextLine id="l2">
        <Coords points="12,60 250,62 251,100 11,98"/>
        <TextEquiv index="1"><Unicode>OCR guess</Unicode></TextEquiv>
        <TextEquiv index="0"><Unicode>Second line</Unicode></TextEquiv>
      </TextLine>
      <TextLine id="l3"><Coords points="0,0 5,5"/></TextLine>
    </TextRegion>
  </Page>
</PcGts>
"""


def test_page_xml(tmp_path):
    Image.new("RGB", (400, 120), "white").save(tmp_path / "page.png")
    (tmp_path / "page.xml").write_text(PAGE, encoding="utf-8")
    lines = load_page_xml(tmp_path / "page.xml", tmp_path / "crops")
    assert [line.reference for line in lines] == ["First line", "Second line"]
    assert [line.id for line in lines] == ["page.xml#l1", "page.xml#l2"]
    with Image.open(lines[0].image) as a, Image.open(lines[1].image) as b:
        assert a.size == (291, 41) and b.size == (241, 41)
    (tmp_path / "page.xml").write_text(PAGE.replace("10,5 300,5", "10,5 x,5"), encoding="utf-8")
    with pytest.raises(EffOCRError, match="TextLine l1: bad Coords"):
        load_page_xml(tmp_path / "page.xml", tmp_path / "crops")


def test_missing_set_path(tmp_path):
    with pytest.raises(EffOCRError, match="'gone'.*does not exist"):
        load_eval_set({"name": "gone", "path": str(tmp_path / "nope")}, tmp_path)


def test_disabled_tesseract_says_so(gt_dir):
    out = tesseract_baseline(load_gt_dir(gt_dir), "eng", enabled=False)
    assert out["status"]["available"] is False
    assert "evaluate.tesseract: false" in out["status"]["reason"]


def test_write_results_files(tmp_path, gt_dir):
    # Exact figures and files of the system under test: Tesseract plays no part in them.
    eval_set = load_eval_set({"name": "gt", "path": str(gt_dir)}, tmp_path)
    tess = {"status": {"available": False, "reason": "not wanted here"}}
    # A hypothesis set with known errors stands in for the system under test.
    hyps = ["Evaluatian sets", None, "by both systems."]
    m = write_results(eval_set, hyps, tmp_path / "out", seconds=0.5, tesseract=tess)
    assert m["effocr"]["char_errors"] == 1 + len("read the same way")
    assert m["effocr"]["lines_per_second"] == pytest.approx(6.0)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == m
    with open(tmp_path / "out" / "lines.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["reference"] for r in rows] == TEXTS
    assert rows[0]["distance"] == "1" and rows[1]["hypothesis"] == ""
    with open(tmp_path / "out" / "confusions.csv", encoding="utf-8", newline="") as f:
        conf = list(csv.DictReader(f))
    effocr = {
        (r["reference"], r["hypothesis"]): int(r["count"]) for r in conf if r["system"] == "effocr"
    }
    # "read the same way" deleted: 3 spaces, 3 a, 3 e ...; plus o -> a in "Evaluatian".
    assert effocr[("o", "a")] == 1 and effocr[("e", "")] == 3 and effocr[(" ", "")] == 3
    assert sum(effocr.values()) == m["effocr"]["char_errors"]
    assert conf[0]["system"] == "effocr" and int(conf[0]["count"]) == 3
    preds = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 3 and json.loads(preds[0])["id"] == "line0"


def test_write_results_with_tesseract(tmp_path, gt_dir, needs_tesseract):
    eval_set = load_eval_set({"name": "gt", "path": str(gt_dir)}, tmp_path)
    tess = tesseract_baseline(eval_set.lines, "eng", True)
    assert tess["status"]["available"]
    hyps = ["Evaluatian sets", None, "by both systems."]
    m = write_results(eval_set, hyps, tmp_path / "out", seconds=0.5, tesseract=tess)
    assert m["effocr"]["char_errors"] == 1 + len("read the same way")
    assert m["tesseract"]["available"] and m["tesseract"]["cer"] < 0.05
    assert m["tesseract"]["lines_per_second"] > 0
    with open(tmp_path / "out" / "lines.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[2]["tesseract_hypothesis"] == tess["texts"][2]
    with open(tmp_path / "out" / "confusions.csv", encoding="utf-8", newline="") as f:
        systems = {r["system"] for r in csv.DictReader(f)}
    assert "effocr" in systems
    table = format_table([m])
    assert "effocr" in table and "tesseract" in table


def test_write_results_without_tesseract(tmp_path, gt_dir):
    eval_set = load_eval_set({"name": "gt", "path": str(gt_dir)}, tmp_path)
    reason = "the 'tesseract' program is not installed"
    tess = {"status": {"available": False, "reason": reason}}
    m = write_results(eval_set, TEXTS, tmp_path / "out", tesseract=tess)
    assert m["effocr"]["cer"] == 0.0 and m["effocr"]["exact_match"] == 1.0
    assert m["tesseract"] == {"available": False, "reason": reason}
    assert "not installed" in format_table([m])


def test_cli_reports_a_missing_bundle(tmp_path, gt_dir, capsys):
    code = main(
        ["evaluate", "--model", str(tmp_path / "nobundle"), "--set", f"gt={gt_dir}"]
        + ["--output", str(tmp_path / "out"), "--no-tesseract"]
    )
    assert code == 1
    assert "nobundle" in capsys.readouterr().err
    assert not (tmp_path / "out" / "gt" / "metrics.json").exists()


def test_workflow_set_spec(gt_dir):
    cfg = {"sets": [{"name": "uw3", "path": str(gt_dir), "type": "gt_dir"}]}
    assert workflow_set_spec("test", cfg, "r/test.json", "imgs") == {
        "name": "test",
        "path": "r/test.json",
        "type": "coco",
        "image_dir": "imgs",
    }
    spec = workflow_set_spec("uw3", cfg, "r/test.json", "imgs")
    assert spec["path"] == str(gt_dir)
    # Every file of a folder set is an input, so editing one line reruns its evaluation.
    files = set_input_files(spec)
    assert len(files) == 6 and str(gt_dir / "line1.gt.txt") in files
    assert set_input_files({"path": "r/test.json"}) == ["r/test.json"]
    with pytest.raises(EffOCRError, match="unknown evaluation set 'nope'"):
        workflow_set_spec("nope", cfg, "t.json", "i")
    with pytest.raises(EffOCRError, match="'test' is taken"):
        workflow_set_spec("test", {"sets": [{"name": "test", "path": "x"}]}, "t.json", "i")


def test_metrics_by_orientation(tmp_path):
    # Wide lines are horizontal, tall ones vertical (the rule of the rest of the code).
    d = tmp_path / "mixed"
    d.mkdir()
    lines = [  # (size, reference, EffOCR's text, Tesseract's text)
        ((120, 30), "abcd", "abcd", "abed"),
        ((90, 30), "ef gh", "ef g", "ef gh"),
        ((30, 120), "日本語の", "日本語", "日本語の"),
        ((30, 90), "文字", "文宇", "x"),
        ((40, 40), "kana", "kana", "kana"),  # square: not taller than wide
    ]
    for i, (size, ref, _, _) in enumerate(lines):
        Image.new("L", size, 255).save(d / f"l{i}.png")
        (d / f"l{i}.gt.txt").write_text(ref, encoding="utf-8")
    eval_set = load_eval_set({"name": "mixed", "path": str(d)}, tmp_path)
    tess = {"status": {"available": True, "lang": "jpn"}, "texts": [t for *_, t in lines]}
    m = write_results(eval_set, [h for _, _, h, _ in lines], tmp_path / "out", tesseract=tess)
    by = m["effocr"]["by_orientation"]
    assert list(by) == ["horizontal", "vertical"]
    assert by["horizontal"] == {
        "lines": 3,
        "ref_chars": 4 + 5 + 4,
        "char_errors": 1,
        "cer": pytest.approx(1 / 13),
        "wer": pytest.approx(1 / 4),  # "gh" -> "g": 1 of 4 words
    }
    assert by["vertical"]["lines"] == 2 and by["vertical"]["ref_chars"] == 6
    assert by["vertical"]["char_errors"] == 2 and by["vertical"]["cer"] == pytest.approx(2 / 6)
    assert by["vertical"]["wer"] == pytest.approx(2 / 2)  # one "word" per line, both wrong
    # Pooled, not averaged: the parts add up to the whole set.
    assert sum(v["char_errors"] for v in by.values()) == m["effocr"]["char_errors"]
    tby = m["tesseract"]["by_orientation"]
    assert tby["horizontal"]["char_errors"] == 1 and tby["vertical"]["char_errors"] == 2
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == m
    # A profile without vertical text (English): tall lines are horizontal ones too.
    m = write_results(eval_set, [h for _, _, h, _ in lines], tmp_path / "en", allows_vertical=False)
    assert list(m["effocr"]["by_orientation"]) == ["horizontal"]
    assert m["effocr"]["by_orientation"]["horizontal"]["lines"] == 5


def test_tesseract_psm_follows_orientation(tmp_path, monkeypatch):
    import effocr.evaluate as ev
    from effocr.tesseract import TesseractStatus

    d = tmp_path / "lines"
    d.mkdir()
    for i, size in enumerate(((120, 30), (30, 120))):
        Image.new("L", size, 255).save(d / f"l{i}.png")
        (d / f"l{i}.gt.txt").write_text("x", encoding="utf-8")
    lines = load_gt_dir(d)
    calls = []

    def fake_run(images, lang, psm):
        calls.append((lang, psm, [p.name for p in images]))
        return ["t e x t"] * len(images), 0.1

    monkeypatch.setattr(ev, "tesseract_status", lambda lang: TesseractStatus(True, lang=lang))
    monkeypatch.setattr(ev, "run_tesseract", fake_run)
    out = tesseract_baseline(lines, "jpn", True, keep_spaces=False, allows_vertical=True)
    assert calls == [("jpn", 7, ["l0.png"]), ("jpn_vert", 5, ["l1.png"])]
    assert out["texts"] == ["text", "text"]
    calls.clear()
    # English has no vertical lines: a line taller than wide is still read as one text line.
    tesseract_baseline(lines, "eng", True, allows_vertical=False)
    assert calls == [("eng", 7, ["l0.png", "l1.png"])]


def test_by_orientation_lists_only_what_occurs(tmp_path, gt_dir):
    eval_set = load_eval_set({"name": "gt", "path": str(gt_dir)}, tmp_path)
    m = write_results(eval_set, TEXTS, tmp_path / "out")
    assert m["effocr"]["by_orientation"] == {
        "horizontal": {
            "lines": 3,
            "ref_chars": sum(len(t) for t in TEXTS),
            "char_errors": 0,
            "cer": 0.0,
            "wer": 0.0,
        }
    }
    # An unreadable image (its OCR failed too) is left out of the split, not an error.
    (gt_dir / "line1.png").write_bytes(b"not a png")
    m = write_results(eval_set, [TEXTS[0], None, TEXTS[2]], tmp_path / "out2")
    assert m["effocr"]["by_orientation"]["horizontal"]["lines"] == 2
    assert m["effocr"]["lines"] == 3
