# Rules of the data stage (see docs/architecture.md): validate the raw COCO JSON, split it by
# image, cut real glyph crops and merge them with the font renders into the recognizer dataset.


from effocr.synth.charsets import resolve_charset

# The raw text is checked against the characters that get rendered (see resolve_charset).
DATA_CHARSET = resolve_charset(
    config["render"]["charset"],
    config["render"]["charset_from_text"],
    config["language"],
    config["synth"]["text_source"],
    (),  # the raw text holds characters, not ligature classes
)
# User-given split files as {split: path}; empty means split by ratios.
SPLIT_FILES = dict(config["split"]["files"] or {})


rule check_coco:
    input:
        coco_json=TRAINING_COCO,
    output:
        report=PATHS["validation"],
    log:
        log_path("check_coco"),
    benchmark:
        benchmark_path("check_coco")
    conda:
        ENVS["data"]
    container:
        CONTAINER
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        **SECTIONS.params(dataset=LINE_KEYS),
        code=code_version("effocr.data.validate"),
        charset=DATA_CHARSET,
    script:
        "../workflow_scripts/check_coco.py"


rule split_coco:
    input:
        coco_json=TRAINING_COCO,
        validation=PATHS["validation"],
        files=list(SPLIT_FILES.values()),
    output:
        **PATHS["split"],
    log:
        log_path("split_coco"),
    benchmark:
        benchmark_path("split_coco")
    conda:
        ENVS["data"]
    container:
        CONTAINER
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        **SECTIONS.params("split", run=("seed",)),
        code=code_version("effocr.data.coco_tools"),
    script:
        "../workflow_scripts/split_coco.py"


rule crop_glyphs:
    input:
        **PATHS["split"],
    output:
        crops=directory(PATHS["crops"]),
        manifest=PATHS["crops_manifest"],
    log:
        log_path("crop_glyphs"),
    benchmark:
        benchmark_path("crop_glyphs")
    conda:
        ENVS["data"]
    container:
        CONTAINER
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        **SECTIONS.params("crops", dataset=LINE_KEYS, run=("language", "seed")),
        code=code_version("effocr.data.crops"),
    script:
        "../workflow_scripts/crop_glyphs.py"


rule build_recognizer_dataset:
    input:
        renders=PATHS["renders_manifest"],
        crops=PATHS["crops_manifest"],
    output:
        manifest=PATHS["recognizer_dataset"],
        summary=PATHS["recognizer_dataset_summary"],
    log:
        log_path("build_recognizer_dataset"),
    benchmark:
        benchmark_path("build_recognizer_dataset")
    conda:
        ENVS["data"]
    container:
        CONTAINER
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        code=code_version("effocr.data.recognizer_dataset"),
    script:
        "../workflow_scripts/build_recognizer_dataset.py"
