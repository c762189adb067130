"""effocr.data.crops: full-height (full-width when vertical) glyph crops and their manifest."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
from PIL import Image
from test_coco import BOX, MARGIN, THICK, make_lines

from effocr.cli import main
from effocr.config import section_defaults
from effocr.data.coco_tools import split_coco, subset
from effocr.data.crops import MANIFEST_COLUMNS, crop_box, crop_glyphs, jitter_box
from effocr.utils import EffOCRError

# What a default config crops with (the schema's `crops` and `dataset` category names).
CROPS_SECTION = section_defaults("crops")
CROPS = {
    **CROPS_SECTION,
    **{k: section_defaults("dataset")[k] for k in ("char_category", "word_category")},
    "seed": 0,
}
# What `crop_box` takes of the section.
BOX_CUT = {k: CROPS_SECTION[k] for k in ("full_height", "padding")}


@pytest.fixture
def splits(tmp_path):
    """Three lines (the last vertical) split as train: 0, 2; val: 1; test: none."""
    json_path, image_dir, coco = make_lines(tmp_path, ["a, b'", "xy", "日本"], [False, False, True])
    out = {}
    for split, names in {"train": ["line_0.png", "line_2.png"], "val": ["line_1.png"]}.items():
        out[split] = tmp_path / f"{split}.json"
        out[split].write_text(json.dumps(subset(coco, file_names=names, seed=0)))
    out["test"] = tmp_path / "test.json"
    out["test"].write_text(json.dumps(subset(coco, n=0, seed=0)))
    return out, image_dir, tmp_path


def _read_manifest(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_crop_box():
    assert crop_box([4.2, 5, 8, 10], 40, 24, vertical=False, **BOX_CUT) == (4, 0, 13, 24)
    assert crop_box([4, 5, 8, 10], 40, 24, vertical=False, full_height=True, padding=6) == (
        0,
        0,
        18,
        24,
    )
    assert crop_box([4, 5, 8, 10], 40, 24, vertical=False, full_height=False, padding=0) == (
        4,
        5,
        12,
        15,
    )
    assert crop_box([4, 30, 16, 8], 24, 40, vertical=True, full_height=True, padding=2) == (
        0,
        28,
        24,
        40,
    )
    with pytest.raises(ValueError, match="empty crop"):
        crop_box([50, 0, 4, 4], 40, 24, vertical=False, **BOX_CUT)


def test_full_height_crops_and_manifest(splits):
    split_jsons, image_dir, root = splits
    manifest = root / "crops" / "manifest.csv"
    counts = crop_glyphs(split_jsons, image_dir, root / "crops" / "glyphs", manifest, **CROPS)
    assert counts == {"train": 6, "val": 2, "test": 0}
    rows = _read_manifest(manifest)
    assert list(rows[0]) == MANIFEST_COLUMNS
    assert len(rows) == 8
    assert {r["source"] for r in rows} == {"real"}
    by_label = {(r["origin"], r["codepoints"]): r for r in rows}
    comma = by_label[("line_0.png", "U+002C")]
    assert comma["split"] == "train"
    assert comma["path"] == f"glyphs/train/U+002C/line_0_{comma['ann_id']}.png"
    for r in rows:
        img = Image.open(manifest.parent / r["path"])
        if r["origin"] == "line_2.png":  # vertical line: full width, box height
            assert img.size == (THICK, BOX)
        else:
            assert img.size == (BOX, THICK)
            ink = np.asarray(img.convert("L"))
            # The block drawn for the character fills the box columns between the margins.
            assert (ink[MARGIN : THICK - MARGIN] == 0).all() and (ink[:MARGIN] == 255).all()
    assert by_label[("line_2.png", "U+65E5")]["split"] == "train"
    assert by_label[("line_1.png", "U+0078")]["split"] == "val"
    assert not any(p.name.startswith(".") for p in (root / "crops").iterdir())


def test_padding_and_box_only(splits):
    split_jsons, image_dir, root = splits
    manifest = root / "m.csv"
    crop_glyphs(
        split_jsons,
        image_dir,
        root / "g",
        manifest,
        **{**CROPS, "full_height": False, "padding": 3},
    )
    rows = {(r["origin"], r["codepoints"]): r for r in _read_manifest(manifest)}
    first = Image.open(root / rows[("line_0.png", "U+0061")]["path"])
    # x = MARGIN - 3 .. MARGIN + BOX + 3; y = the box only.
    assert first.size == (BOX + 6, THICK - 2 * MARGIN)
    vert = Image.open(root / rows[("line_2.png", "U+672C")]["path"])
    assert vert.size == (THICK - 2 * MARGIN, BOX + 6)
    # A second run replaces the outputs.
    crop_glyphs(split_jsons, image_dir, root / "g", manifest, **CROPS)
    assert Image.open(root / rows[("line_0.png", "U+0061")]["path"]).size == (BOX, THICK)


def test_jitter_box_moves_the_ends_within_their_limits():
    """Outwards up to jitter_range x the line height, inwards up to a quarter of the box too."""
    rng = random.Random(0)
    boxes = [jitter_box((40, 0, 60, 50), 200, 50, False, 0.2, rng) for _ in range(2000)]
    x0s, x1s = np.array([b[0] for b in boxes]), np.array([b[2] for b in boxes])
    assert {(b[1], b[3]) for b in boxes} == {(0, 50)}
    # 0.2 x 50 px = 10 px out; min(10, 20 / 4) = 5 px in.
    assert (x0s.min(), x0s.max(), x1s.min(), x1s.max()) == (30, 45, 55, 70)
    assert len(set(zip(x0s, x1s, strict=True))) > 100
    vertical = [jitter_box((0, 40, 30, 60), 30, 200, True, 0.2, rng) for _ in range(500)]
    assert {(b[0], b[2]) for b in vertical} == {(0, 30)}
    assert min(b[1] for b in vertical) >= 34 and max(b[3] for b in vertical) <= 66
    # At the image's edges the box is clipped and keeps at least one pixel.
    for _ in range(200):
        x0, _, x1, _ = jitter_box((0, 0, 1, 50), 3, 50, False, 1.0, rng)
        assert 0 <= x0 < x1 <= 3


def test_jitter_adds_training_crops_only(splits):
    """`jitter: 2` cuts every training box twice more, ends moved, the same way every time;
    validation crops stay at their boxes."""
    split_jsons, image_dir, root = splits
    jittered = {**CROPS, "jitter": 2, "jitter_range": 0.5}
    manifests = []
    for run in ("a", "b"):
        manifests.append(root / run / "m.csv")
        counts = crop_glyphs(split_jsons, image_dir, root / run / "g", manifests[-1], **jittered)
        assert counts == {"train": 18, "val": 2, "test": 0}
    rows = _read_manifest(manifests[0])
    assert rows == _read_manifest(manifests[1])
    plain = {r["path"] for r in rows if "_j" not in r["path"]}
    assert len(plain) == 8
    extra = [r for r in rows if "_j" in r["path"]]
    assert {r["split"] for r in extra} == {"train"}
    assert sorted(r["path"][-7:] for r in extra) == ["_j1.png"] * 6 + ["_j2.png"] * 6
    sizes = {}
    for r in rows:
        a = np.asarray(Image.open(manifests[0].parent / r["path"]))
        assert (a == np.asarray(Image.open(manifests[1].parent / r["path"]))).all()
        sizes.setdefault((r["origin"], r["ann_id"]), []).append(a.shape[:2])
    moved = 0
    for (origin, _), shapes in sizes.items():
        if len(shapes) > 1:
            along = 0 if origin == "line_2.png" else 1  # vertical lines jitter in y
            # Only the reading direction changes; another length at least once in the line.
            assert len({s[1 - along] for s in shapes}) == 1
            moved += len({s[along] for s in shapes}) > 1
    assert moved >= 4
    with pytest.raises(EffOCRError, match="jitter"):
        crop_glyphs(split_jsons, image_dir, root / "g", root / "m.csv", **{**CROPS, "jitter": -1})
    assert not (root / "g").exists() and not (root / "m.csv").exists()


def test_line_in_two_splits_fails_without_output(splits):
    split_jsons, image_dir, root = splits
    split_jsons["test"].write_text(split_jsons["val"].read_text())
    with pytest.raises(EffOCRError, match="'line_1.png' is also in split 'val'"):
        crop_glyphs(split_jsons, image_dir, root / "g", root / "m.csv", **CROPS)
    assert not (root / "g").exists() and not (root / "m.csv").exists()
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []


def test_bad_lines_fail_without_output(splits):
    split_jsons, image_dir, root = splits
    coco = json.loads(split_jsons["val"].read_text())
    coco["images"][0]["text"] = "xyz"
    split_jsons["val"].write_text(json.dumps(coco))
    with pytest.raises(EffOCRError, match="val.json: image 2 .* 2 char boxes but 3"):
        crop_glyphs(split_jsons, image_dir, root / "g", root / "m.csv", **CROPS)
    assert not (root / "g").exists() and not (root / "m.csv").exists()

    coco["images"][0]["text"] = "xy"
    split_jsons["val"].write_text(json.dumps(coco))
    (image_dir / "line_1.png").unlink()
    with pytest.raises(EffOCRError, match="cannot read"):
        crop_glyphs(split_jsons, image_dir, root / "g", root / "m.csv", **CROPS)
    assert not (root / "g").exists() and not (root / "m.csv").exists()
    with pytest.raises(EffOCRError, match="padding"):
        crop_glyphs(split_jsons, image_dir, root / "g", root / "m.csv", **{**CROPS, "padding": -1})


def test_cli(splits, capsys):
    split_jsons, image_dir, root = splits
    args = [f"{s}={p}" for s, p in split_jsons.items()]
    manifest = root / "cli" / "manifest.csv"
    common = ["--image-dir", str(image_dir), "--out-dir", str(root / "cli" / "g")]
    assert main(["crop-glyphs", *args, *common, "--manifest", str(manifest)]) == 0
    assert "8 crops" in capsys.readouterr().out
    assert len(_read_manifest(manifest)) == 8
    jittered = root / "cli" / "jittered.csv"
    assert main(["crop-glyphs", *args, *common, "--manifest", str(jittered), "--jitter", "1"]) == 0
    assert "14 crops" in capsys.readouterr().out
    bad = root / "bad"
    assert main(["crop-glyphs", "train", *common, "--manifest", str(bad)]) == 1
    assert "expected SPLIT=COCO_JSON" in capsys.readouterr().err
    assert not bad.exists()


@pytest.mark.usefixtures("needs_ipa_fonts")
def test_synthetic_lines_mixed_orientation(tiny_coco_factory, tmp_path):
    json_path, image_dir = tiny_coco_factory(6, "jp", 0, vertical_fraction=0.5, max_chars=12)
    coco = json.loads(json_path.read_text(encoding="utf-8"))
    parts = split_coco(coco, [0.5, 0.25, 0.25], seed=1)
    split_jsons = {}
    for s, part in parts.items():
        split_jsons[s] = tmp_path / f"{s}.json"
        split_jsons[s].write_text(json.dumps(part, ensure_ascii=False), encoding="utf-8")
    manifest = tmp_path / "crops" / "manifest.csv"
    counts = crop_glyphs(split_jsons, image_dir, tmp_path / "crops" / "glyphs", manifest, **CROPS)
    images = {img["file_name"]: img for img in coco["images"]}
    for s, part in parts.items():
        assert counts[s] == sum(len("".join(img["text"].split())) for img in part["images"])
    rows = _read_manifest(manifest)
    orientations = set()
    for r in rows:
        img = images[r["origin"]]
        size = Image.open(manifest.parent / r["path"]).size
        vertical = img["height"] > img["width"]
        orientations.add(vertical)
        assert size[0] == img["width"] if vertical else size[1] == img["height"]
    assert orientations == {True, False}
