"""Decoding of the line detector's output into lines, and the line-box F1 (NumPy, no torch).

The detector (`effocr.linedet.model`) reads a page shrunk to a fixed height and returns, on a
grid of stride 2, six channels (`CHANNELS`): for horizontal lines the logit of the line's core
(the middle band of the line, `CORE_FRACTION` of its height, along its whole length) and the
log distances from a core cell up to the line's top and down to its bottom; the same three
for vertical lines (core, log distances left and right). A line is a connected component of
core cells: its direction (skew) is the least-squares fit through its cells, its top and
bottom edges the medians of the cells' regressed edges. Shared by PyTorch (training,
evaluation) and ONNX Runtime (`effocr.pages`), so both decode alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from effocr.localizer.prepare import PreparedLine, prepare_line

CHANNELS = ("h_core", "h_top", "h_bottom", "v_core", "v_left", "v_right")
# Share of a line's height (across the reading direction) the core target covers.
CORE_FRACTION = 0.4
# Steepest line direction the decoder accepts (degrees); short components are taken level.
MAX_ANGLE = 10.0
STRIDE = 2

DEFAULT_DECODE = {
    "score_threshold": 0.5,
    "min_cells": 4,
}


@dataclass
class DetectedLine:
    """One detected line in page pixels.

    `polygon`: four corners, the start of the line first (top left of a horizontal line, top
    right of a vertical one), then along its top (right) edge; `angle`: the reading
    direction's tilt in degrees, atan(dy/dx) of a horizontal line, atan(dx/dy) of a vertical
    one (0 = straight); `score`: mean core probability.
    """

    polygon: list[tuple[float, float]]
    score: float
    vertical: bool
    angle: float

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        xs = [p[0] for p in self.polygon]
        ys = [p[1] for p in self.polygon]
        return (min(xs), min(ys), max(xs), max(ys))

    @property
    def thickness(self) -> float:
        """The line's height across the reading direction (pixels)."""
        (x0, y0), _, _, (x3, y3) = self.polygon
        return math.hypot(x3 - x0, y3 - y0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def _components(core: np.ndarray, top: np.ndarray, bottom: np.ndarray, cfg: dict) -> list[dict]:
    """Bands (in grid cells) of the connected components of one direction's core mask.

    Works for horizontal lines; vertical ones are decoded on the transposed grid.
    """
    from scipy import ndimage

    prob = sigmoid(core)
    labels, n = ndimage.label(prob > cfg["score_threshold"])
    out = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        ys, xs = np.nonzero(labels[sl] == k)
        if len(xs) < cfg["min_cells"]:
            continue
        ys = ys + sl[0].start + 0.5
        xs = xs + sl[1].start + 0.5
        t = np.exp(np.clip(top[ys.astype(int), xs.astype(int)], -5, 8))
        b = np.exp(np.clip(bottom[ys.astype(int), xs.astype(int)], -5, 8))
        height = float(np.median(t + b))
        length = float(xs.max() - xs.min()) + 1
        slope = 0.0
        if length > 3 * height and len(np.unique(xs)) > 2:
            slope = float(np.polyfit(xs, ys, 1)[0])
            slope = max(
                -math.tan(math.radians(MAX_ANGLE)), min(math.tan(math.radians(MAX_ANGLE)), slope)
            )
        out.append(
            {
                # Cell centres, not outer edges: the core's rasterised target takes in every
                # cell its outline touches, so the outer cells reach past the ink.
                "x0": float(xs.min()),
                "x1": float(xs.max()),
                "slope": slope,
                "top": float(np.median(ys - t - slope * xs)),
                "bottom": float(np.median(ys + b - slope * xs)),
                "score_sum": float(prob[ys.astype(int), xs.astype(int)].sum()),
                "cells": len(xs),
            }
        )
    return _merge_pieces(out)


def _merge_pieces(bands: list[dict]) -> list[dict]:
    """Join pieces of one line that a wide gap (spaced words) split into components."""
    bands = sorted(bands, key=lambda b: b["x0"])
    merged = True
    while merged:
        merged = False
        for i, a in enumerate(bands):
            for j in range(i + 1, len(bands)):
                b = bands[j]
                h = max(a["bottom"] - a["top"], b["bottom"] - b["top"])
                gap = b["x0"] - a["x1"]
                # Word gaps are under a line height; column gutters are wider. (Ends are cell
                # centres, so the ink's gap is up to a cell narrower than `gap`.)
                if gap > 0.6 * h + 0.5 or gap < -0.5 * h:
                    continue
                xm = (a["x1"] + b["x0"]) / 2
                at, ab = a["top"] + a["slope"] * xm, a["bottom"] + a["slope"] * xm
                bt, bb = b["top"] + b["slope"] * xm, b["bottom"] + b["slope"] * xm
                overlap = min(ab, bb) - max(at, bt)
                if overlap < 0.6 * min(ab - at, bb - bt):
                    continue
                wa, wb = a["cells"], b["cells"]
                slope = (a["slope"] * wa + b["slope"] * wb) / (wa + wb)
                bands[i] = {
                    "x0": min(a["x0"], b["x0"]),
                    "x1": max(a["x1"], b["x1"]),
                    "slope": slope,
                    "top": (at * wa + bt * wb) / (wa + wb) - slope * xm,
                    "bottom": (ab * wa + bb * wb) / (wa + wb) - slope * xm,
                    "score_sum": a["score_sum"] + b["score_sum"],
                    "cells": wa + wb,
                }
                del bands[j]
                merged = True
                break
            if merged:
                break
    return bands


def decode_lines(
    out: np.ndarray,
    scale: float,
    image_size: tuple[int, int],
    *,
    vertical: bool = True,
    score_threshold: float = DEFAULT_DECODE["score_threshold"],
    min_cells: int = DEFAULT_DECODE["min_cells"],
) -> list[DetectedLine]:
    """Lines of one page from the raw output (6, h, w) of the detector.

    Args:
        out: The detector's raw channels (`CHANNELS`) of one page.
        scale: Network pixels per page pixel (`prepare_line`'s scale).
        image_size: The page's (height, width) in pixels: polygons are clipped to it.
        vertical: Decode vertical lines too (profiles with vertical text).
        score_threshold: Core probability from which a cell belongs to a line.
        min_cells: Smallest component (cells) that counts as a line.
    """
    cfg = {"score_threshold": score_threshold, "min_cells": min_cells}
    unit = STRIDE / scale  # page pixels per grid cell
    h_img, w_img = image_size
    lines: list[DetectedLine] = []
    directions = [(False, out[0], out[1], out[2])]
    if vertical:
        directions.append((True, out[3].T, out[4].T, out[5].T))
    for is_vertical, core, top, bottom in directions:
        for band in _components(core, top, bottom, cfg):
            s = band["slope"]
            x0, x1 = band["x0"], band["x1"]
            corners = [
                (x0, band["top"] + s * x0),
                (x1, band["top"] + s * x1),
                (x1, band["bottom"] + s * x1),
                (x0, band["bottom"] + s * x0),
            ]
            if is_vertical:
                # Transposed grid: (u, v) = (page y, page x); the line starts at its top right.
                pts = [(v * unit, u * unit) for u, v in corners]
                pts = [pts[3], pts[2], pts[1], pts[0]]
            else:
                pts = [(u * unit, v * unit) for u, v in corners]
            pts = [(float(min(max(x, 0.0), w_img)), float(min(max(y, 0.0), h_img))) for x, y in pts]
            score = band["score_sum"] / band["cells"]
            angle = math.degrees(math.atan(s))
            lines.append(DetectedLine(pts, float(score), is_vertical, float(angle)))
    if vertical:
        lines = _drop_crossed(lines)
    return lines


def _drop_crossed(lines: list[DetectedLine]) -> list[DetectedLine]:
    """Where a horizontal and a vertical line cover the same ink, keep the surer one."""
    keep = [True] * len(lines)
    boxes = np.array([ln.bbox for ln in lines], np.float64).reshape(-1, 4)
    iou = box_iou(boxes, boxes)
    for i in range(len(lines)):
        for j in range(i + 1, len(lines)):
            if lines[i].vertical != lines[j].vertical and iou[i, j] > 0.3:
                if lines[i].score >= lines[j].score:
                    keep[j] = False
                else:
                    keep[i] = False
    return [ln for ln, k in zip(lines, keep, strict=True) if k]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes ``x0, y0, x1, y1`` (n, 4) x (m, 4)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_lines(pred: np.ndarray, gt: np.ndarray, iou: float = 0.5) -> list[tuple[int, int]]:
    """One-to-one matches (pred index, gt index) at IoU >= `iou`, greedy by IoU."""
    m = box_iou(pred, gt)
    pairs = []
    if m.size:
        order = np.dstack(np.unravel_index(np.argsort(-m, axis=None), m.shape))[0]
        used_p, used_g = set(), set()
        for i, j in order:
            if m[i, j] < iou:
                break
            if i in used_p or j in used_g:
                continue
            used_p.add(int(i))
            used_g.add(int(j))
            pairs.append((int(i), int(j)))
    return pairs


def line_f1(pred_boxes: list, gt_boxes: list, iou: float = 0.5) -> dict:
    """Precision, recall and F1 of detected line boxes against true ones at IoU >= `iou`."""
    tp = len(match_lines(np.asarray(pred_boxes), np.asarray(gt_boxes), iou))
    n_pred, n_gt = len(pred_boxes), len(gt_boxes)
    p = tp / n_pred if n_pred else float(n_gt == 0)
    r = tp / n_gt if n_gt else float(n_pred == 0)
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"tp": tp, "pred": n_pred, "gt": n_gt, "precision": p, "recall": r, "f1": f1}


def prepare_page(img: np.ndarray, meta: dict) -> PreparedLine:
    """A page ready for the detector (`prepare_line` at `input_height`, never transposed)."""
    return prepare_line(img, meta["input_height"], meta["pad_multiple"], allows_vertical=False)


def decode_meta(out: np.ndarray, prepared: PreparedLine, meta: dict) -> list[DetectedLine]:
    """`decode_lines` with the thresholds of a detector's `meta` (PyTorch and ONNX paths)."""
    return decode_lines(
        out,
        prepared.scale,
        prepared.image_size,
        vertical=bool(meta["vertical"]),
        score_threshold=float(meta["score_threshold"]),
        min_cells=int(meta["min_cells"]),
    )
