"""effocr.profiles: the named language profiles and what differs between English and Japanese."""

from __future__ import annotations

import dataclasses

import pytest

from effocr.profiles import PROFILES, Profile, get_profile
from effocr.synth.charsets import load_charset, shipped_charset_path
from effocr.synth.text import shipped_text_path
from effocr.utils import EffOCRError


@pytest.mark.parametrize("name", ["fr", "", "EN", "japan", "eng"])
def test_unknown_language_raises_naming_it(name):
    with pytest.raises(EffOCRError) as info:
        get_profile(name)
    message = str(info.value)
    assert repr(name) in message
    # The message lists the known profiles so the user can fix the config.
    assert "'en'" in message and "'jp'" in message


def test_known_profiles_are_returned_by_name():
    assert sorted(PROFILES) == ["en", "jp"]
    for name in PROFILES:
        profile = get_profile(name)
        assert isinstance(profile, Profile)
        assert profile.name == name
        assert profile is PROFILES[name]


def test_profiles_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_profile("en").allows_vertical = True  # type: ignore[misc]


def test_en_is_horizontal_with_spaces_and_many_passes():
    en = get_profile("en")
    assert en.allows_vertical is False
    assert en.spaces is True
    assert en.num_passes == 10
    assert en.render_mode == "ascender"
    assert en.localizer_classes == ("char", "word")
    assert en.tesseract_lang == "eng"


def test_jp_is_vertical_without_spaces_and_one_pass():
    jp = get_profile("jp")
    assert jp.allows_vertical is True
    assert jp.spaces is False
    assert jp.num_passes == 1
    assert jp.render_mode == "centered"
    # Japanese has no word boxes: the localizer predicts characters only.
    assert jp.localizer_classes == ("char",)
    assert jp.tesseract_lang == "jpn"


def test_en_and_jp_differ_where_the_languages_differ():
    en, jp = get_profile("en"), get_profile("jp")
    for attr in (
        "charset",
        "reference_fonts",
        "render_mode",
        "allows_vertical",
        "spaces",
        "localizer_classes",
        "num_passes",
        "tesseract_lang",
        "text_source",
    ):
        assert getattr(en, attr) != getattr(jp, attr), attr
    assert en.num_passes > jp.num_passes


def test_reference_fonts_are_serif_and_language_specific():
    en, jp = get_profile("en"), get_profile("jp")
    assert en.reference_fonts[0] == "NotoSerif-Regular"
    assert "DejaVuSerif" in en.reference_fonts
    assert jp.reference_fonts[0] == "NotoSerifCJKjp-Regular"
    assert "ipam" in jp.reference_fonts
    assert not set(en.reference_fonts) & set(jp.reference_fonts)
    for profile in (en, jp):
        assert len(set(profile.reference_fonts)) == len(profile.reference_fonts)
        # Stems, not paths or file names.
        assert all("/" not in s and "." not in s for s in profile.reference_fonts)


def test_charsets_name_shipped_files_of_the_right_script():
    en, jp = get_profile("en"), get_profile("jp")
    assert en.charset == "en" and jp.charset == "jp_small"
    for profile in (en, jp):
        assert shipped_charset_path(profile.charset).is_file()
    en_chars = load_charset(en.charset)
    jp_chars = load_charset(jp.charset)
    assert all(len(c) == 1 and ord(c) < 128 for c in en_chars)
    assert "あ" in jp_chars and "ア" in jp_chars
    assert any(0x4E00 <= ord(c[0]) <= 0x9FFF for c in jp_chars)  # kanji


def test_text_sources_are_shipped():
    assert get_profile("en").text_source == "en.txt"
    assert get_profile("jp").text_source == "jp.txt"
    for name in PROFILES:
        assert shipped_text_path(name).is_file()


def test_augment_defaults_differ_in_erosion_and_translation():
    en, jp = get_profile("en").augment, get_profile("jp").augment
    assert set(en) == set(jp)
    # Erosion/dilation destroys the thin strokes of dense kanji: off for Japanese.
    assert en["erode_dilate_p"] > 0 and jp["erode_dilate_p"] == 0
    assert jp["translate"] > en["translate"]
    for aug in (en, jp):
        lo, hi = aug["scale"]
        assert 0 < lo <= hi
        for key, value in aug.items():
            if key.endswith("_p"):
                assert 0.0 <= value <= 1.0, key
