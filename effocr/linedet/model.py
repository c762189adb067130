"""The line detector: the localizer's backbone and FPN with a dense line head, for page images.

A thin subclass of the localizer's `LineDetector` (the same conv/BatchNorm stages and
torchvision `FeaturePyramidNetwork`) with one class, `line`, read at the finest pyramid level
(stride 2). Text lines are long and thin (a 1000-pixel line may be 20 pixels high), which a
box head regressing from one cell near the centre cannot span; so instead of FCOS heads the
level carries a dense head that marks each line's core and regresses, from every core cell,
the distances to the line's two long edges (`effocr.linedet.postprocess`). The page is
prepared like a line (`effocr.localizer.prepare.prepare_line`: resized to a fixed height,
`input_height`, padded with white), so training, PyTorch and ONNX Runtime see the same pixels.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from effocr.linedet import postprocess as lp
from effocr.linedet.postprocess import decode_meta, prepare_page
from effocr.localizer.model import LineDetector
from effocr.localizer.prepare import MEAN, STD
from effocr.utils import EffOCRError, load_checkpoint

KIND = "line_detector"
# Key of the ONNX metadata entry holding the detector's `meta` (JSON).
META_KEY = "effocr_line_detector_meta"

# Architecture (`line_detector.arch` overrides keys): narrower than the localizer's, the page
# is large and lines are simple shapes.
DEFAULT_ARCH: dict[str, Any] = {
    "widths": [8, 16, 32, 48, 64],
    "depths": [0, 1, 1, 1, 1],
    "fpn_channels": 16,
    "head_convs": 1,
}


def merge_arch(arch: dict | None) -> dict:
    """Default line-detector architecture with the keys of `arch` replaced."""
    out = copy.deepcopy(DEFAULT_ARCH)
    for key, value in (arch or {}).items():
        if key not in out:
            raise EffOCRError(f"line_detector.arch: unknown key {key!r} (known: {sorted(out)})")
        out[key] = value
    return out


class PageLineNet(LineDetector):
    """`LineDetector` with a single `line` class at stride 2 and a dense line head."""

    def __init__(self, input_height: int, arch: dict | None = None) -> None:
        own = merge_arch(arch)
        super().__init__(
            ["line"],
            input_height,
            {
                "widths": own["widths"],
                "depths": own["depths"],
                "fpn_channels": own["fpn_channels"],
                "head_convs": own["head_convs"],
                "levels": {"line": 1},
                "box_units": {"line": 1},
            },
        )
        self.line_arch = own
        del self.heads  # FCOS heads: replaced by the dense head
        ch = own["fpn_channels"]
        layers: list[nn.Module] = [
            Conv2dNormActivation(ch, ch, 3, norm_layer=nn.BatchNorm2d)
            for _ in range(own["head_convs"])
        ]
        layers.append(nn.Conv2d(ch, len(lp.CHANNELS), 1))
        self.head = nn.Sequential(*layers)
        with torch.no_grad():  # start with few cores (rare positives), distances ~ 2 cells
            self.head[-1].bias.zero_()
            self.head[-1].bias[0] = -3.0
            self.head[-1].bias[3] = -3.0
            self.head[-1].bias[[1, 2, 4, 5]] = 0.7

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised page -> (B, 6, H/2, W/2) raw channels (`lp.CHANNELS`)."""
        feats = {}
        for i, stage in enumerate(self.stages):
            x = stage(x)
            feats[str(i + 1)] = x
        return self.head(self.fpn(feats)["1"])


# ---------------------------------------------------------------------------
# Targets and loss
# ---------------------------------------------------------------------------


def _core(quad: np.ndarray, vertical: bool, min_width: float) -> np.ndarray:
    """The core band of a line's quad (corners TL, TR, BR, BL), in the same units."""
    p0, p1, p2, p3 = quad
    if vertical:  # across = left (p0, p3) to right (p1, p2)
        a0, a1, b0, b1 = p0, p3, p1, p2
    else:  # across = top (p0, p1) to bottom (p3, p2)
        a0, a1, b0, b1 = p0, p1, p3, p2
    thick = float(np.hypot(*(b0 - a0)))
    f = max(lp.CORE_FRACTION, min(1.0, min_width / max(thick, 1e-6)))
    lo, hi = 0.5 - f / 2, 0.5 + f / 2
    c0, c1 = a0 + (b0 - a0) * lo, a1 + (b1 - a1) * lo
    d0, d1 = a0 + (b0 - a0) * hi, a1 + (b1 - a1) * hi
    return np.array([c0, c1, d1, d0])


def _edge_at(p: np.ndarray, q: np.ndarray, t: np.ndarray, vertical: bool) -> np.ndarray:
    """Across-coordinate of the edge p -> q at along-coordinate(s) t."""
    if vertical:  # x as a function of y
        dy = q[1] - p[1]
        return p[0] + (t - p[1]) * ((q[0] - p[0]) / dy if abs(dy) > 1e-6 else 0.0)
    dx = q[0] - p[0]
    return p[1] + (t - p[0]) * ((q[1] - p[1]) / dx if abs(dx) > 1e-6 else 0.0)


def line_targets(
    quads: list[np.ndarray], vertical: list[bool], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Training targets on a grid of `shape` (h, w) cells for line quads in grid units.

    Returns the targets (6, h, w) (core 0/1, log distances in cells) and the positive masks
    (2, h, w) of the horizontal and vertical cores (where the distances count).
    """
    h, w = shape
    target = np.zeros((len(lp.CHANNELS), h, w), np.float32)
    pos = np.zeros((2, h, w), bool)
    for quad, vert in zip(quads, vertical, strict=True):
        quad = np.asarray(quad, np.float64)
        core = _core(quad, vert, 1.0)
        im = Image.new("L", (w, h), 0)
        ImageDraw.Draw(im).polygon([tuple(p) for p in core], fill=1)
        ys, xs = np.nonzero(np.asarray(im))
        if not len(xs):  # thinner than a cell: the cell of its centre line
            c = core.mean(axis=0)
            if not (0 <= c[0] < w and 0 <= c[1] < h):
                continue
            ys, xs = np.array([int(c[1])]), np.array([int(c[0])])
        cx, cy = xs + 0.5, ys + 0.5
        p0, p1, p2, p3 = quad
        if vert:
            near = cx - _edge_at(p0, p3, cy, True)
            far = _edge_at(p1, p2, cy, True) - cx
            k = 3
        else:
            near = cy - _edge_at(p0, p1, cx, False)
            far = _edge_at(p3, p2, cx, False) - cy
            k = 0
        target[k, ys, xs] = 1.0
        target[k + 1, ys, xs] = np.log(np.maximum(near, 0.25))
        target[k + 2, ys, xs] = np.log(np.maximum(far, 0.25))
        pos[k // 3, ys, xs] = True
    return target, pos


def line_loss(
    raw: torch.Tensor, target: torch.Tensor, pos: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Losses of raw channels (B, 6, h, w) against `line_targets` (batched).

    Cores: binary cross-entropy plus a soft Dice term (lines are a small share of the page);
    distances: smooth L1 of the log distances over core cells.
    """
    core_idx, reg_idx = [0, 3], [1, 2, 4, 5]
    logits, t_core = raw[:, core_idx], target[:, core_idx]
    bce = nn.functional.binary_cross_entropy_with_logits(logits, t_core)
    prob = torch.sigmoid(logits)
    inter = (prob * t_core).sum(dim=(2, 3))
    dice = 1 - (2 * inter + 1) / (prob.sum(dim=(2, 3)) + t_core.sum(dim=(2, 3)) + 1)
    mask = torch.cat([pos[:, :1].expand(-1, 2, -1, -1), pos[:, 1:].expand(-1, 2, -1, -1)], 1)
    diff = nn.functional.smooth_l1_loss(raw[:, reg_idx], target[:, reg_idx], reduction="none")
    reg = (diff * mask).sum() / mask.sum().clamp(min=1)
    return {"core": bce * 10, "dice": dice.mean(), "distance": reg}


# ---------------------------------------------------------------------------
# Inference with PyTorch; metadata; checkpoints; ONNX export
# ---------------------------------------------------------------------------


class TorchLineDetector:
    """PyTorch inference with the preparation and decoding of the ONNX path."""

    def __init__(self, model: PageLineNet, meta: dict, device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.meta = meta
        self.device = device

    def detect(self, img: np.ndarray) -> list[lp.DetectedLine]:
        prepared = prepare_page(img, self.meta)
        with torch.no_grad():
            x = torch.from_numpy(prepared.array[None]).to(self.device)
            out = self.model(x)[0].float().cpu().numpy()
        return decode_meta(out, prepared, self.meta)


def model_meta(model: PageLineNet, vertical: bool, thresholds: dict) -> dict:
    """What inference needs (model.pt, the ONNX file and the bundle's model.yaml)."""
    return {
        "input_height": model.input_height,
        "pad_multiple": 32,
        "mean": MEAN,
        "std": STD,
        "stride": lp.STRIDE,
        "channels": list(lp.CHANNELS),
        "core_fraction": lp.CORE_FRACTION,
        "arch": model.line_arch,
        "vertical": bool(vertical),
        "score_threshold": float(thresholds["score_threshold"]),
        "min_cells": int(thresholds["min_cells"]),
    }


def check_checkpoint(ckpt: Any, model_pt: str | os.PathLike) -> dict:
    """`ckpt`, read from `model_pt`, when it is a line detector model.pt (else EffOCRError)."""
    if not isinstance(ckpt, dict) or ckpt.get("kind") != KIND or "meta" not in ckpt:
        kind = ckpt.get("kind") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise EffOCRError(f"{model_pt}: not a line detector model.pt (kind {kind!r})")
    return ckpt


def load_model(model_pt: str | os.PathLike, device: str = "cpu") -> tuple[PageLineNet, dict]:
    """The `PageLineNet` and its metadata from a `model.pt`."""
    ckpt = check_checkpoint(load_checkpoint(model_pt, "line detector model", device), model_pt)
    meta = ckpt["meta"]
    model = PageLineNet(meta["input_height"], meta["arch"])
    model.load_state_dict(ckpt["model"])
    return model.eval(), json.loads(json.dumps(meta))


def export_onnx(
    model_pt: str | os.PathLike, out_path: str | os.PathLike, opset: int = 17
) -> tuple[Path, dict]:
    """Export `model.pt` to ONNX: input ``image (1, 3, H, W)`` (W dynamic), output ``lines``.

    The metadata goes into the file (key `META_KEY`) too, so the ONNX model works on its own.
    Returns the path and the metadata.
    """
    from effocr.localizer.export import export_traced

    model, meta = load_model(model_pt)
    path = export_traced(
        model,
        meta,
        out_path,
        opset,
        output="lines",
        dynamic_axes={"image": {3: "width"}, "lines": {3: "cells"}},
        meta_key=META_KEY,
    )
    return path, meta
