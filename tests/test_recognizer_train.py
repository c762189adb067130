"""effocr.recognizer.train: a tiny run improves precision@1; kill -9 then resume; second pass."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from test_recognizer_index import render_manifest, tiny_config

from effocr.recognizer.hardneg import mine_hard_negatives
from effocr.recognizer.model import load_recognizer
from effocr.recognizer.train import train_recognizer

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
    summary = train_recognizer(data, tmp_path / "p1", config, threads=1)
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
    hns = mine_hard_negatives(tmp_path / "p1" / "model.pt", data, tmp_path / "hns.txt", config)
    s2 = train_recognizer(
        data, tmp_path / "p2", tiny_config(**ENC, epochs=1, num_passes=2), hns=hns, threads=1
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
    resumed = train_recognizer(data, killed, config, threads=1)
    straight = train_recognizer(data, tmp_path / "straight", config, threads=1)
    assert [r["epoch"] for r in resumed["metrics"]] == [0, 1, 2, 3]
    a = torch.load(killed / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)["model"]
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key
    assert [r["val_p1"] for r in resumed["metrics"]] == [r["val_p1"] for r in straight["metrics"]]
