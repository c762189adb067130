"""Post-processing of localizer outputs, shared by the PyTorch and ONNX paths.

Everything after the network runs here, in NumPy: decoding the raw head outputs of the
default backend, score threshold, class-wise NMS, max detections, mapping boxes back to the
original image, nested character boxes, reading order, spaces and the full-line-height crop
boxes for the recognizer.

Nested boxes: NMS compares boxes by IoU, and a box around a part of a glyph (the right leg
of an `m`, the stem of a `d`) has a small IoU with the glyph's box. A character box with more
than ``contained_share`` of its area inside a larger character box is dropped; neighbours
that kern into each other (`Te`, italic `fi`) share far less of their area.

Spaces (English): the first character of every predicted word, except the line's first
character, gets a leading space. Fallback when no word boxes are predicted (a char-only model
or a line where the word class found nothing): a gap along the reading direction larger than
``gap_factor * max(median gap, 0.05 * line thickness)`` is a space. The floor keeps touching
glyphs (median gap near 0) from turning every tiny gap into a space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from effocr.config import section_defaults

# Ink spacing floor, as a fraction of the line's thickness, used by the gap fallback.
GAP_FLOOR = 0.05

THRESHOLD_KEYS = (
    "score_threshold",
    "nms_iou",
    "max_detections",
    "detections_per_height",
    "gap_factor",
    "contained_share",
)
# Post-processing settings of a localizer without any in its meta: the `localizer` section's
# schema defaults, and spaces inferred.
DEFAULT_THRESHOLDS = {
    **{k: section_defaults("localizer")[k] for k in THRESHOLD_KEYS},
    "spaces": True,
}


def config_thresholds(localizer_cfg: dict) -> dict:
    """The post-processing settings of a `localizer` config section."""
    return {k: localizer_cfg[k] for k in THRESHOLD_KEYS}


# Clamp of the predicted log box size (in level units) before exp: garbage rows stay finite.
MAX_LOG_SIZE = 8.0


@dataclass
class Detections:
    """Localizer output for one line, in ORIGINAL image pixel coordinates, reading order.

    Attributes:
        chars: (n, 4) float32 character boxes ``x0, y0, x1, y1``.
        char_scores: (n,) float32.
        words: (m, 4) float32 word boxes (empty for char-only models).
        word_scores: (m,) float32.
        spaces: (n,) bool, True where a space precedes the character.
        vertical: the line is read top to bottom.
        image_size: (height, width) of the original image.
        dropped: boxes that passed the score threshold and NMS but were cut by the line's cap
            (`detection_cap`); 0 when nothing was lost.
    """

    chars: np.ndarray
    char_scores: np.ndarray
    words: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    word_scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    spaces: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    vertical: bool = False
    image_size: tuple[int, int] = (0, 0)
    dropped: int = 0

    def crop_boxes(self, padding: int) -> np.ndarray:
        """Full-line-height (full width if vertical) integer crop boxes of the characters."""
        return glyph_crop_boxes(self.chars, self.image_size, self.vertical, padding)


# ---------------------------------------------------------------------------
# Decoding the default backend's raw output
# ---------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _level_points(height: int, width: int, stride: tuple[int, int]) -> np.ndarray:
    sh, sw = stride
    gh, gw = height // sh, width // sw
    ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    pts = np.stack([(xs.ravel() + 0.5) * sw, (ys.ravel() + 0.5) * sh], axis=1).astype(np.float32)
    pts.flags.writeable = False  # shared by every call with this size (cached)
    return pts


def level_points(height: int, width: int, stride: tuple[int, int]) -> np.ndarray:
    """Centres ``(cx, cy)`` of the cells of one feature level, row-major (y then x)."""
    return _level_points(int(height), int(width), (int(stride[0]), int(stride[1])))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def decode_effocr(
    raw: np.ndarray,
    input_hw: tuple[int, int],
    levels: list[dict],
    num_classes: int,
    score_threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode the default backend's raw output into boxes, scores and labels.

    Args:
        raw: (1, N, 6) rows ``dx, dy, log w, log h`` (box centre offset from the cell centre
            and log box size, in units of the level's `size`), centre-ness logit, class logit;
            levels concatenated in order.
        input_hw: (height, width) of the network input (padded).
        levels: ``[{"stride": [sh, sw], "size": unit, "class": k}, ...]`` (model metadata);
            `size` (default: the stride) is the regression unit in pixels.
        num_classes: Number of classes.
        score_threshold: Drop rows scoring below it before decoding their boxes (the same
            rows `postprocess` would drop; most of a line's cells are background).

    Returns:
        boxes (N, 4) in network-input pixels, scores (N,), labels (N,) int.
    """
    raw = np.asarray(raw, dtype=np.float32).reshape(-1, raw.shape[-1])
    boxes, scores, labels = [], [], []
    start = 0
    for level in levels:
        pts = level_points(input_hw[0], input_hw[1], tuple(level["stride"]))
        part = raw[start : start + len(pts)]
        if len(part) != len(pts):
            raise ValueError(f"raw output has {len(raw)} rows; levels {levels} need more")
        start += len(pts)
        score = np.sqrt(sigmoid(part[:, 5]) * sigmoid(part[:, 4]))
        if score_threshold is not None:
            rows = np.flatnonzero(score >= score_threshold)
            pts, part, score = pts[rows], part[rows], score[rows]
        size = float(level.get("size", level["stride"][1]))
        centre = pts + part[:, :2] * size
        wh = np.exp(np.minimum(part[:, 2:4], MAX_LOG_SIZE)) * size
        boxes.append(np.concatenate([centre - wh / 2, centre + wh / 2], axis=1))
        scores.append(score)
        labels.append(np.full(len(pts), int(level["class"]), np.int64))
    if start != len(raw):
        raise ValueError(f"raw output has {len(raw)} rows, levels {levels} account for {start}")
    del num_classes  # levels carry the class of every row
    return np.concatenate(boxes), np.concatenate(scores), np.concatenate(labels)


# ---------------------------------------------------------------------------
# Boxes
# ---------------------------------------------------------------------------


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (n, 4) and (m, 4) ``x0, y0, x1, y1`` boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices kept, highest score first.

    The same result as the textbook loop (and `torchvision.ops.nms`), computed for text lines:
    boxes overlap only if their spans along the line overlap, and along a line each candidate
    overlaps a few neighbours, so IoU is computed for those pairs alone (one vectorised pass)
    and the greedy pass walks lists of neighbours. A line has hundreds of candidate cells;
    both an IoU matrix and per-candidate NumPy calls cost more than the network.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    b = np.asarray(boxes, np.float64).reshape(-1, 4)[order]
    n = len(b)
    if n == 0:
        return np.zeros(0, np.int64)
    # Pairs whose spans overlap along the axis the boxes spread over most (x for a line).
    axis = 0 if np.ptp(b[:, [0, 2]]) >= np.ptp(b[:, [1, 3]]) else 1
    by_start = np.argsort(b[:, axis], kind="stable")
    starts = b[by_start, axis]
    ends = np.searchsorted(starts, b[by_start, axis + 2], side="left")
    counts = np.maximum(ends - np.arange(1, n + 1), 0)
    total = int(counts.sum())
    if total == 0:
        return order
    first = np.repeat(np.arange(n), counts)
    second = first + 1 + np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    p, q = by_start[first], by_start[second]
    bp, bq = b[p], b[q]
    iw = np.minimum(bp[:, 2], bq[:, 2]) - np.maximum(bp[:, 0], bq[:, 0])
    ih = np.minimum(bp[:, 3], bq[:, 3]) - np.maximum(bp[:, 1], bq[:, 1])
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    area = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
    union = area[p] + area[q] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    over = iou > iou_threshold
    # In score order, the earlier box of an overlapping pair suppresses the later if kept.
    winner = np.minimum(p[over], q[over])
    loser = np.maximum(p[over], q[over])
    by_winner = np.argsort(winner, kind="stable")
    bounds = np.searchsorted(winner[by_winner], np.arange(n + 1)).tolist()
    losers = loser[by_winner].tolist()
    suppressed = bytearray(n)
    keep: list[int] = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in losers[bounds[i] : bounds[i + 1]]:
            suppressed[j] = 1
    return order[np.asarray(keep, dtype=np.int64)]


def contained(boxes: np.ndarray, share: float) -> np.ndarray:
    """Mask of the boxes with more than `share` of their area inside a larger box of `boxes`
    (a box of equal area is never counted as larger, so two equal boxes both stay)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(b) < 2 or share >= 1.0:
        return np.zeros(len(b), bool)
    area = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
    iw = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
    ih = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
    inside = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    nested = (inside > share * area[:, None]) & (area[None, :] > area[:, None])
    return nested.any(axis=1) & (area > 0)


def class_apart(boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Boxes moved along x by their class times the boxes' x extent, so that boxes of two classes
    never overlap: one `nms` call is then class-wise NMS (a call per class cost a line 0.2 ms)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return boxes
    extent = float(boxes[:, [0, 2]].max() - boxes[:, [0, 2]].min()) + 1.0
    shift = np.asarray(labels, np.float64).reshape(-1) * extent
    out = boxes.copy()
    out[:, 0] += shift
    out[:, 2] += shift
    return out


def reading_order(boxes: np.ndarray, vertical: bool = False) -> np.ndarray:
    """Indices sorting boxes by centre x (centre y for vertical lines), ties by the other axis."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    primary, secondary = (cy, cx) if vertical else (cx, cy)
    return np.lexsort((secondary, primary))


def assign_spaces(chars: np.ndarray, words: np.ndarray, vertical: bool = False) -> np.ndarray:
    """Leading-space flags from word boxes; chars and words already in reading order.

    The first character (in reading order) whose centre lies inside a word's span along the
    reading direction starts that word; every word start except the line's first character
    gets a leading space. Words containing no character centre are ignored.
    """
    chars = np.asarray(chars, np.float64).reshape(-1, 4)
    words = np.asarray(words, np.float64).reshape(-1, 4)
    spaces = np.zeros(len(chars), bool)
    if len(chars) == 0 or len(words) == 0:
        return spaces
    a0, a1 = (1, 3) if vertical else (0, 2)
    centres = (chars[:, a0] + chars[:, a1]) / 2
    for w in words:
        inside = np.nonzero((centres >= w[a0]) & (centres <= w[a1]))[0]
        if inside.size:
            spaces[inside.min()] = True
    spaces[0] = False
    return spaces


def spaces_from_gaps(
    chars: np.ndarray, line_thickness: float, vertical: bool, gap_factor: float
) -> np.ndarray:
    """Fallback leading-space flags from gaps between consecutive characters (reading order).

    A gap larger than ``gap_factor * max(median gap, GAP_FLOOR * line_thickness)`` is a space.
    """
    chars = np.asarray(chars, np.float64).reshape(-1, 4)
    spaces = np.zeros(len(chars), bool)
    if len(chars) < 2:
        return spaces
    a0, a1 = (1, 3) if vertical else (0, 2)
    gaps = chars[1:, a0] - chars[:-1, a1]
    threshold = gap_factor * max(float(np.median(gaps)), GAP_FLOOR * float(line_thickness))
    spaces[1:] = gaps > threshold
    return spaces


def glyph_crop_boxes(
    chars: np.ndarray, image_size: tuple[int, int], vertical: bool, padding: int
) -> np.ndarray:
    """Integer crop boxes spanning the full line height (full width for vertical lines).

    The recognizer was trained on such crops, so vertical position (`,` vs `'`) survives.
    Boxes are clipped to the image and at least one pixel long along the reading direction.
    """
    h, w = image_size
    chars = np.asarray(chars, np.float64).reshape(-1, 4)
    out = np.zeros((len(chars), 4), np.int64)
    if len(chars) == 0:
        return out
    if vertical:
        y0 = np.clip(np.floor(chars[:, 1]) - padding, 0, h - 1)
        y1 = np.clip(np.ceil(chars[:, 3]) + padding, 1, h)
        y1 = np.maximum(y1, y0 + 1)
        out[:] = np.stack([np.zeros_like(y0), y0, np.full_like(y0, w), y1], axis=1)
    else:
        x0 = np.clip(np.floor(chars[:, 0]) - padding, 0, w - 1)
        x1 = np.clip(np.ceil(chars[:, 2]) + padding, 1, w)
        x1 = np.maximum(x1, x0 + 1)
        out[:] = np.stack([x0, np.zeros_like(x0), x1, np.full_like(x0, h)], axis=1)
    return out


# ---------------------------------------------------------------------------
# The whole chain
# ---------------------------------------------------------------------------


def detection_cap(
    image_size: tuple[int, int],
    vertical: bool,
    max_detections: int,
    detections_per_height: float,
) -> int:
    """Most boxes kept for a line: `max_detections`, more for lines longer than usual.

    A fixed cap silently cut long lines (a 7,660 px line kept 212 of its ~380 characters), so
    the cap grows with the line's length measured in line heights: a glyph is rarely narrower
    than a fifth of the line height, and words add about one box per five characters.
    """
    h, w = image_size
    length, thickness = (h, w) if vertical else (w, h)
    per_length = math.ceil(detections_per_height * length / max(thickness, 1))
    return max(int(max_detections), per_length)


def postprocess(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    *,
    image_size: tuple[int, int],
    scale: float = 1.0,
    transposed: bool = False,
    vertical: bool = False,
    score_threshold: float,
    nms_iou: float,
    max_detections: int,
    detections_per_height: float,
    spaces: bool = True,
    gap_factor: float,
    contained_share: float,
) -> Detections:
    """Threshold, class-wise NMS, map back to the original image, order, and infer spaces.

    Args:
        boxes: (N, 4) boxes in network-input pixels.
        scores: (N,) scores in [0, 1].
        labels: (N,) indices into `classes` (``char``, optionally ``word``).
        classes: Class names of the model.
        image_size: (height, width) of the ORIGINAL image.
        scale: Network-input pixels per original pixel.
        transposed: The network saw the image transposed (vertical lines); swap x and y back.
        vertical: Reading order top to bottom.
        score_threshold, nms_iou: Filtering (config `localizer.*`).
        max_detections, detections_per_height: The cap on boxes kept (`detection_cap`);
            what it still cuts is counted in `Detections.dropped`.
        spaces: Infer spaces (English profile); False leaves `spaces` all False.
        gap_factor: Gap fallback factor (see the module docstring).
        contained_share: Character boxes with more of their area inside a larger character
            box are dropped (see the module docstring); 1 keeps them.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    keep = scores >= score_threshold
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    sel = nms(class_apart(boxes, labels), scores, nms_iou)
    cap = detection_cap(image_size, vertical, max_detections, detections_per_height)
    dropped = max(len(sel) - cap, 0)
    sel = sel[np.argsort(-scores[sel], kind="stable")][:cap]
    boxes, scores, labels = boxes[sel] / float(scale), scores[sel], labels[sel]
    if transposed:
        boxes = boxes[:, [1, 0, 3, 2]]
    h, w = image_size
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)

    def pick(name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in classes:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        m = labels == classes.index(name)
        b, s = boxes[m], scores[m]
        order = reading_order(b, vertical)
        return b[order].astype(np.float32), s[order].astype(np.float32)

    chars, char_scores = pick("char")
    keep = ~contained(chars, contained_share)
    chars, char_scores = chars[keep], char_scores[keep]
    words, word_scores = pick("word")
    flags = np.zeros(len(chars), bool)
    if spaces and len(chars):
        if len(words):
            flags = assign_spaces(chars, words, vertical)
        else:
            flags = spaces_from_gaps(chars, w if vertical else h, vertical, gap_factor)
    return Detections(
        chars=chars,
        char_scores=char_scores,
        words=words,
        word_scores=word_scores,
        spaces=flags,
        vertical=vertical,
        image_size=(int(h), int(w)),
        dropped=int(dropped),
    )
