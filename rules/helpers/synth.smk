# Helpers of rules/synth.smk (kept apart from the rules: Snakemake's linter wants
# functions and rules in separate files). Included by rules/synth.smk itself, so the stage
# file works whatever the order of the includes in the Snakefile.

import functools

# section_defaults: the synthetic base's dataset (rules/synth.smk).
from effocr.config import section_defaults
from effocr.synth.charsets import SHIPPED as SHIPPED_CHARSETS
from effocr.synth.charsets import resolve_charset
from effocr.synth.fonts import section_fonts
from effocr.utils import sha256_json
from effocr.warm_start import synthetic_base_sections

SYNTH_JSON = config["synth"]["coco_json"]
SYNTH_IMAGES = os.path.join(os.path.dirname(SYNTH_JSON), "images")
# What the render charset is resolved from (effocr.synth.charsets.resolve_charset).
CHARSET_SETTINGS = (
    config["render"]["charset"],
    config["render"]["charset_from_text"],
    config["language"],
    config["synth"]["text_source"],
    (),  # synthetic lines draw no ligatures; render_glyphs adds them
)


@functools.cache
def render_charset_hash():
    """Hash of the resolved render charset without `render.ligatures`, the characters synthetic
    lines draw (a param: editing a charset file reruns renders and lines; render_glyphs has the
    ligatures in its `render` params)."""
    return sha256_json(resolve_charset(*CHARSET_SETTINGS))[:16]


@functools.cache
def font_files_hash():
    """Hash of the font files the `fonts` section finds (stem, size): new fonts rerun renders."""
    found = section_fonts(SECTIONS.fonts)
    return sha256_json([[f.stem, f.stat().st_size] for f in found])[:16]


def charset_input_files():
    """User files the render charset is read from (a shipped name is no file)."""
    render, text_source = config["render"], config["synth"]["text_source"]
    files = []
    if render["charset"] and render["charset"] not in SHIPPED_CHARSETS:
        files.append(render["charset"])
    if render["charset_from_text"] and text_source:
        files.append(text_source)
    return files


# The `fonts` keys synthetic lines and pages use (not the reference or max_fonts of the
# renders), and the `render` keys: only the charset (not size, padding or mode).
LINE_FONT_KEYS = ("dirs", "include", "exclude", "min_coverage")
LINE_CHARSET_KEYS = ("charset", "charset_from_text")
# The `synth` keys that shape the lines (pretrain_below decides whether a base is trained on
# them, and base how, not what they are).
SYNTH_LINE_KEYS = tuple(
    k for k in config["synth"] if k not in ("pretrain_below", "base")
)


def text_source_for_renders():
    """`synth.text_source` matters to renders only with `render.charset_from_text`."""
    if config["render"]["charset_from_text"]:
        return config["synth"]["text_source"]
    return None


def synthetic_base_settings():
    """The synthetic base's `recognizer` and `localizer` sections (synth.base over the run's)."""
    try:
        return synthetic_base_sections(config)
    except EffOCRError as exc:
        raise WorkflowError(str(exc)) from None
