"""Training the recognizer: supervised contrastive loss, m-per-class batches, two passes.

Pass 1 trains on renders (augmented) and real training crops (deterministic transform).
Pass 2 (`hard_negatives` given) adds hard-negative blocks from `hard_negatives.txt` to the batches and, by default,
starts from a fresh encoder. After every epoch the model is validated (precision@1 of real
validation crops against a reference index built with the current weights; held-out renders
when the dataset has no real crops), and `checkpoint.pt` is written atomically so that an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from effocr.config import FontsSection, RecognizerSection, RunSection
from effocr.profiles import Profile, get_profile
from effocr.recognizer.dataset import (
    GlyphDataset,
    GlyphRecord,
    load_image,
    read_manifest,
    reference_groups,
    resolve_reference_fonts,
)
from effocr.recognizer.hard_negatives import read_hard_negatives
from effocr.recognizer.index import _loader_workers
from effocr.recognizer.model import (
    RecognizerNet,
    config_encoder_args,
    load_recognizer,
)
from effocr.recognizer.samplers import HardNegativeSampler, MPerClassSampler
from effocr.recognizer.transforms import pad_square, render_augment, resize_square
from effocr.training import EpochResult, StepProgress, TrainingRun, run_hash
from effocr.utils import (
    EffOCRError,
    label_to_codepoints,
    optimizer_step,
    seed_everything,
    select_device,
    set_threads,
)
from effocr.warm_start import peak_learning_rate, warm_start

LOG = logging.getLogger(__name__)

METRIC_FIELDS = (
    "epoch",
    "loss",
    "val_p1",
    "val_n",
    "lr",
    "images",
    "images_per_s",
    "epoch_s",
    "elapsed_s",
)


def _epochs(recognizer: RecognizerSection, second_pass: bool, profile: Profile) -> int:
    if second_pass and recognizer.hard_negatives_epochs is not None:
        return recognizer.hard_negatives_epochs
    return recognizer.epochs or profile.recognizer_epochs


class _ImageBank:
    """Preprocessed glyphs kept as uint8 squares (a quarter of float32) for repeated validation."""

    def __init__(self, paths: Sequence[Path], size: int, mean, std) -> None:
        self.size = size
        self.data = np.empty((len(paths), size, size, 3), dtype=np.uint8)
        for i, p in enumerate(paths):
            self.data[i] = resize_square(pad_square(load_image(p)), size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.data)

    @torch.no_grad()
    def embed(self, model: RecognizerNet, device: str, batch_size: int = 256) -> np.ndarray:
        model.eval()
        out = []
        for start in range(0, len(self.data), batch_size):
            x = torch.from_numpy(self.data[start : start + batch_size]).permute(0, 3, 1, 2).float()
            x = (x / 255.0 - self.mean) / self.std
            out.append(model(x.to(device)).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, model.dim), np.float32)


class Validator:
    """Precision@1 of validation glyphs against class embeddings of the reference renders."""

    def __init__(
        self,
        ref_groups: dict[str, list[GlyphRecord]],
        val_records: Sequence[GlyphRecord],
        size: int,
        mean,
        std,
    ) -> None:
        self.ref_codes = list(ref_groups)
        ref_paths = [r.path for code in self.ref_codes for r in ref_groups[code]]
        self.owner = np.repeat(
            np.arange(len(self.ref_codes)), [len(ref_groups[c]) for c in self.ref_codes]
        )
        self.refs = _ImageBank(ref_paths, size, mean, std)
        self.vals = _ImageBank([r.path for r in val_records], size, mean, std)
        row = {c: i for i, c in enumerate(self.ref_codes)}
        # A validation class without a reference render can never be right: it counts as a miss.
        self.val_rows = np.array([row.get(r.codepoints, -1) for r in val_records], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.vals)

    def precision_at_1(self, model: RecognizerNet, device: str) -> float:
        """Share of validation glyphs whose nearest reference class is their own."""
        if len(self.vals) == 0:
            return float("nan")
        ref = self.refs.embed(model, device)
        sums = np.zeros((len(self.ref_codes), ref.shape[1]), dtype=np.float32)
        np.add.at(sums, self.owner, ref)
        sums /= np.linalg.norm(sums, axis=1, keepdims=True) + 1e-12
        val = self.vals.embed(model, device)
        # In chunks: with ~20,000 classes a full (val x classes) matrix would take gigabytes.
        pred = np.concatenate(
            [np.argmax(val[i : i + 1024] @ sums.T, axis=1) for i in range(0, len(val), 1024)]
        )
        return float(np.mean(pred == self.val_rows))


def split_records(
    records: Sequence[GlyphRecord], ref_stems: Sequence[str], seed: int
) -> tuple[list[GlyphRecord], list[GlyphRecord], str]:
    """Training and validation glyphs, and a description of what validation measures.

    Validation uses the real `val` crops; without any, renders of held-out fonts (about 15% of
    the non-reference fonts, at least one, chosen by seed) that training never sees.
    """
    renders = [r for r in records if r.source == "render"]
    real_train = [r for r in records if r.source == "real" and r.split == "train"]
    real_val = [r for r in records if r.source == "real" and r.split == "val"]
    if real_val:
        return renders + real_train, real_val, f"{len(real_val)} real validation crops"
    others = sorted({r.origin for r in renders} - set(ref_stems))
    if len(others) >= 2:
        rng = np.random.default_rng(seed)
        n = max(1, round(0.15 * len(others)))
        held = set(rng.choice(others, size=n, replace=False).tolist())
        train = [r for r in renders if r.origin not in held] + real_train
        val = [r for r in renders if r.origin in held]
        return train, val, f"{len(val)} renders of held-out font(s) {sorted(held)}"
    val = [r for r in renders if r.origin not in set(ref_stems)] or renders
    LOG.warning(
        "no real validation crops and too few fonts to hold one out: validating on training renders"
    )
    return renders + real_train, val, f"{len(val)} training renders (no held-out data)"


def _lr_lambda(total_steps: int, warmup: int):
    """Linear warm-up, then cosine decay to 5% of the base learning rate, per step."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_ = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress_))

    return f


def batch_loader(dataset: Any, sampler: Any, workers: int, device: str) -> DataLoader:
    """The training DataLoader: batches from `sampler`, `workers` loader processes."""
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=device.startswith("cuda"),
        persistent_workers=workers > 0,
    )


def create_optimization(
    model: RecognizerNet,
    recognizer: RecognizerSection,
    total_steps: int,
    *,
    lr: float,
) -> tuple[Any, Any, Any]:
    """SupCon loss, AdamW and the per-step schedule of a run of `total_steps` peaking at `lr`
    (`effocr.warm_start.peak_learning_rate`)."""
    from pytorch_metric_learning.losses import SupConLoss

    loss_fn = SupConLoss(temperature=float(recognizer.temperature))
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(lr), weight_decay=float(recognizer.weight_decay)
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(total_steps, warmup=min(max(1, total_steps // 20), 200))
    )
    return loss_fn, optimizer, scheduler


def _amp(device: str, enabled: bool) -> tuple[Any, torch.amp.GradScaler | None]:
    """Autocast context factory and grad scaler: bf16 where supported, else fp16 + scaler."""
    if not (device.startswith("cuda") and enabled):
        return contextlib.nullcontext, None
    if torch.cuda.is_bf16_supported():
        return (lambda: torch.autocast("cuda", dtype=torch.bfloat16)), None
    return (lambda: torch.autocast("cuda", dtype=torch.float16)), torch.amp.GradScaler("cuda")


def _wandb_run(recognizer: RecognizerSection, config: dict, name: str, out_dir: Path):
    """A Weights & Biases run when configured and installed; None otherwise (never required)."""
    opts = recognizer.wandb
    if not opts:
        return None
    try:
        import wandb
    except ImportError:
        LOG.warning("recognizer.wandb is set but wandb is not installed; not logging to W&B")
        return None
    return wandb.init(config=config, name=name, dir=str(out_dir), reinit=True, **dict(opts))


def config_hash(
    manifest: Path,
    hard_negatives: Path | None,
    init_model: Path | None,
    pass_name: str,
    *,
    recognizer: RecognizerSection,
    fonts: FontsSection,
    run: RunSection,
) -> str:
    """What a checkpoint must match to be resumed: config, inputs and code."""
    return run_hash(
        "effocr.recognizer.train",
        {"manifest": manifest, "hard_negatives": hard_negatives, "init": init_model},
        recognizer=recognizer.as_dict(),
        seed=run.seed,
        language=run.language,
        fonts_reference=fonts.as_dict()["reference"],
        **{"pass": pass_name},
    )


def train_one_epoch(
    model: RecognizerNet,
    loader: DataLoader,
    loss_fn: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    *,
    device: str,
    autocast: Any,
    scaler: Any,
    total: int,
    desc: str,
) -> StepProgress:
    """One epoch of SupCon steps; returns its progress (mean loss, images, seconds)."""
    model.train()
    steps = StepProgress(loader, total=total, desc=desc)
    for images, labels in steps:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if device.startswith("cuda"):
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast():
            emb = model(images)
        loss = loss_fn(emb.float(), labels)
        optimizer_step(loss, optimizer, scaler)
        scheduler.step()
        steps.update(float(loss.detach()), len(images))
    return steps


def train_recognizer(
    manifest: str | Path,
    out_dir: str | Path,
    *,
    recognizer: RecognizerSection,
    fonts: FontsSection,
    run: RunSection,
    hard_negatives: str | Path | None = None,
    init_model: str | Path | None = None,
    init_from: str | Path | None = None,
    threads: int = 1,
    pass_name: str | None = None,
    max_epochs_this_run: int | None = None,
) -> dict:
    """Train one recognizer pass and write `model.pt`, `metrics.csv`/`.json`, `curve.png`, `config.yaml`.

    Args:
        manifest: Recognizer dataset manifest (renders + real crops).
        out_dir: Output directory (`checkpoint.pt` lives here too).
        recognizer: The `recognizer` section.
        fonts: The `fonts` section (`reference`).
        run: `seed`, `language`. The three are the run's config (`config.yaml`, model.pt).
        hard_negatives: `hard_negatives.txt` for the hard-negative (second) pass; None for the first pass.
        init_model: A `model.pt` whose weights start training (second pass with `hard_negatives_fine_tune`).
        init_from: Config `init_from`: a bundle or results folder whose recognizer weights start
            training when `init_model` does not (`effocr.warm_start`).
        threads: CPU threads for torch and DataLoader workers (Snakemake's `threads`).
        pass_name: Name in logs and metrics (default `pass1` / `pass2`).
        max_epochs_this_run: Stop after this many epochs in this call (tests of resuming);
            the outputs are still written.

    Returns:
        The summary also written to `metrics.json`.
    """
    t_start = time.perf_counter()
    manifest = Path(manifest)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hard_negatives = Path(hard_negatives) if hard_negatives else None
    init_model = Path(init_model) if init_model else None
    second = hard_negatives is not None
    pass_name = pass_name or ("pass2" if second else "pass1")
    config = {
        "seed": run.seed,
        "language": run.language,
        "recognizer": recognizer.as_dict(),
        "fonts": fonts.as_dict(),
    }
    profile = get_profile(run.language)
    seed = run.seed
    epochs = _epochs(recognizer, second, profile)
    num_passes = recognizer.num_passes or profile.num_passes
    m = recognizer.m
    batch_size = recognizer.batch_size
    size = recognizer.input_size

    set_threads(threads)
    device = select_device(recognizer.device)
    workers = _loader_workers(threads, device)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True

    # Data ---------------------------------------------------------------
    records = read_manifest(manifest)
    renders = [r for r in records if r.source == "render"]
    if not renders:
        raise EffOCRError(f"{manifest}: no render rows (the reference index needs renders)")
    stems = resolve_reference_fonts(
        (r.origin for r in renders),
        fonts.reference,
        profile.reference_fonts,
    )
    train_records, val_records, val_desc = split_records(records, stems, seed)
    classes = sorted({r.codepoints for r in train_records})
    class_to_idx = {c: i for i, c in enumerate(classes)}
    train_renders = [r for r in train_records if r.source == "render"]

    # Model (seeded, so a fresh run starts from the same weights) -------------
    seed_everything(seed)
    model = RecognizerNet(
        recognizer.encoder,
        size,
        recognizer.init_checkpoint,
        encoder_args=config_encoder_args(config["recognizer"]["encoder_args"], profile.name),
    )
    if init_model is not None:
        start_from = load_recognizer(init_model)
        if (start_from.encoder_name, start_from.input_size, start_from.encoder_args) != (
            model.encoder_name,
            size,
            model.encoder_args,
        ):
            raise EffOCRError(
                f"{init_model}: encoder {start_from.encoder_name}/{start_from.input_size} "
                f"{start_from.encoder_args} does not match recognizer.encoder "
                f"{model.encoder_name}/{size} {model.encoder_args}"
            )
        model.load_state_dict(start_from.state_dict())
    else:  # both passes start from the base: a fresh pass 2 would discard the fine-tune
        init_model = warm_start(model, init_from, "recognizer")
    # A run that starts from trained weights fine-tunes them in both passes.
    lr = peak_learning_rate(recognizer, init_from)
    model.to(device)
    if device.startswith("cuda"):
        model = model.to(memory_format=torch.channels_last)

    augment = render_augment(
        profile.augment, size, config["recognizer"]["augment"], model.mean, model.std
    )
    dataset = GlyphDataset(train_records, class_to_idx, size, augment, model.mean, model.std)
    if second:
        hard_negatives_sets = [
            [
                class_to_idx[label_to_codepoints(lb)]
                for lb in s
                if label_to_codepoints(lb) in class_to_idx
            ]
            for s in read_hard_negatives(hard_negatives)
        ]
        sampler: MPerClassSampler = HardNegativeSampler(
            dataset.labels,
            m,
            batch_size,
            hard_negatives_sets,
            num_passes=num_passes,
            seed=seed,
            hard_negatives_ratio=recognizer.hard_negatives_ratio,
        )
    else:
        sampler = MPerClassSampler(dataset.labels, m, batch_size, num_passes=num_passes, seed=seed)
    validator = Validator(
        reference_groups(train_renders, stems), val_records, size, model.mean, model.std
    )
    loader = batch_loader(dataset, sampler, workers, device)
    steps_per_epoch = len(sampler)

    # Optimisation -------------------------------------------------------------
    loss_fn, optimizer, scheduler = create_optimization(
        model, recognizer, max(1, epochs * steps_per_epoch), lr=lr
    )
    autocast, scaler = _amp(device, recognizer.amp)

    chash = config_hash(
        manifest, hard_negatives, init_model, pass_name, recognizer=recognizer, fonts=fonts, run=run
    )
    training_run = TrainingRun(
        out_dir,
        kind="recognizer",
        name=pass_name,
        config=config,
        config_hash=chash,
        epochs=epochs,
        columns=METRIC_FIELDS,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        checkpoint_fields=model.metadata(),
        max_epochs_this_run=max_epochs_this_run,
        prefer_later=True,  # same precision, more training
        started=t_start,
    )

    LOG.info(
        "%s: %d classes, %d training glyphs (%d renders), validation on %s; encoder %s %dpx "
        "(dim %d), device %s, threads %d, workers %d; %d epochs x %d steps (batch %d, m %d, "
        "num_passes %d%s)",
        pass_name,
        len(classes),
        len(train_records),
        len(train_renders),
        val_desc,
        model.encoder_name,
        size,
        model.dim,
        device,
        threads,
        workers,
        epochs,
        steps_per_epoch,
        batch_size,
        m,
        num_passes,
        f", {sampler.blocks_per_epoch} hard-negative blocks/epoch" if second else "",
    )
    wb = _wandb_run(recognizer, config, pass_name, out_dir)

    if not training_run.rows:
        # Epoch 0: the untrained (or fine-tune starting) encoder, the baseline of the curve.
        p1 = validator.precision_at_1(model, device)
        row = {"loss": float("nan"), "val_p1": p1, "val_n": len(validator), "lr": 0.0}
        row.update(
            images=0, images_per_s=0.0, epoch_s=0.0, elapsed_s=round(training_run.elapsed(), 2)
        )
        training_run.record(0, EpochResult(row, p1))

    def epoch_fn(epoch: int) -> EpochResult:
        # The epoch's randomness is a function of (seed, epoch), so a resumed run repeats it.
        seed_everything(seed + epoch)
        sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        steps = train_one_epoch(
            model,
            loader,
            loss_fn,
            optimizer,
            scheduler,
            device=device,
            autocast=autocast,
            scaler=scaler,
            total=steps_per_epoch,
            desc=f"{pass_name} {epoch}/{epochs}",
        )
        train_s = time.perf_counter() - t0
        p1 = validator.precision_at_1(model, device)
        row = {
            "loss": round(steps.mean_loss, 6),
            "val_p1": p1,
            "val_n": len(validator),
            "lr": optimizer.param_groups[0]["lr"],
            "images": steps.images,
            "images_per_s": round(steps.images / max(1e-9, train_s), 1),
            "epoch_s": round(time.perf_counter() - t0, 2),
            "elapsed_s": round(training_run.elapsed(), 2),
        }
        return EpochResult(row, p1)

    def log_wandb(row: dict) -> None:
        if wb is not None:
            wb.log({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])

    training_run.fit(epoch_fn, on_epoch=log_wandb)

    # Outputs ------------------------------------------------------------------
    rows, best = training_run.rows, training_run.best
    summary = {
        "pass": pass_name,
        "best_epoch": best["epoch"],
        "best_val_p1": best["score"],
        "zero_shot_val_p1": rows[0]["val_p1"],
        "epochs": epochs,
        "validation": val_desc,
        "classes": len(classes),
        "train_glyphs": len(train_records),
        "device": device,
        "threads": threads,
        "train_s": rows[-1]["elapsed_s"],
        "images_per_s": float(np.mean([r["images_per_s"] for r in rows if r["epoch"] > 0] or [0])),
        "reference_fonts": list(stems),
        "config_hash": chash,
        "metrics": rows,
    }
    training_run.finish(
        {
            **model.metadata(),
            "pass": pass_name,
            "val_p1": best["score"],
            "classes": [label_to_codepoints(lb) for lb in _labels(classes)],
            "reference_fonts": list(stems),
            "config_hash": chash,
        },
        curve_scores=("val_p1",),
        curve_loss_label="SupCon loss",
        curve_title=f"recognizer {pass_name} ({model.encoder_name}, {size}px)",
        summary=summary,
    )
    if wb is not None:
        wb.finish()
    LOG.info(
        "%s done: best val p@1 %.4f at epoch %d (zero-shot %.4f), %.1f s",
        pass_name,
        best["score"],
        best["epoch"],
        rows[0]["val_p1"],
        summary["train_s"],
    )
    return summary


def _labels(codes: Sequence[str]) -> list[str]:
    from effocr.utils import codepoints_to_label

    return [codepoints_to_label(c) for c in codes]


# ---------------------------------------------------------------------------
# Command line: effocr train-recognizer
# ---------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr train-recognizer`."""
    parser.add_argument("--manifest", required=True, help="recognizer dataset manifest (CSV)")
    parser.add_argument("--out", required=True, help="output directory (model.pt, metrics, ...)")
    parser.add_argument("--config", default=None, help="workflow config YAML")
    parser.add_argument(
        "--hard-negatives",
        "--hns",
        default=None,
        help="hard_negatives.txt: train the hard-negative pass",
    )
    parser.add_argument("--init", default=None, help="model.pt to start from (fine-tune)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)


def run(args: argparse.Namespace) -> int:
    """Train one pass."""
    from effocr.config import config_sections, load_config

    sections = config_sections(load_config(args.config))
    summary = train_recognizer(
        args.manifest,
        args.out,
        **sections.pick("recognizer", "fonts", "run"),
        hard_negatives=args.hard_negatives,
        init_model=args.init,
        threads=args.threads,
    )
    print(
        f"{summary['pass']}: best val p@1 {summary['best_val_p1']:.4f} at epoch "
        f"{summary['best_epoch']} -> {Path(args.out) / 'model.pt'}"
    )
    return 0
