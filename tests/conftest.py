"""Shared test fixtures: tiny synthetic COCO datasets made by `effocr.synth.lines.synth_lines`.

`tiny_coco` is the default English set (12 lines, seed 0); `tiny_coco_factory(...)` makes
other sizes or languages. Both are session-scoped and cached by their arguments, so each
dataset is generated once per test run. Treat them as read-only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from effocr.synth.lines import synth_lines

TinyCoco = tuple[Path, Path]


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
