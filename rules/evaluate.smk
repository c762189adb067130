# Rules of the evaluate stage (see docs/architecture.md): the exported bundle and Tesseract on
# the test split and on every extra evaluation set, then the HTML report.
#
# Rerun policy (docs/incremental.md): `evaluate` takes only its own settings (the evaluate
# section without the report-only `worst_lines`), the set's spec and its code version as
# params, so changing an evaluation setting reruns evaluate and report and nothing upstream.

from effocr.evaluate import set_input_files, workflow_set_spec

TRAININGS = {
    "recognizer_pass1": f"{PATHS['recognizer_pass1']}/metrics.csv",
    "recognizer_pass2": f"{PATHS['recognizer_pass2']}/metrics.csv",
    "localizer": f"{PATHS['localizer']}/metrics.csv",
}
# Evaluation settings that change the scores; `worst_lines` only changes the report.
EVAL_OPTIONS = {
    k: config["evaluate"][k]
    for k in ("normalize_quotes", "ignore_case", "ignore_spaces", "tesseract")
}
EVAL_SPEC = lambda wildcards: workflow_set_spec(
    wildcards.eval_set,
    config["evaluate"],
    PATHS["split"]["test"],
    config["dataset"]["image_dir"],
)


wildcard_constraints:
    eval_set="[A-Za-z0-9_.-]+",


rule evaluate:
    input:
        bundle=PATHS["bundle"],
        set_files=lambda wildcards: set_input_files(EVAL_SPEC(wildcards)),
    output:
        metrics=report(
            f"{PATHS['eval']}/{{eval_set}}/metrics.json",
            caption="../report/eval_metrics.rst",
            category="Evaluation",
            subcategory="{eval_set}",
            labels={"set": "{eval_set}", "file": "metrics.json"},
        ),
        lines=report(
            f"{PATHS['eval']}/{{eval_set}}/lines.csv",
            caption="../report/eval_lines.rst",
            category="Evaluation",
            subcategory="{eval_set}",
            labels={"set": "{eval_set}", "file": "lines.csv"},
        ),
        confusions=report(
            f"{PATHS['eval']}/{{eval_set}}/confusions.csv",
            caption="../report/eval_confusions.rst",
            category="Evaluation",
            subcategory="{eval_set}",
            labels={"set": "{eval_set}", "file": "confusions.csv"},
        ),
        predictions=f"{PATHS['eval']}/{{eval_set}}/predictions.jsonl",
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
        code=code_version("effocr.evaluate"),
        spec=EVAL_SPEC,
        options=EVAL_OPTIONS,
        language=config["language"],
    script:
        "../workflow_scripts/evaluate.py"


rule report:
    input:
        metrics=expand(
            f"{PATHS['eval']}/{{eval_set}}/metrics.json", eval_set=eval_set_names()
        ),
        lines=expand(
            f"{PATHS['eval']}/{{eval_set}}/lines.csv", eval_set=eval_set_names()
        ),
        confusions=expand(
            f"{PATHS['eval']}/{{eval_set}}/confusions.csv", eval_set=eval_set_names()
        ),
        predictions=expand(
            f"{PATHS['eval']}/{{eval_set}}/predictions.jsonl",
            eval_set=eval_set_names(),
        ),
        recognizer_pass1=TRAININGS["recognizer_pass1"],
        recognizer_pass2=TRAININGS["recognizer_pass2"],
        # With an external ONNX localizer (localizer.onnx_model) ours is not trained.
        localizer=[] if config["localizer"]["onnx_model"] else TRAININGS["localizer"],
        localizer_eval=PATHS["localizer_eval"],
    output:
        index=report(
            f"{PATHS['report']}/index.html",
            caption="../report/index.rst",
            category="Report",
            labels={"file": "index.html"},
        ),
        metrics=f"{PATHS['report']}/metrics.json",
        cer_per_set=report(
            f"{PATHS['report']}/cer_per_set.png",
            caption="../report/cer_per_set.rst",
            category="Report",
            labels={"file": "cer_per_set.png"},
        ),
        cer_by_length=report(
            f"{PATHS['report']}/cer_by_length.png",
            caption="../report/cer_by_length.rst",
            category="Report",
            labels={"file": "cer_by_length.png"},
        ),
        training_curves=report(
            f"{PATHS['report']}/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
            labels={"file": "training_curves.png"},
        ),
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
        code=code_version("effocr.report"),
        worst_lines=config["evaluate"]["worst_lines"],
        run_info={
            "language": config["language"],
            "seed": config["seed"],
            "dataset": {"coco_json": config["dataset"]["coco_json"]},
        },
    script:
        "../workflow_scripts/report.py"
