"""The page stage: page pixels -> text lines -> the line pipeline -> a `document.Page`.

`LineDetectorStage` runs the bundle's line detector (ONNX, `effocr.linedet`) on a page;
`reading_order` groups the lines into regions (columns, headings, notes) and orders them;
`cut_line` cuts each line from the page by its polygon (outside it: paper), turned straight
when it is tilted; the cuts go through the line `Pipeline` as one batch, and glyph and word
boxes come back in page pixels. `PagePipeline.run(images, first_index)` and its `stats` are
those of `Pipeline`, and `PagePipelineSpec.build()` those of `PipelineSpec`, so
`effocr.runner.Runner` runs pages as it runs lines.

Which inputs are pages (`--layout auto`, `is_page`): an image is a page when its shorter side
is at least `PAGE_MIN_SIDE` pixels and its longer side at most `PAGE_MAX_ASPECT` times the
shorter. A line image is long and thin (a 2000 x 60 line, a 60 x 900 vertical one); a page
scan, however small, is not. A word image or a short line scanned large (say 400 x 330) is
read as a page; `--layout line` forces the old behaviour.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from effocr import document
from effocr.bundle import Manifest
from effocr.config import section_defaults
from effocr.formats.source import SourcePage
from effocr.imageio import ImageInput, decode_image
from effocr.linedet import postprocess as lp
from effocr.onnx_session import CPU_PROVIDER, make_session
from effocr.pipeline import CharResult, LineResult, Pipeline
from effocr.utils import EffOCRError

LAYOUTS = ("auto", "page", "line")
PAGE_MIN_SIDE = 300
PAGE_MAX_ASPECT = 4.0
# Stage names in `StageTimings` (beside the line pipeline's).
DETECT_STAGE = "line_detection"
CUT_STAGE = "line_cuts"


def is_page(height: int, width: int) -> bool:
    """The `--layout auto` rule (module docstring): True for a page, False for a line."""
    short, long = min(height, width), max(height, width)
    return short >= PAGE_MIN_SIDE and long <= PAGE_MAX_ASPECT * short


# ---------------------------------------------------------------------------
# Line detection
# ---------------------------------------------------------------------------


class LineDetectorStage:
    """Page pixels -> `DetectedLine`s in page pixels: the bundle's ONNX line detector, its
    finds that are dark masses rather than print dropped (`drop_dark_masses`), and those it
    joined across a column's edge cut there (`split_at_gaps`)."""

    def __init__(self, session: Any, meta: dict) -> None:
        self.session = session
        self.meta = meta
        self.input_name = session.get_inputs()[0].name

    def __call__(self, page: np.ndarray) -> list[lp.DetectedLine]:
        prepared = lp.prepare_page(page, self.meta)
        out = self.session.run(None, {self.input_name: prepared.array[None]})[0][0]
        return split_at_gaps(page, drop_dark_masses(page, lp.decode_meta(out, prepared, self.meta)))


# A detected "line" whose box is mostly dark is a scan border, a picture or a black rule, not
# print: text lines, tight boxes round bold type and page numbers included, are at most 41 %
# dark (1,666 synthetic page lines of base-en; 19-36 % on the real Pembroke page), where the
# lines the detector found on that page's dark scan border are 73-95 % dark (docs/pages.md).
MAX_DARK_SHARE = 0.6


def _grey(a: np.ndarray) -> np.ndarray:
    # Per sample and per box: a colour page is not converted whole.
    return a if a.ndim == 2 else a.mean(axis=2)


def _page_threshold(page: np.ndarray) -> float | None:
    """The page's Otsu threshold (on a sample of about 400 x 400 pixels), or None when the
    page has no ink and paper INK_MIN_CONTRAST apart (blank, or all one grey)."""
    h, w = page.shape[:2]
    t, dark, light = _otsu(_grey(page[:: max(1, h // 400), :: max(1, w // 400)]))
    return None if light - dark < INK_MIN_CONTRAST else t


def drop_dark_masses(page: np.ndarray, lines: list[lp.DetectedLine]) -> list[lp.DetectedLine]:
    """`lines` without those whose box is more than MAX_DARK_SHARE dark: darker than the
    page's Otsu threshold, when the page has ink and paper (INK_MIN_CONTRAST apart)."""
    t = None if not lines else _page_threshold(page)
    if t is None:
        return lines
    kept = []
    for line in lines:
        x0, y0, x1, y1 = line.bbox
        box = _grey(
            page[
                max(0, int(y0)) : max(0, int(math.ceil(y1))),
                max(0, int(x0)) : max(0, int(math.ceil(x1))),
            ]
        )
        if box.size == 0 or float((box <= t).mean()) <= MAX_DARK_SHARE:
            kept.append(line)
    return kept


# Where the line detector joins two lines across a gap (a marginal note to the body line
# beside it, the lines of two close columns), the gap is at least this wide (in line
# thicknesses; 0.5-2 on base-en's synthetic pages) and other lines end where it starts or start
# where it ends: the column's edge. Word spaces reach 0.9 on those pages and 1.1 in the
# justified Fraktur of the Pembroke page, but nothing else ends at them (docs/pages.md).
SPLIT_GAP = 0.7
# How far (line thicknesses) a neighbour's end may be from the gap's edge, how far (across the
# line, centre to centre) a neighbour may be, and how many make a column's edge (one is often a
# paragraph's last line ending by chance at a word space).
EDGE_TOLERANCE = 0.5
NEIGHBOUR_REACH = 5.0
EDGE_LINES = 2
# A column rule in a gutter: an ink run at most this wide (line thicknesses) with gaps of
# at least half SPLIT_GAP on both sides counts as part of the gap it stands in.
RULE_WIDTH = 0.15


def _ink_profile(
    page: np.ndarray, line: lp.DetectedLine, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Dark pixels across `line` at each pixel along it: ``(u, counts)``, `u` the position as a
    fraction of its start edge to its end edge (x for a horizontal line, y for a vertical one;
    the band between its two long edges at each step, so a tilted line is followed)."""
    p0, p1, p2, p3 = (np.asarray(p, dtype=np.float64) for p in line.polygon)
    along = 1 if line.vertical else 0  # the page axis the line runs along
    across = 1 - along
    h, w = page.shape[:2]
    lo = np.floor(np.minimum.reduce([p0, p1, p2, p3])).astype(int)
    hi = np.ceil(np.maximum.reduce([p0, p1, p2, p3])).astype(int)
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], w - 1), min(hi[1], h - 1)
    span = p1[along] - p0[along]
    if x1 < x0 or y1 < y0 or abs(span) < 1:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    dark = _grey(page[y0 : y1 + 1, x0 : x1 + 1]) <= threshold
    if line.vertical:
        dark = dark.T  # rows along the line, columns across it
    # Cumulative dark counts across the line, one zero first: a band's count is a difference.
    cum = np.zeros((dark.shape[0] + 1, dark.shape[1]), dtype=np.int32)
    np.cumsum(dark, axis=0, out=cum[1:])
    origin = np.array([x0, y0])
    steps = np.arange(origin[along], origin[along] + dark.shape[1])
    u = (steps - p0[along]) / span
    keep = (u >= 0) & (u <= 1)
    u, steps = u[keep], steps[keep]
    edge_a = p0[across] + u * (p1[across] - p0[across]) - origin[across]
    edge_b = p3[across] + u * (p2[across] - p3[across]) - origin[across]
    first = np.clip(np.floor(np.minimum(edge_a, edge_b)), 0, cum.shape[0] - 1).astype(np.int64)
    last = np.clip(np.ceil(np.maximum(edge_a, edge_b)) + 1, 0, cum.shape[0] - 1).astype(np.int64)
    cols = steps - origin[along]
    return u, cum[last, cols] - cum[first, cols]


def _piece(line: lp.DetectedLine, a: float, b: float) -> lp.DetectedLine:
    """The part of `line` from fraction `a` to `b` of its length."""
    p0, p1, p2, p3 = (np.asarray(p, dtype=np.float64) for p in line.polygon)
    corners = [p0 + a * (p1 - p0), p0 + b * (p1 - p0), p3 + b * (p2 - p3), p3 + a * (p2 - p3)]
    return lp.DetectedLine(
        [(float(x), float(y)) for x, y in corners], line.score, line.vertical, line.angle
    )


def _extent(line: lp.DetectedLine) -> tuple[float, float, float]:
    """(start, end) along the line's direction and its centre across it, in page pixels."""
    x0, y0, x1, y1 = line.bbox
    return (y0, y1, (x0 + x1) / 2) if line.vertical else (x0, x1, (y0 + y1) / 2)


def _column_edge(
    line: lp.DetectedLine, start: float, end: float, others: list[lp.DetectedLine]
) -> bool:
    """Whether EDGE_LINES lines near `line` (same direction, within NEIGHBOUR_REACH thicknesses
    across) end at `start`, or as many start at `end` (page pixels along the line,
    EDGE_TOLERANCE)."""
    thick = max(line.thickness, 1.0)
    tol, centre = EDGE_TOLERANCE * thick, _extent(line)[2]
    ending = starting = 0
    for other in others:
        if other is line or other.vertical != line.vertical:
            continue
        o0, o1, oc = _extent(other)
        if abs(oc - centre) <= NEIGHBOUR_REACH * thick:
            ending += abs(o1 - start) <= tol
            starting += abs(o0 - end) <= tol
    return max(ending, starting) >= EDGE_LINES


def split_at_gaps(
    page: np.ndarray, lines: list[lp.DetectedLine], min_gap: float = SPLIT_GAP
) -> list[lp.DetectedLine]:
    """`lines` with each one cut where the detector has joined two lines across a gap (a
    marginal note to its body line, the lines of two close columns), which reading order then
    keeps apart: where its ink leaves a gap of at least `min_gap` times its thickness and a
    neighbouring line ends where the gap starts or starts where it ends (`_column_edge`; a
    wide word space has no such neighbour). A thin rule standing in the gap is part of it
    (`_without_rules`; it is left out of the pieces). Each piece ends a quarter thickness into
    the gap (the paper a detected line has beside its ink). A page without ink and paper
    (INK_MIN_CONTRAST apart) is left as it is."""
    t = None if not lines else _page_threshold(page)
    if t is None:
        return lines
    out = []
    for line in lines:
        u, counts = _ink_profile(page, line, t)
        thick = max(line.thickness, 1.0)
        ink = _without_rules(np.flatnonzero(counts), RULE_WIDTH * thick, min_gap / 2 * thick)
        if len(ink) < 2:
            out.append(line)
            continue
        # Along the line in page pixels (steps are pixels: ink steps i, j leave j - i - 1).
        p0, p1 = line.polygon[0], line.polygon[1]
        axis = 1 if line.vertical else 0
        pos = p0[axis] + u * (p1[axis] - p0[axis])
        cuts = [
            k
            for k in np.flatnonzero(np.diff(ink) >= min_gap * thick + 1)
            if _column_edge(line, *sorted((pos[ink[k]], pos[ink[k + 1]])), lines)
        ]
        if not cuts:
            out.append(line)
            continue
        du = abs(u[1] - u[0])  # one pixel step as a fraction of the line
        pad = 0.25 * thick * du
        start = 0.0
        for k in cuts:
            out.append(_piece(line, start, min(u[ink[k]] + du + pad, 1.0)))
            start = max(u[ink[k + 1]] - pad, 0.0)
        out.append(_piece(line, start, 1.0))
    return out


def _without_rules(ink: np.ndarray, max_width: float, min_side: float) -> np.ndarray:
    """Ink steps (sorted) without the runs at most `max_width` steps long that have at least
    `min_side` empty steps on both sides (a rule standing in a gap), so the gap is whole."""
    if len(ink) < 3:
        return ink
    breaks = np.flatnonzero(np.diff(ink) > 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(ink) - 1]])
    keep = np.ones(len(ink), dtype=bool)
    for r in range(1, len(starts) - 1):  # not the first or last run: those end the line
        a, b = starts[r], ends[r]
        if (
            ink[b] - ink[a] + 1 <= max_width
            and ink[a] - ink[a - 1] - 1 >= min_side
            and ink[b + 1] - ink[b] - 1 >= min_side
        ):
            keep[a : b + 1] = False
    return ink[keep]


# ---------------------------------------------------------------------------
# Reading order
# ---------------------------------------------------------------------------


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _order_flow(boxes: list[tuple[float, float, float, float]]) -> list[list[int]]:
    """Regions (lists of box indices) in reading order for left-to-right, top-to-bottom text.

    Lines stack into a column when one follows the other closely below, in type of about
    the same size, and they share most of the narrower one's width; columns are then read in turn: the next is the topmost column that no
    unread column lies above (sharing its width), and of the columns beside it (sharing its
    height), the leftmost.
    """
    order = sorted(range(len(boxes)), key=lambda i: (boxes[i][1], boxes[i][0]))
    columns: list[list[int]] = []
    for i in order:
        x0, y0, x1, y1 = boxes[i]
        h = y1 - y0
        best, best_gap = None, math.inf
        for c, col in enumerate(columns):
            lx0, ly0, lx1, ly1 = boxes[col[-1]]
            gap = y0 - ly1
            lh = ly1 - ly0
            if gap < -0.5 * min(h, lh) or gap > 1.5 * max(h, lh):
                continue
            # A heading in larger type starts a region of its own.
            if max(h, lh) > 1.5 * min(h, lh):
                continue
            # Share of the narrower line's width: a short last line or a centred number
            # still belongs to its column.
            ov = _overlap(x0, x1, lx0, lx1) / max(1e-6, min(x1 - x0, lx1 - lx0))
            if ov >= 0.5 and gap < best_gap:
                best, best_gap = c, gap
        if best is None:
            columns.append([i])
        else:
            columns[best].append(i)
    extents = []
    for col in columns:
        xs0 = min(boxes[i][0] for i in col)
        ys0 = min(boxes[i][1] for i in col)
        xs1 = max(boxes[i][2] for i in col)
        ys1 = max(boxes[i][3] for i in col)
        extents.append((xs0, ys0, xs1, ys1))
    left = set(range(len(columns)))
    out: list[list[int]] = []
    while left:
        free = [
            c
            for c in left
            if not any(
                d != c
                and extents[d][3] <= extents[c][1] + 0.5 * (extents[c][3] - extents[c][1])
                and extents[d][1] < extents[c][1]
                and _overlap(extents[c][0], extents[c][2], extents[d][0], extents[d][2]) > 0
                for d in left
            )
        ] or list(left)
        top = min(free, key=lambda c: extents[c][1])
        beside = [
            c
            for c in free
            if _overlap(extents[c][1], extents[c][3], extents[top][1], extents[top][3]) > 0
        ]
        pick = min(beside, key=lambda c: extents[c][0])
        out.append(columns[pick])
        left.remove(pick)
    return out


def reading_order(
    boxes: list[tuple[float, float, float, float]], vertical: list[bool], page_width: float
) -> list[list[int]]:
    """Regions of line indices in reading order.

    Horizontal lines: columns, each top to bottom, columns left to right (and headings,
    notes, footnotes where they fall). Vertical lines (vertical Japanese): lines right to
    left within a block, blocks top to bottom; on a page with both, the more numerous
    direction comes first.
    """
    groups = []
    for want in (False, True):
        idx = [i for i, v in enumerate(vertical) if v == want]
        if not idx:
            continue
        if want:
            # Turned a quarter clockwise, vertical text reads like horizontal text: the
            # rightmost line comes first, on top.
            turned = [
                (boxes[i][1], page_width - boxes[i][2], boxes[i][3], page_width - boxes[i][0])
                for i in idx
            ]
        else:
            turned = [boxes[i] for i in idx]
        groups.append((len(idx), want, [[idx[k] for k in r] for r in _order_flow(turned)]))
    groups.sort(key=lambda g: (-g[0], g[1]))
    return [region for _, _, regions in groups for region in regions]


# ---------------------------------------------------------------------------
# Cutting lines from the page
# ---------------------------------------------------------------------------


@dataclass
class LineCut:
    """A line cut from its page and how its pixels map back: page = origin + X*ex + Y*ey."""

    image: np.ndarray
    origin: tuple[float, float]
    ex: tuple[float, float]
    ey: tuple[float, float]
    turned: bool

    def to_page(self, box: list[float] | tuple[float, ...]) -> list[float]:
        """A box of the cut (x0, y0, x1, y1) as the axis-aligned box of its page corners."""
        x0, y0, x1, y1 = (float(v) for v in box)
        ox, oy = self.origin
        xs, ys = [], []
        for X, Y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
            xs.append(ox + X * self.ex[0] + Y * self.ey[0])
            ys.append(oy + X * self.ex[1] + Y * self.ey[1])
        return [min(xs), min(ys), max(xs), max(ys)]


def paper_level(page: np.ndarray) -> int:
    """The page's background grey (bright percentile of a pixel sample)."""
    sample = page[:: max(1, page.shape[0] // 200), :: max(1, page.shape[1] // 200)]
    return int(np.percentile(sample, 90))


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.hypot(v[0], v[1]))
    return v / n if n > 1e-9 else v


# Trimming a cut to its ink (`ink_band`). Ink: darker than the Otsu threshold of the pixels
# inside the polygon, when the two classes differ by at least INK_MIN_CONTRAST grey levels
# and the ink is at least INK_MIN_SHARE of those pixels (else the cut is blank: a speck on
# empty paper is not a line). The band starts at the rows holding at least half the densest
# row's ink (the x-height, a column's body) and grows over rows with at least INK_ROW_SHARE
# of it (ascenders, descenders, accents) across gaps up to INK_MAX_GAP of the core's
# thickness (an i's dot), so a speck or a neighbour's descender further off does not stretch
# it. A band thinner than INK_MIN_EXTENT of the box (a row of dots or dashes) is widened
# about its centre to that, so such a line is not blown up to the cut height.
INK_MIN_CONTRAST = 64.0
INK_MIN_SHARE = 0.002
INK_ROW_SHARE = 0.005
INK_MAX_GAP = 0.3
INK_MIN_EXTENT = 0.5
# Turning a tilted line: bicubic keeps strokes sharper than bilinear.
TURN_RESAMPLING = Image.Resampling.BICUBIC


def _otsu(values: np.ndarray) -> tuple[float, float, float]:
    """Otsu threshold of grey values, and the mean of the dark and the light class."""
    hist = np.bincount(np.clip(values, 0, 255).astype(np.int64).ravel(), minlength=256)
    hist = hist.astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(hist)
    s0 = np.cumsum(hist * levels)
    total, s_all = w0[-1], s0[-1]
    w1 = total - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        m0 = s0 / w0
        m1 = (s_all - s0) / w1
        between = w0 * w1 * (m0 - m1) ** 2
    between[~np.isfinite(between)] = -1.0
    t = int(np.argmax(between))
    if between[t] <= 0:
        return float(t), float(levels[t]), float(levels[t])
    return float(t), float(m0[t]), float(m1[t])


def ink_band(
    crop: np.ndarray, keep: np.ndarray, vertical: bool, *, min_extent: float = 0.0
) -> tuple[float, float] | None:
    """The ink's extent across a cut line: rows (columns when `vertical`) [b0, b1) of `crop`
    in which the line's ink lies, among the pixels `keep` marks; None when there is no ink.
    See the INK_* constants."""
    grey = crop if crop.ndim == 2 else crop.mean(axis=2)
    values = grey[keep]
    if values.size == 0:
        return None
    t, dark, light = _otsu(values)
    if light - dark < INK_MIN_CONTRAST:
        return None
    ink = (grey <= t) & keep
    if ink.sum() < max(1.0, INK_MIN_SHARE * values.size):
        return None
    profile = ink.sum(axis=0 if vertical else 1).astype(np.float64)
    peak = float(profile.max())
    core = np.nonzero(profile >= 0.5 * peak)[0]
    b0, b1 = int(core.min()), int(core.max()) + 1
    active = profile >= max(1.0, INK_ROW_SHARE * peak)
    gap = max(1, int(round(INK_MAX_GAP * (b1 - b0))))
    k, free = b0 - 1, 0
    while k >= 0 and free <= gap:
        free = 0 if active[k] else free + 1
        b0 = k if active[k] else b0
        k -= 1
    k, free = b1, 0
    while k < len(profile) and free <= gap:
        free = 0 if active[k] else free + 1
        b1 = k + 1 if active[k] else b1
        k += 1
    lo, hi = float(b0), float(b1)
    if hi - lo < min_extent:
        mid = (lo + hi) / 2
        lo, hi = mid - min_extent / 2, mid + min_extent / 2
    return lo, hi


def _span(crop: np.ndarray, lo: int, hi: int, axis: int, paper: int) -> np.ndarray:
    """`crop` cut to [lo, hi) along `axis`, padded with `paper` where that runs past it."""
    n = crop.shape[axis]
    inner = np.take(crop, np.arange(max(lo, 0), min(hi, n)), axis=axis)
    pad = [(0, 0)] * crop.ndim
    pad[axis] = (max(0, -lo), max(0, hi - n))
    return np.pad(inner, pad, constant_values=paper)


def cut_line(
    page: np.ndarray,
    polygon: list[tuple[float, float]],
    vertical: bool,
    *,
    margin: float,
    max_tilt: float,
    paper: int = 255,
    max_height: int | None = None,
) -> LineCut:
    """Cut one line from `page` (H x W or H x W x 3 uint8).

    `polygon` starts at the line's start corner and runs along its top (right, when
    vertical) edge first, as `DetectedLine.polygon`; a longer polygon (PAGE-XML, ALTO) is
    taken by its minimum-area frame along the same directions. `margin` (share of the
    line's height) is added on every side. Pixels outside the polygon become `paper` (PIL
    draws the polygon's outline inside it, so the margin holds no ink of the page). A line tilted more than `max_tilt` degrees is turned straight (bicubic);
    a vertical line stays vertical (taller than wide, top to bottom). Across the line the cut
    is then trimmed to its ink (`ink_band`; rows, or columns of a vertical line) and the
    margin is taken from the ink's thickness, so a box regressed a little too high or too low
    gives the same cut; a cut without ink keeps its box. A cut thicker than `max_height`
    pixels (across the line) is shrunk to it: the line pipeline was trained on lines of about
    that size, and glyph crops of a 600-dpi line cost many times more.
    """
    pts = np.asarray(polygon, np.float64)
    if pts.ndim != 2 or len(pts) < 3:
        raise EffOCRError(f"line polygon needs at least 3 points, got {polygon!r}")
    p0, p1, p3 = pts[0], pts[1], pts[-1]
    along = _unit(p1 - p0)
    if vertical:
        ey = along if along[1] >= 0 else -along
        ex = np.array([ey[1], -ey[0]])  # left to right across the line
    else:
        ex = along if along[0] >= 0 else -along
        ey = np.array([-ex[1], ex[0]])  # top to bottom across the line
    tilt = math.degrees(
        math.atan2(abs(ey[0] if vertical else ex[1]), abs(ey[1] if vertical else ex[0]))
    )
    if tilt <= max_tilt:
        ex, ey = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    # The polygon's extent in the (ex, ey) frame.
    u = pts @ ex
    v = pts @ ey
    thick = (u.max() - u.min()) if vertical else (v.max() - v.min())
    thick = thick if tilt <= max_tilt else float(np.hypot(*(p3 - p0)))
    m = margin * max(thick, 1.0)
    u0, u1, v0, v1 = u.min() - m, u.max() + m, v.min() - m, v.max() + m
    h_img, w_img = page.shape[:2]
    turned = tilt > max_tilt
    if not turned:
        x0, y0 = max(0, int(math.floor(u0))), max(0, int(math.floor(v0)))
        x1, y1 = min(w_img, int(math.ceil(u1))), min(h_img, int(math.ceil(v1)))
        if x1 <= x0 or y1 <= y0:
            raise EffOCRError(f"line polygon {polygon!r} lies outside the page")
        crop = page[y0:y1, x0:x1].copy()
        origin = np.array([float(x0), float(y0)])
    else:
        origin = u0 * ex + v0 * ey
        size = (max(1, int(round(u1 - u0))), max(1, int(round(v1 - v0))))
        data = (ex[0], ey[0], origin[0], ex[1], ey[1], origin[1])
        fill = paper if page.ndim == 2 else (paper,) * 3
        crop = np.asarray(
            Image.fromarray(page).transform(
                size, Image.Transform.AFFINE, data, TURN_RESAMPLING, fillcolor=fill
            )
        ).copy()
    # Outside the polygon: paper, so neighbours' ascenders vanish (the outline's width is
    # drawn inside the polygon; widening the mask by the margin read worse, docs/pages.md).
    local = [((p - origin) @ ex, (p - origin) @ ey) for p in pts]
    mask = Image.new("L", (crop.shape[1], crop.shape[0]), 0)
    draw = ImageDraw.Draw(mask)
    draw.polygon(local, fill=255, outline=255, width=max(1, int(round(2 * m))))
    keep = np.asarray(mask) > 0
    crop[~keep] = paper
    band = ink_band(crop, keep, vertical, min_extent=INK_MIN_EXTENT * thick)
    if band is not None:
        # The scale of the shrunk cut follows the ink, not the regressed box height.
        b0, b1 = band
        mb = margin * (b1 - b0)
        lo, hi = int(math.floor(b0 - mb)), int(math.ceil(b1 + mb))
        crop = _span(crop, lo, hi, 1 if vertical else 0, paper)
        origin = origin + lo * (ex if vertical else ey)
    across = crop.shape[1] if vertical else crop.shape[0]
    if max_height is not None and across > max_height:
        f = max_height / across
        size = (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f)))
        crop = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BOX))
        ex, ey = ex / f, ey / f
    return LineCut(crop, (float(origin[0]), float(origin[1])), tuple(ex), tuple(ey), turned)


# ---------------------------------------------------------------------------
# Page results
# ---------------------------------------------------------------------------


@dataclass
class PageLine:
    """One line of a page: its polygon, region, reading order and OCR result (page pixels)."""

    id: str
    region: int
    polygon: list[tuple[float, float]]
    vertical: bool
    result: LineResult
    detection_score: float | None = None


@dataclass
class PageResult:
    """The OCR of one input image read as a page (or, `layout` "line", as one line)."""

    image: str
    width: int = 0
    height: int = 0
    layout: str = "page"
    lines: list[PageLine] = field(default_factory=list)
    error: str | None = None
    line_result: LineResult | None = None  # layout "line": the plain line result
    # Read with a given segmentation (`PagePipeline.read_segmented`): the PAGE/ALTO file, and
    # its region ids and types, indexed by `PageLine.region`, so outputs keep them.
    segmentation: str | None = None
    region_ids: list[str] = field(default_factory=list)
    region_kinds: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and (self.line_result is None or self.line_result.ok)

    def records(self) -> list[dict]:
        """predictions.jsonl records: one per line in reading order (page coordinates)."""
        if self.line_result is not None:
            return [self.line_result.to_dict()]
        if self.error is not None:
            rec = {"image": self.image, "text": None, "error": self.error}
            return [{**rec, "segmentation": self.segmentation} if self.segmentation else rec]
        if not self.lines:
            return [
                {
                    "image": self.image,
                    "layout": "page",
                    "line": None,
                    "text": "",
                    "page_width": self.width,
                    "page_height": self.height,
                }
            ]
        out = []
        for order, line in enumerate(self.lines):
            rec = line.result.to_dict()
            rec.pop("width", None)
            rec.pop("height", None)
            head = {
                "image": self.image,
                "layout": "page",
                "line": order,
                "id": line.id,
                "region": line.region,
                "polygon": [[round(x, 2), round(y, 2)] for x, y in line.polygon],
                "bbox": [round(v, 2) for v in document.polygon_box(line.polygon)],
                "vertical": line.vertical,
                "page_width": self.width,
                "page_height": self.height,
            }
            if self.segmentation is not None:
                head["segmentation"] = self.segmentation
            if line.result.error is not None:
                out.append({**head, "text": None, "error": line.result.error})
            else:
                rec.pop("image")
                out.append({**head, **rec})
        return out

    @property
    def text(self) -> str:
        if self.line_result is not None:
            return self.line_result.text
        return self.to_document().text

    def to_document(self) -> document.Page:
        """The page as the shared document model (regions and lines in reading order; an input
        read as a line is a page of one line, `effocr.formats.results.page_from_result`)."""
        from effocr.formats.results import line_from_result, page_from_result

        if self.line_result is not None:
            return page_from_result(self.line_result)
        page = document.Page(self.image, self.width, self.height, error=self.error)
        if self.error is not None:
            return page
        regions: dict[int, document.Region] = {}
        for line in self.lines:
            region = regions.get(line.region)
            if region is None:
                rid = (
                    self.region_ids[line.region]
                    if line.region < len(self.region_ids)
                    else f"r{line.region}"
                )
                region = regions[line.region] = document.Region(rid, [])
                if line.region < len(self.region_kinds):
                    region.kind = self.region_kinds[line.region]
                page.regions.append(region)
            region.lines.append(line_from_result(line.result, line.id, line.polygon, line.vertical))
        for region in page.regions:
            pts = [p for ln in region.lines for p in ln.polygon]
            region.polygon = document.box_polygon(document.polygon_box(pts))
        return page


# ---------------------------------------------------------------------------
# The page pipeline
# ---------------------------------------------------------------------------


class PagePipeline:
    """Pages through line detection, cutting and the line `Pipeline` (module docstring).

    Args:
        lines: The bundle's line pipeline (its `stats` are this pipeline's too).
        detector: `LineDetectorStage`, or None for a bundle without a line detector (then
            pages cannot be read: `layout` "page" is an error).
        layout: ``auto`` (`is_page` decides per image), ``page`` or ``line``.
        margin: Margin around a cut line, a share of its height.
        max_tilt: Lines tilted more than this (degrees) are turned straight.
    """

    def __init__(
        self,
        lines: Pipeline,
        detector: LineDetectorStage | None,
        *,
        layout: str = "auto",
        margin: float,
        max_tilt: float,
        cut_height: int | None,
    ) -> None:
        if layout not in LAYOUTS:
            raise EffOCRError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.lines = lines
        self.detector = detector
        self.layout = layout
        self.margin = float(margin)
        self.max_tilt = float(max_tilt)
        self.cut_height = cut_height
        self.stats = lines.stats

    @classmethod
    def from_bundle(
        cls,
        bundle_dir: str | os.PathLike,
        providers: list[Any] | None = None,
        *,
        intra_op_threads: int = 1,
        batch_size: int | None = None,
        layout: str = "auto",
        verify: bool = True,
        manifest: Manifest | None = None,
        lines: Pipeline | None = None,
        lm: bool | None = None,
        lm_weight: float | None = None,
        geometry: bool | None = None,
        lexicon_margin: float | None = None,
    ) -> PagePipeline:
        """The page pipeline of a bundle (`lines`: its line pipeline, when already built;
        otherwise built with `lm`, `lm_weight`, `geometry` and `lexicon_margin`, see
        `Pipeline.from_bundle`)."""
        bundle_dir = Path(bundle_dir)
        providers = list(providers or [CPU_PROVIDER])
        if manifest is None:
            manifest = Manifest.read(bundle_dir, verify=verify)
        if lines is None:
            lines = Pipeline.from_bundle(
                bundle_dir,
                providers,
                intra_op_threads=intra_op_threads,
                batch_size=batch_size,
                manifest=manifest,
                lm=lm,
                lm_weight=lm_weight,
                geometry=geometry,
                lexicon_margin=lexicon_margin,
            )
        section = manifest.line_detector
        detector = None
        if section:
            path = bundle_dir / section["file"]
            session = make_session(path, providers, intra_op_threads, what="ONNX line detector")
            detector = LineDetectorStage(session, section["meta"])
        elif layout == "page":
            raise EffOCRError(no_detector_message(bundle_dir))
        # Without a detector no page is cut: the schema's settings only fill the fields.
        cut = section or section_defaults("line_detector")
        return cls(
            lines,
            detector,
            layout=layout,
            margin=float(cut["line_margin"]),
            max_tilt=float(cut["max_line_tilt"]),
            cut_height=int(section["cut_height"]) if section else None,
        )

    def cut(
        self, img: np.ndarray, polygon: list[tuple[float, float]], vertical: bool, paper: int
    ) -> LineCut:
        """`cut_line` with this pipeline's margin, tilt limit and cut height: the one cut of
        detected lines, a segmentation's lines and ground-truth lines, so they compare."""
        return cut_line(
            img,
            polygon,
            vertical,
            margin=self.margin,
            max_tilt=self.max_tilt,
            paper=paper,
            max_height=self.cut_height,
        )

    def decide(self, img: np.ndarray) -> str:
        """``page`` or ``line`` for one decoded image under this pipeline's layout."""
        if self.layout != "auto":
            return self.layout
        # Without a detector too: a page then gets a clear error rather than a line's garbage.
        return "page" if is_page(img.shape[0], img.shape[1]) else "line"

    def run(self, images: list[ImageInput], first_index: int = 0) -> list[PageResult]:
        """Read a batch of images (paths or arrays), each as a page or a line."""
        return [self.read(item, first_index + i) for i, item in enumerate(images)]

    def read(self, item: ImageInput, index: int = 0, layout: str | None = None) -> PageResult:
        """Read one image as `layout` (None: `decide`); a failure is the result's `error`."""
        name = f"<array {index}>" if isinstance(item, np.ndarray) else str(item)
        t0 = time.perf_counter()
        try:
            img = decode_image(item, keep_grey=True)
        except EffOCRError as exc:
            self.stats.add("decode", time.perf_counter() - t0)
            self.stats.merge({}, 1, 0)
            return PageResult(name, error=str(exc))
        self.stats.add("decode", time.perf_counter() - t0)
        layout = layout or self.decide(img)
        if layout == "line":
            res = self.lines.run([img], index)[0]
            res.image = name
            return PageResult(name, img.shape[1], img.shape[0], "line", line_result=res)
        if self.detector is None:
            return PageResult(
                name,
                img.shape[1],
                img.shape[0],
                error=f"a page image, but {no_detector_message(None)}",
            )
        try:
            return self.read_page(img, name)
        except Exception as exc:  # one odd page must not stop the batch
            return PageResult(
                name, img.shape[1], img.shape[0], error=f"page failed: {type(exc).__name__}: {exc}"
            )

    def read_page(self, img: np.ndarray, name: str) -> PageResult:
        """Detect, order, cut and read the lines of one decoded page."""
        h, w = img.shape[:2]
        t0 = time.perf_counter()
        found = self.detector(img)
        self.stats.add(DETECT_STAGE, time.perf_counter() - t0)
        t0 = time.perf_counter()
        regions = reading_order([ln.bbox for ln in found], [ln.vertical for ln in found], w)
        paper = paper_level(img)
        plan: list[tuple[int, int, lp.DetectedLine, LineCut]] = []
        for r, region in enumerate(regions):
            for i in region:
                line = found[i]
                try:
                    cut = self.cut(img, line.polygon, line.vertical, paper)
                except EffOCRError:
                    continue
                plan.append((r, i, line, cut))
        self.stats.add(CUT_STAGE, time.perf_counter() - t0)
        results = self.lines.run([cut.image for _, _, _, cut in plan]) if plan else []
        page = PageResult(name, w, h, "page")
        for k, ((r, _i, line, cut), res) in enumerate(zip(plan, results, strict=True)):
            res.image = name
            res.width, res.height = w, h
            for c in res.chars:
                c.bbox = [round(v, 2) for v in cut.to_page(c.bbox)]
            res.words = [[round(v, 2) for v in cut.to_page(b)] for b in res.words]
            page.lines.append(
                PageLine(
                    f"l{k}",
                    r,
                    [(round(x, 2), round(y, 2)) for x, y in line.polygon],
                    line.vertical,
                    res,
                    line.score,
                )
            )
        return page

    def read_segmented(self, source: SourcePage) -> PageResult:
        """Read the lines a PAGE-XML or ALTO file gives (`effocr.formats.segmentation`).

        No detection: each line of `source` is cut from its page image by its polygon, as
        detected lines are (`cut_line`), turned by its orientation (multiples of 90 degrees;
        smaller skew comes from the polygon itself), and read by the line pipeline as one
        batch. The file's reading order, line ids and regions are kept; a line that cannot be
        cut is a line with `error`, the others go on.
        """
        seg = str(source.source)
        if source.image is None or source.page.error is not None:
            return PageResult(
                source.page.image, error=source.page.error or "no page image", segmentation=seg
            )
        name = str(source.image)
        t0 = time.perf_counter()
        try:
            img = decode_image(source.image, keep_grey=True)
        except EffOCRError as exc:
            self.stats.add("decode", time.perf_counter() - t0)
            self.stats.merge({}, 1, 0)
            return PageResult(name, error=str(exc), segmentation=seg)
        self.stats.add("decode", time.perf_counter() - t0)
        h, w = img.shape[:2]
        page = PageResult(name, w, h, "page", segmentation=seg)
        t0 = time.perf_counter()
        paper = paper_level(img)
        plan: list[tuple[int, Any, LineCut | None, str | None]] = []
        for region in source.page.regions:
            if not region.lines:
                continue
            r = len(page.region_ids)
            page.region_ids.append(region.id)
            page.region_kinds.append(region.kind)
            for line in region.lines:
                try:
                    cut = self.cut(img, line.polygon, line.vertical, paper)
                    cut = turn_cut(cut, getattr(line, "orientation", 0.0))
                    plan.append((r, line, cut, None))
                except EffOCRError as exc:
                    plan.append((r, line, None, f"{seg}: TextLine {line.id}: {exc}"))
        self.stats.add(CUT_STAGE, time.perf_counter() - t0)
        todo = [cut.image for _, _, cut, _ in plan if cut is not None]
        results = iter(self.lines.run(todo) if todo else [])
        for r, line, cut, error in plan:
            if cut is None:
                res = LineResult(name, width=w, height=h, error=error)
            else:
                res = next(results)
                res.image = name
                res.width, res.height = w, h
                for c in res.chars:
                    c.bbox = [round(v, 2) for v in cut.to_page(c.bbox)]
                res.words = [[round(v, 2) for v in cut.to_page(b)] for b in res.words]
            polygon = [(round(float(x), 2), round(float(y), 2)) for x, y in line.polygon]
            page.lines.append(PageLine(line.id, r, polygon, line.vertical, res))
        return page


def turn_cut(cut: LineCut, orientation: float) -> LineCut:
    """`cut` turned clockwise by `orientation` degrees rounded to a quarter turn (PAGE's
    @orientation: the turn that makes the text upright), its page mapping turned with it."""
    k = int(round(float(orientation or 0.0) / 90.0)) % 4
    if k == 0:
        return cut
    hc, wc = cut.image.shape[:2]
    ox, oy = cut.origin
    ex, ey = np.asarray(cut.ex), np.asarray(cut.ey)
    # New pixel (X', Y') is old (X, Y): clockwise quarter X = Y', Y = H - X'; half
    # X = W - X', Y = H - Y'; three quarters X = W - Y', Y = X'.
    if k == 1:
        origin, nex, ney = np.array([ox, oy]) + hc * ey, -ey, ex
    elif k == 2:
        origin, nex, ney = np.array([ox, oy]) + wc * ex + hc * ey, -ex, -ey
    else:
        origin, nex, ney = np.array([ox, oy]) + wc * ex, ey, -ex
    image = np.ascontiguousarray(np.rot90(cut.image, k=-k))
    return LineCut(
        image, (float(origin[0]), float(origin[1])), tuple(nex), tuple(ney), cut.turned or k != 0
    )


def no_detector_message(bundle_dir: str | os.PathLike | None) -> str:
    where = f"{bundle_dir}: " if bundle_dir is not None else ""
    return (
        f"{where}this bundle has no line detector (exported before bundle format 2, or with "
        "line_detector.enabled false), so it reads line images only; export it again to read "
        "pages, or cut the lines yourself (--layout line)"
    )


@dataclass(frozen=True)
class PagePipelineSpec:
    """What a worker process needs to build its own `PagePipeline` (small, picklable)."""

    bundle_dir: str
    batch_size: int | None = None  # None: the bundle's infer.batch_size
    layout: str = "auto"
    # The line pipeline's options, as `PipelineSpec`'s (None: the bundle's).
    lm: bool | None = None
    lm_weight: float | None = None
    geometry: bool | None = None
    lexicon_margin: float | None = None

    def build(self) -> PagePipeline:
        return PagePipeline.from_bundle(
            self.bundle_dir,
            [CPU_PROVIDER],
            intra_op_threads=1,
            batch_size=self.batch_size,
            layout=self.layout,
            verify=False,
            lm=self.lm,
            lm_weight=self.lm_weight,
            geometry=self.geometry,
            lexicon_margin=self.lexicon_margin,
        )


__all__ = [
    "LAYOUTS",
    "CharResult",
    "LineCut",
    "LineDetectorStage",
    "PagePipeline",
    "PagePipelineSpec",
    "PageResult",
    "cut_line",
    "ink_band",
    "is_page",
    "reading_order",
    "turn_cut",
]
