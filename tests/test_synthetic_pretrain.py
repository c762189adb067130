"""`init_from: synthetic` and `auto` through the real workflow: a small dataset of the user's own
is fine-tuned from a base the workflow trains first on its synthetic lines (module
`synthetic_base`, rules `synthetic_*`, under `results/synthetic/`).

Kept small as in test_align_synthetic (whose config this takes): 6 lines of a 14-character
charset, one recognizer epoch per pass.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import en_lines
from test_align_synthetic import _config as align_config
from test_envs import _job_counts, _rule_inputs
from test_warm_start import _peak_lr
from test_workflow_data import _snakemake

from effocr.data.coco import load_coco, save_coco
from effocr.synth.text import shipped_text_path

pytestmark = pytest.mark.slow
MODELS = ["results/recognizer/pass2/model.pt", "results/localizer/model.pt"]
LM = "results/lm/lm.json"
BASE_FILES = {
    "train_recognizer": "synthetic/recognizer/pass2/model.pt",
    "train_recognizer_hard_negatives": "synthetic/recognizer/pass2/model.pt",
    "train_localizer": "synthetic/localizer/model.pt",
}


def _config(tmp_path, tiny_coco_factory, **top) -> dict:
    """Six annotated lines of the user's own (boxes kept), no alignment."""
    config = align_config(tmp_path, tiny_coco_factory)
    config["dataset"]["coco_json"] = str(en_lines(tiny_coco_factory, 6, 23)[0])
    config["align"] = {}
    config.pop("init_from")
    return {**config, **top}


def _coco_to_lines(coco_json: Path, out: Path) -> None:
    """The COCO lines as a line folder (NAME.png + NAME.gt.txt), as tesstrain keeps them."""
    coco = load_coco(coco_json)
    out.mkdir()
    for im in coco["images"]:
        stem = Path(im["file_name"]).stem
        shutil.copy(coco_json.parent / "images" / im["file_name"], out / f"{stem}.png")
        (out / f"{stem}.gt.txt").write_text(im["text"] + "\n", encoding="utf-8")


def _plan(tmp_path, config):
    """A dry run towards both models and the LM (_snakemake puts its extra arguments before the
    target)."""
    return _snakemake(tmp_path, config, MODELS[0], "--dry-run", *MODELS[1:], LM)


def _own_names_and_splits(config: dict, tmp_path: Path) -> None:
    """The dataset with category names and split files of its own, which the synthetic lines
    do not share (the synthetic base must not read them)."""
    coco = load_coco(config["dataset"]["coco_json"])
    names = {"char": "glyph", "word": "wd"}
    for cat in coco["categories"]:
        cat["name"] = names[cat["name"]]
    save_coco(coco, tmp_path / "own.json")
    files = [im["file_name"] for im in coco["images"]]
    splits = {"train": files[:4], "val": files[4:5], "test": files[5:]}
    for split, listed in splits.items():
        (tmp_path / f"{split}.txt").write_text("\n".join(listed) + "\n", encoding="utf-8")
    config["dataset"].update(
        coco_json=str(tmp_path / "own.json"), char_category="glyph", word_category="wd"
    )
    config["split"] = {"files": {s: str(tmp_path / f"{s}.txt") for s in splits}}


def test_small_dataset_is_fine_tuned_from_a_synthetic_base(tiny_coco_factory, tmp_path):
    config = _config(tmp_path, tiny_coco_factory)  # init_from: auto (the default)
    _own_names_and_splits(config, tmp_path)
    # A budget of the base's own: 50 localizer epochs on the synthetic lines, the run's 60 on
    # the dataset's.
    config["synth"]["base"] = {"localizer": {"epochs": 50}}
    result = _snakemake(tmp_path, config, *MODELS)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    jobs = _job_counts(log)
    assert jobs["synthetic_train_localizer"] == 1
    assert jobs["synthetic_train_recognizer_hard_negatives"] == 1
    # Only the models are built of it: no bundle, evaluation or page line detector.
    assert "synthetic_export_bundle" not in jobs and "synthetic_evaluate" not in jobs
    base = tmp_path / "results" / "synthetic"
    synth = {im["file_name"] for im in load_coco(tmp_path / "synthdata" / "lines.json")["images"]}
    assert {im["file_name"] for im in load_coco(base / "data" / "splits" / "train.json")["images"]}
    assert {
        im["file_name"]
        for split in ("train", "val", "test")
        for im in load_coco(base / "data" / "splits" / f"{split}.json")["images"]
    } <= synth
    for rule, base_file in BASE_FILES.items():
        assert f"results/{base_file}" in _rule_inputs(log, rule), rule
    # The trainers loaded the base's tensors (effocr.warm_start logs what it loaded).
    for rule, kind in (("train_recognizer", "recognizer"), ("train_localizer", "localizer")):
        text = (tmp_path / "results" / "logs" / f"{rule}.log").read_text(encoding="utf-8")
        loaded = re.search(rf"{kind} warm-started from (\S+): (\d+) tensors loaded", text)
        assert loaded, text[-2000:]
        assert loaded.group(1).endswith(BASE_FILES[rule]) and int(loaded.group(2)) > 10
    # The base trained at synth.base's budget and the run's lr, the fine-tune at the run's
    # budget and warm_start_lr.
    for results, epochs, lr in ((base, 50, 0.004), (tmp_path / "results", 60, 0.0005)):
        rows = (results / "localizer" / "metrics.csv").read_text(encoding="utf-8").splitlines()
        assert len(rows) == 1 + epochs, results
        assert _peak_lr(results / "localizer") == pytest.approx(lr), results

    again = _snakemake(tmp_path, config, *MODELS)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.parametrize(
    ("pretrain_below", "init_from", "synthetic"),
    [(7, "auto", True), (6, "auto", False), (0, "auto", False), (0, "synthetic", True),
     (200, None, False)],
)  # fmt: skip
def test_which_runs_train_a_synthetic_base(
    tiny_coco_factory, tmp_path, pretrain_below, init_from, synthetic
):
    config = _config(tmp_path, tiny_coco_factory, init_from=init_from)
    config["synth"]["pretrain_below"] = pretrain_below
    plan = _plan(tmp_path, config)
    log = plan.stdout + plan.stderr
    assert plan.returncode == 0, log[-4000:]
    jobs = _job_counts(log)
    assert ("synthetic_train_localizer" in jobs) is synthetic
    assert ("results/synthetic/localizer/model.pt" in _rule_inputs(log, "train_localizer")) is (
        synthetic
    )
    # The LM learns the text the models learn from: with a synthetic base, the synthetic
    # lines' text source (the shipped en text here) besides the dataset's training lines.
    assert (str(shipped_text_path("en")) in _rule_inputs(log, "train_lm")) is synthetic


def test_line_folders_are_counted_before_import(tiny_coco_factory, tmp_path):
    config = _config(tmp_path, tiny_coco_factory)
    _coco_to_lines(Path(config["dataset"]["coco_json"]), tmp_path / "gt")
    config["dataset"] = {"format": "lines", "path": "gt"}
    for below, synthetic in ((6, False), (7, True)):
        config["synth"]["pretrain_below"] = below
        plan = _plan(tmp_path, config)
        log = plan.stdout + plan.stderr
        assert plan.returncode == 0, log[-4000:]
        assert ("synthetic_train_localizer" in _job_counts(log)) is synthetic, below


def test_align_rounds_share_one_synthetic_base(tiny_coco_factory, tmp_path):
    config = align_config(tmp_path, tiny_coco_factory, rounds=2)
    config["init_from"] = "synthetic"
    plan = _plan(tmp_path, config)
    log = plan.stdout + plan.stderr
    assert plan.returncode == 0, log[-4000:]
    jobs = _job_counts(log)
    # Trained once, in round 1's results; both rounds fine-tune from it.
    assert jobs["previous_synthetic_train_localizer"] == 1
    assert not any(name.startswith("synthetic_") for name in jobs)
    inner = "results/rounds/1/synthetic/localizer/model.pt"
    assert inner in _rule_inputs(log, "train_localizer")
    assert inner in _rule_inputs(log, "previous_train_localizer")


def test_synthetic_refuses_the_synthetic_dataset(tiny_coco_factory, tmp_path):
    config = _config(tmp_path, tiny_coco_factory, init_from="synthetic")
    config["dataset"] = {"coco_json": "synthdata/lines.json", "image_dir": "synthdata/images"}
    result = _plan(tmp_path, config)
    assert result.returncode != 0
    assert "init_from: synthetic fine-tunes a dataset of your own lines" in (
        result.stdout + result.stderr
    )
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("base", "message"),
    [
        (
            {"recognizer": {"encoder_args": {}}},
            r"synth\.base\.recognizer: encoder_args shape the model",
        ),
        ({"localizer": {"epochs": 0}}, r"synth\.base: invalid configuration\n  localizer/epochs: "),
        ({"localizer": {"epoch": 3}}, r"synth\.base: invalid configuration\n  localizer: .*epoch"),
    ],
)
def test_synthetic_base_settings_are_checked(tiny_coco_factory, tmp_path, base, message):
    config = _config(tmp_path, tiny_coco_factory, init_from="synthetic")
    config["synth"]["base"] = base
    result = _plan(tmp_path, config)
    assert result.returncode != 0
    assert re.search(message, result.stdout + result.stderr), (result.stdout + result.stderr)[
        -3000:
    ]
    assert not (tmp_path / "results").exists()
