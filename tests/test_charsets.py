"""Charsets: shipped files, the file format, non-BMP labels, the render charset of a config."""

from __future__ import annotations

import string
import unicodedata

import pytest

from effocr.config import validate_config
from effocr.synth.charsets import (
    ASCII_CHARS,
    HIRAGANA,
    JP_PUNCTUATION,
    KATAKANA,
    add_ligatures,
    charset_from_text,
    jis_characters,
    load_charset,
    parse_charset,
    resolve_charset,
    shipped_charset_path,
    write_charset,
)
from effocr.utils import EffOCRError, label_to_codepoints


def test_en_charset_is_ascii_digits_letters_punctuation():
    chars = load_charset("en")
    assert len(chars) == 94
    assert set(chars) == set(string.digits + string.ascii_letters + string.punctuation)
    assert " " not in chars and len(set(chars)) == len(chars)


def test_shipped_file_lines_are_code_points_with_the_char():
    for line in shipped_charset_path("en").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            continue
        code, char = line.split("\t")
        assert code == label_to_codepoints(char)


def test_jp_small_is_ascii_kana_punctuation_and_the_2136_joyo_kanji():
    chars = load_charset("jp_small")
    rest = [c for c in chars if c not in set(ASCII_CHARS + JP_PUNCTUATION + HIRAGANA + KATAKANA)]
    assert len(rest) == 2136
    assert all(0x4E00 <= ord(c) <= 0x9FFF for c in rest)
    # Added in the 2010 revision / official forms, and removed by it.
    assert {"俺", "丼", "鬱", "塡", "剝", "叱"} <= set(rest)
    assert not {"勺", "銑", "脹", "錘", "匁"} & set(rest)
    assert {"あ", "ン", "ー", "、", "。", "「", "A", "7"} <= set(chars)


def test_jp_full_is_reproducible_and_covers_jp_small():
    shipped = load_charset("jp_full")
    assert shipped == jis_characters()
    assert 13000 < len(shipped) < 16000
    assert set(load_charset("jp_small")) <= set(shipped)
    non_bmp = [c for c in shipped if ord(c) > 0xFFFF]
    assert "\U00020b9f" in non_bmp  # JIS X 0213's official form of 叱
    assert not [c for c in shipped if unicodedata.category(c) in ("Co", "Cc", "Zs")]


def test_non_bmp_and_multi_code_point_labels_round_trip(tmp_path):
    labels = ["A", "\U00020b9f", "か\u309a", "\u3000", "\t"]
    path = write_charset(tmp_path / "c.txt", labels, header="test\ncharset")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# test\n# charset\n")
    assert "U+20B9F\t\U00020b9f" in text and "U+304B_U+309A" in text
    assert load_charset(path) == labels


def test_parse_accepts_comments_blank_lines_and_drops_duplicates():
    assert parse_charset("# c\n\nU+0041\tA\nu+0042\nU+0041\n") == ["A", "B"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("U+0041\nA\n", "line 2"),
        ("U+ZZZZ\n", "line 1"),
        ("# only a comment\n", "empty"),
        ("U+110000\n", "line 1"),
    ],
)
def test_malformed_charset_names_file_and_line(tmp_path, text, needle):
    path = tmp_path / "bad.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(EffOCRError, match=needle) as err:
        load_charset(path)
    assert "bad.txt" in str(err.value)


def test_unknown_charset_name():
    with pytest.raises(EffOCRError, match="neither a file nor a shipped charset"):
        load_charset("klingon")


def test_charset_from_text_keeps_first_occurrence_order():
    assert charset_from_text("ba b\nc a") == ["b", "a", "c"]


def _charset_settings(config: dict) -> tuple:
    render = config["render"]
    return (
        render["charset"],
        render["charset_from_text"],
        config["language"],
        config["synth"]["text_source"],
        render["ligatures"],
    )


def test_resolve_charset_from_config(tmp_path):
    en = validate_config({})
    assert resolve_charset(*_charset_settings(en)) == load_charset("en")
    custom = tmp_path / "c.txt"
    write_charset(custom, list("xyz"))
    custom_cfg = validate_config({"render": {"charset": str(custom)}})
    assert resolve_charset(*_charset_settings(custom_cfg)) == ["x", "y", "z"]
    jp_cfg = {"language": "jp", "render": {"charset_from_text": True, "charset": "jp_full"}}
    jp = resolve_charset(*_charset_settings(validate_config(jp_cfg)))
    assert set(HIRAGANA) <= set(jp) and {"蜘", "蛛", "糸", "0"} <= set(jp)
    assert 300 < len(jp) < 800 and " " not in jp and "　" not in jp
    # With jp_small, the text's rarer kanji (not jōyō) are left out.
    small = resolve_charset(
        *_charset_settings(
            validate_config({"language": "jp", "render": {"charset_from_text": True}})
        )
    )
    assert set(small) == set(jp) & set(load_charset("jp_small")) and "蜘" not in small
    text = tmp_path / "t.txt"
    text.write_text("# comment\nabc cab\n", encoding="utf-8")
    cfg = validate_config(
        {"render": {"charset_from_text": True}, "synth": {"text_source": str(text)}}
    )
    assert resolve_charset(*_charset_settings(cfg))[:3] == ["a", "b", "c"]


def test_ligatures_are_appended_to_the_render_charset(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("fit flit\n", encoding="utf-8")
    cfg = validate_config(
        {
            "render": {"charset_from_text": True, "ligatures": ["fi", "fl"]},
            "synth": {"text_source": str(text)},
        }
    )
    settings = _charset_settings(cfg)
    drawn = resolve_charset(*settings[:4], ())  # what synthetic lines draw: characters only
    assert drawn[:4] == ["f", "i", "t", "l"] and all(len(c) == 1 for c in drawn)
    with_ligatures = resolve_charset(*settings)
    assert with_ligatures == drawn + ["fi", "fl"]
    assert add_ligatures(with_ligatures, ["fl", "it"]) == with_ligatures + ["it"]
    path = write_charset(tmp_path / "c.txt", with_ligatures)
    assert load_charset(path) == with_ligatures  # multi-code-point labels round-trip
    assert "U+0066_U+0069\tfi" in path.read_text(encoding="utf-8")


def test_bad_ligatures_are_named():
    with pytest.raises(EffOCRError) as err:
        add_ligatures(list("abcf"), ["ab", "f", "a b", "fi", "ſt"])
    msg = str(err.value)
    assert "'f' is not two or more" in msg and "'a b' is not two or more" in msg
    assert "'fi' has 'i', not in the charset" in msg and "'ſt' has 'ſt'" in msg
    assert "'ab'" not in msg
    with pytest.raises(EffOCRError, match="render/ligatures/0: 'f' does not match"):
        validate_config({"render": {"ligatures": ["f"]}})
