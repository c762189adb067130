# Rules of the evaluate stage (see docs/architecture.md): the exported bundle and Tesseract on
# the test split and on every extra evaluation set, then the HTML report.
#
# Rerun policy (docs/incremental.md): `evaluate` takes only its own settings (the keys of the
# evaluate section that change the scores, SCORE_KEYS, not the report-only `worst_lines` or
# the other sets), the set's spec and its code version as params, so changing an evaluation
# setting reruns evaluate and report and nothing upstream.


include: "helpers/evaluate.smk"


rule evaluate:
    input:
        bundle=PATHS["bundle"],
        set_files=lambda wildcards: set_input_files(EVAL_SPEC(wildcards)),
    output:
        metrics=eval_output("metrics"),
        lines=eval_output("lines"),
        confusions=eval_output("confusions"),
        predictions=f"{EVAL_DIR}/{EVAL_OUTPUTS['predictions']}",
    log:
        log_path("evaluate", "_{eval_set}"),
    benchmark:
        benchmark_path("evaluate", "_{eval_set}")
    conda:
        ENVS["report"]
    container:
        CONTAINER
    # One thread, like Tesseract's OMP_THREAD_LIMIT=1, so lines/s compare like for like.
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        **SECTIONS.params(evaluate=SCORE_KEYS, run=("language",)),
        code=code_version("effocr.evaluate"),
        spec=EVAL_SPEC,
    script:
        "../workflow_scripts/evaluate.py"


rule report:
    input:
        metrics=every_eval_set("metrics"),
        lines=every_eval_set("lines"),
        confusions=every_eval_set("confusions"),
        predictions=every_eval_set("predictions"),
        recognizer_pass1=TRAININGS["recognizer_pass1"],
        recognizer_pass2=TRAININGS["recognizer_pass2"],
        # With an external ONNX localizer (localizer.onnx_model) ours is not trained.
        localizer=[] if config["localizer"]["onnx_model"] else TRAININGS["localizer"],
        localizer_eval=PATHS["localizer_eval"],
        alignment=ALIGN_REPORTS,
    output:
        index=report_output("index"),
        metrics=f"{PATHS['report']}/{REPORT_OUTPUTS['metrics']}",
        cer_per_set=report_output("cer_per_set"),
        cer_by_length=report_output("cer_by_length"),
        training_curves=report_output("training_curves", category="Training"),
    log:
        log_path("report"),
    benchmark:
        benchmark_path("report")
    conda:
        ENVS["report"]
    container:
        CONTAINER
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        **SECTIONS.params("run", evaluate=("worst_lines",), dataset=("coco_json",)),
        code=code_version("effocr.report"),
    script:
        "../workflow_scripts/report.py"
