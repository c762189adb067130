"""effocr.data.recognizer_dataset: renders (train) + real crops (their line's split) in one manifest."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image
from schema_defaults import CATEGORIES
from test_coco import make_lines

from effocr.cli import main
from effocr.config import section_defaults
from effocr.data.coco_tools import split_coco
from effocr.data.crops import crop_glyphs
from effocr.data.recognizer_dataset import build_recognizer_dataset
from effocr.utils import EffOCRError, label_to_codepoints

FONTS = ("FontA", "FontB")


def _write_csv(path, rows, columns=("path", "codepoints", "source", "origin", "split")):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def inputs(tmp_path):
    """A renders manifest (chars a-e, 2 fonts) and a crops manifest of 10 lines in 3 splits."""
    rows = []
    renders = tmp_path / "renders"
    for ch in "abcde":
        label = label_to_codepoints(ch)
        for font in FONTS:
            rel = f"glyphs/{label}/{font}.png"
            (renders / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (10, 20), 255).save(renders / rel)
            rows.append(
                {
                    "path": rel,
                    "codepoints": label,
                    "source": "render",
                    "origin": font,
                    "split": "train",
                }
            )
    _write_csv(renders / "manifest.csv", rows)

    json_path, image_dir, coco = make_lines(tmp_path / "lines", ["ab", "cd e", "abz"] * 3 + ["a"])
    parts = split_coco(coco, [0.6, 0.2, 0.2], seed=0)
    split_jsons = {}
    for s, part in parts.items():
        split_jsons[s] = tmp_path / "splits" / f"{s}.json"
        split_jsons[s].parent.mkdir(exist_ok=True)
        split_jsons[s].write_text(json.dumps(part))
    crops = tmp_path / "crops" / "manifest.csv"
    crop_glyphs(
        split_jsons,
        image_dir,
        tmp_path / "crops" / "glyphs",
        crops,
        **section_defaults("crops"),
        **CATEGORIES,
        seed=0,
    )
    return renders / "manifest.csv", crops, tmp_path


def test_build(inputs):
    renders, crops, root = inputs
    out = root / "dataset" / "manifest.csv"
    summary = build_recognizer_dataset(renders, crops, out)
    rows = _read_csv(out)
    crop_rows = _read_csv(crops)
    assert len(rows) == 10 + len(crop_rows)
    assert list(rows[0])[:5] == ["path", "codepoints", "source", "origin", "split"]
    assert {r["split"] for r in rows if r["source"] == "render"} == {"train"}
    for r in rows:  # every path resolves from the new manifest's directory
        assert (out.parent / r["path"]).is_file(), r["path"]
    # Real crops keep their split; no line is in two splits.
    line_splits = {}
    for r in rows:
        if r["source"] == "real":
            assert line_splits.setdefault(r["origin"], r["split"]) == r["split"]
    assert summary == json.loads((root / "dataset" / "summary.json").read_text())
    assert summary["classes"] == 6 and summary["render_classes"] == 5
    assert summary["real_only_classes"] == ["U+007A"]
    assert summary["fonts"] == list(FONTS)
    assert summary["counts"]["render/train"] == 10
    real = sum(v for k, v in summary["counts"].items() if k.startswith("real/"))
    assert real == len(crop_rows) == 3 * (2 + 3 + 3) + 1
    assert sum(summary["lines"].values()) == 10
    # Deterministic output.
    first = out.read_bytes()
    build_recognizer_dataset(renders, crops, out)
    assert out.read_bytes() == first


def test_line_in_two_splits_is_refused(inputs):
    renders, crops, root = inputs
    rows = _read_csv(crops)
    origin = rows[0]["origin"]
    other = next(s for s in ("train", "val", "test") if s != rows[0]["split"])
    rows[0]["split"] = other
    _write_csv(crops, rows, columns=list(rows[0]))
    out = root / "dataset" / "manifest.csv"
    with pytest.raises(EffOCRError, match=f"crops of line '{origin}' are in splits"):
        build_recognizer_dataset(renders, crops, out)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda rows: rows[0].update(path="glyphs/missing.png"), "image not found"),
        (lambda rows: rows[0].update(codepoints="a"), "not a code-point label"),
        (lambda rows: rows[0].update(source="real"), "source 'real', expected 'render'"),
    ],
)
def test_bad_renders_manifest(inputs, change, message):
    renders, crops, root = inputs
    rows = _read_csv(renders)
    change(rows)
    _write_csv(renders, rows)
    out = root / "dataset" / "manifest.csv"
    with pytest.raises(EffOCRError, match=f"manifest.csv: line 2: {message}"):
        build_recognizer_dataset(renders, crops, out)
    assert not out.exists()


def test_missing_column_and_file(inputs):
    renders, crops, root = inputs
    rows = _read_csv(renders)
    _write_csv(renders, rows, columns=("path", "codepoints", "source", "split"))
    with pytest.raises(EffOCRError, match="missing column"):
        build_recognizer_dataset(renders, crops, root / "o.csv")
    with pytest.raises(EffOCRError, match="manifest not found"):
        build_recognizer_dataset(root / "none.csv", crops, root / "o.csv")
    assert not (root / "o.csv").exists()


def test_cli(inputs, capsys):
    renders, crops, root = inputs
    out = root / "cli.csv"
    assert (
        main(
            [
                "build-recognizer-dataset",
                "--renders",
                str(renders),
                "--crops",
                str(crops),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert "6 classes" in capsys.readouterr().out
    assert (root / "summary.json").exists()
    args = ["build-recognizer-dataset", "--renders", str(renders), "--crops", str(crops)]
    assert main([*args, "-o", str(crops)]) == 1
    assert "overwrite an input" in capsys.readouterr().err
