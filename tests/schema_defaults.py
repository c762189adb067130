"""The schema's defaults as the keyword arguments of library functions that take config
values without defaults of their own (config/schema.yaml is the one place defaults live):
tests call them as a default config would, overriding what they check."""

from __future__ import annotations

import os
from typing import Any

from effocr.config import deep_merge, section_defaults


def synth_line_knobs(**given: Any) -> dict[str, Any]:
    """`synth_lines`'s `synth` section keywords (not `n_lines`, the paths, `text_source`)."""
    synth = section_defaults("synth")
    keys = ("font_sizes", "max_chars", "vertical_fraction", "degrade", "style")
    return {**{k: synth[k] for k in keys}, **given}


# The dataset's category names as `index_coco`/`validate_coco`/`crop_glyphs` keywords.
CATEGORIES = {k: section_defaults("dataset")[k] for k in ("char_category", "word_category")}


def at_images(config: dict | None, image_dir: str | os.PathLike) -> dict:
    """`config` with `dataset.image_dir` set: the folder a test's line images are in (what
    `train_localizer` and `export_bundle` read them from)."""
    return deep_merge(config or {}, {"dataset": {"image_dir": str(image_dir)}})
