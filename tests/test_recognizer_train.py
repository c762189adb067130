"""effocr.recognizer.train: a tiny run improves precision@1; kill -9 then resume; second pass."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
import yaml
from test_recognizer_index import render_manifest, tiny_config

from effocr.config import config_sections
from effocr.recognizer.dataset import GlyphRecord
from effocr.recognizer.hard_negatives import mine_hard_negatives
from effocr.recognizer.model import load_recognizer
from effocr.recognizer.train import split_records, train_recognizer

torch.set_num_threads(1)
CHARS = "abdehkmnprstxyz"
FONTS = (
    "DejaVuSerif",
    "DejaVuSans",
    "DejaVuSans-Bold",
    "DejaVuSans-Oblique",
    "DejaVuSans-BoldOblique",
)
# resnet10t learns within a few dozen steps on CPU; the real default is measured in bench/.
ENC = {"encoder": "resnet10t", "input_size": 32, "batch_size": 32, "m": 4}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec")
    return render_manifest(out, CHARS, fonts=FONTS, size=32, real={"DejaVuSans-BoldOblique": "val"})


def test_tiny_training_improves_precision(tmp_path, data):
    config = tiny_config(**ENC, epochs=3, num_passes=3)
    summary = train_recognizer(
        data,
        tmp_path / "p1",
        **config_sections(config).pick("recognizer", "fonts", "run"),
        threads=1,
    )
    rows = summary["metrics"]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert summary["best_val_p1"] >= summary["zero_shot_val_p1"] + 0.2, rows
    for name in (
        "model.pt",
        "metrics.csv",
        "metrics.json",
        "curve.png",
        "config.yaml",
        "checkpoint.pt",
    ):
        assert (tmp_path / "p1" / name).exists(), name
    with open(tmp_path / "p1" / "metrics.csv", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert (
        yaml.safe_load((tmp_path / "p1" / "config.yaml").read_text())["recognizer"]["encoder"]
        == "resnet10t"
    )
    model = load_recognizer(tmp_path / "p1" / "model.pt")
    assert model.info["val_p1"] == summary["best_val_p1"]

    # Second pass with hard negatives from the first.
    hard_negatives = mine_hard_negatives(
        tmp_path / "p1" / "model.pt",
        data,
        tmp_path / "hard_negatives.txt",
        **config_sections(config).pick("recognizer", "fonts", "run"),
    )
    s2 = train_recognizer(
        data,
        tmp_path / "p2",
        **config_sections(tiny_config(**ENC, epochs=1, num_passes=2)).pick(
            "recognizer", "fonts", "run"
        ),
        hard_negatives=hard_negatives,
        threads=1,
    )
    assert s2["pass"] == "pass2" and s2["metrics"][-1]["images"] > 15 * 4 * 2


@pytest.mark.slow
def test_resume_after_kill_equals_uninterrupted(tmp_path, data):
    cfg = {
        "fonts": {"reference": ["DejaVuSerif"]},
        "seed": 7,
        "recognizer": {**ENC, "epochs": 3, "num_passes": 2, "device": "cpu"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    cmd = [
        sys.executable,
        "-m",
        "effocr.cli",
        "train-recognizer",
        "--manifest",
        str(data),
        "--config",
        str(tmp_path / "c.yaml"),
        "--threads",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(killed)], env=env)
    ckpt = killed / "checkpoint.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = torch.load(ckpt, weights_only=False)["epoch"]
    assert 1 <= saved < 3 and not (killed / "model.pt").exists()

    from effocr.config import load_config

    config = load_config(tmp_path / "c.yaml")
    resumed = train_recognizer(
        data, killed, **config_sections(config).pick("recognizer", "fonts", "run"), threads=1
    )
    straight = train_recognizer(
        data,
        tmp_path / "straight",
        **config_sections(config).pick("recognizer", "fonts", "run"),
        threads=1,
    )
    assert [r["epoch"] for r in resumed["metrics"]] == [0, 1, 2, 3]
    a = torch.load(killed / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)["model"]
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key
    assert [r["val_p1"] for r in resumed["metrics"]] == [r["val_p1"] for r in straight["metrics"]]


def test_max_epochs_this_run_then_resume(tmp_path, data):
    """The shared scaffold's stop-and-resume (effocr.training) in the recognizer: one epoch,
    then the rest; the same rows and weights as one uninterrupted call."""
    config = tiny_config(**ENC, epochs=2, num_passes=1)
    part = train_recognizer(
        data,
        tmp_path / "part",
        **config_sections(config).pick("recognizer", "fonts", "run"),
        threads=1,
        max_epochs_this_run=1,
    )
    assert [r["epoch"] for r in part["metrics"]] == [0, 1]
    assert (tmp_path / "part" / "model.pt").exists()
    resumed = train_recognizer(
        data,
        tmp_path / "part",
        **config_sections(config).pick("recognizer", "fonts", "run"),
        threads=1,
    )
    straight = train_recognizer(
        data,
        tmp_path / "straight",
        **config_sections(config).pick("recognizer", "fonts", "run"),
        threads=1,
    )
    drop = ("images_per_s", "epoch_s", "elapsed_s")

    def same(rows):
        return [{k: str(v) for k, v in r.items() if k not in drop} for r in rows]  # nan == nan

    assert same(resumed["metrics"]) == same(straight["metrics"])
    a = torch.load(tmp_path / "part" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] and a["val_p1"] == b["val_p1"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


# ---------------------------------------------------------------------------
# Weights & Biases is optional
# ---------------------------------------------------------------------------


class _FakeWandbRun:
    def __init__(self, calls: list) -> None:
        self.calls = calls

    def log(self, data, step=None):
        self.calls.append(("log", dict(data), step))

    def finish(self):
        self.calls.append(("finish",))


def _fake_wandb(calls: list) -> types.ModuleType:
    fake = types.ModuleType("wandb")

    def init(**kwargs):
        calls.append(("init", kwargs))
        return _FakeWandbRun(calls)

    fake.init = init
    return fake


@pytest.mark.slow
def test_wandb_logs_each_epoch_and_finishes(tmp_path, data, monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "wandb", _fake_wandb(calls))
    config = tiny_config(**ENC, epochs=2, num_passes=1, wandb={"project": "x"})
    out = tmp_path / "p1"
    summary = train_recognizer(
        data, out, **config_sections(config).pick("recognizer", "fonts", "run"), threads=1
    )

    assert [c[0] for c in calls] == ["init", "log", "log", "finish"]
    init = calls[0][1]
    assert init["project"] == "x"
    assert init["name"] == "pass1"
    assert init["dir"] == str(out)
    assert init["config"]["recognizer"]["wandb"] == {"project": "x"}
    logs = [c for c in calls if c[0] == "log"]
    assert [step for _, _, step in logs] == [1, 2]
    for (_, logged, step), row in zip(logs, summary["metrics"][1:], strict=True):
        assert "epoch" not in logged
        assert logged["val_p1"] == row["val_p1"] and logged["loss"] == row["loss"], step
        assert set(logged) == {k for k in row if k != "epoch"}
    assert (out / "model.pt").exists()


@pytest.mark.slow
def test_wandb_absent_trains_and_warns(tmp_path, data, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    config = tiny_config(**ENC, epochs=1, num_passes=1, wandb={"project": "x"})
    with caplog.at_level(logging.WARNING, logger="effocr.recognizer.train"):
        summary = train_recognizer(
            data,
            tmp_path / "p1",
            **config_sections(config).pick("recognizer", "fonts", "run"),
            threads=1,
        )
    assert [r["epoch"] for r in summary["metrics"]] == [0, 1]
    assert (tmp_path / "p1" / "model.pt").exists()
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "wandb" in r.getMessage()
    ]
    assert warnings, caplog.text
    assert "not installed" in warnings[0].getMessage()


# ---------------------------------------------------------------------------
# hard_negatives_fine_tune: the second pass starts where the first one ended
# ---------------------------------------------------------------------------


def _csv_rows(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_hard_negatives_fine_tune_starts_from_pass1_precision(tmp_path, data):
    config = tiny_config(**ENC, epochs=2, num_passes=2, hard_negatives_fine_tune=True)
    assert config["recognizer"]["hard_negatives_fine_tune"] is True
    p1_dir, p2_dir = tmp_path / "pass1", tmp_path / "pass2"
    train_recognizer(
        data, p1_dir, **config_sections(config).pick("recognizer", "fonts", "run"), threads=1
    )
    p1 = json.loads((p1_dir / "metrics.json").read_text(encoding="utf-8"))
    # Pass 1 learnt something, so a fresh start would score visibly lower than its model.
    assert p1["best_val_p1"] > p1["zero_shot_val_p1"], p1["metrics"]

    hard_negatives = mine_hard_negatives(
        p1_dir / "model.pt",
        data,
        tmp_path / "hard_negatives.txt",
        **config_sections(config).pick("recognizer", "fonts", "run"),
    )
    train_recognizer(
        data,
        p2_dir,
        **config_sections(
            tiny_config(**ENC, epochs=1, num_passes=1, hard_negatives_fine_tune=True)
        ).pick("recognizer", "fonts", "run"),
        hard_negatives=hard_negatives,
        init_model=p1_dir / "model.pt",
        threads=1,
    )
    rows = _csv_rows(p2_dir / "metrics.csv")
    assert rows[0]["epoch"] == "0"
    zero_shot = float(rows[0]["val_p1"])
    p2 = json.loads((p2_dir / "metrics.json").read_text(encoding="utf-8"))
    assert p2["pass"] == "pass2"
    assert p2["zero_shot_val_p1"] == pytest.approx(zero_shot)
    # Same validation set (same seed, manifest and reference fonts): the saved pass-1 model
    # (its best epoch) scores at least its recorded precision before any pass-2 step.
    assert zero_shot >= p1["best_val_p1"] - 1e-9, (zero_shot, p1["best_val_p1"])
    assert zero_shot > p1["zero_shot_val_p1"]


# ---------------------------------------------------------------------------
# split_records without real crops: held-out fonts
# ---------------------------------------------------------------------------

SPLIT_REF = "RefSerif"
SPLIT_OTHERS = tuple(f"Font{i:02d}" for i in range(13))  # 15% of 13 -> 2 held out


def _render_records(fonts, chars="abc", real_train_fonts=()):
    recs = [
        GlyphRecord(Path(f"glyphs/{font}/{ord(c):04X}.png"), f"U+{ord(c):04X}", "render", font, "")
        for font in fonts
        for c in chars
    ]
    recs += [
        GlyphRecord(
            Path(f"crops/{font}/{ord(c):04X}.png"), f"U+{ord(c):04X}", "real", font, "train"
        )
        for font in real_train_fonts
        for c in chars
    ]
    return recs


@pytest.mark.parametrize("seed", range(8))
def test_split_records_holds_out_whole_non_reference_fonts(seed):
    records = _render_records((SPLIT_REF, *SPLIT_OTHERS))
    train, val, desc = split_records(records, [SPLIT_REF], seed)
    held = {r.origin for r in val}
    train_fonts = {r.origin for r in train}
    assert len(held) == 2
    assert held <= set(SPLIT_OTHERS)
    assert SPLIT_REF in train_fonts and SPLIT_REF not in held
    assert not held & train_fonts
    # Whole fonts: every glyph of a held-out font is in validation, all others in training.
    assert len(val) == 3 * len(held)
    assert len(train) + len(val) == len(records)
    assert all(r.source == "render" for r in val)
    assert "held-out" in desc and all(f in desc for f in held)


def test_split_records_held_out_fonts_are_deterministic_per_seed():
    records = _render_records((SPLIT_REF, *SPLIT_OTHERS))

    def held(seed, recs=records):
        return sorted({r.origin for r in split_records(recs, [SPLIT_REF], seed)[1]})

    for seed in range(5):
        assert held(seed) == held(seed)
        # The input order does not change the choice.
        assert held(seed, list(reversed(records))) == held(seed)
    assert len({tuple(held(s)) for s in range(20)}) > 1, "the seed never changes the choice"


def test_split_records_several_reference_fonts_never_held_out():
    refs = ["RefSerif", "RefSerif2"]
    records = _render_records((*refs, "FontA", "FontB"), real_train_fonts=("Scan",))
    for seed in range(10):
        train, val, _ = split_records(records, refs, seed)
        held = {r.origin for r in val}
        assert len(held) == 1 and held <= {"FontA", "FontB"}
        assert set(refs) <= {r.origin for r in train}
        # Real training crops still train when validation falls back to held-out renders.
        assert sum(r.source == "real" for r in train) == 3
        assert all(r.source == "render" for r in val)


def test_checkpoint_of_other_code_is_not_resumed(tmp_path):
    """Both training rules rerun when any module in effocr.recognizer.train's closure changes
    (effocr.utils, config, profiles as well as the recognizer package). Each such edit must
    change the checkpoint's hash too, or the rerun would resume the finished run and ship the
    old model. Checked on a copy of the package, each module edited alone."""
    from code_edits import assert_checkpoint_hash_follows_code

    assert_checkpoint_hash_follows_code(
        tmp_path,
        "effocr.recognizer.train",
        "manifest.csv",
        "config_hash(Path('manifest.csv'), None, None, 'pass1', "
        "**sections.pick('recognizer', 'fonts', 'run'))",
        {"effocr.recognizer.model", "effocr.utils", "effocr.config", "effocr.profiles"},
    )


def test_epochs_default_to_the_profile():
    """recognizer.epochs null: 12 for English (the half-width encoder), 8 for Japanese; an
    explicit value wins, and the hard-negative pass follows the first unless set."""
    from effocr.config import load_config
    from effocr.profiles import get_profile
    from effocr.recognizer.train import _epochs

    def section(**kw):
        cfg = load_config(None)
        cfg["recognizer"].update(kw)
        return config_sections(cfg).recognizer

    en, jp = get_profile("en"), get_profile("jp")
    assert section().epochs is None
    assert (_epochs(section(), False, en), _epochs(section(), True, en)) == (12, 12)
    assert _epochs(section(), False, jp) == 8
    assert _epochs(section(epochs=3), True, en) == 3
    assert _epochs(section(epochs=3, hard_negatives_epochs=5), True, jp) == 5
