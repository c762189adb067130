"""Font discovery, cmap coverage (.ttf and .ttc) and the placeholder-glyph filter."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
from conftest import missing_dependency

from effocr.synth.charsets import load_charset
from effocr.synth.fonts import (
    covering_fonts,
    default_font_dirs,
    find_fonts,
    font_chars,
    matplotlib_font_dir,
    tofu_filter,
    usable_chars,
)
from effocr.utils import EffOCRError

MPL = matplotlib_font_dir()


@pytest.fixture(autouse=True)
def _matplotlib_fonts() -> None:
    # matplotlib is a dependency: its fonts missing means a broken install, which CI must see.
    if MPL is None:
        missing_dependency("matplotlib's fonts not found")


def test_default_dirs_start_with_matplotlib_and_exist():
    dirs = default_font_dirs()
    assert dirs[0] == MPL
    assert all(d.is_dir() for d in dirs)


def test_find_fonts_is_deterministic_with_unique_stems():
    a = find_fonts(None)
    assert a == find_fonts(None)
    stems = [f.stem for f in a]
    assert len(stems) == len(set(stems))
    assert "DejaVuSans" in stems
    assert all(f.suffix.lower() in (".ttf", ".otf", ".ttc") for f in a)


def test_include_exclude_globs_match_stems_case_insensitively():
    got = [
        f.stem for f in find_fonts([MPL], include=["dejavusans*"], exclude=["*Bold*", "*Oblique"])
    ]
    assert "DejaVuSans" in got and "DejaVuSansMono" in got
    assert not [
        s for s in got if "Bold" in s or s.endswith("Oblique") or not s.startswith("DejaVuSans")
    ]


def test_symlinks_and_repeated_stems_are_skipped(tmp_path, caplog):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    src = MPL / "DejaVuSans.ttf"
    shutil.copy(src, tmp_path / "a" / "DejaVuSans.ttf")
    (tmp_path / "a" / "link.ttf").symlink_to(tmp_path / "a" / "DejaVuSans.ttf")  # same file again
    shutil.copy(MPL / "DejaVuSerif.ttf", tmp_path / "b" / "DejaVuSans.ttf")  # same stem
    (tmp_path / "a" / "notes.txt").write_text("not a font")
    with caplog.at_level(logging.WARNING):
        got = find_fonts([tmp_path / "a", tmp_path / "b", tmp_path / "missing"])
    assert [f.name for f in got] == ["DejaVuSans.ttf"]
    assert "missing" in caplog.text


def test_font_chars_reads_the_cmap():
    chars = font_chars(MPL / "DejaVuSans.ttf")
    assert set(load_charset("en")) <= chars
    assert "蜘" not in chars


def test_font_chars_of_a_collection_is_its_first_face(tmp_path):
    from fontTools.ttLib import TTFont
    from fontTools.ttLib.ttCollection import TTCollection

    coll = TTCollection()
    coll.fonts = [TTFont(MPL / "DejaVuSansMono.ttf"), TTFont(MPL / "cmr10.ttf")]
    coll.save(tmp_path / "pair.ttc")
    assert font_chars(tmp_path / "pair.ttc") == font_chars(MPL / "DejaVuSansMono.ttf")


def test_broken_and_missing_fonts_are_clear_errors(tmp_path, caplog):
    bad = tmp_path / "Broken.ttf"
    bad.write_bytes(b"this is not a font")
    with pytest.raises(EffOCRError, match="Broken.ttf"):
        font_chars(bad)
    with pytest.raises(EffOCRError, match="not found"):
        font_chars(tmp_path / "nope.ttf")
    with caplog.at_level(logging.WARNING):
        assert covering_fonts([bad, MPL / "DejaVuSans.ttf"], "abc", 1.0) == [MPL / "DejaVuSans.ttf"]
    assert "Broken.ttf" in caplog.text


def test_covering_fonts_uses_the_coverage_threshold():
    fonts = [MPL / "DejaVuSans.ttf", MPL / "STIXSizOneSymReg.ttf"]
    assert covering_fonts(fonts, load_charset("en"), 0.9) == [MPL / "DejaVuSans.ttf"]
    assert len(covering_fonts(fonts, load_charset("en"), 0.0)) == 2
    # A ligature label counts as its letters: DejaVu Sans covers all of them.
    ligatures = load_charset("en") + ["fi", "ffl"]
    assert covering_fonts(fonts, ligatures, 1.0) == [MPL / "DejaVuSans.ttf"]


def test_tofu_filter_drops_repeated_and_empty_renders():
    box = np.zeros((5, 5), np.uint8)
    images = {"a": box, "b": box.copy(), "c": box.copy(), "d": np.eye(5, dtype=np.uint8), "e": None}
    assert tofu_filter(images) == {"d"}
    assert tofu_filter({"a": box, "b": box.copy()}) == {"a", "b"}  # a pair may look alike


def test_usable_chars_rejects_placeholder_fonts_and_inkless_glyphs():
    en = load_charset("en")
    # LastResort maps every character to its block's placeholder glyph.
    assert set(en) <= font_chars(MPL / "LastResortHE-Regular.ttf")
    assert usable_chars(MPL / "LastResortHE-Regular.ttf", en) == set()
    assert usable_chars(MPL / "DejaVuSans.ttf", en) == set(en)
    # In the cmap but drawing nothing (zero width space), or whitespace: not usable.
    assert "\u200b" in font_chars(MPL / "DejaVuSans.ttf")
    assert usable_chars(MPL / "DejaVuSans.ttf", ["\u200b", " ", "A", "蜘"]) == {"A"}


@pytest.mark.usefixtures("needs_ipa_fonts")
def test_cjk_font_covers_jp_small():
    chars = font_chars("/usr/share/fonts/opentype/ipafont-mincho/ipam.ttf")
    jp = load_charset("jp_small")
    assert len(set(jp) & chars) / len(jp) > 0.99
