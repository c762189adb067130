# Helpers shared by every rules file: config validation, paths, code versions, environments.

from pathlib import Path

from snakemake.utils import validate

from snakemake.exceptions import WorkflowError

from effocr.config import validate_config
from effocr.localizer.postprocess import config_thresholds
from effocr.profiles import get_profile
from effocr.provenance import code_hash
import functools
import os
from effocr.synth.charsets import SHIPPED as SHIPPED_CHARSETS
from effocr.synth.charsets import resolve_charset
from effocr.synth.fonts import default_font_dirs, find_fonts
from effocr.utils import EffOCRError, sha256_file, sha256_json
from effocr.warm_start import weight_file

# effocr's check first: its messages name the key and the allowed keys, where snakemake's
# validate prints the whole schema.
try:
    validate_config(config, source="config")
except EffOCRError as exc:
    raise WorkflowError(str(exc)) from None
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


# --- synth stage helpers (rules/synth.smk) ---


SYNTH_JSON = config["synth"]["coco_json"]
SYNTH_IMAGES = os.path.join(os.path.dirname(SYNTH_JSON), "images")


@functools.cache
def render_charset_hash():
    """Hash of the resolved render charset (a param: editing a charset file reruns renders)."""
    return sha256_json(resolve_charset(config))[:16]


@functools.cache
def font_files_hash():
    """Hash of the font files the `fonts` section finds (stem, size): new fonts rerun renders."""
    fc = config["fonts"]
    dirs = fc["dirs"] if fc["dirs"] is not None else default_font_dirs()
    found = find_fonts(dirs, include=fc["include"], exclude=fc["exclude"])
    return sha256_json([[f.stem, f.stat().st_size] for f in found])[:16]


def charset_input_files():
    """User files the render charset is read from (a shipped name is no file)."""
    render, text_source = config["render"], config["synth"]["text_source"]
    files = []
    if render["charset"] and render["charset"] not in SHIPPED_CHARSETS:
        files.append(render["charset"])
    if render["charset_from_text"] and text_source:
        files.append(text_source)
    return files


def line_fonts_config():
    """The `fonts` keys synthetic lines use (not the reference or max_fonts of the renders)."""
    keys = ("dirs", "include", "exclude", "min_coverage")
    return {k: config["fonts"][k] for k in keys}


def line_charset_config():
    """The `render` keys synthetic lines use: only the charset (not size, padding or mode)."""
    keys = ("charset", "charset_from_text")
    return {k: config["render"][k] for k in keys}


def text_source_for_renders():
    """`synth.text_source` matters to renders only with `render.charset_from_text`."""
    if config["render"]["charset_from_text"]:
        return config["synth"]["text_source"]
    return None


# --- warm start (config init_from, effocr.warm_start; rules/recognizer.smk, localizer.smk) ---


@functools.cache
def init_from_input(kind):
    """The base's `kind` weights as a list of inputs of the training rule ([] without a base)."""
    if config["init_from"] is None:
        return []
    try:
        return [str(weight_file(config["init_from"], kind, RES))]
    except EffOCRError as exc:
        raise WorkflowError(str(exc)) from None


@functools.cache
def init_from_checksum(kind):
    """sha256 of the base's `kind` weights (a param: a base copied with older times reruns too)."""
    return [sha256_file(p)[:16] for p in init_from_input(kind)]


# --- recognizer stage helpers (rules/recognizer.smk) ---
# Torch threads plus DataLoader workers; Snakemake lowers it to --cores on small machines.
RECOGNIZER_THREADS = 8


def recognizer_outputs(pass_dir):
    """What a training pass leaves beside checkpoint.pt."""
    return {
        "model": f"{pass_dir}/model.pt",
        "metrics": f"{pass_dir}/metrics.csv",
        "summary": f"{pass_dir}/metrics.json",
        "curve": f"{pass_dir}/curve.png",
        "config": f"{pass_dir}/config.yaml",
    }
