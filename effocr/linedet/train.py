"""Training of the line detector on synthetic pages (`effocr train-line-detector`, rule
`train_line_detector`).

Pages (COCO JSON of `line` annotations with polygons, `effocr.synth.pages`) are held in
memory shrunk to about the network's height; each step takes random crops (`crop_size`
network pixels) at a random scale around the inference one, so a batch is small however
large the pages. Each epoch ends with full-page detection on the validation pages and the
line F1 at IoU 0.5 (`effocr.linedet.postprocess.line_f1`); the best epoch by F1 is kept.
Checkpoints, resuming, metrics.csv, curve.png are `effocr.training.TrainingRun`'s.
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
from PIL import Image

from effocr.config import LineDetectorSection, RunSection
from effocr.data.coco import load_coco
from effocr.linedet import postprocess as lp
from effocr.linedet.model import (
    KIND,
    PageLineNet,
    TorchLineDetector,
    line_loss,
    line_targets,
    model_meta,
)
from effocr.localizer.prepare import MEAN, PAD_VALUE, STD
from effocr.profiles import get_profile
from effocr.training import LOG_EVERY, EpochResult, StepProgress, TrainingRun, run_hash
from effocr.utils import (
    EffOCRError,
    open_rgb,
    optimizer_step,
    seed_everything,
    select_device,
    set_threads,
)

LOG = logging.getLogger(__name__)

METRIC_COLUMNS = ["epoch", "loss", "val_precision", "val_recall", "val_f1", "lr", "seconds"]
# Pages are kept this much taller than the network input, so scale jitter mostly shrinks.
HOLD_FACTOR = 1.25


class PageSet:
    """The pages of a COCO JSON of lines, in memory (grey, shrunk), with their line quads.

    `quads[i]` is (n, 4, 2) in the held image's pixels; `boxes_full[i]` the true boxes in the
    page's own pixels (for the F1); `vertical[i]` the lines' directions.
    """

    def __init__(
        self, coco_json: str | os.PathLike, image_dir: str | os.PathLike, height: int
    ) -> None:
        coco = load_coco(coco_json)
        by_image: dict[int, list[dict]] = {}
        for a in coco["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
        self.images: list[np.ndarray] = []
        self.full: list[np.ndarray | None] = []
        self.quads: list[np.ndarray] = []
        self.vertical: list[list[bool]] = []
        self.boxes_full: list[np.ndarray] = []
        self.paths: list[Path] = []
        self.to_net: list[float] = []  # network pixels per held pixel at inference
        for im in coco["images"]:
            path = Path(image_dir) / im["file_name"]
            try:
                page = Image.open(path).convert("L")
            except OSError as exc:
                raise EffOCRError(
                    f"{coco_json}: image {im['id']}: cannot read {path}: {exc}"
                ) from exc
            s = min(1.0, height * HOLD_FACTOR / page.height)
            held = page.resize(
                (max(1, round(page.width * s)), max(1, round(page.height * s))), Image.BILINEAR
            )
            quads, vert, boxes = [], [], []
            for a in by_image.get(im["id"], []):
                seg = a.get("segmentation")
                if seg and len(seg[0]) == 8:
                    q = np.asarray(seg[0], np.float64).reshape(4, 2)
                else:
                    x, y, w, h = a["bbox"]
                    q = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float64)
                quads.append(q * s)
                vert.append(bool(a.get("vertical", False)))
                x, y, w, h = a["bbox"]
                boxes.append([x, y, x + w, y + h])
            self.images.append(np.asarray(held))
            self.to_net.append(height / (page.height * s))
            self.quads.append(np.asarray(quads, np.float64).reshape(-1, 4, 2))
            self.vertical.append(vert)
            self.boxes_full.append(np.asarray(boxes, np.float64).reshape(-1, 4))
            self.paths.append(path)

    def __len__(self) -> int:
        return len(self.images)


def sample_crop(
    data: PageSet, i: int, crop: int, rng: np.random.Generator, augment: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random crop of page i at a random scale around the inference one (`data.to_net`):
    (crop, crop) uint8, targets, positives."""
    img = data.images[i]
    scale = data.to_net[i] * (float(rng.uniform(0.8, 1.25)) if augment else 1.0)
    h, w = max(1, round(img.shape[0] * scale)), max(1, round(img.shape[1] * scale))
    page = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
    canvas = np.full((max(h, crop), max(w, crop)), PAD_VALUE, np.uint8)
    canvas[:h, :w] = page
    # Crop origins on the grid's stride, so cells line up with the full-page grid.
    y0 = int(rng.integers(0, canvas.shape[0] - crop + 1)) // lp.STRIDE * lp.STRIDE
    x0 = int(rng.integers(0, canvas.shape[1] - crop + 1)) // lp.STRIDE * lp.STRIDE
    out = canvas[y0 : y0 + crop, x0 : x0 + crop]
    if augment:
        alpha = rng.uniform(0.75, 1.15)
        beta = rng.uniform(-30, 30)
        out = np.clip(out.astype(np.float32) * alpha + beta + (255 - 255 * alpha) / 2, 0, 255)
        out = out.astype(np.uint8)
    quads = (data.quads[i] * scale - np.array([x0, y0])) / lp.STRIDE
    g = crop // lp.STRIDE
    keep = [
        k
        for k, q in enumerate(quads)
        if q[:, 0].max() > 0 and q[:, 1].max() > 0 and q[:, 0].min() < g and q[:, 1].min() < g
    ]
    target, pos = line_targets(
        [quads[k] for k in keep], [data.vertical[i][k] for k in keep], (g, g)
    )
    return out, target, pos


def to_tensor(grey: np.ndarray) -> torch.Tensor:
    """(B, H, W) uint8 -> (B, 3, H, W) normalised like `prepare_line`."""
    x = (torch.from_numpy(grey).float() / 255.0 - MEAN) / STD
    return x[:, None].expand(-1, 3, -1, -1).contiguous()


def train_one_epoch(
    model: PageLineNet,
    data: PageSet,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    *,
    batch_size: int,
    crop: int,
    crops_per_page: int,
    rng: np.random.Generator,
    device: str,
    augment: bool = True,
    desc: str = "train",
    log_every: int = LOG_EVERY,
) -> float:
    """One pass: `crops_per_page` random crops of every page, in shuffled batches."""
    model.train()
    order = rng.permutation(np.repeat(np.arange(len(data)), crops_per_page))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    steps = StepProgress(batches, desc=desc, leave=False, log_every=log_every)
    for idx in steps:
        items = [sample_crop(data, int(i), crop, rng, augment) for i in idx]
        x = to_tensor(np.stack([it[0] for it in items])).to(device)
        target = torch.from_numpy(np.stack([it[1] for it in items])).to(device)
        pos = torch.from_numpy(np.stack([it[2] for it in items])).to(device)
        losses = line_loss(model(x), target, pos)
        loss = sum(losses.values())
        optimizer_step(loss, optimizer)
        scheduler.step()
        steps.update(float(loss.detach()), len(idx))
    return steps.mean_loss


def evaluate(detector: TorchLineDetector, data: PageSet, iou: float = 0.5) -> dict:
    """Pooled line P/R/F1 at `iou` of full-page detection on `data` (pages read in full)."""
    tp = n_pred = n_gt = 0
    for path, gt in zip(data.paths, data.boxes_full, strict=True):
        page = np.asarray(open_rgb(path).convert("L"))
        found = detector.detect(page)
        res = lp.line_f1([ln.bbox for ln in found], gt.tolist(), iou)
        tp, n_pred, n_gt = tp + res["tp"], n_pred + res["pred"], n_gt + res["gt"]
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gt if n_gt else 0.0
    return {
        "precision": p,
        "recall": r,
        "f1": 2 * p * r / (p + r) if p + r else 0.0,
        "tp": tp,
        "pred": n_pred,
        "gt": n_gt,
    }


def config_hash(config: dict, train_json, val_json) -> str:
    return run_hash(
        "effocr.linedet.train",
        {"train": train_json, "val": val_json},
        line_detector=config["line_detector"],
        language=config["language"],
        seed=config["seed"],
    )


def train_line_detector(
    train_json: str | os.PathLike,
    val_json: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    line_detector: LineDetectorSection,
    run: RunSection,
    threads: int | None = None,
    max_epochs_this_run: int | None = None,
) -> dict[str, Any]:
    """Train the line detector with the config sections `line_detector` and `run` (`seed`,
    `language`; the two are the run's config, `config.yaml`); writes model.pt, checkpoint.pt,
    metrics.csv, curve.png, config.yaml into `out_dir`. Images are in `images/` beside each
    JSON.

    Returns:
        The best epoch's validation metrics.
    """
    config = {
        "seed": run.seed,
        "language": run.language,
        "line_detector": line_detector.as_dict(),
    }
    lc = config["line_detector"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_threads(threads)
    torch.set_flush_denormal(True)
    seed_everything(config["seed"])
    device = select_device(lc["device"])
    train = PageSet(train_json, Path(train_json).parent / "images", lc["input_height"])
    val = PageSet(val_json, Path(val_json).parent / "images", lc["input_height"])
    if not len(train):
        raise EffOCRError(f"{train_json}: no training pages")
    model = PageLineNet(lc["input_height"], lc["arch"]).to(device)
    vertical = get_profile(config["language"]).allows_vertical
    meta = model_meta(model, vertical, lc)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lc["lr"], weight_decay=lc["weight_decay"])
    steps_per_epoch = -(-len(train) * lc["crops_per_page"] // lc["batch_size"])
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lc["lr"], total_steps=lc["epochs"] * steps_per_epoch, pct_start=0.2
    )
    training_run = TrainingRun(
        out,
        kind=KIND,
        name="line detector",
        config=config,
        config_hash=config_hash(config, train_json, val_json),
        epochs=lc["epochs"],
        columns=METRIC_COLUMNS,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        checkpoint_fields={"meta": meta},
        max_epochs_this_run=max_epochs_this_run,
    )

    def epoch_fn(epoch: int) -> EpochResult:
        t0 = time.perf_counter()
        rng = np.random.default_rng([config["seed"], epoch - 1])
        torch.manual_seed(config["seed"] + epoch - 1)
        loss = train_one_epoch(
            model,
            train,
            optimizer,
            scheduler,
            batch_size=lc["batch_size"],
            crop=lc["crop_size"],
            crops_per_page=lc["crops_per_page"],
            rng=rng,
            device=device,
            desc=f"line detector {epoch}/{lc['epochs']}",
        )
        metrics = evaluate(TorchLineDetector(model, meta, device), val) if len(val) else None
        model.train()
        row = {
            "loss": round(loss, 6),
            "val_precision": round(metrics["precision"], 6) if metrics else "",
            "val_recall": round(metrics["recall"], 6) if metrics else "",
            "val_f1": round(metrics["f1"], 6) if metrics else "",
            "lr": scheduler.get_last_lr()[0],
            "seconds": round(time.perf_counter() - t0, 2),
        }
        score = (metrics["f1"], -loss) if metrics else (-loss, 0.0)
        return EpochResult(row, score, metrics)

    training_run.fit(epoch_fn)
    best = training_run.best
    training_run.finish({"meta": meta, "metrics": best["metrics"]}, curve_scores=("val_f1",))
    LOG.info(
        "line detector: best epoch %d of %d (F1 %s)",
        best["epoch"],
        len(training_run.rows),
        f"{best['metrics']['f1']:.4f}" if best["metrics"] else "-",
    )
    return best.get("metrics") or {}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr train-line-detector`."""
    parser.add_argument("--config", default=None, help="config YAML (defaults fill the rest)")
    parser.add_argument("--train", required=True, help="COCO JSON of the training pages")
    parser.add_argument("--val", required=True, help="COCO JSON of the validation pages")
    parser.add_argument("--out", required=True, help="output directory (model.pt, metrics.csv...)")
    parser.add_argument("--threads", type=int, default=None)


def run(args: argparse.Namespace) -> int:
    """Entry point of `effocr train-line-detector`."""
    from effocr.config import config_sections, load_config

    sections = config_sections(load_config(args.config))
    train_line_detector(
        args.train,
        args.val,
        args.out,
        **sections.pick("line_detector", "run"),
        threads=args.threads,
    )
    return 0
