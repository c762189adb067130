# Rules of the page stage (see docs/architecture.md): synthetic pages with line boxes, and the
# line detector trained on them (exported into the bundle by export_bundle).

# Pages of each split are numbered apart, so no test page repeats a training one.
PAGE_FIRST_INDEX = {"train": 0, "val": 1_000_000, "test": 2_000_000}


from effocr.artifacts import LOCALIZER_OUTPUTS, in_dir


include: "helpers/synth.smk"


rule synth_pages:
    """Synthetic pages of one split (COCO JSON of `line` annotations + images/)."""
    output:
        coco_json=f"{PATHS['pages']}/{{split}}/pages.json",
        images=directory(f"{PATHS['pages']}/{{split}}/images"),
    log:
        log_path("synth_pages", "_{split}"),
    benchmark:
        benchmark_path("synth_pages", "_{split}")
    wildcard_constraints:
        split="train|val|test",
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
            line_detector=("dpi", "vertical_fraction", "max_skew", "degrade"),
            synth=("text_source", "line_fonts"),
            fonts=LINE_FONT_KEYS,
            render=LINE_CHARSET_KEYS,
        ),
        code=code_version("effocr.synth.pages"),
        charset=render_charset_hash(),
        font_files=font_files_hash(),
        n_pages=lambda wildcards: config["line_detector"][f"n_{wildcards.split}_pages"],
        first_index=lambda wildcards: PAGE_FIRST_INDEX[wildcards.split],
    script:
        "../workflow_scripts/synth_pages.py"


rule train_line_detector:
    """Train the line detector; its resume checkpoint is deliberately not an output."""
    input:
        train=f"{PATHS['pages']}/train/pages.json",
        val=f"{PATHS['pages']}/val/pages.json",
    output:
        **in_dir(PATHS["line_detector"], LOCALIZER_OUTPUTS),
    log:
        log_path("train_line_detector"),
    benchmark:
        benchmark_path("train_line_detector")
    conda:
        ENVS["train"]
    container:
        CONTAINER_GPU
    # One torch thread: two make an epoch of the demo only 10 % shorter (4.0 s against 4.4 s),
    # and with one it trains beside train_localizer.
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1,
    params:
        **SECTIONS.params("line_detector", "run"),
        code=code_version("effocr.linedet.train"),
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
    script:
        "../workflow_scripts/train_line_detector.py"
