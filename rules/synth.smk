# Rules of the synth stage (see docs/architecture.md): synthetic demo lines (only when the
# dataset is the synthetic one) and the glyph renders of the charset in every font.


include: "helpers/synth.smk"


if SYNTHETIC_DATASET:
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
            **SECTIONS.params(
                "run",
                synth=SYNTH_LINE_KEYS,
                fonts=LINE_FONT_KEYS,
                render=LINE_CHARSET_KEYS,
            ),
            code=code_version("effocr.synth.lines"),
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
    # Renders in parallel processes, leaving a core to train_localizer (threads_beside_one).
    threads: threads_beside_one(4)
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        **SECTIONS.params("render", "fonts", "run"),
        code=code_version("effocr.synth.render"),
        text_source=text_source_for_renders(),
        charset=render_charset_hash(),
        font_files=font_files_hash(),
    script:
        "../workflow_scripts/render_glyphs.py"


if config["align"]["bundle"] == "synthetic" and SYNTHETIC_DATASET:
    raise WorkflowError(
        "align.bundle: synthetic aligns a dataset of your own lines; dataset.coco_json is "
        f"the synthetic set itself ({SYNTH_JSON})"
    )


# The synthetic base: the whole workflow again on the synthetic lines (synth_lines) under
# SYNTHETIC_BASE_DIR (rules/common.smk), its rules prefixed `synthetic_`. Its models start
# the trainers for `init_from: synthetic` (or `auto` on a small dataset); its bundle aligns
# round 1 for `align.bundle: synthetic`. Only the innermost align round defines it, so it is
# trained once.
if ALIGN_ROUNDS == 1 and (
    INIT_FROM == SYNTHETIC or config["align"]["bundle"] == "synthetic"
):

    module synthetic_base:
        snakefile:
            "../Snakefile"
        config:
            {
                **config,
                "results_dir": SYNTHETIC_BASE_DIR,
                "init_from": None,
                # The synthetic lines as synth_lines writes them: none of the user's dataset
                # settings (category names, import options) or split files apply to them.
                "dataset": {
                    **section_defaults("dataset"),
                    "coco_json": SYNTH_JSON,
                    "image_dir": SYNTH_IMAGES,
                },
                "split": {**config["split"], "files": None},
                "align": {**config["align"], "bundle": None, "rounds": 1},
                # The line models only: no page line detector.
                "line_detector": {**config["line_detector"], "enabled": False},
                # Budgets of its own (synth.base): it learns from many lines, not a few.
                **synthetic_base_settings(),
            }

    use rule * from synthetic_base exclude all as synthetic_*
