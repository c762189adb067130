"""`align.rounds: 2` through the real workflow, to its end: lines with transcriptions only are
aligned by a given bundle (round 1), the whole workflow trains a bundle on the lines it
accepted (under results/rounds/1), that bundle aligns them again (round 2), and the last
round's lines train results/bundle; the report lists each round.

One tiny Snakemake run in a copy of the workflow (test_incremental's budgets), warm-started
from conftest's en_bundle so that one epoch per model still gives a bundle that aligns.
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from conftest import EN_CLASSES, en_lines
from test_envs import _job_counts
from test_incremental import CONFIG, copy_workflow, planned, snakemake

from effocr.data.coco import load_coco, save_coco
from effocr.infer import Engine
from effocr.synth.charsets import write_charset

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
# Low enough that the tiny bundles accept most lines (their localizers, trained on 8 lines,
# leave few boxes one-to-one: confidences 0.13-0.8 here, one line 0): this tests the rounds'
# plumbing; test_align and bench/align_accuracy.py measure the alignment itself.
MIN_CONFIDENCE = 0.3


@pytest.fixture(scope="module")
def rounds_run(tmp_path_factory, tiny_coco_factory, en_bundle):
    """The workflow copy, its config and the Snakemake output of one two-round run."""
    wf = tmp_path_factory.mktemp("align_rounds") / "wf"
    copy_workflow(wf)
    # Lines like the bundle's own, unseen (another seed), with their boxes taken away.
    coco_json, image_dir = en_lines(tiny_coco_factory, 12, 21)
    save_coco({**load_coco(coco_json), "annotations": []}, wf / "userdata" / "lines.json")
    shutil.copytree(image_dir, wf / "userdata" / "images")
    write_charset(wf / "userdata" / "charset.txt", EN_CLASSES)
    base = wf / "base_bundle"  # outside results_dir, as the workflow requires
    shutil.copytree(en_bundle, base)
    cfg = json.loads(json.dumps(CONFIG))
    cfg["evaluate"] = {"worst_lines": 2}
    cfg["render"]["charset"] = "userdata/charset.txt"
    cfg["fonts"]["reference"] = ["DejaVuSans"]  # the lines' face: the base learnt no other
    # A fine-tune, not a new start: one epoch at the default rate moves the base's boxes.
    cfg["localizer"]["lr"] = 0.0002
    # The base's recognizer (conftest's build_bundle): the configured one must be the same.
    cfg["recognizer"].update(encoder="mobilenetv3_small_050", encoder_args={})
    cfg["init_from"] = "base_bundle"
    cfg["align"] = {"bundle": "base_bundle", "rounds": 2, "min_confidence": MIN_CONFIDENCE}
    config = wf / "config" / "rounds.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    # Before anything runs: round 2's alignment needs round 1's whole training and export.
    jobs, _ = planned(wf, config, "results/data/aligned/lines.json")
    assert jobs["align_lines"] == 1 and jobs["previous_align_lines"] == 1, jobs
    assert jobs["previous_train_localizer"] == 1 and jobs["previous_export_bundle"] == 1, jobs
    assert "previous_report" not in jobs and "previous_evaluate" not in jobs, jobs
    out = snakemake(wf, config, "--printshellcmds", timeout=1500)
    return wf, config, out


def _report(wf, results: str) -> dict:
    return json.loads((wf / results / "data" / "aligned" / "report.json").read_text("utf-8"))


def test_each_round_aligns_with_the_bundle_before_it(rounds_run):
    wf, _, out = rounds_run
    first, second = _report(wf, "results/rounds/1"), _report(wf, "results")
    # Round 1: the given bundle, its index extended by the lines' characters it lacked.
    assert first["bundle"] == "results/rounds/1/data/align_bundle"
    assert second["bundle"] == "results/rounds/1/bundle"
    assert (wf / "results" / "rounds" / "1" / "bundle" / "model.yaml").is_file()
    for summary in (first, second):
        assert summary["lines"] == 12 and summary["accepted"] >= 6, summary
        assert summary["accepted"] + summary["rejected"] == 12
    # Each round's work ran once, apart: round 1's rules under their `previous_` names.
    jobs = _job_counts(out)
    for rule in ("align_lines", "train_localizer", "train_recognizer", "export_bundle"):
        assert jobs[rule] == 1 and jobs[f"previous_{rule}"] == 1, (rule, jobs)
    # Round 2's training lines are the ones round 2 accepted.
    accepted = {r["image_id"] for r in second["lines_report"] if r["status"] == "accepted"}
    split_ids = set()
    for split in ("train", "val", "test"):
        split_ids |= {
            im["id"] for im in load_coco(wf / f"results/data/splits/{split}.json")["images"]
        }
    assert split_ids == accepted


def test_report_lists_every_round(rounds_run):
    wf, _, _ = rounds_run
    metrics = json.loads((wf / "results" / "report" / "metrics.json").read_text("utf-8"))
    rounds = metrics["alignment"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert [r["bundle"] for r in rounds] == [
        "results/rounds/1/data/align_bundle",
        "results/rounds/1/bundle",
    ]
    for row, results in zip(rounds, ("results/rounds/1", "results"), strict=True):
        summary = _report(wf, results)
        assert row["accepted"] == summary["accepted"] and row["lines"] == 12
        assert row["min_confidence"] == MIN_CONFIDENCE
    html = (wf / "results" / "report" / "index.html").read_text("utf-8")
    assert "Alignment of the transcriptions" in html
    assert "results/rounds/1/bundle" in html


def test_last_round_bundle_reads_and_nothing_reruns(rounds_run):
    wf, config, _ = rounds_run
    coco = load_coco(wf / "userdata" / "lines.json")
    image = wf / "userdata" / "images" / coco["images"][0]["file_name"]
    with Engine(wf / "results" / "bundle", workers=1) as engine:
        (result,) = engine.infer([str(image)])
    assert result.ok and result.text.strip()
    jobs, out = planned(wf, config)
    assert jobs == {}, out[-3000:]
