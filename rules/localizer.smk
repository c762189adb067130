# Rules of the localizer stage (see docs/architecture.md): train the char/word detector on the
# COCO train split (validated on val every epoch), then measure it on the test split.

# An ONNX localizer exported elsewhere (localizer.onnx_model) is evaluated instead of ours
# (LOCALIZER_MODEL, rules/common.smk).

from effocr.artifacts import LOCALIZER_OUTPUTS, in_dir
from effocr.localizer.postprocess import THRESHOLD_KEYS


rule train_localizer:
    """Train the localizer; its resume checkpoint is deliberately not an output."""
    input:
        train=PATHS["split"]["train"],
        val=PATHS["split"]["val"],
        init_from=init_from_input("localizer"),
    output:
        **in_dir(PATHS["localizer"], LOCALIZER_OUTPUTS),
    log:
        log_path("train_localizer"),
    benchmark:
        benchmark_path("train_localizer")
    conda:
        ENVS["train"]
    container:
        CONTAINER_GPU
    # One torch thread: the localizer's small convolutions on 32 px lines run slower on two
    # (3.2 s an epoch of the demo against 2.1 s on one core here), and the free core runs
    # another job.
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=1,
    params:
        **SECTIONS.params("localizer", "dataset", "run"),
        code=code_version("effocr.localizer.train"),
        init_from=INIT_FROM_PATH,
        init_from_sha256=init_from_checksum("localizer"),
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
    script:
        "../workflow_scripts/train_localizer.py"


rule evaluate_localizer:
    """COCO mAP and char/word P/R/F1 at IoU 0.5 of the localizer on the test split."""
    input:
        model=LOCALIZER_MODEL,
        test=PATHS["split"]["test"],
    output:
        metrics=PATHS["localizer_eval"],
    log:
        log_path("evaluate_localizer"),
    benchmark:
        benchmark_path("evaluate_localizer")
    conda:
        ENVS["train"]
    container:
        CONTAINER
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        **SECTIONS.params(
            localizer=("onnx_layout", "input_height", *THRESHOLD_KEYS),
            dataset=LINE_KEYS,
        ),
        code=code_version("effocr.localizer.evaluate"),
    script:
        "../workflow_scripts/evaluate_localizer.py"
