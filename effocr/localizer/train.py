"""Training of the localizer from the COCO splits (`effocr train-localizer`, rule `train_localizer`).

Plain loops: `train_one_epoch`, then `evaluate` on the validation split (pycocotools mAP and
char/word P/R/F1 at IoU 0.5). The best epoch by mean F1 over classes (ties: COCO AP, then the
earlier epoch) is kept as `model.pt`. Checkpoints, resuming, metrics.csv, curve.png and the
outputs written on every run are `effocr.training.TrainingRun`'s.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter

from effocr.config import DatasetSection, LocalizerSection, RunSection
from effocr.data.coco import category_id, is_vertical, line_is_vertical, load_coco
from effocr.localizer import postprocess as pp
from effocr.localizer.backends import create_localizer
from effocr.localizer.evaluate import detect_split, evaluate_detections
from effocr.localizer.model import (
    MEAN,
    PAD_VALUE,
    STD,
    LineDetector,
    TorchLocalizer,
    detection_loss,
    model_meta,
)
from effocr.profiles import get_profile
from effocr.training import LOG_EVERY, EpochResult, StepProgress, TrainingRun, run_hash
from effocr.utils import (
    EffOCRError,
    load_checkpoint,
    open_rgb,
    optimizer_step,
    seed_everything,
    select_device,
    set_threads,
)
from effocr.warm_start import peak_learning_rate, warm_start

LOG = logging.getLogger(__name__)

# Ink spread (`localizer.ink_spread`): a grey-level erosion of the paper by this share of the
# line height, a radius of 1-2 px on a 40-50 px line. Heavy print and bleeding ink make
# touching glyphs (`gn`, `rt`); synthetic lines drawn with such ink taught the base localizer
# to part them (config/README.md, "Ink spread").
INK_SPREAD = (0.01, 0.035)

METRIC_COLUMNS = [
    "epoch",
    "loss",
    "val_AP",
    "val_AP50",
    "val_char_f1",
    "val_word_f1",
    "val_mean_f1",
    "lr",
    "seconds",
]


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


class LineSet:
    """The lines of one COCO split held in memory, with boxes per class (``x0, y0, x1, y1``).

    `allows_vertical`: whether vertical lines occur (the profile's `allows_vertical`); `self.vertical[i]`
    says whether line i is read top to bottom (and so transposed for the network).
    """

    def __init__(
        self,
        coco_json: str | os.PathLike,
        image_dir: str | os.PathLike,
        classes: list[str],
        names: dict,
        allows_vertical: bool | None = None,
    ) -> None:
        self.coco = load_coco(coco_json)
        cat = {c: category_id(self.coco, names[c], required=c == "char") for c in classes}
        self.images: list[np.ndarray] = []
        self.boxes: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        by_image: dict[int, list[dict]] = {}
        for a in self.coco["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
        for im in self.coco["images"]:
            path = Path(image_dir) / im["file_name"]
            try:
                arr = np.asarray(open_rgb(path))
            except (FileNotFoundError, OSError) as exc:
                raise EffOCRError(
                    f"{coco_json}: image {im['id']}: cannot read {path}: {exc}"
                ) from exc
            boxes, labels = [], []
            for a in by_image.get(im["id"], []):
                for k, c in enumerate(classes):
                    if cat[c] is not None and a["category_id"] == cat[c]:
                        x, y, w, h = a["bbox"]
                        if w <= 0 or h <= 0:
                            raise EffOCRError(
                                f"{coco_json}: annotation {a['id']} (image {im['id']}): empty bbox {a['bbox']}"
                            )
                        boxes.append([x, y, x + w, y + h])
                        labels.append(k)
            self.images.append(arr)
            self.boxes.append(np.asarray(boxes, np.float32).reshape(-1, 4))
            self.labels.append(np.asarray(labels, np.int64))
        self.vertical = [is_vertical(im, allows_vertical) for im in self.coco["images"]]

    def __len__(self) -> int:
        return len(self.images)


def augment_line(
    img: np.ndarray,
    boxes: np.ndarray,
    input_height: int,
    rng: np.random.Generator | None,
    allows_vertical: bool | None = None,
    *,
    ink_spread: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Transpose (vertical), jitter and resize one line; returns (H, W, 3) uint8 and boxes.

    `allows_vertical` as in `model.prepare_line`: False never transposes, True or None transposes a
    line taller than wide (what inference does with the same profile).

    Augmentation (when `rng` is given) is scan-like and small: white margin above/below
    (0-12 % of the height each), horizontal scale 0.9-1.1, brightness/contrast jitter; and, for
    a share `ink_spread` of the lines, ink spread by `INK_SPREAD` of the line height (config
    `localizer.ink_spread`).
    """
    boxes = boxes.copy()
    if line_is_vertical(img.shape[0], img.shape[1], allows_vertical):
        img = np.ascontiguousarray(img.transpose(1, 0, 2))
        boxes = boxes[:, [1, 0, 3, 2]]
    h, w = img.shape[:2]
    sx = 1.0
    if rng is not None:
        top, bottom = (int(rng.uniform(0, 0.12) * h) for _ in range(2))
        if top or bottom:
            canvas = np.full((h + top + bottom, w, 3), PAD_VALUE, np.uint8)
            canvas[top : top + h] = img
            img = canvas
            boxes[:, [1, 3]] += top
            h = img.shape[0]
        sx = float(rng.uniform(0.9, 1.1))
        # Drawn only when asked for: a localizer without it sees the random streams it did.
        if ink_spread > 0 and rng.random() < ink_spread:
            radius = round(rng.uniform(*INK_SPREAD) * h)
            if radius:
                spread = Image.fromarray(img).filter(ImageFilter.MinFilter(2 * radius + 1))
                img = np.asarray(spread)
    scale = input_height / h
    new_w = max(1, int(round(w * scale * sx)))
    out = np.asarray(Image.fromarray(img).resize((new_w, input_height), Image.BILINEAR))
    boxes[:, [0, 2]] *= new_w / w
    boxes[:, [1, 3]] *= scale
    if rng is not None:
        alpha = rng.uniform(0.75, 1.15)
        beta = rng.uniform(-30, 30)
        out = np.clip(out.astype(np.float32) * alpha + beta + (255 - 255 * alpha) / 2, 0, 255)
        out = out.astype(np.uint8)
    return out, boxes


def make_batch(
    items: list[tuple[np.ndarray, np.ndarray, np.ndarray]], pad_multiple: int = 32
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Pad lines with white to a common width (multiple of the deepest stride) and normalise."""
    width = max(img.shape[1] for img, _, _ in items)
    width = max(pad_multiple, -(-width // pad_multiple) * pad_multiple)
    height = items[0][0].shape[0]
    batch = np.full((len(items), height, width, 3), PAD_VALUE, np.uint8)
    targets = []
    for k, (img, boxes, labels) in enumerate(items):
        batch[k, :, : img.shape[1]] = img
        targets.append({"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)})
    x = (torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0 - MEAN) / STD
    return x, targets


# ---------------------------------------------------------------------------
# Loops
# ---------------------------------------------------------------------------


def train_one_epoch(
    model: LineDetector,
    data: LineSet,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    *,
    batch_size: int,
    rng: np.random.Generator,
    device: str,
    augment: bool,
    ink_spread: float,
    scaler: Any = None,
    desc: str = "train",
    log_every: int = LOG_EVERY,
) -> float:
    """One pass over `data` in shuffled batches; returns the mean loss.

    The progress bar shows the running loss and lines/s; without a terminal (Snakemake logs)
    the same goes to the log every `log_every` steps instead.
    """
    model.train()
    levels = model.level_meta()
    order = rng.permutation(len(data))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    steps = StepProgress(batches, desc=desc, leave=False, log_every=log_every)
    for idx in steps:
        items = []
        for i in idx:
            img, boxes = augment_line(
                data.images[i],
                data.boxes[i],
                model.input_height,
                rng if augment else None,
                allows_vertical=data.vertical[i],
                ink_spread=ink_spread,
            )
            items.append((img, boxes, data.labels[i]))
        x, targets = make_batch(items)
        x = x.to(device)
        with torch.autocast(device_type="cuda", enabled=scaler is not None):
            raw = model(x)
        losses = detection_loss(
            raw.float(), targets, tuple(x.shape[2:]), levels, model.arch["center_radius"]
        )
        loss = sum(losses.values())
        optimizer_step(loss, optimizer, scaler)
        scheduler.step()
        steps.update(float(loss.detach()), len(idx))
    return steps.mean_loss


def evaluate(
    model: LineDetector, data: LineSet, meta: dict, device: str, names: dict
) -> dict[str, Any]:
    """COCO mAP + P/R/F1 of `model` on `data` (no augmentation)."""
    localizer = TorchLocalizer(model, meta, device)
    dets = detect_split(localizer, data.coco, "", images=data.images)
    return evaluate_detections(data.coco, dets, meta["classes"], names)


def config_hash(
    train_json: str | os.PathLike,
    val_json: str | os.PathLike,
    *,
    localizer: LocalizerSection,
    dataset: DatasetSection,
    run: RunSection,
    init: str | os.PathLike | None = None,
) -> str:
    """Hash of what decides the training run: seed, language, localizer section, split files,
    the warm start's weights (`init`) and the code (`effocr.training.run_hash`)."""
    return run_hash(
        "effocr.localizer.train",
        {"train": train_json, "val": val_json, "init": init},
        seed=run.seed,
        language=run.language,
        localizer={k: v for k, v in localizer.as_dict().items() if k != "device"},
        dataset={"char_category": dataset.char_category, "word_category": dataset.word_category},
    )


def _model_classes(config: dict, train_coco: dict) -> list[str]:
    classes = list(get_profile(config["language"]).localizer_classes)
    if (
        "word" in classes
        and category_id(train_coco, config["dataset"]["word_category"], required=False) is None
    ):
        LOG.warning("the training split has no word category: training a char-only localizer")
        classes.remove("word")
    return classes


def train_localizer(
    train_json: str | os.PathLike,
    val_json: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    localizer: LocalizerSection,
    dataset: DatasetSection,
    run: RunSection,
    init_from: str | os.PathLike | None = None,
    threads: int | None = None,
    max_epochs_this_run: int | None = None,
) -> dict[str, Any]:
    """Train the localizer; writes model.pt, checkpoint.pt, metrics.csv, curve.png, config.yaml.

    Args:
        train_json, val_json: COCO splits.
        init_from: Config `init_from`: a bundle or results folder whose localizer weights start
            training (`effocr.warm_start`); None: a fresh model.
        out_dir: Output directory (`PATHS["localizer"]`).
        threads: torch CPU threads.
        max_epochs_this_run: Stop after this many epochs in this call (tests of resuming);
            model.pt is still written.
        localizer: The `localizer` section.
        dataset: The `dataset` section (`image_dir`: the line images, `char_category`,
            `word_category`).
        run: `seed`, `language`. The three are the run's config (`config.yaml`, model.pt).

    Returns:
        The best epoch's validation metrics.
    """
    config = {
        "seed": run.seed,
        "language": run.language,
        "localizer": localizer.as_dict(),
        "dataset": dataset.as_dict(),
    }
    lc = config["localizer"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_threads(threads)
    # Tiny weights become denormal floats late in training, and CPU convs on them crawl.
    torch.set_flush_denormal(True)
    seed_everything(config["seed"])
    device = select_device(lc["device"])
    names = {"char": config["dataset"]["char_category"], "word": config["dataset"]["word_category"]}
    train_coco = load_coco(train_json)
    classes = _model_classes(config, train_coco)
    # English has no vertical lines: a line taller than wide (one narrow glyph) stays as it is.
    allows_vertical = get_profile(config["language"]).allows_vertical
    train = LineSet(train_json, dataset.image_dir, classes, names, allows_vertical)
    val = LineSet(val_json, dataset.image_dir, classes, names, allows_vertical)
    if not len(train):
        raise EffOCRError(f"{train_json}: the training split has no images")
    model = create_localizer(
        lc["backend"], classes=classes, input_height=lc["input_height"], arch=lc["arch"]
    )
    if lc["init_checkpoint"]:
        state = load_checkpoint(lc["init_checkpoint"], "localizer.init_checkpoint")
        model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
    base = warm_start(model, init_from, "localizer")
    model.to(device)
    thresholds = {**pp.config_thresholds(lc), "spaces": get_profile(config["language"]).spaces}
    meta = model_meta(model, thresholds, allows_vertical=allows_vertical)
    lr = peak_learning_rate(localizer, init_from)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=lc["weight_decay"])
    steps_per_epoch = -(-len(train) // lc["batch_size"])
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=lr,
        total_steps=lc["epochs"] * steps_per_epoch,
        pct_start=min(0.3, 2 / lc["epochs"]) if lc["epochs"] > 2 else 0.3,
    )
    scaler = torch.amp.GradScaler("cuda") if (lc["amp"] and device.startswith("cuda")) else None
    training_run = TrainingRun(
        out,
        kind="localizer",
        name="localizer",
        config=config,
        config_hash=config_hash(
            train_json, val_json, localizer=localizer, dataset=dataset, run=run, init=base
        ),
        epochs=lc["epochs"],
        columns=METRIC_COLUMNS,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        checkpoint_fields={"meta": meta, "classes": classes},
        max_epochs_this_run=max_epochs_this_run,
    )

    def epoch_fn(epoch: int) -> EpochResult:
        t0 = time.perf_counter()
        # A generator per epoch keeps a resumed run identical to an uninterrupted one (seeded
        # by the epoch counted from 0, as before the shared scaffold: the same random streams).
        rng = np.random.default_rng([config["seed"], epoch - 1])
        torch.manual_seed(config["seed"] + epoch - 1)
        loss = train_one_epoch(
            model,
            train,
            optimizer,
            scheduler,
            batch_size=lc["batch_size"],
            rng=rng,
            device=device,
            augment=lc["augment"],
            ink_spread=lc["ink_spread"],
            scaler=scaler,
            desc=f"localizer {epoch}/{lc['epochs']}",
        )
        metrics = evaluate(model, val, meta, device, names) if len(val) else None
        row = {
            "loss": round(loss, 6),
            "val_AP": round(metrics["coco"]["AP"], 6) if metrics else "",
            "val_AP50": round(metrics["coco"]["AP50"], 6) if metrics else "",
            "val_char_f1": round(metrics["char"]["f1"], 6) if metrics else "",
            "val_word_f1": round(metrics["word"]["f1"], 6) if metrics and "word" in metrics else "",
            "val_mean_f1": round(metrics["mean_f1"], 6) if metrics else "",
            "lr": scheduler.get_last_lr()[0],
            "seconds": round(time.perf_counter() - t0, 2),
        }
        score = (metrics["mean_f1"], metrics["coco"]["AP"]) if metrics else (-loss, 0.0)
        return EpochResult(row, score, metrics)

    training_run.fit(epoch_fn)
    best = training_run.best
    training_run.finish(
        {"meta": meta, "classes": classes, "metrics": best["metrics"]},
        curve_scores=("val_char_f1", "val_word_f1", "val_AP50", "val_AP"),
    )
    LOG.info(
        "localizer: best epoch %d of %d (mean F1 %s)",
        best["epoch"],
        len(training_run.rows),
        f"{best['metrics']['mean_f1']:.4f}" if best["metrics"] else "-",
    )
    return best.get("metrics") or {}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr train-localizer`."""
    parser.add_argument("--config", default=None, help="config YAML (defaults fill the rest)")
    parser.add_argument("--train", required=True, help="COCO JSON of the training split")
    parser.add_argument("--val", required=True, help="COCO JSON of the validation split")
    parser.add_argument("--image-dir", required=True, help="directory of the line images")
    parser.add_argument("--out", required=True, help="output directory (model.pt, metrics.csv...)")
    parser.add_argument("--threads", type=int, default=None)


def run(args: argparse.Namespace) -> int:
    """Entry point of `effocr train-localizer`."""
    from effocr.config import config_sections, load_config

    sections = config_sections(load_config(args.config, {"dataset": {"image_dir": args.image_dir}}))
    train_localizer(
        args.train,
        args.val,
        args.out,
        **sections.pick("localizer", "dataset", "run"),
        threads=args.threads,
    )
    return 0
