"""`align.bundle: synthetic` through the real workflow: with no base bundle, the workflow trains
one on its own synthetic lines (module `synthetic_base`, rules `synthetic_*`, under
`results/synthetic/`) and aligns the dataset's transcription-only lines with it.

Kept small: 6 synthetic lines of a 14-character charset in two fonts, one recognizer epoch per pass;
`align.min_confidence: 0`, because a model this small aligns badly and the test is about which
bundle aligns, not how well.
"""

from __future__ import annotations

import json

import pytest
from conftest import EN_CLASSES, en_lines
from test_envs import _job_counts, _rule_inputs
from test_incremental import CONFIG as WORKFLOW_CONFIG
from test_workflow_data import _snakemake

from effocr.data.coco import load_coco, save_coco
from effocr.synth.charsets import write_charset

pytestmark = pytest.mark.slow
ALIGNED = "results/data/aligned/report.json"


def _config(tmp_path, tiny_coco_factory, **align) -> dict:
    coco_json, image_dir = en_lines(tiny_coco_factory, 6, 23)
    coco = load_coco(coco_json)
    save_coco({**coco, "annotations": []}, tmp_path / "text_only.json")
    write_charset(tmp_path / "charset.txt", EN_CLASSES)
    return {
        "seed": 3,
        "init_from": None,  # from scratch: no synthetic base for few lines
        "dataset": {"coco_json": str(tmp_path / "text_only.json"), "image_dir": str(image_dir)},
        "synth": {
            "coco_json": "synthdata/lines.json",
            "n_lines": 6,
            "max_chars": 16,
            "font_sizes": [24, 28],
            "degrade": False,
            "line_fonts": ["DejaVuSans"],
        },
        "fonts": {"include": ["DejaVuSans", "DejaVuSerif"], "reference": ["DejaVuSerif"]},
        "render": {"charset": "charset.txt", "size": 32},
        "split": {"ratios": [0.6, 0.2, 0.2]},
        # The workflow tests' one-epoch recognizer.
        "recognizer": dict(WORKFLOW_CONFIG["recognizer"]),
        # Enough steps for the tiny localizer to find characters (one batch per epoch, 0.2 s).
        "localizer": {"epochs": 60, "lr": 0.004, "batch_size": 4, "device": "cpu"},
        "line_detector": {"enabled": False},
        "export": {"parity_lines": 2, "calibration_lines": 2},
        "align": {"bundle": "synthetic", "min_confidence": 0.0, **align},
    }


def test_synthetic_base_aligns_the_dataset(tiny_coco_factory, tmp_path):
    config = _config(tmp_path, tiny_coco_factory)
    result = _snakemake(tmp_path, config, ALIGNED)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    base = tmp_path / "results" / "synthetic"
    assert (base / "bundle" / "model.yaml").is_file()
    # The synthetic base trained on the synthetic lines, not on the dataset.
    assert load_coco(base / "data" / "splits" / "train.json")["images"]
    synth = {im["file_name"] for im in load_coco(tmp_path / "synthdata" / "lines.json")["images"]}
    base_lines = set()
    for split in ("train", "val", "test"):
        base_lines |= {
            im["file_name"]
            for im in load_coco(base / "data" / "splits" / f"{split}.json")["images"]
        }
    assert base_lines == synth
    # Only its bundle is built: neither its evaluation nor a page line detector.
    assert not (base / "eval").exists() and not (base / "line_detector").exists()
    report = json.loads((tmp_path / ALIGNED).read_text(encoding="utf-8"))
    assert report["lines"] == 6 and report["accepted"] >= 1
    jobs = _job_counts(log)
    assert jobs["align_lines"] == 1 and jobs["synthetic_export_bundle"] == 1
    assert "synthetic_align_lines" not in jobs  # the synthetic lines have their boxes
    # align_lines read the synthetic base's bundle.
    assert "results/synthetic/bundle" in _rule_inputs(log, "align_lines")

    again = _snakemake(tmp_path, config, ALIGNED)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    # Two rounds: round 1 (results/rounds/1) aligns with its own synthetic base, trained once.
    two = _config(tmp_path, tiny_coco_factory, rounds=2)
    plan = _snakemake(tmp_path, two, ALIGNED, "--dry-run")
    out = plan.stdout + plan.stderr
    assert plan.returncode == 0, out[-4000:]
    jobs = _job_counts(out)
    assert jobs["previous_synthetic_export_bundle"] == 1 and jobs["previous_export_bundle"] == 1
    assert "synthetic_export_bundle" not in jobs
    assert "results/rounds/1/synthetic/bundle" in out


def test_synthetic_base_refuses_the_synthetic_dataset(tiny_coco_factory, tmp_path):
    config = _config(tmp_path, tiny_coco_factory)
    config["dataset"] = {"coco_json": "synthdata/lines.json", "image_dir": "synthdata/images"}
    result = _snakemake(tmp_path, config, ALIGNED, "--dry-run")
    assert result.returncode != 0
    assert "align.bundle: synthetic aligns a dataset of your own lines" in (
        result.stdout + result.stderr
    )
    assert not (tmp_path / "results").exists()
