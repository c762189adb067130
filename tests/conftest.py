"""Shared test fixtures: tiny synthetic COCO datasets made by `effocr.synth.lines.synth_lines`.

`tiny_coco` is the default English set (12 lines, seed 0); `tiny_coco_factory(...)` makes
other sizes or languages. Both are session-scoped and cached by their arguments, so each
dataset is generated once per test run. Treat them as read-only.

Tests that need Tesseract or the IPA fonts call `require_tesseract()` / `require_ipa_fonts()`
(or use the `needs_tesseract` / `needs_ipa_fonts` fixtures). They skip when the dependency is missing,
unless EFFOCR_REQUIRE_ALL=1 (set by `.ci/run`): `make test` installs both, so in CI a missing
one is an install that went wrong, and the tests it guards must fail rather than vanish.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from effocr.synth.lines import synth_lines

TinyCoco = tuple[Path, Path]

REQUIRE_ALL = "EFFOCR_REQUIRE_ALL"
IPA_FONTS = (
    Path("/usr/share/fonts/opentype/ipafont-mincho/ipam.ttf"),
    Path("/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf"),
)


def missing_dependency(reason: str) -> None:
    """Skip the test, or fail it when EFFOCR_REQUIRE_ALL=1 (CI, where nothing may be missing)."""
    if os.environ.get(REQUIRE_ALL) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ALL}=1: `make sysdeps` should have installed it)")
    pytest.skip(reason)


def require_tesseract(lang: str = "eng") -> None:
    """Tesseract with the data of `lang` (`make sysdeps` installs eng and jpn)."""
    from effocr.tesseract import tesseract_status

    if shutil.which("tesseract") is None or not tesseract_status(lang).available:
        missing_dependency(f"Tesseract with the {lang!r} data is not installed")


def require_ipa_fonts() -> None:
    """The IPA Mincho and Gothic fonts (`make sysdeps`: fonts-ipafont-*)."""
    absent = [str(p) for p in IPA_FONTS if not p.is_file()]
    if absent:
        missing_dependency(f"IPA fonts not installed: {', '.join(absent)}")


@pytest.fixture
def needs_tesseract() -> None:
    require_tesseract("eng")


@pytest.fixture
def needs_ipa_fonts() -> None:
    require_ipa_fonts()


@pytest.fixture(scope="session")
def tiny_coco_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., TinyCoco]:
    """Return ``make(n_lines=12, language="en", seed=0, **synth_kwargs) -> (json_path, image_dir)``.

    Extra keyword arguments go to `synth_lines` (e.g. ``vertical_fraction=0.5``,
    ``max_chars=16``, ``degrade=False``, ``font_sizes=(20, 24)``).
    """
    cache: dict[tuple, TinyCoco] = {}

    def make(n_lines: int = 12, language: str = "en", seed: int = 0, **kwargs) -> TinyCoco:
        key = (n_lines, language, seed, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"coco_{language}_{n_lines}_{seed}") / "lines.json"
            synth_lines(out, n_lines, language=language, seed=seed, **kwargs)
            cache[key] = (out, out.parent / "images")
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_coco(tiny_coco_factory: Callable[..., TinyCoco]) -> TinyCoco:
    """12 English synthetic lines (seed 0): ``(json_path, image_dir)``."""
    return tiny_coco_factory(12, "en", 0)
