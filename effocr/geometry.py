"""Labels that differ only in size or placement, decided from the glyph's box in the line.

The recognizer sees a full-height crop shrunk to its input size: a comma's tail, two or three
pixels below the baseline on a 300 dpi scan, is a pixel there, and `S` and `s` differ only in
height. The localizer's box keeps both in line pixels. Measured against the line's baseline and
x-height (medians over the glyphs read as x-height letters), a comma descends below the
baseline and a period does not, and a capital is taller than the x-height.

A label is changed only when its box is typical of the other label of its pair: inside that
label's 5th-95th percentile range on the char boxes of base-en's synthetic validation lines
(config/base-en.yaml, 2,400 lines in 40 faces; in x-heights): a comma descends 0.11 or more
below the baseline and is 0.43 or more tall, a period descends at most 0.04 and is at most 0.37
tall; the capitals C, O, S, V, W are 1.25 x-heights tall or more, their lower-case forms 1.00 or
less. In between, the recognizer's reading stands (config/README.md, "Glyph geometry").
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Case pairs of the same shape, told apart only by height.
CASE_PAIRS = {c: c.upper() for c in "cosvwxz"}
# Letters of x-height sitting on the baseline (no ascender, descender or dot) that measure the
# line; the case pairs are left out, since a misread capital would inflate the x-height.
XHEIGHT_LETTERS = frozenset("aemnru")
# Fewer x-height letters than this give no reliable baseline: the line is left as read.
MIN_XHEIGHT_LETTERS = 3
# In x-heights (see the module docstring).
COMMA_DESCENT_MIN = 0.11
COMMA_HEIGHT_MIN = 0.43
PERIOD_DESCENT_MAX = 0.04
PERIOD_HEIGHT_MAX = 0.37
CAPITAL_HEIGHT_MIN = 1.25
LOWER_HEIGHT_MAX = 1.00


@dataclass(frozen=True)
class LineMetrics:
    """The baseline (y of the bottom of x-height letters) and the x-height, in line pixels."""

    baseline: float
    x_height: float


def line_metrics(boxes: np.ndarray, labels: Sequence[str]) -> LineMetrics | None:
    """Baseline and x-height of a horizontal line from its glyph boxes (x0, y0, x1, y1) and
    labels; None with fewer than `MIN_XHEIGHT_LETTERS` x-height letters."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    rows = [i for i, lab in enumerate(labels) if lab in XHEIGHT_LETTERS]
    if len(rows) < MIN_XHEIGHT_LETTERS:
        return None
    baseline = float(np.median(boxes[rows, 3]))
    x_height = float(np.median(boxes[rows, 3] - boxes[rows, 1]))
    if x_height <= 0:
        return None
    return LineMetrics(baseline, x_height)


def geometric_label(label: str, box: Sequence[float], metrics: LineMetrics) -> str:
    """`label`, or the other label of its pair when the box says so."""
    _, y0, _, y1 = (float(v) for v in box)
    height = (y1 - y0) / metrics.x_height
    if label in (",", "."):
        descent = (y1 - metrics.baseline) / metrics.x_height
        if label == "." and descent >= COMMA_DESCENT_MIN and height >= COMMA_HEIGHT_MIN:
            return ","
        if label == "," and descent <= PERIOD_DESCENT_MAX and height <= PERIOD_HEIGHT_MAX:
            return "."
        return label
    lower = label.lower()
    if lower in CASE_PAIRS:
        upper = CASE_PAIRS[lower]
        if label == lower and height >= CAPITAL_HEIGHT_MIN:
            return upper
        if label == upper and height <= LOWER_HEIGHT_MAX:
            return lower
    return label


def geometry_labels(boxes: np.ndarray, labels: Sequence[str]) -> list[str]:
    """The labels of a horizontal line with each pair decided by its box (`geometric_label`);
    unchanged when the line has no reliable baseline (`line_metrics`)."""
    metrics = line_metrics(boxes, labels)
    if metrics is None:
        return list(labels)
    return [geometric_label(lab, box, metrics) for lab, box in zip(labels, boxes, strict=True)]


def add_geometry_argument(parser: argparse.ArgumentParser) -> None:
    """`--geometry on|off` (`effocr infer`, `effocr evaluate`)."""
    parser.add_argument(
        "--geometry",
        choices=("on", "off"),
        default=None,
        help="decide ,/. and case pairs such as S/s by the glyph boxes against the line's "
        "baseline and x-height (default: the bundle's infer.geometry)",
    )


def geometry_choice(value: str | None) -> bool | None:
    """`--geometry` as `Engine(geometry=...)`."""
    return None if value is None else value == "on"
