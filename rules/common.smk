# What every rules file shares: config validation, paths, code versions, environments. A stage's
# own helpers live in its rules file; no rules file needs another one included before it.

import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from effocr.artifacts import MODEL, REPORT_OUTPUTS, workflow_paths
from effocr.config import config_sections, rename_deprecated_keys, validate_config
from effocr.profiles import get_profile
from effocr.provenance import code_hash
import functools

from effocr.utils import EffOCRError, sha256_file
from effocr.importer import dataset_lines
from effocr.warm_start import (
    RESULTS_FILES,
    SYNTHETIC,
    resolve_init_from,
    weight_file,
)

# effocr's check first: its messages name the key and the allowed keys, where snakemake's
# validate prints the whole schema. Deprecated key names are renamed in place first, so the
# rules and Snakemake's validate see only the current ones.
try:
    rename_deprecated_keys(config, source="config")
    validate_config(config, source="config")
except EffOCRError as exc:
    raise WorkflowError(str(exc)) from None
validate(config, schema="../config/schema.yaml")

RES = config["results_dir"]
# Every artefact's path, named once (effocr.artifacts), so rules files agree on paths.
PATHS = workflow_paths(RES)

# Whether the dataset is the synthetic lines themselves (the demo's: rule synth_lines makes
# them) rather than the user's own.
SYNTHETIC_DATASET = config["dataset"]["format"] == "coco" and os.path.normpath(
    config["dataset"]["coco_json"]
) == os.path.normpath(config["synth"]["coco_json"])
# Config init_from resolved (effocr.warm_start.resolve_init_from): a base path, SYNTHETIC or
# None. Before the dataset paths below are rewritten: `auto` counts the lines of what the
# user gave.
try:
    INIT_FROM = resolve_init_from(
        config["init_from"],
        synthetic_dataset=SYNTHETIC_DATASET,
        pretrain_below=config["synth"]["pretrain_below"],
        dataset_lines=functools.partial(
            dataset_lines, config["dataset"], config["synth"]["pretrain_below"]
        ),
    )
except EffOCRError as exc:
    raise WorkflowError(str(exc)) from None
# Align rounds nest (rules/align.smk: round r-1's results lie under round r's `rounds/`
# folder). The synthetic base (init_from or align.bundle `synthetic`) is trained once, by the
# innermost round, in its results; every round that needs it reads it there.
ALIGN_ROUNDS = config["align"]["rounds"] if config["align"]["bundle"] else 1


def round_results(round_number):
    """The results folder of alignment round `round_number` (1 to ALIGN_ROUNDS, the last RES)."""
    return os.path.join(
        RES, *(f"rounds/{r}" for r in range(ALIGN_ROUNDS - 1, round_number - 1, -1))
    )


SYNTHETIC_BASE_DIR = workflow_paths(round_results(1))["synthetic_base"]
# Every round's alignment report, round 1 first (rule report shows them).
ALIGN_REPORTS = (
    [
        workflow_paths(round_results(r))["aligned"]["json"]
        for r in range(1, ALIGN_ROUNDS + 1)
    ]
    if config["align"]["bundle"]
    else []
)
# The base's folder as the trainers take it (the `init_from` param of the training rules).
INIT_FROM_PATH = SYNTHETIC_BASE_DIR if INIT_FROM == SYNTHETIC else INIT_FROM

# Ground truth in another format (dataset.format page, alto, lines): rule import_dataset
# converts it first, and every rule reads the dataset from its outputs. Set before the
# sections are built, so that no step sees the other paths.
if config["dataset"]["format"] != "coco":
    config["dataset"]["coco_json"] = PATHS["imported"]["coco"]
    config["dataset"]["image_dir"] = PATHS["imported"]["images"]

# The typed config sections; a rule passes those its step reads as params,
# `**SECTIONS.params("recognizer", ...)`, and its script hands them to the step.
SECTIONS = config_sections(config)
# The dataset keys that say how to read its COCO lines (not where they come from): a step
# that reads lines takes only these, so that, e.g., an import setting does not rerun it.
LINE_KEYS = ("image_dir", "char_category", "word_category")
LANG = config["language"]
PROFILE = get_profile(LANG)

# The localizer the export and the evaluation use: an ONNX one exported elsewhere
# (localizer.onnx_model, then ours is not trained), else ours.
LOCALIZER_MODEL = config["localizer"]["onnx_model"] or f"{PATHS['localizer']}/{MODEL}"
# The lines the workflow trains on: the dataset, or its lines aligned by `align.bundle`
# (rule align_lines) when it has only transcriptions.
TRAINING_COCO = (
    PATHS["aligned"]["coco"]
    if config["align"]["bundle"]
    else config["dataset"]["coco_json"]
)

# Every step runs in one of four software environments (conda env file) and one of two
# container images: CONTAINER (CPU), or CONTAINER_GPU for the rules with a `gpu` resource.
ENVS = {
    "data": "../envs/data.yaml",
    "train": "../envs/train.yaml",
    "export": "../envs/export.yaml",
    "report": "../envs/report.yaml",
}
CONTAINER = "docker://effocr/effocr-workflow:0.1.0"
# The rules that declare a `gpu` resource run in the CUDA variant (containers/Dockerfile.cuda:
# CUDA torch, onnxruntime-gpu, faiss-gpu-cu12); run them with `--apptainer-args "--nv"`.
CONTAINER_GPU = "docker://effocr/effocr-workflow:0.1.0-cuda"

REPO = Path(workflow.basedir)


def code_version(entry):
    """Hash of the `effocr` modules that `entry` imports, transitively, and of itself.

    `entry` is the module that the workflow script calls. Snakemake does not track imported
    code, so each step passes this as a param; editing any module in that closure (or a
    resource file it names) reruns the step (params rerun trigger). See effocr.provenance.
    """
    return code_hash(entry, root=REPO)


def threads_beside_one(most):
    """`most` threads, but leave one of --cores free (1 thread on 2 cores) for train_localizer
    when the profile's localizer training is the long job (`localizer_leads`); `most` when it
    is not, or when the run has no core count (a cluster run without --cores)."""
    if not PROFILE.localizer_leads:
        return most
    try:
        cores = int(workflow.cores)
    except (WorkflowError, TypeError, ValueError):
        return most
    return max(1, min(most, cores - 1))


def log_path(rule, suffix=""):
    return f"{RES}/logs/{rule}{suffix}.log"


def benchmark_path(rule, suffix=""):
    return f"{RES}/benchmarks/{rule}{suffix}.tsv"


def get_final_output():
    return [f"{PATHS['report']}/{REPORT_OUTPUTS['index']}"]


# --- warm start (config init_from, effocr.warm_start; rules/recognizer.smk, localizer.smk) ---


@functools.cache
def init_from_input(kind):
    """The base's `kind` weights as a list of inputs of the training rule ([] without a base)."""
    if INIT_FROM is None:
        return []
    if INIT_FROM == SYNTHETIC:
        return [f"{SYNTHETIC_BASE_DIR}/{RESULTS_FILES[kind]}"]
    try:
        return [str(weight_file(INIT_FROM, kind, RES))]
    except EffOCRError as exc:
        raise WorkflowError(str(exc)) from None


@functools.cache
def init_from_checksum(kind):
    """sha256 of the base's `kind` weights (a param: a base copied with older times reruns too).

    Empty for the synthetic base: its weights are outputs of this workflow, which Snakemake
    tracks itself (and they do not exist yet when the workflow is planned)."""
    if INIT_FROM == SYNTHETIC:
        return []
    return [sha256_file(p)[:16] for p in init_from_input(kind)]
