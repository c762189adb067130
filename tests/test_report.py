"""The HTML report and its metrics.json (effocr.report), built from evaluation result files."""

import base64
import io
import json
import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from effocr.evaluate import EvalSet, load_gt_dir, write_results
from effocr.report import build_report, draw_line, read_training_csv

FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def render_line(text: str, path: Path, size: int = 28) -> list[list[float]]:
    """Write a line image; return the ink box of each non-space character."""
    font = ImageFont.truetype(str(FONT), size)
    img = Image.new("L", (font.getbbox(text)[2] + 20, size + 20), 255)
    draw = ImageDraw.Draw(img)
    draw.text((10, 8), text, font=font, fill=0)
    img.save(path)
    boxes = []
    for i, c in enumerate(text):
        if not c.isspace():
            x0 = 10 + font.getlength(text[:i])
            boxes.append([x0, 8.0, x0 + font.getlength(c), 8.0 + size])
    return boxes


@pytest.fixture
def eval_dirs(tmp_path):
    """Two evaluation outputs: one with Tesseract figures, one where it was unavailable."""
    dirs = {}
    for name, texts, hyps, tess in (
        ("test", ["one line", "two lines", "red fox"], ["one line", "twa lines", "rod fax"], True),
        ("scans", ["A scanned line", "B"], ["A scanned lime", "8"], False),
    ):
        gt = tmp_path / f"gt_{name}"
        gt.mkdir()
        preds = []
        for i, text in enumerate(texts):
            boxes = render_line(text, gt / f"{i}.png")
            (gt / f"{i}.gt.txt").write_text(text, encoding="utf-8")
            chars = [{"bbox": b, "codepoints": "U+0061", "char": "a", "score": 0.9} for b in boxes]
            preds.append({"text": hyps[i], "chars": chars, "words": [{"bbox": [8, 6, 60, 40]}]})
        eval_set = EvalSet(name, "gt_dir", gt, load_gt_dir(gt))
        if tess:
            tesseract = {
                "status": {"available": True, "version": "tesseract 5", "lang": "eng"},
                "texts": texts,
                "seconds": 0.3,
            }
        else:
            tesseract = {
                "status": {"available": False, "reason": "the 'tesseract' program is not installed"}
            }
        out = tmp_path / "eval" / name
        write_results(eval_set, hyps, out, seconds=0.1, predictions=preds, tesseract=tesseract)
        dirs[name] = out
    return dirs


def test_report(tmp_path, eval_dirs):
    csv1 = tmp_path / "pass1.csv"
    csv1.write_text("epoch,train_loss,val_p@1,note\n1,2.0,0.3,a\n2,1.2,0.6,b\n", encoding="utf-8")
    # Unknown column names are plotted too; a missing file is shown as missing.
    csv_loc = tmp_path / "loc.csv"
    csv_loc.write_text("step,total,mAP\n10,5.0,0.1\n20,3.0,0.4\n", encoding="utf-8")
    loc_eval = tmp_path / "loc_eval.json"
    loc_eval.write_text(json.dumps({"coco": {"AP": 0.5, "AP50": 0.8}, "char": {"f1": 0.9}}))
    out = tmp_path / "report"
    summary = build_report(
        eval_dirs,
        out,
        training={
            "recognizer pass 1": csv1,
            "recognizer pass 2": tmp_path / "nope.csv",
            "localizer": csv_loc,
        },
        localizer_eval=loc_eval,
        worst_lines=2,
        config={"language": "en", "seed": 7},
    )
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == summary
    assert set(saved["sets"]) == {"test", "scans"}
    assert saved["sets"]["test"]["effocr"]["cer"] == pytest.approx(3 / 24)
    assert saved["sets"]["test"]["tesseract"]["cer"] == 0.0
    assert saved["sets"]["scans"]["tesseract"]["available"] is False
    assert saved["training"]["recognizer pass 1"]["train_loss"] == 1.2
    assert saved["training"]["recognizer pass 2"] is None
    assert saved["localizer_eval"]["coco"]["AP50"] == 0.8

    page = (out / "index.html").read_text(encoding="utf-8")
    assert "<style>" in page and "<link" not in page  # self-contained
    assert "12.50%" in page and "0.00%" in page  # EffOCR vs Tesseract CER on `test`
    assert "not available: the &#x27;tesseract&#x27; program is not installed" in page
    assert "coco.AP50" in page
    # 3 plots + worst lines: 2 of `test` (both wrong) and 2 of `scans`.
    uris = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(uris) == 3 + 2 + 2
    assert "twa lines" in page and "rod fax" in page and "one line</code><br>" not in page
    for name in ("training_curves", "cer_per_set", "cer_by_length"):
        with Image.open(out / f"{name}.png") as im:
            assert im.format == "PNG" and im.width > 200
    embedded = [base64.b64decode(u) for u in uris[:3]]
    files = ("cer_per_set", "cer_by_length", "training_curves")
    assert embedded == [(out / f"{name}.png").read_bytes() for name in files]


def test_report_is_reproducible(tmp_path, eval_dirs):
    build_report(eval_dirs, tmp_path / "a", worst_lines=1)
    build_report(eval_dirs, tmp_path / "b", worst_lines=1)
    for name in ("cer_per_set.png", "cer_by_length.png", "metrics.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_boxes_are_drawn(tmp_path):
    boxes = render_line("Hi", tmp_path / "l.png")
    plain = Image.open(tmp_path / "l.png").convert("RGB")

    drawn = Image.open(io.BytesIO(draw_line(tmp_path / "l.png", {"chars": [{"bbox": boxes[0]}]})))
    assert drawn.size == plain.size

    def red(im):
        a = np.asarray(im.convert("RGB")).astype(int)
        return int(((a[..., 0] > 180) & (a[..., 1] < 80)).sum())

    assert red(drawn) > 0 and red(plain) == 0


def test_training_csv_numeric_columns(tmp_path):
    f = tmp_path / "m.csv"
    f.write_text("epoch,loss,name,acc\n1,0.5,x,\n2,0.4,y,0.7\n", encoding="utf-8")
    cols = read_training_csv(f)
    assert list(cols) == ["epoch", "loss", "acc"]
    assert cols["loss"] == [0.5, 0.4] and cols["acc"][1] == 0.7


def test_orientation_rows_only_for_sets_with_vertical_lines(tmp_path, eval_dirs):
    gt = tmp_path / "gt_jp"
    gt.mkdir()
    for i, (size, text) in enumerate((((120, 30), "横書き"), ((30, 120), "縦書きの行"))):
        Image.new("L", size, 255).save(gt / f"{i}.png")
        (gt / f"{i}.gt.txt").write_text(text, encoding="utf-8")
    eval_set = EvalSet("jp", "gt_dir", gt, load_gt_dir(gt))
    tess = {"status": {"available": True, "lang": "jpn"}, "texts": ["横書き", "縦書"]}
    write_results(eval_set, ["横書", "縦書きの行"], tmp_path / "eval" / "jp", tesseract=tess)
    out = tmp_path / "report"
    # `scans` is left out: its one-letter line "B" is taller than wide, and the fixture does
    # not tell write_results that English has no vertical lines (evaluate_set does).
    sets = {"test": eval_dirs["test"], "jp": tmp_path / "eval" / "jp"}
    summary = build_report(sets, out, worst_lines=1)
    by = summary["sets"]["jp"]["effocr"]["by_orientation"]
    assert by["vertical"]["cer"] == 0.0 and by["horizontal"]["cer"] == pytest.approx(1 / 3)
    page = (out / "index.html").read_text(encoding="utf-8")
    table = page.split("<h3>By line orientation</h3>")[1].split("</table>")[0]
    rows = re.findall(r"<tr[^>]*><td class=l>(\w+)</td><td class=l>(\w+)</td>", table)
    # Only the set with vertical lines; both systems, both orientations.
    assert rows == [("jp", "horizontal"), ("jp", "vertical")] * 2
    assert "33.33%" in table and "60.00%" in table  # EffOCR horizontal, Tesseract vertical
    # Without vertical lines there is no such table.
    build_report({"test": eval_dirs["test"]}, tmp_path / "plain", worst_lines=1)
    assert "By line orientation" not in (tmp_path / "plain" / "index.html").read_text()


def _alignment_json(path: Path, bundle: str, statuses: list[str], reasons: list[str]) -> Path:
    """A report.json of `effocr.align` (`align_coco`'s summary) with these line statuses."""
    rows = [
        {"image_id": i, "status": s, "reason": r}
        for i, (s, r) in enumerate(zip(statuses, reasons, strict=True))
    ]
    counts = {k: statuses.count(k) for k in ("accepted", "rejected", "given")}
    summary = {
        "source": "lines.json",
        "bundle": bundle,
        "lines": len(rows),
        **counts,
        "accepted_fraction": counts["accepted"] / (counts["accepted"] + counts["rejected"]),
        "settings": {"min_confidence": 0.6},
        "lines_report": rows,
    }
    path.write_text(json.dumps(summary), encoding="utf-8")
    return path


def test_alignment_rounds_in_the_report(tmp_path, eval_dirs):
    low = "confidence 0.41 < align.min_confidence 0.6 (similarity 0.7, one-to-one 0.5)"
    first = _alignment_json(
        tmp_path / "r1.json",
        "base",
        ["accepted", "rejected", "rejected", "rejected", "given"],
        ["", low, low.replace("0.41", "0.38"), "the localizer found no character", ""],
    )
    second = _alignment_json(
        tmp_path / "r2.json",
        "rounds/1/bundle",
        ["accepted"] * 3 + ["rejected", "given"],
        ["", "", "", low, ""],
    )
    out = tmp_path / "report"
    summary = build_report(eval_dirs, out, worst_lines=1, alignment=[first, second])
    rounds = summary["alignment"]
    assert [(r["round"], r["bundle"], r["accepted"]) for r in rounds] == [
        (1, "base", 1),
        (2, "rounds/1/bundle", 3),
    ]
    assert rounds[0]["accepted_fraction"] == pytest.approx(0.25)
    # Reasons without their figures: the two low confidences are one reason.
    assert rounds[0]["rejection_reasons"] == {
        "confidence < align.min_confidence": 2,
        "the localizer found no character": 1,
    }
    assert json.loads((out / "metrics.json").read_text())["alignment"] == rounds
    page = (out / "index.html").read_text(encoding="utf-8")
    table = page.split("Alignment of the transcriptions", 1)[1].split("</table>", 1)[0]
    assert table.count("<tr><td>") == 2 and "25.0%" in table and "75.0%" in table
    # Without alignment (boxes given): no section, an empty list.
    plain = build_report(eval_dirs, tmp_path / "plain", worst_lines=1)
    assert plain["alignment"] == []
    assert "Alignment of the transcriptions" not in (tmp_path / "plain" / "index.html").read_text()
