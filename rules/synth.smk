# Rules of the synth stage (see docs/architecture.md): synthetic demo lines (only when the
# dataset is the synthetic one) and the glyph renders of the charset in every font.

import functools
import os

from effocr.synth.charsets import SHIPPED as SHIPPED_CHARSETS
from effocr.synth.charsets import resolve_charset
from effocr.synth.fonts import default_font_dirs, find_fonts
from effocr.utils import sha256_json

SYNTH_CODE = ("effocr.synth", *CORE_CODE)
SYNTH_JSON = config["synth"]["coco_json"]
SYNTH_IMAGES = os.path.join(os.path.dirname(SYNTH_JSON), "images")


@functools.cache
def render_charset_hash():
    """Hash of the resolved render charset (a param: editing a charset file reruns renders)."""
    return sha256_json(resolve_charset(config))[:16]


@functools.cache
def font_files_hash():
    """Hash of the font files the `fonts` section finds (stem, size): new fonts rerun renders."""
    fc = config["fonts"]
    dirs = fc["dirs"] if fc["dirs"] is not None else default_font_dirs()
    found = find_fonts(dirs, include=fc["include"], exclude=fc["exclude"])
    return sha256_json([[f.stem, f.stat().st_size] for f in found])[:16]


def charset_input_files():
    """User files the render charset is read from (a shipped name is no file)."""
    render, text_source = config["render"], config["synth"]["text_source"]
    if render["charset_from_text"]:
        return [text_source] if text_source else []
    if render["charset"] and render["charset"] not in SHIPPED_CHARSETS:
        return [render["charset"]]
    return []


def text_source_for_renders():
    """`synth.text_source` matters to renders only with `render.charset_from_text`."""
    if config["render"]["charset_from_text"]:
        return config["synth"]["text_source"]
    return None


if os.path.normpath(config["dataset"]["coco_json"]) == os.path.normpath(SYNTH_JSON):
    if os.path.normpath(config["dataset"]["image_dir"]) != os.path.normpath(
        SYNTH_IMAGES
    ):
        raise WorkflowError(
            f"dataset.coco_json is the synthetic set ({SYNTH_JSON}), so dataset.image_dir must be "
            f"{SYNTH_IMAGES}, not {config['dataset']['image_dir']}"
        )

    rule synth_lines:
        input:
            text=(
                [config["synth"]["text_source"]]
                if config["synth"]["text_source"]
                else []
            ),
            charset=charset_input_files(),
        output:
            coco_json=SYNTH_JSON,
            images=directory(SYNTH_IMAGES),
        log:
            log_path("synth_lines"),
        benchmark:
            benchmark_path("synth_lines")
        conda:
            ENVS["data"]
        container:
            CONTAINER
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        params:
            code=code_version(*SYNTH_CODE),
            language=config["language"],
            seed=config["seed"],
            synth=config["synth"],
            fonts=config["fonts"],
            render=config["render"],
            charset=render_charset_hash(),
            font_files=font_files_hash(),
        script:
            "../workflow_scripts/synth_lines.py"


rule render_glyphs:
    input:
        charset=charset_input_files(),
    output:
        renders=directory(PATHS["renders"]),
        manifest=PATHS["renders_manifest"],
        charset=PATHS["charset"],
    log:
        log_path("render_glyphs"),
    benchmark:
        benchmark_path("render_glyphs")
    conda:
        ENVS["data"]
    container:
        CONTAINER
    threads: 4
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        code=code_version(*SYNTH_CODE),
        language=config["language"],
        seed=config["seed"],
        fonts=config["fonts"],
        render=config["render"],
        text_source=text_source_for_renders(),
        charset=render_charset_hash(),
        font_files=font_files_hash(),
    script:
        "../workflow_scripts/render_glyphs.py"
