"""The names of the workflow's artefacts, in one place.

The modules that write an artefact and the rules that declare it as an output take its name
from here, so a rename is one edit. Layout under `results_dir` (docs/architecture.md):
`workflow_paths(results_dir)` is the `PATHS` of the rules. The bundle's own files are
`effocr.bundle`'s (its format fixes them), built from the index names below.
"""

from __future__ import annotations

SPLITS = ("train", "val", "test")

# A training run's folder (`effocr.training.TrainingRun`).
MODEL = "model.pt"
# Resume state: deliberately not a Snakemake output (Snakemake deletes the outputs of an
# incomplete job before rerunning it, which would defeat resuming).
CHECKPOINT = "checkpoint.pt"
METRICS_CSV = "metrics.csv"
SUMMARY = "metrics.json"
CURVE = "curve.png"
RUN_CONFIG = "config.yaml"
# What a recognizer pass declares (its rule's outputs, by key); the localizer writes no summary.
RECOGNIZER_OUTPUTS = {
    "model": MODEL,
    "metrics": METRICS_CSV,
    "summary": SUMMARY,
    "curve": CURVE,
    "config": RUN_CONFIG,
}
LOCALIZER_OUTPUTS = {k: RECOGNIZER_OUTPUTS[k] for k in ("model", "metrics", "curve", "config")}

# Hard-negative sets mined from the first recognizer pass (`effocr.recognizer.hard_negatives`).
HARD_NEGATIVES = "hard_negatives.txt"

# A reference index's folder (`effocr.recognizer.reference.ReferenceIndex`); the first two are
# also bundle files.
INDEX = "ref.index"
INDEX_LABELS = "ref_labels.txt"
INDEX_META = "index.json"
# Optional (`recognizer.reference_prototypes` > 0): several vectors per class; a bundle file.
INDEX_PROTOTYPES = "ref_prototypes.npz"

# Predictions of a run (`effocr.imageio.OutputWriter`, `effocr.evaluate`).
PREDICTIONS = "predictions.jsonl"
PREDICTIONS_COCO = "predictions_coco.json"
TEXT_DIR = "text"

# An evaluation set's folder (`effocr.evaluate.write_results`), by the rule's output key.
EVAL_OUTPUTS = {
    "metrics": "metrics.json",
    "lines": "lines.csv",
    "confusions": "confusions.csv",
    "predictions": PREDICTIONS,
}

# The report's folder (`effocr.report.build_report`): the page, its figures and the summary.
REPORT_PLOTS = ("cer_per_set", "cer_by_length", "training_curves")
REPORT_OUTPUTS = {
    "index": "index.html",
    "metrics": "metrics.json",
    **{name: f"{name}.png" for name in REPORT_PLOTS},
}


# The character language model (effocr.lm, rule train_lm), shipped in the bundle as it is.
LM = "lm.json"

# effocr import (effocr.importer): the raw COCO lines and the report of what was left out.
IMPORTED_LINES = "lines.json"
IMPORT_REPORT = "import_report.json"

# effocr align (effocr.align): the aligned raw COCO and the report of accepted/rejected lines.
ALIGNED_LINES = "lines.json"
ALIGN_REPORT_CSV = "report.csv"
ALIGN_REPORT_JSON = "report.json"


def workflow_paths(results_dir: str) -> dict:
    """Every artefact of the workflow under `results_dir` (the rules' `PATHS`)."""
    res = results_dir
    return {
        "validation": f"{res}/data/validation.json",
        "split": {s: f"{res}/data/splits/{s}.json" for s in SPLITS},
        "charset": f"{res}/data/charset.txt",
        "renders": f"{res}/renders/glyphs",
        "renders_manifest": f"{res}/renders/manifest.csv",
        "crops": f"{res}/crops/glyphs",
        "crops_manifest": f"{res}/crops/manifest.csv",
        "recognizer_dataset": f"{res}/recognizer_dataset/manifest.csv",
        "recognizer_dataset_summary": f"{res}/recognizer_dataset/summary.json",
        "recognizer_pass1": f"{res}/recognizer/pass1",
        "hard_negatives": f"{res}/recognizer/{HARD_NEGATIVES}",
        "recognizer_pass2": f"{res}/recognizer/pass2",
        "reference_index": f"{res}/recognizer/index",
        "localizer": f"{res}/localizer",
        "localizer_eval": f"{res}/localizer/eval_test.json",
        "lm": f"{res}/lm/{LM}",
        # Ground truth imported to the raw COCO format (`effocr.importer`, rule import_dataset).
        "imported": {
            "coco": f"{res}/data/imported/{IMPORTED_LINES}",
            "images": f"{res}/data/imported/images",
            "report": f"{res}/data/imported/{IMPORT_REPORT}",
        },
        "pages": f"{res}/line_detector/pages",
        "line_detector": f"{res}/line_detector/model",
        "bundle": f"{res}/bundle",
        "eval": f"{res}/eval",
        "report": f"{res}/report",
        # Earlier alignment rounds (`align.rounds`), each a whole results folder of its own.
        "rounds": f"{res}/rounds",
        # `align.bundle: synthetic`: the results folder of the bundle trained on synthetic lines
        # that aligns round 1.
        "synthetic_base": f"{res}/synthetic",
        # `align.extend_index`: the given align.bundle with the dataset's new characters.
        "align_bundle": f"{res}/data/align_bundle",
        "aligned": {
            "coco": f"{res}/data/aligned/{ALIGNED_LINES}",
            "csv": f"{res}/data/aligned/{ALIGN_REPORT_CSV}",
            "json": f"{res}/data/aligned/{ALIGN_REPORT_JSON}",
        },
    }


def in_dir(folder: str, names: dict) -> dict:
    """`names` ({key: file name}) as paths inside `folder` (a rule's outputs)."""
    return {key: f"{folder}/{name}" for key, name in names.items()}
