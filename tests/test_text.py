"""effocr.synth.text: shipped public-domain texts and user text files for synthetic lines."""

from __future__ import annotations

import pytest

from effocr.synth.text import read_text_source, shipped_text_path
from effocr.utils import EffOCRError


def test_missing_file_raises(tmp_path):
    path = tmp_path / "nope.txt"
    with pytest.raises(EffOCRError, match="text source not found") as info:
        read_text_source(path)
    assert str(path) in str(info.value)


def test_non_utf8_file_raises(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    with pytest.raises(EffOCRError, match="not UTF-8") as info:
        read_text_source(path)
    assert str(path) in str(info.value)


def test_shift_jis_file_raises(tmp_path):
    path = tmp_path / "sjis.txt"
    path.write_bytes("吾輩は猫である".encode("shift_jis"))
    with pytest.raises(EffOCRError, match="not UTF-8"):
        read_text_source(path)


@pytest.mark.parametrize(
    "content",
    ["", "   \n\t\n", "# only a comment\n", "# one\n   # two, indented\n\n"],
    ids=["empty", "whitespace", "comment", "comments-and-blank"],
)
def test_file_without_text_raises(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EffOCRError, match="has no text") as info:
        read_text_source(path)
    assert str(path) in str(info.value)


def test_comments_dropped_and_whitespace_collapsed(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(
        "# header comment\nFour score  and\tseven\n\n   # indented comment\nyears ago.  \n",
        encoding="utf-8",
    )
    assert read_text_source(path) == "Four score and seven years ago."


def test_hash_inside_a_line_is_kept(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("item #1 and #2\n", encoding="utf-8")
    assert read_text_source(path) == "item #1 and #2"


def test_accepts_str_path_and_non_ascii(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("吾輩は\n猫である。\U0002000b\n", encoding="utf-8")
    assert read_text_source(str(path)) == "吾輩は 猫である。\U0002000b"


def test_shipped_text_paths():
    assert shipped_text_path("en").name == "en.txt"
    assert shipped_text_path("jp").name == "jp.txt"
    for lang in ("en", "jp"):
        assert shipped_text_path(lang).is_file()
    with pytest.raises(EffOCRError, match="'xx'"):
        shipped_text_path("xx")


def test_shipped_english_text_loads():
    text = read_text_source(shipped_text_path("en"))
    assert len(text) > 2000
    assert "#" not in text.split("When in the Course")[0]  # header comments gone
    assert "When in the Course of human events" in text
    assert "  " not in text and "\n" not in text and "\t" not in text
    assert text == text.strip()
    assert text.isascii()


def test_shipped_japanese_text_loads():
    text = read_text_source(shipped_text_path("jp"))
    assert len(text) > 500
    assert text.startswith("蜘蛛の糸")
    assert "Public-domain" not in text  # header comments gone
    assert "\n" not in text and "  " not in text
    assert sum(1 for c in text if "\u3040" <= c <= "\u30ff") > 100  # kana
    assert sum(1 for c in text if "\u4e00" <= c <= "\u9fff") > 100  # kanji
