"""One training run, shared by every trainer (recognizer passes, localizer, any later one).

A trainer keeps its model, data, `train_one_epoch` and `evaluate`; a `TrainingRun` does the
rest, in the spirit of timm's `CheckpointSaver` and the torchvision reference scripts:

- the run's hash (`run_hash`: settings, input files, code fingerprint) that a checkpoint must
  match to be resumed;
- `checkpoint.pt` after every epoch (model, optimizer, scheduler, grad scaler, epoch, metrics
  rows, best epoch with its weights, config, hash; plain data only, `effocr.utils.save_checkpoint`)
  and resuming from it (`effocr.utils.resume_training`);
- the best epoch by a score (higher is better; tuples compare in order);
- `metrics.csv` (one row per epoch, the trainer's columns in its order), `curve.png`
  (`plot_curve`), progress (`StepProgress`: a bar on a terminal, log lines otherwise);
- the ending that always writes `model.pt` (the best epoch's weights), `metrics.csv`,
  `curve.png`, `config.yaml` (and `metrics.json` when given), also when a resumed run finds
  nothing left to train: Snakemake deletes those outputs before rerunning an interrupted job,
  but not the checkpoint.

Epochs are counted from 1: the row of epoch k holds the figures after k epochs of training, a
checkpoint's `epoch` is the number of epochs done. A trainer may record a row for epoch 0 (the
model before training, e.g. the recognizer's zero-shot precision) with `record`.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from effocr import artifacts
from effocr.provenance import code_hash
from effocr.utils import (
    atomic_path,
    progress,
    resume_training,
    save_checkpoint,
    sha256_file,
    sha256_json,
    write_json,
    write_text,
)

LOG = logging.getLogger(__name__)

# Training steps between progress lines in the log when there is no progress bar (Snakemake).
LOG_EVERY = 50


def run_hash(entry: str, files: dict[str, str | os.PathLike | None], **settings: Any) -> str:
    """What a checkpoint must match to be resumed: `settings`, the sha256 of each input file
    (None stays None) and the code: `effocr.provenance.code_hash(entry)`, every module the
    trainer's module `entry` imports (Snakemake reruns the rule when that code changes; resuming
    the old run's checkpoint would then silently keep the old model)."""
    return sha256_json(
        {
            **settings,
            **{k: sha256_file(p) if p else None for k, p in files.items()},
            "code": code_hash(entry),
        }
    )


class StepProgress:
    """The steps of one epoch: running mean loss and images/s, shown on a tqdm bar when stderr
    is a terminal, else logged every `log_every` steps (Snakemake logs).

    Iterate over it as over `iterable`; call `update(loss, images)` after each step.
    """

    def __init__(
        self,
        iterable: Iterable,
        *,
        desc: str,
        total: int | None = None,
        log_every: int = LOG_EVERY,
        leave: bool = True,
    ) -> None:
        self.bar = progress(iterable, total=total, desc=desc, unit="batch", leave=leave)
        self.desc = desc
        self.total = self.bar.total  # len(iterable) when it has one, else None
        self.log_every = log_every
        self.loss_sum = 0.0
        self.steps = 0
        self.images = 0
        self.t0 = time.perf_counter()

    def __iter__(self):
        return iter(self.bar)

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(1, self.steps)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0

    def update(self, loss: float, images: int) -> None:
        self.loss_sum += loss
        self.steps += 1
        self.images += images
        rate = self.images / max(1e-9, self.seconds)
        if self.bar.disable:
            if self.log_every > 0 and self.steps % self.log_every == 0:
                LOG.info(
                    "%s step %d/%s loss %.4f %.0f img/s",
                    self.desc,
                    self.steps,
                    self.total if self.total is not None else "?",
                    self.mean_loss,
                    rate,
                )
        else:
            self.bar.set_postfix(loss=f"{self.mean_loss:.3f}", img_s=f"{rate:.0f}")


@dataclass
class EpochResult:
    """What a trainer's epoch gives its run.

    row: the metrics row without `epoch` (keys: the run's columns).
    score: higher is better (a tuple compares in order); picks the best epoch.
    metrics: kept with the best epoch (`TrainingRun.best["metrics"]`).
    """

    row: dict
    score: float | tuple
    metrics: Any = None


def _blank(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def plot_curve(
    rows: Sequence[dict],
    path: str | os.PathLike,
    *,
    scores: Sequence[str],
    title: str | None = None,
    loss: str = "loss",
    loss_label: str = "train loss",
) -> None:
    """`curve.png`: the training loss (left panel) and validation `scores` in [0, 1] (right)
    per epoch; empty or NaN values (epoch 0's loss, a score not measured) are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    trained = [r for r in rows if not _blank(r.get(loss))]
    ax[0].plot([r["epoch"] for r in trained], [r[loss] for r in trained], label=loss_label)
    ax[0].set_xlabel("epoch")
    ax[0].legend()
    for key in scores:
        vals = [(r["epoch"], r.get(key)) for r in rows if not _blank(r.get(key))]
        if vals:
            ax[1].plot([e for e, _ in vals], [v for _, v in vals], label=key)
    ax[1].set_xlabel("epoch")
    ax[1].set_ylim(0, 1.02)
    ax[1].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_metrics(rows: Sequence[dict], path: str | os.PathLike, columns: Sequence[str]) -> None:
    """`metrics.csv`: a header of `columns`, one row per epoch (a missing value is empty)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns))
            writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k, "") for k in columns})


class TrainingRun:
    """One resumable training run writing into `out_dir` (see the module's docstring).

    Args:
        out_dir: The run's folder (`checkpoint.pt`, `model.pt`, `metrics.csv`...).
        kind: `model.pt`'s `kind` (`recognizer`, `localizer`).
        name: The run's name in log lines (`pass1`, `localizer`).
        config: The full validated config (in `model.pt`, the checkpoint and `config.yaml`).
        config_hash: `run_hash(...)` of this run: a checkpoint with another is not resumed.
        epochs: Epochs of the whole run.
        columns: `metrics.csv`'s columns, in order; the first is `epoch`.
        model, optimizer, scheduler, scaler: The training objects saved and resumed.
        checkpoint_fields: Extra plain data for the checkpoint (model metadata).
        max_epochs_this_run: Stop after this many epochs in this call (tests of resuming);
            the outputs are still written.
        prefer_later: On a tied score the later epoch is best (same score, more training);
            else the earlier one stays.
        started: `time.perf_counter()` when the run's work began (default: now).

    A matching checkpoint is resumed here: `rows`, `best` and `done` come from it.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        kind: str,
        name: str,
        config: dict,
        config_hash: str,
        epochs: int,
        columns: Sequence[str],
        model: Any,
        optimizer: Any,
        scheduler: Any,
        scaler: Any = None,
        checkpoint_fields: dict | None = None,
        max_epochs_this_run: int | None = None,
        prefer_later: bool = False,
        started: float | None = None,
    ) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.kind, self.name, self.config, self.config_hash = kind, name, config, config_hash
        self.epochs = int(epochs)
        self.columns = list(columns)
        self.model, self.optimizer, self.scheduler, self.scaler = (
            model,
            optimizer,
            scheduler,
            scaler,
        )
        self.checkpoint_fields = dict(checkpoint_fields or {})
        self.max_epochs_this_run = max_epochs_this_run
        self.prefer_later = prefer_later
        self.started = time.perf_counter() if started is None else started
        self.rows: list[dict] = []
        # The best epoch's weights live here (and in the checkpoint), not only in model.pt: a
        # resumed run whose later epochs do not improve must still be able to write model.pt.
        self.best: dict[str, Any] = {"epoch": 0, "score": None, "metrics": None, "state": None}
        self.done = 0  # epochs trained
        self._elapsed_before = 0.0
        ckpt = resume_training(
            self.checkpoint_path, config_hash, model, optimizer, scheduler, scaler
        )
        self.resumed = ckpt is not None
        if ckpt is not None:
            self.rows = list(ckpt["metrics"])
            self.best = {**self.best, **ckpt["best"]}
            self.done = int(ckpt["epoch"])
            self._elapsed_before = float(ckpt.get("elapsed_s", 0.0))
            LOG.info(
                "%s: resuming %s after epoch %d of %d",
                self.checkpoint_path,
                name,
                self.done,
                self.epochs,
            )

    @property
    def checkpoint_path(self) -> Path:
        return self.out / artifacts.CHECKPOINT

    def elapsed(self) -> float:
        """Seconds this run has worked, earlier (resumed) calls included."""
        return self._elapsed_before + (time.perf_counter() - self.started)

    def epochs_left(self) -> range:
        """The epochs (from 1) this call trains: after the checkpoint's, up to `epochs` or
        `max_epochs_this_run` more."""
        stop = self.epochs
        if self.max_epochs_this_run is not None:
            stop = min(stop, self.done + self.max_epochs_this_run)
        return range(self.done + 1, stop + 1)

    def record(self, epoch: int, result: EpochResult) -> dict:
        """Add epoch `epoch`'s row and keep the model's weights when its score is the best."""
        row = {"epoch": epoch, **result.row}
        self.rows.append(row)
        best = self.best["score"]
        score = result.score
        if self.best["state"] is None or score > best or (self.prefer_later and score == best):
            # A copy: on CPU, .cpu() returns the very tensors the next steps update in place.
            state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            self.best = {"epoch": epoch, "score": score, "metrics": result.metrics, "state": state}
        LOG.info(
            "%s epoch %d/%d: %s (best epoch %d)",
            self.name,
            epoch,
            self.epochs,
            ", ".join(f"{k} {_short(v)}" for k, v in row.items() if k != "epoch"),
            self.best["epoch"],
        )
        return row

    def save(self) -> None:
        """`checkpoint.pt` (everything a resume needs) and `metrics.csv` so far."""
        save_checkpoint(
            {
                "kind": self.kind,
                **self.checkpoint_fields,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "epoch": self.done,
                "config": self.config,
                "metrics": self.rows,
                "best": self.best,
                "config_hash": self.config_hash,
                "elapsed_s": self.elapsed(),
            },
            self.checkpoint_path,
        )
        write_metrics(self.rows, self.out / artifacts.METRICS_CSV, self.columns)

    def fit(
        self,
        train_epoch: Callable[[int], EpochResult],
        on_epoch: Callable[[dict], None] | None = None,
    ) -> None:
        """Train the epochs left: `train_epoch(epoch)` (the trainer's `train_one_epoch` and
        `evaluate`; its randomness a function of the seed and `epoch`, so that a resumed run
        repeats an uninterrupted one), then the row, the best state and the checkpoint;
        `on_epoch(row)` after each (e.g. W&B)."""
        for epoch in self.epochs_left():
            row = self.record(epoch, train_epoch(epoch))
            self.done = epoch
            self.save()
            if on_epoch is not None:
                on_epoch(row)

    def finish(
        self,
        model_fields: dict,
        *,
        curve_scores: Sequence[str],
        curve_title: str | None = None,
        curve_loss_label: str = "train loss",
        summary: dict | None = None,
    ) -> None:
        """Write the outputs, always (also when nothing was left to train): `model.pt` (`kind`,
        `config`, the best epoch's weights as `model` and its number as `epoch`, plus
        `model_fields`), `metrics.csv`, `metrics.json` (`summary`, when given), `curve.png`
        (`plot_curve` of `curve_scores`, when there are rows) and `config.yaml`."""
        if self.best["state"] is None:
            LOG.warning("%s: no best epoch recorded: model.pt holds the current weights", self.name)
            self.best["state"] = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        save_checkpoint(
            {
                "kind": self.kind,
                "model": self.best["state"],
                "config": self.config,
                "epoch": self.best["epoch"],
                **model_fields,
            },
            self.out / artifacts.MODEL,
        )
        write_metrics(self.rows, self.out / artifacts.METRICS_CSV, self.columns)
        if summary is not None:
            write_json(self.out / artifacts.SUMMARY, summary)
        if self.rows:
            plot_curve(
                self.rows,
                self.out / artifacts.CURVE,
                scores=curve_scores,
                title=curve_title,
                loss_label=curve_loss_label,
            )
        write_text(
            self.out / artifacts.RUN_CONFIG,
            yaml.safe_dump(self.config, sort_keys=False, allow_unicode=True),
        )


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
