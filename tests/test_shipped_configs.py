"""Each shipped config, read as `snakemake --configfile X` reads it (X merged over the Snakefile's
config/config.yaml), finds fonts for its synthetic lines and its reference index.

The English demo pins its fonts in config/config.yaml; a config for another script that does
not override those pins would draw no line at all (make demo-jp failed so once).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from effocr.config import config_sections, deep_merge
from effocr.profiles import get_profile
from effocr.recognizer.dataset import resolve_reference_fonts
from effocr.synth.charsets import resolve_charset
from effocr.synth.fonts import font_chars
from effocr.synth.lines import line_fonts_from_config
from effocr.synth.render import reference_font_stems, resolve_fonts, select_fonts
from tests.conftest import require_ipa_fonts

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE_CONFIG = REPO / "config" / "config.yaml"


def _read(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _as_snakemake_reads(path: Path) -> dict:
    base = _read(SNAKEFILE_CONFIG)
    return base if path == SNAKEFILE_CONFIG else deep_merge(base, _read(path))


@pytest.mark.parametrize(
    "path",
    sorted(p for p in (REPO / "config").glob("*.yaml") if p.name != "schema.yaml"),
    ids=lambda p: p.name,
)
def test_shipped_config_finds_line_and_reference_fonts(path, monkeypatch):
    monkeypatch.chdir(REPO)  # text_source and the like are relative to the workflow folder
    raw = _as_snakemake_reads(path)
    sections = config_sections(raw, source=str(path))
    if sections.run.language == "jp":
        require_ipa_fonts()
    charset = resolve_charset(
        sections.render.charset,
        sections.render.charset_from_text,
        sections.run.language,
        sections.synth.text_source,
        sections.render.ligatures,
    )
    rendered = select_fonts(
        resolve_fonts(sections.fonts, charset),
        sections.fonts.max_fonts,
        keep=reference_font_stems(sections.fonts, sections.run.language),
        seed=sections.run.seed,
    )
    reference = resolve_reference_fonts(
        [f.stem for f in rendered],
        sections.fonts.reference,
        get_profile(sections.run.language).reference_fonts,
    )
    line_fonts = line_fonts_from_config(
        charset, fonts=sections.fonts, synth=sections.synth, run=sections.run
    )
    # The fonts must cover the script itself, not only pass a loose filter: every reference
    # and line font draws most of the charset.
    for font in [f for f in rendered if f.stem in reference] + line_fonts:
        covered = len(set(charset) & font_chars(font)) / len(charset)
        assert covered >= sections.fonts.min_coverage, (path.name, font, covered)
