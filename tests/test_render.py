"""Glyph renders: ascender vs centered modes, render_glyphs' folders, manifest and tofu filter."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from effocr.cli import main as cli_main
from effocr.config import config_sections, validate_config
from effocr.synth.charsets import load_charset
from effocr.synth.fonts import matplotlib_font_dir
from effocr.synth.render import render_glyph, render_glyphs, render_glyphs_from_config, select_fonts
from effocr.utils import EffOCRError, label_to_codepoints

MPL = matplotlib_font_dir()
SANS, SERIF = MPL / "DejaVuSans.ttf", MPL / "DejaVuSerif.ttf"


def _ink_rows_cols(img):
    arr = np.asarray(img.convert("L"))
    ys, xs = np.nonzero(arr < 128)
    return arr, ys, xs


def test_ascender_mode_keeps_the_vertical_position():
    comma, quote = (
        render_glyph(SERIF, ",", 64, "ascender", 0.05),
        render_glyph(SERIF, "'", 64, "ascender", 0.05),
    )
    assert comma.mode == "RGB" and comma.height == quote.height
    _, ys_c, _ = _ink_rows_cols(comma)
    _, ys_q, _ = _ink_rows_cols(quote)
    h = comma.height
    assert ys_c.mean() > 0.6 * h  # the comma sits on and below the baseline
    assert ys_q.mean() < 0.4 * h  # the apostrophe hangs from the cap height


def test_ascender_renders_share_the_line_height_and_pad_the_ink():
    heights = {render_glyph(SANS, c, 48, "ascender", 0.1).height for c in "Agjy,'.|"}
    assert len(heights) == 1
    img = render_glyph(SANS, "l", 48, "ascender", 0.1)
    arr, _, xs = _ink_rows_cols(img)
    pad = round(0.1 * 48)
    assert xs.min() in (pad, pad + 1) and img.width - 1 - xs.max() in (pad, pad + 1)
    assert arr[0].min() > 200 and arr[:, 0].min() == 255  # white background


def test_centered_mode_is_a_square_with_the_ink_centred():
    img = render_glyph(SANS, "i", 64, "centered", 0.05)
    assert img.width == img.height
    _, ys, xs = _ink_rows_cols(img)
    left, right = xs.min(), img.width - 1 - xs.max()
    top, bottom = ys.min(), img.height - 1 - ys.max()
    assert abs(left - right) <= 2 and abs(top - bottom) <= 2
    assert min(top, bottom) <= round(0.05 * 64) + 1  # tall glyph: padding on the long side


def test_render_glyph_errors():
    with pytest.raises(EffOCRError, match="unknown render mode"):
        render_glyph(SANS, "A", 32, "diagonal", 0.0)
    with pytest.raises(EffOCRError, match="U\\+200B draws no ink"):
        render_glyph(SANS, "\u200b", 32, "ascender", 0.0)


def _rows(manifest):
    with open(manifest, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_render_glyphs_writes_folders_and_manifest(tmp_path):
    charset = ["A", "b", ",", "'", "\u200b", "蜘"]
    out, manifest = tmp_path / "renders" / "glyphs", tmp_path / "renders" / "manifest.csv"
    render_glyphs(
        charset, [SANS, SERIF], out, manifest, size=32, padding=0.05, mode="ascender", seed=0
    )
    rows = _rows(manifest)
    assert list(rows[0]) == ["path", "codepoints", "source", "origin", "split"]
    # Every covered character with ink, in both fonts; no zero-width space, no uncovered CJK.
    assert len(rows) == 8
    assert {r["codepoints"] for r in rows} == {"U+0041", "U+0062", "U+002C", "U+0027"}
    assert {r["origin"] for r in rows} == {"DejaVuSans", "DejaVuSerif"}
    assert {(r["source"], r["split"]) for r in rows} == {("render", "train")}
    assert rows[0]["path"] == "glyphs/U+0041/DejaVuSans.png"
    assert all((manifest.parent / r["path"]).is_file() for r in rows)
    first = {r["path"]: (manifest.parent / r["path"]).read_bytes() for r in rows}
    render_glyphs(
        charset, [SANS, SERIF], out, manifest, size=32, padding=0.05, mode="ascender", seed=0
    )
    assert first == {r["path"]: (manifest.parent / r["path"]).read_bytes() for r in _rows(manifest)}


# How these tests render (the code defaults they were written with).
RENDER = {"size": 24, "padding": 0.05, "mode": "ascender", "seed": 0}


def test_render_glyphs_drops_placeholder_fonts(tmp_path):
    manifest = tmp_path / "manifest.csv"
    render_glyphs(
        list("abcdef"), [MPL / "LastResortHE-Regular.ttf", SANS], tmp_path / "g", manifest, **RENDER
    )
    assert {r["origin"] for r in _rows(manifest)} == {"DejaVuSans"}
    with pytest.raises(EffOCRError, match="no character of the charset"):
        render_glyphs(["蜘"], [SANS], tmp_path / "g2", tmp_path / "m2.csv", **RENDER)
    assert not (tmp_path / "m2.csv").exists()


def test_select_fonts_keeps_reference_and_is_seeded():
    fonts = [MPL / f"F{i}.ttf" for i in range(10)]
    a = select_fonts(fonts, 3, keep=["F7"], seed=1)
    assert len(a) == 3 and MPL / "F7.ttf" in a and a == sorted(a, key=fonts.index)
    assert a == select_fonts(fonts, 3, keep=["F7"], seed=1)
    assert {tuple(select_fonts(fonts, 3, seed=s)) for s in range(6)} != {tuple(a)}
    assert select_fonts(fonts, None, seed=0) == fonts


@pytest.mark.usefixtures("needs_ipa_fonts")
def _render_from_config(config: dict, tmp_path):
    """`render_glyphs_from_config` into `tmp_path`: (manifest, charset file)."""
    manifest = tmp_path / "renders" / "manifest.csv"
    charset_txt = tmp_path / "charset.txt"
    render_glyphs_from_config(
        tmp_path / "renders" / "glyphs",
        manifest,
        charset_txt,
        **config_sections(config).pick("render", "fonts", "run"),
        text_source=None,
        workers=1,
    )
    return manifest, charset_txt


def test_japanese_renders_from_config(tmp_path):
    config = validate_config(
        {
            "language": "jp",
            "fonts": {"include": ["ipam"]},
            "render": {"charset_from_text": True, "size": 24},
        }
    )
    manifest, charset_txt = _render_from_config(config, tmp_path)
    rows = _rows(manifest)
    assert {r["origin"] for r in rows} == {"ipam"}
    charset = load_charset(charset_txt)
    assert len(rows) >= 0.95 * len(charset)
    from PIL import Image

    sizes = {Image.open(manifest.parent / r["path"]).size for r in rows[:50]}
    assert all(w == h for w, h in sizes)  # centered mode for Japanese


def test_cli_render_glyphs(tmp_path, capsys):
    (tmp_path / "cs.txt").write_text("U+0078\tx\nU+0079\ty\n", encoding="utf-8")
    rc = cli_main(
        ["render-glyphs", "--out-dir", str(tmp_path / "g"), "--charset", str(tmp_path / "cs.txt")]
        + ["--fonts", str(SANS), "--size", "20", "--charset-out", str(tmp_path / "resolved.txt")]
    )
    assert rc == 0
    assert len(_rows(tmp_path / "manifest.csv")) == 2
    assert load_charset(tmp_path / "resolved.txt") == ["x", "y"]
    rc = cli_main(["render-glyphs", "--out-dir", str(tmp_path / "g"), "--charset", "nonexistent"])
    assert rc == 1
    assert "nonexistent" in capsys.readouterr().err


def test_ligature_classes_are_rendered_and_listed(tmp_path):
    config = validate_config(
        {
            "fonts": {"dirs": [str(MPL)], "include": ["DejaVuSerif"]},
            "render": {"charset_from_text": True, "ligatures": ["fi", "ffi"], "size": 32},
        }
    )
    manifest, charset_txt = _render_from_config(config, tmp_path)
    assert load_charset(charset_txt)[-2:] == ["fi", "ffi"]
    rows = {r["codepoints"]: r for r in _rows(manifest)}
    assert rows["U+0066_U+0069"]["path"] == "glyphs/U+0066_U+0069/DejaVuSerif.png"
    from PIL import Image

    width = {
        label: Image.open(manifest.parent / rows[label_to_codepoints(label)]["path"]).size[0]
        for label in ("f", "i", "fi", "ffi")
    }
    # One class image holds all the letters (shaped into the font's ligature where it has one).
    assert width["f"] < width["fi"] < width["ffi"] and width["i"] < width["fi"]
