"""The default localizer: torchvision FCOS heads on a small BatchNorm CNN + FPN, for text lines.

Design (see config/README.md, section localizer):

* Input: the line resized to a fixed height (`localizer.input_height`, width keeps the aspect
  ratio, padded with white to a multiple of the deepest stride). Vertical lines are transposed
  first, so one model reads both directions; a line is vertical when it is taller than wide
  *and* the language profile has vertical lines (`Profile.allows_vertical`, kept in the model's meta
  as ``vertical``): an English line is never transposed, however narrow. Resizing happens in
  NumPy (`prepare_line`), never inside the graph, so PyTorch and ONNX Runtime see the same
  pixels.
* Network: a small conv/BatchNorm backbone (strides 2..32), torchvision's
  `FeaturePyramidNetwork`, and one torchvision FCOS classification/regression head pair per
  class on one pyramid level each (chars on the fine level, words on a coarser one). One head
  per class means a one-letter word and its letter never compete for the same cell.
* Output: the raw head rows ``(1, N, 6)`` = ``dx, dy, log w, log h`` (box centre offset from
  the cell centre and box size, in units of the level's box size), centre-ness logit, class
  logit. Decoding, thresholds and NMS are NumPy code in
  `effocr.localizer.postprocess`, shared by both paths.
* Training target assignment is FCOS centre sampling with one change for text: a ground-truth
  box smaller than the stride is widened to one stride for the "point inside the box" test
  (so `.`, `,` and `'` always get a positive cell). FCOS's ReLU'd ``l, t, r, b`` cannot
  describe a box from a cell outside it, so boxes are regressed as centre offset + log size.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models.detection.fcos import FCOSClassificationHead, FCOSRegressionHead
from torchvision.ops import FeaturePyramidNetwork, generalized_box_iou_loss, sigmoid_focal_loss
from torchvision.ops.misc import Conv2dNormActivation

from effocr.localizer import postprocess as pp
from effocr.localizer.postprocess import DEFAULT_THRESHOLDS
from effocr.localizer.prepare import (  # noqa: F401 (re-exported for the training code and tests)
    MEAN,
    PAD_VALUE,
    STD,
    PreparedLine,
    prepare_line,
    resolve_allows_vertical,
)
from effocr.utils import EffOCRError, load_checkpoint

# Architecture of the default backend; `localizer.arch` in the config overrides keys.
DEFAULT_ARCH: dict[str, Any] = {
    # Output channels of the stem and of the four stages (strides 2, 4, 8, 16, 32).
    "widths": [16, 32, 64, 96, 128],
    # Extra 3x3 convs after the strided conv of each stage (stem has none).
    "depths": [0, 1, 1, 1, 1],
    "fpn_channels": 32,
    "head_convs": 1,
    # Pyramid level (stride = 2**level) of each class's head.
    "levels": {"char": 2, "word": 3},
    # Regression unit of each class, in strides (words are long: a larger unit keeps targets small).
    "box_units": {"char": 1, "word": 4},
    "center_radius": 1.5,
}


def merge_arch(arch: dict | None) -> dict:
    """Default architecture with the keys of `arch` replaced."""
    out = copy.deepcopy(DEFAULT_ARCH)
    for key, value in (arch or {}).items():
        if key not in out:
            raise EffOCRError(f"localizer.arch: unknown key {key!r} (known: {sorted(out)})")
        out[key] = value
    return out


# ---------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------


class TextFCOSHead(nn.Module):
    """torchvision FCOS classification + regression heads for one class on one level.

    The regression output is linear (``dx, dy, log w, log h``; torchvision's ReLU'd ``ltrb``
    is not used), see the module docstring.
    """

    def __init__(self, channels: int, num_convs: int) -> None:
        super().__init__()
        self.classification_head = FCOSClassificationHead(
            channels, 1, 1, num_convs, norm_layer=nn.BatchNorm2d
        )
        self.regression_head = FCOSRegressionHead(channels, 1, num_convs, norm_layer=nn.BatchNorm2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) features -> (B, h*w, 6) rows ``dx, dy, log w, log h, ctr, cls``."""
        cls = self.classification_head.cls_logits(self.classification_head.conv(x))
        feat = self.regression_head.conv(x)
        reg = self.regression_head.bbox_reg(feat)
        ctr = self.regression_head.bbox_ctrness(feat)
        out = torch.cat([reg, ctr, cls], dim=1)  # (B, 6, h, w)
        return out.flatten(2).transpose(1, 2)


class LineDetector(nn.Module):
    """Backbone + FPN + one `TextFCOSHead` per class; forward returns the raw rows."""

    def __init__(self, classes: list[str], input_height: int, arch: dict | None = None) -> None:
        super().__init__()
        self.arch = merge_arch(arch)
        self.classes = list(classes)
        self.input_height = int(input_height)
        widths, depths = self.arch["widths"], self.arch["depths"]
        if len(widths) != 5 or len(depths) != 5:
            raise EffOCRError(
                "localizer.arch: `widths` and `depths` need 5 entries (strides 2..32)"
            )
        if self.input_height % 8:
            raise EffOCRError(f"localizer.input_height must be a multiple of 8, got {input_height}")
        stages = []
        in_ch = 3
        for width, depth in zip(widths, depths, strict=True):
            layers = [Conv2dNormActivation(in_ch, width, 3, stride=2, norm_layer=nn.BatchNorm2d)]
            layers += [
                Conv2dNormActivation(width, width, 3, norm_layer=nn.BatchNorm2d)
                for _ in range(depth)
            ]
            stages.append(nn.Sequential(*layers))
            in_ch = width
        self.stages = nn.ModuleList(stages)
        self.levels = {c: int(self.arch["levels"][c]) for c in self.classes}
        self.min_level = min(self.levels.values())
        fpn_in = widths[self.min_level - 1 :]
        self.fpn = FeaturePyramidNetwork(fpn_in, self.arch["fpn_channels"])
        self.heads = nn.ModuleList(
            TextFCOSHead(self.arch["fpn_channels"], self.arch["head_convs"]) for _ in self.classes
        )

    def level_meta(self) -> list[dict]:
        """Per-class level description used by `postprocess.decode_effocr` (order of rows)."""
        out = []
        for k, c in enumerate(self.classes):
            stride = 2 ** self.levels[c]
            out.append(
                {
                    "class": k,
                    "stride": [stride, stride],
                    "size": stride * float(self.arch["box_units"][c]),
                }
            )
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised input -> (B, N, 6) raw rows (see module docstring)."""
        feats = {}
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i + 1 >= self.min_level:
                feats[str(i + 1)] = x
        pyramid = self.fpn(feats)
        rows = [
            head(pyramid[str(self.levels[c])])
            for c, head in zip(self.classes, self.heads, strict=True)
        ]
        return torch.cat(rows, dim=1)


# ---------------------------------------------------------------------------
# Loss (torchvision focal + GIoU losses, FCOS centre sampling adapted to glyphs)
# ---------------------------------------------------------------------------


def decode_rows(reg: torch.Tensor, points: torch.Tensor, size: float) -> torch.Tensor:
    """Boxes from rows ``dx, dy, log w, log h`` (torch twin of `postprocess.decode_effocr`)."""
    centre = points + reg[:, :2] * size
    wh = torch.exp(reg[:, 2:].clamp(max=pp.MAX_LOG_SIZE)) * size
    return torch.cat([centre - wh / 2, centre + wh / 2], dim=1)


def _level_points_t(hw: tuple[int, int], stride: int, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(pp.level_points(hw[0], hw[1], (stride, stride)).copy()).to(device)


def detection_loss(
    raw: torch.Tensor,
    targets: list[dict[str, torch.Tensor]],
    input_hw: tuple[int, int],
    levels: list[dict],
    center_radius: float = 1.5,
) -> dict[str, torch.Tensor]:
    """FCOS-style losses of raw rows against targets (boxes in network pixels, labels).

    Focal loss over all cells (normalised by the positive cells, as torchvision's FCOS); GIoU,
    L1 (in level units, for the pixel precision small glyphs need) and centre-ness losses
    averaged per box.
    """
    device = raw.device
    losses = {"classification": 0.0, "bbox_regression": 0.0, "bbox_l1": 0.0, "bbox_ctrness": 0.0}
    start = 0
    for level in levels:
        stride = int(level["stride"][0])
        size = float(level["size"])
        pts = _level_points_t(input_hw, stride, device)
        part = raw[:, start : start + len(pts)]
        start += len(pts)
        cls_t = torch.zeros(part.shape[:2], device=device)
        pos_pred, pos_gt, pos_ctr, pos_ctr_t, pos_w = [], [], [], [], []
        n_boxes = 0
        for b, tgt in enumerate(targets):
            gt = tgt["boxes"][tgt["labels"] == level["class"]].to(device)
            if gt.numel() == 0:
                continue
            ctr_g = (gt[:, :2] + gt[:, 2:]) / 2
            half = torch.maximum((gt[:, 2:] - gt[:, :2]) / 2, torch.full_like(ctr_g, stride / 2))
            lo, hi = ctr_g - half, ctr_g + half  # box widened to at least one stride
            p = pts[:, None, :]
            inside = ((p > lo[None]) & (p < hi[None])).all(dim=2)
            near = ((p - ctr_g[None]).abs() < center_radius * stride).all(dim=2)
            match = inside & near
            area = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
            cost = match.float() * (1e8 - area[None])
            best, idx = cost.max(dim=1)
            pos = best > 0
            if not pos.any():
                continue
            cls_t[b, pos] = 1.0
            pp_ = pts[pos]
            pred = decode_rows(part[b, pos, :4], pp_, size)
            pos_pred.append(pred)
            pos_gt.append(gt[idx[pos]])
            lt = pp_ - lo[idx[pos]]
            rb = hi[idx[pos]] - pp_
            lr = torch.stack([lt[:, 0], rb[:, 0]], 1).clamp(min=1e-3)
            tb = torch.stack([lt[:, 1], rb[:, 1]], 1).clamp(min=1e-3)
            ctr_t = torch.sqrt(
                (lr.min(1).values / lr.max(1).values) * (tb.min(1).values / tb.max(1).values)
            )
            pos_ctr.append(part[b, pos, 4])
            pos_ctr_t.append(ctr_t)
            # Each box weighs the same in the box losses, however many cells it covers:
            # narrow glyphs (i, l, punctuation) get one column of cells, wide ones three.
            counts = torch.bincount(idx[pos], minlength=len(gt)).float()
            pos_w.append(1.0 / counts[idx[pos]])
            n_boxes += int((counts > 0).sum())
        num_pos = max(1.0, float(cls_t.sum()))
        losses["classification"] = (
            losses["classification"]
            + sigmoid_focal_loss(part[:, :, 5], cls_t, reduction="sum") / num_pos
        )
        if pos_pred:
            pred, gt_boxes, w = torch.cat(pos_pred), torch.cat(pos_gt), torch.cat(pos_w) / n_boxes
            giou = generalized_box_iou_loss(pred, gt_boxes, reduction="none")
            l1 = (pred - gt_boxes).abs().sum(dim=1) / size
            ctr = nn.functional.binary_cross_entropy_with_logits(
                torch.cat(pos_ctr), torch.cat(pos_ctr_t), reduction="none"
            )
            losses["bbox_regression"] = losses["bbox_regression"] + (w * giou).sum()
            losses["bbox_l1"] = losses["bbox_l1"] + (w * l1).sum()
            losses["bbox_ctrness"] = losses["bbox_ctrness"] + (w * ctr).sum()
    return {k: v if torch.is_tensor(v) else raw.new_tensor(v) for k, v in losses.items()}


# ---------------------------------------------------------------------------
# Inference with PyTorch
# ---------------------------------------------------------------------------


class TorchLocalizer:
    """PyTorch inference with the same preparation and post-processing as the ONNX path."""

    def __init__(self, model: LineDetector, meta: dict, device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.meta = meta
        self.device = device

    def raw(self, prepared: PreparedLine) -> np.ndarray:
        """Raw rows of one prepared line."""
        with torch.no_grad():
            x = torch.from_numpy(prepared.array[None]).to(self.device)
            return self.model(x).float().cpu().numpy()

    def detect(self, img: np.ndarray, allows_vertical: bool | None = None) -> pp.Detections:
        """Detect characters (and words) in one HxWx3 uint8 line image.

        `allows_vertical`: whether vertical lines occur (the profile's `allows_vertical`; False never
        transposes, True reads a line taller than wide top to bottom); None: the model's meta.
        """
        prepared = prepare_line(
            img,
            self.meta["input_height"],
            self.meta["pad_multiple"],
            allows_vertical=resolve_allows_vertical(allows_vertical, self.meta),
        )
        return detections_from_raw(self.raw(prepared), prepared, self.meta)


def detections_from_raw(raw: np.ndarray, prepared: PreparedLine, meta: dict) -> pp.Detections:
    """Decode + post-process raw rows of the default backend (PyTorch and ONNX paths)."""
    boxes, scores, labels = pp.decode_effocr(
        raw,
        prepared.array.shape[1:],
        meta["levels"],
        len(meta["classes"]),
        score_threshold=meta["score_threshold"],
    )
    return pp.postprocess(
        boxes,
        scores,
        labels,
        meta["classes"],
        image_size=prepared.image_size,
        scale=prepared.scale,
        transposed=prepared.transposed,
        vertical=prepared.transposed,  # this backend transposes exactly the vertical lines
        # A key newer than the model's meta: its schema default, as bundles get it.
        **{k: meta.get(k, default) for k, default in DEFAULT_THRESHOLDS.items()},
    )


def model_meta(
    model: LineDetector, thresholds: dict | None = None, allows_vertical: bool = True
) -> dict:
    """Metadata inference needs (goes into model.pt and the bundle's model.yaml).

    `allows_vertical`: whether the language has vertical lines (`Profile.allows_vertical`); the default
    of `detect` when not told.
    """
    meta = {
        "backend": "default",
        "layout": "effocr",
        "input_height": model.input_height,
        "pad_multiple": 32,
        "mean": MEAN,
        "std": STD,
        "classes": list(model.classes),
        "levels": model.level_meta(),
        "arch": model.arch,
        "vertical": bool(allows_vertical),
    }
    meta.update(DEFAULT_THRESHOLDS)
    meta.update(thresholds or {})
    return meta


def localizer_meta(model_pt: str | Path) -> dict:
    """Metadata of a trained localizer for the bundle's model.yaml (JSON/YAML-safe)."""
    ckpt = _read_checkpoint(model_pt, "cpu")
    return json.loads(json.dumps(ckpt["meta"]))


def load_localizer(model_pt: str | Path, device: str = "cpu") -> TorchLocalizer:
    """Load a trained `model.pt` (kind `localizer`) for PyTorch inference."""
    model, meta = load_model(model_pt, device)
    return TorchLocalizer(model, meta, device)


def load_model(model_pt: str | Path, device: str = "cpu") -> tuple[LineDetector, dict]:
    """The `LineDetector` and its metadata from a `model.pt`."""
    return model_from_checkpoint(_read_checkpoint(model_pt, device))


def model_from_checkpoint(ckpt: dict) -> tuple[LineDetector, dict]:
    """`load_model` of a checkpoint dict already read and checked (`check_checkpoint`)."""
    meta = ckpt["meta"]
    model = LineDetector(meta["classes"], meta["input_height"], meta["arch"])
    model.load_state_dict(ckpt["model"])
    return model.eval(), meta


def _read_checkpoint(model_pt: str | Path, device: str) -> dict:
    return check_checkpoint(load_checkpoint(model_pt, "localizer model", device), model_pt)


def check_checkpoint(ckpt: Any, model_pt: str | Path) -> dict:
    """`ckpt`, read from `model_pt`, when it is a localizer model.pt (else EffOCRError)."""
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "localizer" or "meta" not in ckpt:
        kind = ckpt.get("kind") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise EffOCRError(f"{model_pt}: not a localizer model.pt (kind {kind!r})")
    return ckpt
