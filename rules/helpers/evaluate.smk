# Helpers of rules/evaluate.smk (kept apart from the rules: Snakemake's linter wants
# functions and rules in separate files). Included by rules/evaluate.smk itself, so the stage
# file works whatever the order of the includes in the Snakefile.

from effocr.artifacts import EVAL_OUTPUTS, METRICS_CSV, REPORT_OUTPUTS
from effocr.evaluate import set_input_files, workflow_set_spec

EVAL_DIR = f"{PATHS['eval']}/{{eval_set}}"
TRAININGS = {
    "recognizer_pass1": f"{PATHS['recognizer_pass1']}/{METRICS_CSV}",
    "recognizer_pass2": f"{PATHS['recognizer_pass2']}/{METRICS_CSV}",
    "localizer": f"{PATHS['localizer']}/{METRICS_CSV}",
}


def eval_set_names():
    return ["test"] + [s["name"] for s in config["evaluate"]["sets"]]


def eval_output(key):
    """An evaluation set's output, shown in Snakemake's report under the set."""
    name = EVAL_OUTPUTS[key]
    return report(
        f"{EVAL_DIR}/{name}",
        caption=f"../report/eval_{key}.rst",
        category="Evaluation",
        subcategory="{eval_set}",
        labels={"set": "{eval_set}", "file": name},
    )


def every_eval_set(key):
    return expand(f"{EVAL_DIR}/{EVAL_OUTPUTS[key]}", eval_set=eval_set_names())


def report_output(key, category="Report"):
    """A file of the HTML report, also shown in Snakemake's report."""
    name = REPORT_OUTPUTS[key]
    return report(
        f"{PATHS['report']}/{name}",
        caption=f"../report/{key}.rst",
        category=category,
        labels={"file": name},
    )


# Evaluation settings that change the scores; `worst_lines` only changes the report, and each
# set's own spec (`sets`) is the param `spec`.
SCORE_KEYS = ("normalize_quotes", "ignore_case", "ignore_spaces", "tesseract")
EVAL_SPEC = lambda wildcards: workflow_set_spec(
    wildcards.eval_set,
    config["evaluate"],
    PATHS["split"]["test"],
    config["dataset"]["image_dir"],
)


wildcard_constraints:
    eval_set="[A-Za-z0-9_.-]+",
