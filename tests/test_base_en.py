"""The base English model's data: pinned demo fonts, the shipped corpus, print-style lines and
their scan look, config/base-en.yaml and `make model-en`."""

from __future__ import annotations

import json
import random
import shutil
import string
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import missing_dependency
from PIL import Image
from schema_defaults import synth_line_knobs

import effocr.synth.fonts as fonts_module
from effocr.config import config_sections, load_config
from effocr.recognizer.dataset import resolve_reference_fonts
from effocr.synth.charsets import load_charset, resolve_charset
from effocr.synth.degrade import degrade_print
from effocr.synth.fonts import covering_fonts, default_font_dirs, find_fonts, matplotlib_font_dir
from effocr.synth.lines import _hyphen_split, line_fonts_from_config, synth_lines
from effocr.synth.text import read_text_source
from effocr.utils import EffOCRError

REPO = Path(__file__).resolve().parents[1]
MPL = matplotlib_font_dir()
CORPUS = REPO / "effocr" / "resources" / "text" / "devils-dictionary.txt"


# --- pinned demo fonts ---------------------------------------------------------------------


def _resolved_fonts(config: dict) -> tuple[list[Path], list[Path], list[str]]:
    """What the demo's rules resolve: render fonts, line fonts, reference stem(s)."""
    fc = config["fonts"]
    charset = resolve_charset(
        config["render"]["charset"],
        config["render"]["charset_from_text"],
        config["language"],
        config["synth"]["text_source"],
        config["render"]["ligatures"],
    )
    dirs = fc["dirs"] if fc["dirs"] is not None else default_font_dirs()
    renders = covering_fonts(
        find_fonts(dirs, include=fc["include"], exclude=fc["exclude"]),
        charset,
        fc["min_coverage"],
    )
    lines = line_fonts_from_config(charset, **config_sections(config).pick("fonts", "synth", "run"))
    reference = resolve_reference_fonts(
        [f.stem for f in renders], fc["reference"], ("NotoSerif-Regular", "DejaVuSerif")
    )
    return renders, lines, reference


def _add_fonts(system: Path) -> None:
    """New font files in a searched folder, named like faces the profile and curated lists want."""
    extra = system / "truetype" / "new"
    extra.mkdir(parents=True)
    for stem in (
        "NotoSerif-Regular",
        "LiberationSerif-Regular",
        "UnifrakturMaguntia",
        "DejaVuSansZ",
    ):
        shutil.copy(MPL / "DejaVuSerif.ttf", extra / f"{stem}.ttf")


def test_added_fonts_leave_the_demo_fonts_unchanged(tmp_path, monkeypatch):
    system = tmp_path / "system"
    system.mkdir()
    monkeypatch.setattr(fonts_module, "SYSTEM_FONT_DIRS", [str(system)])
    demo = load_config(REPO / "config" / "config.yaml")
    unpinned = load_config(None)
    before, before_unpinned = _resolved_fonts(demo), _resolved_fonts(unpinned)
    assert [f.stem for f in before[1]] == [
        "DejaVuSans-Bold",
        "DejaVuSans",
        "DejaVuSansMono",
        "DejaVuSerif-Italic",
        "DejaVuSerif",
    ]
    assert before[2] == ["DejaVuSerif"]
    assert len(before[0]) >= 20  # matplotlib's DejaVu, STIX and Computer Modern at least

    _add_fonts(system)
    assert _resolved_fonts(demo) == before
    # Without the pins the same new files change renders, line fonts and the reference font:
    # what the pins are for.
    renders, lines, reference = _resolved_fonts(unpinned)
    assert len(renders) == len(before_unpinned[0]) + 4
    assert "LiberationSerif-Regular" in {f.stem for f in lines}
    assert reference == ["NotoSerif-Regular"]


def test_line_fonts_select_among_the_fonts_section(tmp_path):
    config = load_config(
        None,
        {
            "fonts": {"dirs": [str(MPL)], "include": ["DejaVuS*"]},
            "synth": {"line_fonts": ["dejavuserif", "DejaVuSans-Bold", "STIX*"]},
        },
    )
    sections = config_sections(config).pick("fonts", "synth", "run")
    got = [f.stem for f in line_fonts_from_config(load_charset("en"), **sections)]
    # STIX is not among the fonts `fonts.include` selects, so it is not a line font either.
    assert got == ["DejaVuSans-Bold", "DejaVuSerif"]
    config["synth"]["line_fonts"] = ["NoSuchFont"]
    sections = config_sections(config).pick("fonts", "synth", "run")
    with pytest.raises(EffOCRError, match="synth.line_fonts"):
        line_fonts_from_config(load_charset("en"), **sections)


# --- corpus ---------------------------------------------------------------------------------


def test_shipped_corpus_is_running_print_text():
    text = read_text_source(CORPUS)
    assert 300_000 < len(text) < 600_000
    assert text.startswith("PREFACE The Devil's Dictionary was begun in a weekly paper in 1881")
    assert text.endswith("the domestic cow sheds its horn every two years.")
    assert "public domain" not in text.lower()[:1000]  # the header comments are gone
    assert "_" not in text and "  " not in text and "\n" not in text
    charset = set(load_charset("en"))
    assert set(text) - {" "} <= charset  # nothing is lost to the charset
    words = text.split(" ")
    assert len(words) > 55_000
    assert sum(w[:1].isupper() for w in words) / len(words) > 0.08  # mixed case
    assert sum(w.isupper() and len(w) > 2 for w in words) > 900  # the entries' headwords
    assert sum(c.isdigit() for c in text) > 100
    for mark in ",.;:!?'\"()-":
        assert mark in text
    readme = (CORPUS.parent / "README.md").read_text(encoding="utf-8")
    assert "devils-dictionary.txt" in readme and "dict-devil" in readme
    assert "public domain" in readme


# --- scan look ------------------------------------------------------------------------------


def _coverage(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    alpha = np.zeros((40, 200), np.uint8)
    for x in range(10, 190, 14):
        alpha[10:30, x : x + 4] = 255  # strokes
        alpha[28:30, x : x + 9] = 255
    alpha[rng.random(alpha.shape) < 0.02] = 128  # anti-aliased fringes
    return alpha


def test_degrade_print_is_deterministic_with_its_seeds():
    alpha = _coverage()
    a = degrade_print(alpha, 30, random.Random(7), np.random.default_rng(7))
    b = degrade_print(alpha, 30, random.Random(7), np.random.default_rng(7))
    assert a.dtype == np.uint8 and a.shape == alpha.shape
    np.testing.assert_array_equal(a, b)
    outs = [degrade_print(alpha, 30, random.Random(s), np.random.default_rng(s)) for s in range(40)]
    # Clean bilevel draws can coincide; most differ.
    assert len({o.tobytes() for o in outs}) >= 30
    # Both looks occur: bilevel scans and grey ones, and the ink stays darker than the paper.
    bilevel = [set(np.unique(o)) <= {0, 255} for o in outs]
    assert 5 <= sum(bilevel) <= 35
    ink, paper = alpha == 255, alpha == 0
    for o in outs:
        assert o[ink].mean() + 60 < o[paper].mean()


# --- print-style lines ----------------------------------------------------------------------


def test_hyphen_split_breaks_between_syllables():
    assert _hyphen_split("foreordination", 9) == "foreordi-"  # the longest head that fits
    assert _hyphen_split("foreordination", 5) == "fo-"
    assert _hyphen_split("foreordination", 2) is None  # no head of >= 2 letters fits
    assert _hyphen_split("abated", 20) == "aba-"  # >= 3 letters go to the next line
    assert _hyphen_split("1234567", 6) is None  # numbers are not hyphenated
    assert _hyphen_split("strength", 4) is None  # no vowel-consonant break fits


@pytest.fixture(scope="module")
def print_lines(tmp_path_factory):
    fonts = [MPL / "DejaVuSerif.ttf", MPL / "DejaVuSans.ttf", MPL / "cmr10.ttf"]
    outs = []
    for name in ("a", "b"):
        out = tmp_path_factory.mktemp(f"print_{name}") / "lines.json"
        synth_lines(
            out,
            60,
            "en",
            font_paths=fonts,
            seed=3,
            **synth_line_knobs(font_sizes=(14, 40), max_chars=60, style="print"),
            text_source=CORPUS,
            charset=load_charset("en"),
        )
        outs.append(out)
    return outs


def test_print_lines_are_deterministic_and_boxed(print_lines):
    a, b = print_lines
    assert a.read_bytes() == b.read_bytes()
    coco = json.loads(a.read_text(encoding="utf-8"))
    assert coco["info"]["style"] == "print"
    for im in coco["images"]:
        pa = a.parent / "images" / im["file_name"]
        assert pa.read_bytes() == (b.parent / "images" / im["file_name"]).read_bytes()
    chars = {}
    for ann in coco["annotations"]:
        if ann["category_id"] == 1:
            chars.setdefault(ann["image_id"], []).append(ann["bbox"])
    for im in coco["images"]:
        boxes = chars[im["id"]]
        assert len(boxes) == len(im["text"].replace(" ", ""))
        for x, y, w, h in boxes:
            assert x >= 0 and y >= 0 and x + w <= im["width"] and y + h <= im["height"]


def test_print_lines_vary_like_print(print_lines):
    coco = json.loads(print_lines[0].read_text(encoding="utf-8"))
    texts = [im["text"] for im in coco["images"]]
    assert any(t.endswith("-") and t[-2].isalpha() for t in texts)  # hyphenated line ends
    assert any(any(c in string.digits for c in t) for t in texts)
    # Lines cut tight and loose: line height over font size spreads widely.
    ratios = [im["height"] / im["font_size"] for im in coco["images"]]
    assert min(ratios) < 1.4 and max(ratios) > 1.8
    modes = []
    for im in coco["images"]:
        arr = np.asarray(
            Image.open(print_lines[0].parent / "images" / im["file_name"]).convert("L")
        )
        modes.append(set(np.unique(arr)) <= {0, 255})
    assert any(modes) and not all(modes)  # bilevel and grey lines


def test_unknown_style_is_a_clear_error(tmp_path):
    with pytest.raises(EffOCRError, match="style"):
        synth_lines(
            tmp_path / "l.json",
            2,
            "en",
            [MPL / "DejaVuSans.ttf"],
            seed=0,
            **synth_line_knobs(style="fancy"),
        )


# --- config/base-en.yaml and make model-en ---------------------------------------------------


def test_base_en_config_validates_and_differs_only_in_data_and_budgets():
    base = load_config(REPO / "config" / "base-en.yaml")
    demo = load_config(REPO / "config" / "config.yaml")
    assert base["synth"]["style"] == "print" and Path(base["synth"]["text_source"]) == Path(
        "effocr/resources/text/devils-dictionary.txt"
    )
    assert (REPO / base["synth"]["text_source"]).is_file()
    assert base["dataset"]["coco_json"] == base["synth"]["coco_json"]  # the workflow makes it
    data_and_budgets = {
        "results_dir",
        "dataset",
        "synth",
        "fonts",
        "split",
        "evaluate",
        ("localizer", "epochs"),
        ("recognizer", "epochs"),
        ("recognizer", "hard_negatives_epochs"),
        # Capacity is a budget too: the base model keeps the wider encoder the demo gave up
        # for speed (config/README.md, recognizer).
        ("recognizer", "encoder_args"),
        # The classes it reads: the ligatures of roman type, as a charset is data.
        ("render", "ligatures"),
        # How much of its training data goes into the reference index (the demo's 168 lines
        # gain nothing from it, config/README.md "Reference crops").
        ("recognizer", "reference_crops"),
        ("recognizer", "reference_crop_weight"),
        # The same data in more vectors per class (config/README.md, "Reference prototypes").
        ("recognizer", "reference_prototypes"),
        ("recognizer", "reference_prototype_weight"),
        # Training data too: each training box cut again with its ends moved (config/README.md,
        # "Jittered crops").
        ("crops", "jitter"),
        # Capacity: the localizer reads lines at 40 px, where UW3's periods and the gaps
        # between touching glyphs survive.
        ("localizer", "input_height"),
        # Training data too: heavy print's spread ink on a share of the localizer's lines.
        ("localizer", "ink_spread"),
        # Data: the word list of the lexicon, and how far the LM rereads with it
        # (config/README.md, "Lexicon"); more neighbours to reread from.
        ("lm", "lexicon"),
        ("lm", "lexicon_margin"),
        ("lm", "k"),
        # The line detector's synthetic pages (how many, at which resolutions) and epochs.
        ("line_detector", "n_train_pages"),
        ("line_detector", "dpi"),
        ("line_detector", "epochs"),
    }
    for section, value in base.items():
        if isinstance(value, dict) and section not in data_and_budgets:
            for key, v in value.items():
                if v != demo[section][key]:
                    assert (section, key) in data_and_budgets, (section, key)
        elif section not in data_and_budgets:
            assert value == demo[section], section
    raw = yaml.safe_load((REPO / "config" / "base-en.yaml").read_text(encoding="utf-8"))
    assert raw["results_dir"] != demo["results_dir"]


def test_make_model_en_trains_base_en_and_leaves_models_en():
    if shutil.which("make") is None:
        missing_dependency("make is not installed")
    out = subprocess.run(
        ["make", "-n", "model-en"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "--configfile config/base-en.yaml" in out
    assert "results-en/bundle models/en.tmp" in out and "mv models/en.tmp models/en" in out
    for package in (
        "fonts-urw-base35",
        "fonts-texgyre",
        "fonts-noto-core",
        "fonts-liberation",
        "wamerican",
    ):
        assert package in out  # installed by sysdeps
    ignored = subprocess.run(
        ["git", "check-ignore", "models/en/model.yaml", "results-en/x"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if ignored.returncode == 128:
        missing_dependency("not a git checkout")
    assert ignored.stdout.split() == ["models/en/model.yaml", "results-en/x"]
