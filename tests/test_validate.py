"""effocr.data.validate and `effocr validate`: every kind of bad input is reported, nothing written."""

from __future__ import annotations

import json

import pytest
from schema_defaults import CATEGORIES
from test_coco import make_lines

from effocr.cli import main
from effocr.config import config_sections
from effocr.data.validate import check_coco, validate_coco
from effocr.utils import EffOCRError, sha256_file


@pytest.fixture
def lines(tmp_path):
    return make_lines(tmp_path, ["ab c", "xyz", "pq"], vertical=[False, False, True])


def _rewrite(json_path, coco):
    json_path.write_text(json.dumps(coco), encoding="utf-8")


def test_valid_dataset_report(lines):
    json_path, image_dir, _ = lines
    problems, report = validate_coco(json_path, image_dir, charset=list("abcxyz"), **CATEGORIES)
    assert problems == []
    assert report["valid"] is True
    assert (report["images"], report["chars"], report["words"]) == (3, 8, 4)
    assert report["vertical_lines"] == 1
    assert report["sha256"] == sha256_file(json_path)
    assert report["outside_charset"] == {
        "U+0070": {"char": "p", "count": 1},
        "U+0071": {"char": "q", "count": 1},
    }


def _corrupt_first_char_ann(coco):
    return next(a for a in coco["annotations"] if a["category_id"] == 0)


# Each case: how to corrupt the COCO dict, and (image id, annotation id, message) expected.
CASES = {
    "duplicate image id": (
        lambda c: c["images"][1].update(id=1),
        "duplicate image id 1",
    ),
    "duplicate annotation id": (
        lambda c: c["annotations"][1].update(id=c["annotations"][0]["id"]),
        "duplicate annotation id",
    ),
    "image_id missing": (
        lambda c: c["annotations"][0].update(image_id=99),
        "image_id 99 does not exist",
    ),
    "unknown category": (
        lambda c: c["annotations"][0].update(category_id=7),
        "unknown category_id 7",
    ),
    "bbox wrong type": (
        lambda c: c["annotations"][0].update(bbox=[1, 2, 3]),
        "missing or invalid bbox",
    ),
    "area missing": (
        lambda c: c["annotations"][0].pop("area"),
        "missing or invalid area",
    ),
    "image width missing": (
        lambda c: c["images"][0].pop("width"),
        "missing or invalid `width`",
    ),
    "text missing": (
        lambda c: c["images"][0].pop("text"),
        "missing `text`",
    ),
    "text count mismatch": (
        lambda c: c["images"][0].update(text="ab cd"),
        "3 char boxes but 4 non-space characters",
    ),
    "box outside": (
        lambda c: _corrupt_first_char_ann(c).update(bbox=[40, 2, 8, 30]),
        "outside the",
    ),
    "degenerate box": (
        lambda c: _corrupt_first_char_ann(c).update(bbox=[4, 4, 0, 16]),
        "degenerate box",
    ),
    "no char category": (
        lambda c: c["categories"][0].update(name="glyph"),
        "no character category named 'char'",
    ),
    "size mismatch": (
        lambda c: c["images"][1].update(width=999),
        "differs from width x height 999x",
    ),
    "file missing": (
        lambda c: c["images"][0].update(file_name="missing.png"),
        "image file not found",
    ),
    "duplicate file_name": (
        lambda c: c["images"][1].update(file_name=c["images"][0]["file_name"]),
        "also used by image 1",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_violation_reported(lines, case):
    json_path, image_dir, coco = lines
    corrupt, message = CASES[case]
    corrupt(coco)
    _rewrite(json_path, coco)
    problems, report = validate_coco(json_path, image_dir, **CATEGORIES)
    assert report["valid"] is False
    texts = [str(p) for p in problems]
    assert any(message in t for t in texts), texts
    assert all(t.startswith(str(json_path)) for t in texts)


def test_problem_names_image_and_annotation(lines):
    json_path, image_dir, coco = lines
    ann = _corrupt_first_char_ann(coco)
    ann["bbox"] = [-5, 0, 8, 10]
    _rewrite(json_path, coco)
    problems, _ = validate_coco(json_path, image_dir, **CATEGORIES)
    assert len(problems) == 1
    assert (problems[0].image_id, problems[0].ann_id) == (ann["image_id"], ann["id"])
    assert f"[image {ann['image_id']}, annotation {ann['id']}]" in str(problems[0])


def test_box_within_tolerance_is_accepted(lines):
    json_path, image_dir, coco = lines
    img = coco["images"][0]
    _corrupt_first_char_ann(coco)["bbox"] = [-0.5, 0, 8, img["height"] + 0.9]
    _rewrite(json_path, coco)
    assert validate_coco(json_path, image_dir, **CATEGORIES)[0] == []


def test_missing_image_dir_and_empty_dataset(lines, tmp_path):
    json_path, _, coco = lines
    problems, _ = validate_coco(json_path, tmp_path / "nowhere", **CATEGORIES)
    assert [p.message for p in problems] == [f"image directory not found: {tmp_path / 'nowhere'}"]
    _rewrite(json_path, dict(coco, images=[], annotations=[]))
    problems, _ = validate_coco(json_path, tmp_path, **CATEGORIES)
    assert [p.message for p in problems] == ["no images: the dataset is empty"]


def test_undecodable_image(lines):
    json_path, image_dir, coco = lines
    (image_dir / coco["images"][0]["file_name"]).write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    problems, _ = validate_coco(json_path, image_dir, **CATEGORIES)
    assert [p.image_id for p in problems] == [1]
    assert "does not decode" in problems[0].message


def test_truncated_image(lines):
    json_path, image_dir, coco = lines
    path = image_dir / coco["images"][0]["file_name"]
    path.write_bytes(path.read_bytes()[:-30])
    problems, _ = validate_coco(json_path, image_dir, **CATEGORIES)
    assert "does not decode" in problems[0].message


def test_check_coco_writes_report_only_when_valid(lines, tmp_path):
    json_path, image_dir, coco = lines
    report_path = tmp_path / "out" / "validation.json"
    dataset = config_sections({"dataset": {"image_dir": str(image_dir)}}).dataset
    check_coco(json_path, report_path, None, dataset=dataset)
    assert json.loads(report_path.read_text())["images"] == 3
    report_path.unlink()
    coco["images"][0]["text"] = "abcdef"
    _rewrite(json_path, coco)
    with pytest.raises(EffOCRError, match="1 problem"):
        check_coco(json_path, report_path, None, dataset=dataset)
    assert not report_path.exists()


def test_cli_valid(lines, tmp_path, capsys):
    json_path, image_dir, _ = lines
    charset = tmp_path / "abc.txt"
    charset.write_text("# test\nU+0061\ta\nU+0062\nU+0063\n")
    before = sha256_file(json_path)
    rc = main(
        ["validate", str(json_path), "--image-dir", str(image_dir), "--charset", str(charset)]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "valid: 3 images, 8 chars, 4 words, 5 character(s) outside the charset" in out
    assert "'x' (U+0078) not in charset: 1x" in out
    assert sha256_file(json_path) == before


def test_cli_invalid_lists_every_problem(lines, tmp_path, capsys):
    json_path, image_dir, coco = lines
    coco["images"][0]["text"] = "abcdef"
    coco["annotations"][2]["bbox"] = [0, 0, -1, 3]
    _rewrite(json_path, coco)
    before = sha256_file(json_path)
    report = tmp_path / "report.json"
    rc = main(["validate", str(json_path), "--image-dir", str(image_dir), "--report", str(report)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "2 problem(s)" in err
    assert "non-space characters" in err and "degenerate box" in err
    assert not report.exists()
    assert sha256_file(json_path) == before


def test_cli_unreadable_json(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main(["validate", str(bad), "--image-dir", str(tmp_path)]) == 1
    assert "invalid JSON" in capsys.readouterr().err


def test_synthetic_lines_are_valid(tiny_coco):
    json_path, image_dir = tiny_coco
    problems, report = validate_coco(json_path, image_dir, **CATEGORIES)
    assert problems == [], [str(p) for p in problems]
    assert report["images"] == 12 and report["chars"] > 12 and report["words"] > 12


@pytest.mark.usefixtures("needs_ipa_fonts")
def test_synthetic_japanese_vertical_lines_are_valid(tiny_coco_factory):
    json_path, image_dir = tiny_coco_factory(6, "jp", 0, vertical_fraction=0.5, max_chars=12)
    problems, report = validate_coco(json_path, image_dir, **CATEGORIES)
    assert problems == [], [str(p) for p in problems]
    assert report["vertical_lines"] > 0
