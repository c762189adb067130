"""The schema's defaults as the keyword arguments of library functions that take config
values without defaults of their own (config/schema.yaml is the one place defaults live):
tests call them as a default config would, overriding what they check."""

from __future__ import annotations

from typing import Any

from effocr.config import section_defaults


def synth_line_knobs(**given: Any) -> dict[str, Any]:
    """`synth_lines`'s `synth` section keywords (not `n_lines`, the paths, `text_source`)."""
    synth = section_defaults("synth")
    keys = ("font_sizes", "max_chars", "vertical_fraction", "degrade", "style")
    return {**{k: synth[k] for k in keys}, **given}


def render_knobs(**given: Any) -> dict[str, Any]:
    """`render_glyphs`'s `render` section keywords (`size`, `padding`, `mode`)."""
    render = section_defaults("render")
    return {**{k: render[k] for k in ("size", "padding", "mode")}, **given}
