# Helpers shared by every rules file: config validation, paths, code versions, environments.

import hashlib
from pathlib import Path

from snakemake.utils import validate

from effocr.profiles import get_profile

validate(config, schema="../config/schema.yaml")

LANG = config["language"]
PROFILE = get_profile(LANG)
RES = config["results_dir"]
SPLITS = ["train", "val", "test"]

# One place that names every artefact, so rules files agree on paths.
PATHS = {
    "validation": f"{RES}/data/validation.json",
    "split": {s: f"{RES}/data/splits/{s}.json" for s in SPLITS},
    "charset": f"{RES}/data/charset.txt",
    "renders": f"{RES}/renders/glyphs",
    "renders_manifest": f"{RES}/renders/manifest.csv",
    "crops": f"{RES}/crops/glyphs",
    "crops_manifest": f"{RES}/crops/manifest.csv",
    "recognizer_dataset": f"{RES}/recognizer_dataset/manifest.csv",
    "recognizer_dataset_summary": f"{RES}/recognizer_dataset/summary.json",
    "recognizer_pass1": f"{RES}/recognizer/pass1",
    "hns": f"{RES}/recognizer/hns.txt",
    "recognizer_pass2": f"{RES}/recognizer/pass2",
    "reference_index": f"{RES}/recognizer/index",
    "localizer": f"{RES}/localizer",
    "localizer_eval": f"{RES}/localizer/eval_test.json",
    "bundle": f"{RES}/bundle",
    "eval": f"{RES}/eval",
    "report": f"{RES}/report",
}

# Every step runs in one of four software environments (conda env file / container image).
ENVS = {
    "data": "../envs/data.yaml",
    "train": "../envs/train.yaml",
    "export": "../envs/export.yaml",
    "report": "../envs/report.yaml",
}
CONTAINER = "docker://effocr/effocr-workflow:0.1.0"

REPO = Path(workflow.basedir)


def code_version(*modules):
    """Hash of the `effocr` source files a rule imports.

    Snakemake does not track imported code, so rules pass this as a param: editing a module
    reruns exactly the rules that use it (params rerun trigger).
    """
    h = hashlib.sha256()
    for module in modules:
        path = REPO / module.replace(".", "/")
        files = (
            sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
        )
        for f in files:
            h.update(str(f.relative_to(REPO)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


# Modules every step depends on.
CORE_CODE = ("effocr.utils", "effocr.config", "effocr.profiles")


def log_path(rule, suffix=""):
    return f"{RES}/logs/{rule}{suffix}.log"


def benchmark_path(rule, suffix=""):
    return f"{RES}/benchmarks/{rule}{suffix}.tsv"


def eval_set_names():
    return ["test"] + [s["name"] for s in config["evaluate"]["sets"]]


def get_final_output():
    return [
        f"{PATHS['report']}/index.html",
    ]
