# Rule of the align stage (effocr.align): character boxes for the dataset's lines that have only
# a transcription, from the bundle `align.bundle`; with it set, the data stage reads the
# aligned lines (TRAINING_COCO in common.smk).

# The bundle's files: a changed model or index reruns the alignment.
ALIGN_BUNDLE_FILES = (
    multiext(
        f"{config['align']['bundle']}/",
        "model.yaml",
        "localizer.onnx",
        "recognizer.onnx",
        "ref.index",
        "ref_labels.txt",
    )
    if config["align"]["bundle"]
    else []
)


rule align_lines:
    input:
        coco_json=config["dataset"]["coco_json"],
        bundle=ALIGN_BUNDLE_FILES,
    output:
        coco_json=PATHS["aligned"]["coco"],
        report_csv=PATHS["aligned"]["csv"],
        report_json=PATHS["aligned"]["json"],
    log:
        log_path("align_lines"),
    benchmark:
        benchmark_path("align_lines")
    conda:
        ENVS["report"]
    container:
        CONTAINER
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        code=code_version("effocr.align"),
        bundle=config["align"]["bundle"],
        image_dir=config["dataset"]["image_dir"],
        align=config["align"],
    script:
        "../workflow_scripts/align_lines.py"
