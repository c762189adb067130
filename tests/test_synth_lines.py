"""Synthetic lines: COCO format, tight boxes in reading order, determinism, Japanese vertical lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from schema_defaults import synth_line_knobs
from snakemake_forks import run

from effocr.cli import main as cli_main
from effocr.synth.fonts import matplotlib_font_dir
from effocr.synth.lines import INK_THRESHOLD, synth_lines
from effocr.utils import EffOCRError

REPO = Path(__file__).resolve().parents[1]
MPL = matplotlib_font_dir()


def _load(json_path):
    coco = json.loads(Path(json_path).read_text(encoding="utf-8"))
    cats = {c["name"]: c["id"] for c in coco["categories"]}
    per_image = {im["id"]: {"char": [], "word": []} for im in coco["images"]}
    for a in coco["annotations"]:
        kind = "char" if a["category_id"] == cats["char"] else "word"
        per_image[a["image_id"]][kind].append(a)
    return coco, per_image


def _check_boxes(coco, per_image, image_dir, vertical=None):
    for im in coco["images"]:
        chars = per_image[im["id"]]["char"]
        assert len(chars) == len("".join(im["text"].split()))
        img = Image.open(Path(image_dir) / im["file_name"])
        assert img.size == (im["width"], im["height"]) and img.mode == "RGB"
        is_vertical = im["height"] > im["width"]
        if vertical is not None:
            assert is_vertical == vertical
        for a in per_image[im["id"]]["char"] + per_image[im["id"]]["word"]:
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= im["width"] and y + h <= im["height"]
            assert a["area"] == w * h and a["iscrowd"] == 0
        # Reading order: centres advance along the line.
        axis = 1 if is_vertical else 0
        centres = [a["bbox"][axis] + a["bbox"][axis + 2] / 2 for a in chars]
        assert centres == sorted(centres)


def test_tiny_coco_format_and_boxes(tiny_coco):
    json_path, image_dir = tiny_coco
    coco, per_image = _load(json_path)
    assert {c["name"] for c in coco["categories"]} == {"char", "word"}
    assert len(coco["images"]) == 12
    _check_boxes(coco, per_image, image_dir, vertical=False)
    for im in coco["images"]:
        assert 1.2 * im["font_size"] <= im["height"] <= 2.2 * im["font_size"]
        words = im["text"].split(" ")
        assert len(per_image[im["id"]]["word"]) == len(words)
        # Each word box is the union of its char boxes.
        chars = iter(per_image[im["id"]]["char"])
        for word, wbox in zip(words, per_image[im["id"]]["word"], strict=True):
            boxes = [next(chars)["bbox"] for _ in word]
            x0 = min(b[0] for b in boxes)
            x1 = max(b[0] + b[2] for b in boxes)
            assert wbox["bbox"][0] == x0 and wbox["bbox"][0] + wbox["bbox"][2] == x1


def test_boxes_are_tight_on_clean_lines(tiny_coco_factory):
    json_path, image_dir = tiny_coco_factory(6, "en", 3, degrade=False)
    coco, per_image = _load(json_path)
    for im in coco["images"]:
        ink = (
            np.asarray(Image.open(image_dir / im["file_name"]).convert("L")) <= 255 - INK_THRESHOLD
        )
        covered = np.zeros_like(ink)
        for a in per_image[im["id"]]["char"]:
            x, y, w, h = a["bbox"]
            covered[y : y + h, x : x + w] = True
            box = ink[y : y + h, x : x + w]
            # Every edge of the box touches ink: nothing to shave off.
            assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any(), im[
                "text"
            ]
        assert not (ink & ~covered).any()  # and no ink outside the char boxes


def test_same_seed_same_bytes_other_seed_other_lines(tmp_path):
    a = synth_lines(
        tmp_path / "a" / "lines.json", 5, "en", seed=11, **synth_line_knobs(max_chars=20)
    )
    b = synth_lines(
        tmp_path / "b" / "lines.json", 5, "en", seed=11, **synth_line_knobs(max_chars=20)
    )
    c = synth_lines(
        tmp_path / "c" / "lines.json", 5, "en", seed=12, **synth_line_knobs(max_chars=20)
    )
    assert a.read_bytes() == b.read_bytes()
    for name in sorted(p.name for p in (a.parent / "images").iterdir()):
        assert (a.parent / "images" / name).read_bytes() == (
            b.parent / "images" / name
        ).read_bytes()
    texts = lambda p: [im["text"] for im in json.loads(p.read_text())["images"]]  # noqa: E731
    assert texts(a) != texts(c)


def test_charset_limits_the_characters(tmp_path):
    allowed = list("abcdehlnort,.'")
    out = synth_lines(
        tmp_path / "l.json",
        10,
        "en",
        seed=2,
        **synth_line_knobs(max_chars=16),
        charset=allowed,
        font_paths=[MPL / "DejaVuSans.ttf"],
    )
    coco, per_image = _load(out)
    assert set("".join(im["text"] for im in coco["images"])) <= set(allowed) | {" "}
    _check_boxes(coco, per_image, tmp_path / "images")


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(EffOCRError, match="text source not found"):
        synth_lines(
            tmp_path / "l.json",
            2,
            "en",
            seed=0,
            **synth_line_knobs(),
            text_source=tmp_path / "missing.txt",
        )
    with pytest.raises(EffOCRError, match="font file not found"):
        synth_lines(
            tmp_path / "l.json", 2, "en", [tmp_path / "nofont.ttf"], seed=0, **synth_line_knobs()
        )
    with pytest.raises(EffOCRError, match="no character of the text source"):
        synth_lines(tmp_path / "l.json", 2, "en", seed=0, **synth_line_knobs(), charset=["蜘"])
    # A font of placeholder glyphs draws no character: no line rather than mislabelled boxes.
    with pytest.raises(EffOCRError, match="could not draw line 0"):
        synth_lines(
            tmp_path / "l.json",
            2,
            "en",
            [MPL / "LastResortHE-Regular.ttf"],
            seed=0,
            **synth_line_knobs(),
        )
    assert not (tmp_path / "l.json").exists()


@pytest.mark.usefixtures("needs_ipa_fonts")
def test_japanese_vertical_lines_are_sorted_by_y(tiny_coco_factory):
    json_path, image_dir = tiny_coco_factory(6, "jp", 0, vertical_fraction=1.0, max_chars=12)
    coco, per_image = _load(json_path)
    assert all(not v["word"] for v in per_image.values())
    assert all(" " not in im["text"] for im in coco["images"])
    _check_boxes(coco, per_image, image_dir, vertical=True)
    for im in coco["images"]:
        ys = [a["bbox"][1] for a in per_image[im["id"]]["char"]]
        assert ys == sorted(ys)


@pytest.mark.usefixtures("needs_ipa_fonts")
def test_japanese_horizontal_lines(tiny_coco_factory):
    json_path, image_dir = tiny_coco_factory(4, "jp", 1, max_chars=10)
    coco, per_image = _load(json_path)
    _check_boxes(coco, per_image, image_dir, vertical=False)


def test_cli_synth_lines(tmp_path, capsys):
    out = tmp_path / "cli" / "lines.json"
    rc = cli_main(
        ["synth-lines", "--out", str(out), "--n-lines", "3", "--max-chars", "12", "--seed", "5"]
    )
    assert rc == 0 and out.is_file()
    assert len(json.loads(out.read_text())["images"]) == 3
    rc = cli_main(["synth-lines", "--out", str(out), "--text-source", str(tmp_path / "none.txt")])
    assert rc == 1 and "none.txt" in capsys.readouterr().err


def _list_rules(tmp_path, config: dict) -> subprocess.CompletedProcess:
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
    cmd += ["--directory", str(tmp_path), "--configfile", str(tmp_path / "c.yaml"), "--list-rules"]
    return run(cmd, timeout=120)


def test_synth_rule_only_for_the_synthetic_dataset(tmp_path):
    own = _list_rules(tmp_path, {"dataset": {"coco_json": "mine.json", "image_dir": "imgs"}})
    assert own.returncode == 0, own.stderr[-2000:]
    assert "render_glyphs" in own.stdout and "synth_lines" not in own.stdout
    mismatch = _list_rules(tmp_path, {"dataset": {"image_dir": "elsewhere"}})
    assert (
        mismatch.returncode != 0
        and "dataset.image_dir must be" in mismatch.stdout + mismatch.stderr
    )
