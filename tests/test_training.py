"""effocr.training: the scaffold both trainers share, on a tiny torch model (seconds, CPU)."""

from __future__ import annotations

import csv
import logging

import pytest
import torch

from effocr.training import (
    EpochResult,
    StepProgress,
    TrainingRun,
    plot_curve,
    run_hash,
)
from effocr.utils import load_checkpoint, optimizer_step

COLUMNS = ("epoch", "loss", "val_score", "lr", "note")
OUTPUTS = ("model.pt", "metrics.csv", "metrics.json", "curve.png", "config.yaml")
W = torch.tensor([[1.0], [-2.0], [0.5]])


def _rows(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train(
    out,
    *,
    epochs: int = 4,
    max_epochs: int | None = None,
    config_hash: str = "h1",
    scores: list[float] | None = None,
    prefer_later: bool = False,
    states: dict | None = None,
    epoch_fn=None,
) -> TrainingRun:
    """A toy trainer: linear regression with SGD + momentum and a per-epoch schedule.

    The epoch's data is a function of the epoch (as in the real trainers), so that a resumed
    run repeats an uninterrupted one. `scores` replaces the validation score per epoch;
    `states` collects each epoch's weights.
    """
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.8)
    run = TrainingRun(
        out,
        kind="toy",
        name="toy",
        config={"seed": 3, "toy": {"epochs": epochs}},
        config_hash=config_hash,
        epochs=epochs,
        columns=COLUMNS,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        checkpoint_fields={"width": 3},
        max_epochs_this_run=max_epochs,
        prefer_later=prefer_later,
    )
    val_x = torch.randn(32, 3, generator=torch.Generator().manual_seed(99))

    def train_epoch(epoch: int) -> EpochResult:
        gen = torch.Generator().manual_seed(1000 + epoch)
        model.train()
        steps = StepProgress(range(4), desc=f"toy {epoch}", log_every=2)
        for _ in steps:
            x = torch.randn(8, 3, generator=gen)
            loss = torch.nn.functional.mse_loss(model(x), x @ W)
            optimizer_step(loss, optimizer)
            steps.update(float(loss.detach()), len(x))
        scheduler.step()
        with torch.no_grad():
            val = float(torch.nn.functional.mse_loss(model(val_x), val_x @ W))
        score = scores[epoch - 1] if scores else round(1.0 / (1.0 + val), 6)
        if states is not None:
            states[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
        row = {"loss": round(steps.mean_loss, 6), "val_score": score}
        row["lr"] = scheduler.get_last_lr()[0]
        return EpochResult(row, score, {"val_mse": val})

    run.fit(epoch_fn or train_epoch)
    run.finish(
        {"width": 3, "metrics": run.best["metrics"]},
        curve_scores=("val_score",),
        curve_title="toy",
        summary={"best_epoch": run.best["epoch"], "metrics": run.rows},
    )
    return run


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    _train(full)
    first = _train(part, max_epochs=2)
    assert [r["epoch"] for r in first.rows] == [1, 2]
    assert load_checkpoint(part / "checkpoint.pt", "checkpoint")["epoch"] == 2
    # Snakemake deletes the declared outputs of an interrupted job, not the checkpoint.
    for name in OUTPUTS:
        (part / name).unlink()
    resumed = _train(part)
    assert resumed.resumed
    for name in OUTPUTS:
        assert (part / name).is_file(), name
    assert _rows(part / "metrics.csv") == _rows(full / "metrics.csv")
    assert [r["epoch"] for r in _rows(part / "metrics.csv")] == ["1", "2", "3", "4"]
    a = load_checkpoint(part / "checkpoint.pt", "checkpoint")
    b = load_checkpoint(full / "checkpoint.pt", "checkpoint")
    assert _same_state(a["model"], b["model"])
    assert a["optimizer"]["state"][0]["momentum_buffer"].equal(
        b["optimizer"]["state"][0]["momentum_buffer"]
    )
    assert a["scheduler"] == b["scheduler"] and a["epoch"] == b["epoch"] == 4
    assert a["metrics"] == b["metrics"] and a["best"]["epoch"] == b["best"]["epoch"]
    ma = load_checkpoint(part / "model.pt", "model")
    mb = load_checkpoint(full / "model.pt", "model")
    assert _same_state(ma["model"], mb["model"]) and ma["epoch"] == mb["epoch"]


@pytest.mark.parametrize(("prefer_later", "best"), [(False, 2), (True, 3)])
def test_best_state_is_chosen_by_the_score(tmp_path, prefer_later, best):
    states: dict = {}
    run = _train(tmp_path, scores=[0.2, 0.5, 0.5, 0.3], prefer_later=prefer_later, states=states)
    assert run.best["epoch"] == best and run.best["score"] == 0.5
    model = load_checkpoint(tmp_path / "model.pt", "model")
    assert model["kind"] == "toy" and model["epoch"] == best and model["width"] == 3
    assert model["config"] == {"seed": 3, "toy": {"epochs": 4}}
    assert _same_state(model["model"], states[best])
    assert not _same_state(model["model"], states[4])  # not the last epoch's weights
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt", "checkpoint")
    assert ckpt["best"]["epoch"] == best and _same_state(ckpt["best"]["state"], states[best])
    assert _same_state(ckpt["model"], states[4]) and ckpt["width"] == 3


def test_tuple_scores_compare_in_order(tmp_path):
    run = _train(tmp_path, scores=[(0.1, 0.9), (0.4, 0.1), (0.4, 0.2), (0.3, 1.0)])
    assert run.best["epoch"] == 3


def test_outputs_written_when_nothing_is_left_to_train(tmp_path):
    _train(tmp_path)
    rows = _rows(tmp_path / "metrics.csv")
    model = load_checkpoint(tmp_path / "model.pt", "model")
    for name in OUTPUTS:
        (tmp_path / name).unlink()

    def no_training(epoch):
        raise AssertionError("the checkpoint covers every epoch: nothing to train")

    run = _train(tmp_path, epoch_fn=no_training)
    assert run.resumed and run.done == 4 and not run.epochs_left()
    for name in OUTPUTS:
        assert (tmp_path / name).is_file(), name
    assert _rows(tmp_path / "metrics.csv") == rows
    again = load_checkpoint(tmp_path / "model.pt", "model")
    assert again["epoch"] == model["epoch"] and _same_state(again["model"], model["model"])
    assert again["metrics"] == model["metrics"]


def test_checkpoint_of_another_config_hash_is_not_resumed(tmp_path, caplog):
    _train(tmp_path, epochs=3)
    with caplog.at_level(logging.INFO, logger="effocr"):
        run = _train(tmp_path, epochs=3, config_hash="h2", max_epochs=1)
    assert not run.resumed and [r["epoch"] for r in run.rows] == [1]
    assert "config_hash differs" in caplog.text
    assert load_checkpoint(tmp_path / "checkpoint.pt", "checkpoint")["config_hash"] == "h2"
    assert len(_rows(tmp_path / "metrics.csv")) == 1


def test_metrics_csv_columns_and_epoch_zero(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = TrainingRun(
        tmp_path,
        kind="toy",
        name="toy",
        config={},
        config_hash="h",
        epochs=2,
        columns=COLUMNS,
        model=model,
        optimizer=opt,
        scheduler=torch.optim.lr_scheduler.StepLR(opt, 1),
    )
    # epoch 0: the model before training (a baseline row), then epochs counted from 1
    run.record(0, EpochResult({"loss": float("nan"), "val_score": 0.1}, 0.1))
    run.fit(lambda epoch: EpochResult({"val_score": 0.1 * epoch, "lr": 0.1, "extra": 1}, epoch))
    run.finish({}, curve_scores=("val_score",))
    with open(tmp_path / "metrics.csv", encoding="utf-8", newline="") as f:
        header = next(csv.reader(f))
    assert header == list(COLUMNS)
    rows = _rows(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert rows[1]["loss"] == "" and rows[1]["note"] == "" and rows[2]["val_score"] == "0.2"
    assert "extra" not in rows[1]  # only the run's columns
    assert load_checkpoint(tmp_path / "model.pt", "model")["epoch"] == 2
    assert not (tmp_path / "metrics.json").exists()  # only with a summary


def test_run_hash_covers_settings_files_and_code(tmp_path, monkeypatch):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("one", encoding="utf-8")
    b.write_text("one", encoding="utf-8")
    base = run_hash("effocr.localizer.train", {"train": a, "init": None}, seed=1)
    assert base == run_hash("effocr.localizer.train", {"train": b, "init": None}, seed=1)
    assert base != run_hash("effocr.localizer.train", {"train": a, "init": None}, seed=2)
    assert base != run_hash("effocr.localizer.train", {"train": a, "init": a}, seed=1)
    b.write_text("two", encoding="utf-8")
    assert base != run_hash("effocr.localizer.train", {"train": b, "init": None}, seed=1)
    monkeypatch.setattr("effocr.training.code_hash", lambda entry: "edited")
    assert base != run_hash("effocr.localizer.train", {"train": a, "init": None}, seed=1)


def test_step_progress_logs_without_a_terminal(caplog):
    steps = StepProgress(range(5), desc="toy 1/1", log_every=2)
    assert steps.bar.disable  # pytest's stderr is not a terminal
    with caplog.at_level(logging.INFO, logger="effocr.training"):
        for i in steps:
            steps.update(float(i), 3)
    assert steps.steps == 5 and steps.images == 15 and steps.mean_loss == pytest.approx(2.0)
    lines = [r.getMessage() for r in caplog.records if "step" in r.getMessage()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("toy 1/1 step 2/5 loss 0.5000 ") and lines[0].endswith(" img/s")
    assert lines[1].startswith("toy 1/1 step 4/5 loss 1.5000 ")


def test_plot_curve_skips_missing_values(tmp_path):
    rows = [
        {"epoch": 0, "loss": float("nan"), "val_a": 0.1, "val_b": ""},
        {"epoch": 1, "loss": 1.0, "val_a": 0.5, "val_b": ""},
    ]
    plot_curve(rows, tmp_path / "curve.png", scores=("val_a", "val_b"), title="t")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
