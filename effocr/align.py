"""Character boxes from line transcriptions: `effocr align BUNDLE --coco lines.json ...`.

Most ground truth people have is a line image and its text, without a box per character. A
bundle's localizer proposes boxes; its recognizer names each box's k nearest reference glyphs
(cosine similarities); a dynamic programme then assigns every non-space character of the
transcription to the boxes in reading order, choosing for each step one of

    match   one box, one character (its similarity to that character)
    split   one box, two characters (the localizer merged two touching glyphs): the box's two
            halves are embedded, and the box is cut in proportion to the characters' widths
    merge   two neighbouring boxes, one character (the localizer broke a glyph): their union
            is embedded
    missed  no box, one character (the localizer missed it): the box is interpolated in the
            gap between its neighbours, or the line is rejected when there is no room
    extra   one box, no character (dirt, a mark the transcription leaves out)

Spaces of the transcription are matched to the localizer's word starts (word boxes, else
wide gaps): a character after a space should start a word, one inside a word should not.
A character not among a box's top k scores the box's k-th similarity (an upper bound of its
true one); a character absent from the reference index is never among them, so its
neighbours and the geometry place it, and it is left out of the line's similarity. Every
box is finally shrunk to the ink inside it (`align.tighten`), as hand-drawn boxes are.

Each line gets `confidence = mean similarity × fraction of one-to-one matches`; lines at or
above `align.min_confidence` become training lines with `char` and `word` boxes, the others
go into the report with the reason. The output COCO keeps the input's `file_name`s, relative
to the same image folder.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from effocr.config import AlignSection, DatasetSection
from effocr.data.coco import (
    char_category_id,
    load_coco,
    word_category_id,
)
from effocr.utils import (
    OUTPUT_MARKER,
    EffOCRError,
    atomic_path,
    progress,
)
from effocr.utils import (
    _replaceable as replaceable_dir,
)

LOG = logging.getLogger(__name__)

# How dark a pixel must be to count as ink when boxes are tightened, as a fraction of the way
# from paper to ink: hand-drawn and synthetic boxes (`effocr.synth.lines.INK_THRESHOLD`, about
# a fifth) take in the faint anti-aliased fringe, so a level near the paper does too.
INK_LEVEL = 0.2
OPS = ("match", "split", "merge", "missed", "extra")
# Files of the output folder.
COCO_FILE = "lines.json"
REPORT_CSV = "report.csv"
REPORT_JSON = "report.json"
REPORT_COLUMNS = (
    "image_id",
    "file_name",
    "status",
    "confidence",
    "mean_similarity",
    "one_to_one",
    "chars",
    "boxes",
    "split",
    "merge",
    "missed",
    "extra",
    "unknown_chars",
    "reason",
)


@dataclass(frozen=True)
class AlignSettings:
    """The `align` config section (see config/README.md; defaults in config/schema.yaml)."""

    top_k: int
    min_confidence: float
    split_penalty: float
    merge_penalty: float
    missed_penalty: float
    extra_penalty: float
    space_penalty: float
    min_missed_width: float
    tighten: bool

    @classmethod
    def from_config(cls, align: AlignSection) -> AlignSettings:
        """Settings from the config section `align` (all but `bundle` and `rounds`)."""
        return cls(**{f.name: getattr(align, f.name) for f in fields(cls)})


# ---------------------------------------------------------------------------
# The dynamic programme
# ---------------------------------------------------------------------------


@dataclass
class TopK:
    """What the recognizer says about one crop: similarity of its k nearest labels.

    A label outside the k scores `floor` (the k-th similarity, an upper bound of its own).
    """

    sims: dict[str, float]
    floor: float

    def __call__(self, char: str) -> float:
        return self.sims.get(char, self.floor)


@dataclass
class LineScores:
    """The DP's view of a line's n boxes (reading order).

    Attributes:
        whole: n `TopK`, one per box.
        left, right: n `TopK` of each box's left and right half (top/bottom, vertical).
        merged: n - 1 `TopK` of the union of boxes i and i + 1.
        word_start: n flags: box i starts a word (the localizer's space before it).
    """

    whole: list[TopK]
    left: list[TopK]
    right: list[TopK]
    merged: list[TopK]
    word_start: list[bool]

    def __len__(self) -> int:
        return len(self.whole)


@dataclass(frozen=True)
class Step:
    """One step of an alignment: `op` (one of `OPS`), the boxes and characters it takes."""

    op: str
    boxes: tuple[int, ...]
    chars: tuple[int, ...]
    sims: tuple[float, ...] = ()


def dp_align(
    chars: Sequence[str],
    space_before: Sequence[bool],
    scores: LineScores,
    settings: AlignSettings,
) -> list[Step]:
    """The best assignment of `chars` (non-space, reading order) to the boxes of `scores`.

    Args:
        chars: The line's non-space characters.
        space_before: Per character, whether the transcription has a space before it.
        scores: Similarities and word starts of the boxes.
        settings: Penalties.

    Returns:
        The steps in reading order; every box and every character appears in exactly one.
    """
    n, m = len(scores), len(chars)
    if len(space_before) != m:
        raise ValueError(f"{len(space_before)} space flags for {m} characters")
    s = settings

    def sim(row: TopK, j: int) -> float:
        return row(chars[j])

    def space_cost(i: int, j: int) -> float:
        # Character j begins at box i: does the box start a word where the text has a space?
        if i == 0 or j == 0:
            return 0.0
        return s.space_penalty if bool(scores.word_start[i]) != bool(space_before[j]) else 0.0

    neg = -np.inf
    best = np.full((n + 1, m + 1), neg)
    back: list[list[tuple[str, int, int] | None]] = [[None] * (m + 1) for _ in range(n + 1)]
    best[0, 0] = 0.0
    for i in range(n + 1):
        for j in range(m + 1):
            here = best[i, j]
            if here == neg:
                continue
            cands: list[tuple[str, int, int, float]] = []
            if i < n and j < m:
                cands.append(("match", 1, 1, sim(scores.whole[i], j) - space_cost(i, j)))
            if i < n and j + 1 < m:
                inner = s.space_penalty if space_before[j + 1] else 0.0
                gain = sim(scores.left[i], j) + sim(scores.right[i], j + 1)
                cands.append(("split", 1, 2, gain - 2 * s.split_penalty - space_cost(i, j) - inner))
            if i + 1 < n and j < m:
                inner = s.space_penalty if scores.word_start[i + 1] else 0.0
                gain = sim(scores.merged[i], j) - s.merge_penalty - space_cost(i, j) - inner
                cands.append(("merge", 2, 1, gain))
            if j < m:
                cands.append(("missed", 0, 1, -s.missed_penalty))
            if i < n:
                cands.append(("extra", 1, 0, -s.extra_penalty))
            for op, di, dj, gain in cands:
                total = here + gain
                # Ties go to the earlier candidate (match first): deterministic answers.
                if total > best[i + di, j + dj] + 1e-12:
                    best[i + di, j + dj] = total
                    back[i + di][j + dj] = (op, i, j)
    steps: list[Step] = []
    i, j = n, m
    while (i, j) != (0, 0):
        entry = back[i][j]
        assert entry is not None
        op, pi, pj = entry
        boxes = tuple(range(pi, i))
        cs = tuple(range(pj, j))
        if op == "match":
            sims = (sim(scores.whole[pi], pj),)
        elif op == "split":
            sims = (sim(scores.left[pi], pj), sim(scores.right[pi], pj + 1))
        elif op == "merge":
            sims = (sim(scores.merged[pi], pj),)
        else:
            sims = ()
        steps.append(Step(op, boxes, cs, sims))
        i, j = pi, pj
    steps.reverse()
    return steps


# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------


def _along(boxes: np.ndarray, vertical: bool) -> np.ndarray:
    """Boxes with the reading direction first: (a0, c0, a1, c1)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return b[:, [1, 0, 3, 2]] if vertical else b.copy()


def split_box(box: Sequence[float], fraction: float, vertical: bool) -> tuple[list, list]:
    """Cut a box across the reading direction at `fraction` of its length."""
    a0, c0, a1, c1 = _along(np.asarray(box), vertical)[0]
    cut = a0 + (a1 - a0) * float(np.clip(fraction, 0.05, 0.95))
    first, second = np.array([[a0, c0, cut, c1]]), np.array([[cut, c0, a1, c1]])
    return _along(first, vertical)[0].tolist(), _along(second, vertical)[0].tolist()


def union_box(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """The smallest box holding both."""
    return [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]


def ink_mask(img: np.ndarray) -> np.ndarray:
    """Ink pixels of a line: darker than the paper by `INK_LEVEL` of the paper-to-ink range.

    Paper and ink are the 98th and 2nd grey percentiles, so that a few noise pixels do not
    move the level.
    """
    grey = img if img.ndim == 2 else img[:, :, :3].mean(axis=2)
    lo, hi = np.percentile(grey, [2, 98])
    if hi - lo < 1:  # a blank line: no ink to tighten to
        return np.zeros(grey.shape, bool)
    return grey < hi - INK_LEVEL * (hi - lo)


def tighten(box: Sequence[float], ink: np.ndarray) -> list[float]:
    """The box shrunk to the ink inside it (never grown); unchanged when it holds none.

    The localizer's boxes, and more so merged, split and interpolated ones, are looser than
    the glyph; ground truth boxes are drawn around the ink.
    """
    h, w = ink.shape
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    region = ink[y0:y1, x0:x1]
    if region.size == 0 or not region.any():
        return [float(v) for v in box]
    cols = np.flatnonzero(region.any(axis=0))
    rows = np.flatnonzero(region.any(axis=1))
    return [
        max(float(box[0]), float(x0 + cols[0])),
        max(float(box[1]), float(y0 + rows[0])),
        min(float(box[2]), float(x0 + cols[-1] + 1)),
        min(float(box[3]), float(y0 + rows[-1] + 1)),
    ]


@dataclass
class LineAlignment:
    """The alignment of one line: boxes per character (None: not placed) and its figures."""

    steps: list[Step]
    char_boxes: list[list[float] | None]
    counts: dict[str, int]
    mean_similarity: float
    one_to_one: float
    confidence: float
    unknown: list[str] = field(default_factory=list)
    problem: str | None = None


def place_boxes(
    steps: Sequence[Step],
    chars: Sequence[str],
    boxes: np.ndarray,
    image_size: tuple[int, int],
    vertical: bool,
    widths: dict[str, float],
    settings: AlignSettings,
) -> tuple[list[list[float] | None], str | None]:
    """A box per character from the steps; a problem when a missed character has no room.

    `widths`: expected length of a character along the line, in line thicknesses (the median
    of its one-to-one matches); characters without one get the median of all.
    """
    h, w = image_size
    thickness, length = (w, h) if vertical else (h, w)
    default_w = float(np.median(list(widths.values()))) if widths else 0.5

    def width_of(c: str) -> float:
        return widths.get(c, default_w)

    out: list[list[float] | None] = [None] * len(chars)
    for st in steps:
        if st.op == "match":
            out[st.chars[0]] = [float(v) for v in boxes[st.boxes[0]]]
        elif st.op == "merge":
            out[st.chars[0]] = union_box(boxes[st.boxes[0]], boxes[st.boxes[1]])
        elif st.op == "split":
            wa, wb = width_of(chars[st.chars[0]]), width_of(chars[st.chars[1]])
            first, second = split_box(boxes[st.boxes[0]], wa / max(wa + wb, 1e-9), vertical)
            out[st.chars[0]], out[st.chars[1]] = first, second
    # Runs of missed characters: share the gap between the placed neighbours.
    j = 0
    while j < len(chars):
        if out[j] is not None:
            j += 1
            continue
        k = j
        while k < len(chars) and out[k] is None:
            k += 1
        run = list(range(j, k))
        need = [width_of(chars[r]) * thickness for r in run]
        prev = _along(np.asarray(out[j - 1]), vertical)[0] if j > 0 else None
        nxt = _along(np.asarray(out[k]), vertical)[0] if k < len(chars) else None
        if prev is None and nxt is None:
            return out, "no character could be placed"
        start = prev[2] if prev is not None else max(0.0, nxt[0] - sum(need))
        end = nxt[0] if nxt is not None else min(float(length), prev[2] + sum(need))
        room = end - start
        if room < settings.min_missed_width * thickness * len(run):
            missing = "".join(chars[r] for r in run)
            return out, (
                f"{missing!r} (character {j + 1}) missed by the localizer, no room between "
                "its neighbours"
            )
        ref = [b for b in (prev, nxt) if b is not None]
        c0 = min(b[1] for b in ref)
        c1 = max(b[3] for b in ref)
        pos = start
        total = sum(need)
        for r, wr in zip(run, need, strict=True):
            step = room * wr / total
            box = np.array([[pos, c0, pos + step, c1]])
            out[r] = _along(box, vertical)[0].tolist()
            pos += step
        j = k
    return out, None


def summarise(
    steps: Sequence[Step], chars: Sequence[str], known: set[str] | frozenset[str] | None
) -> tuple[dict[str, int], float, float, float, list[str]]:
    """Counts per op, mean similarity (known characters; missed = 0), 1:1 fraction, confidence."""
    counts = dict.fromkeys(OPS, 0)
    sims: list[float] = []
    unknown: list[str] = []
    for st in steps:
        counts[st.op] += 1
        vals = st.sims if st.sims else (0.0,) * len(st.chars)
        for ci, v in zip(st.chars, vals, strict=True):
            if known is not None and chars[ci] not in known:
                unknown.append(chars[ci])
                continue
            sims.append(max(float(v), 0.0))
    m = len(chars)
    one_to_one = counts["match"] / m if m else 0.0
    mean_sim = float(np.mean(sims)) if sims else 0.0
    return counts, mean_sim, one_to_one, mean_sim * one_to_one, sorted(set(unknown))


def word_boxes(text: str, char_boxes: Sequence[Sequence[float] | None]) -> list[list[float]]:
    """One box per whitespace-separated word of `text`: the union of its characters' boxes."""
    out: list[list[float]] = []
    pos = 0
    for word in text.split():
        members = [char_boxes[pos + i] for i in range(len(word))]
        pos += len(word)
        placed = [b for b in members if b is not None]
        if not placed:
            continue
        box = list(placed[0])
        for b in placed[1:]:
            box = union_box(box, b)
        out.append([float(v) for v in box])
    return out


def text_chars(text: str) -> tuple[list[str], list[bool]]:
    """Non-space characters of a line and, per character, whether a space precedes it."""
    chars: list[str] = []
    space_before: list[bool] = []
    pending = False
    for c in text:
        if c.isspace():
            pending = True
            continue
        chars.append(c)
        space_before.append(pending and len(chars) > 1)
        pending = False
    return chars, space_before


# ---------------------------------------------------------------------------
# Proposals from a bundle
# ---------------------------------------------------------------------------


@dataclass
class Proposal:
    """A line's localizer boxes (reading order) and the recognizer's view of them."""

    boxes: np.ndarray
    scores: LineScores
    vertical: bool
    image_size: tuple[int, int]
    # The line's ink (`ink_mask`), bit-packed along x; None: boxes are not tightened.
    ink: np.ndarray | None = None


class Aligner:
    """A bundle's localizer and recognizer, used to align transcriptions to line images.

    Args:
        pipeline: `effocr.pipeline.Pipeline` of the bundle (its stages are reused, so crops,
            embeddings and the search are exactly inference's).
        settings: `AlignSettings`.
        bundle: The bundle's folder, recorded in the alignment's report (None: not known).
    """

    def __init__(self, pipeline, settings: AlignSettings, bundle: str | None = None) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.bundle = bundle
        self.known = frozenset(pipeline.search.chars)

    @classmethod
    def from_bundle(
        cls, bundle_dir: str | os.PathLike, settings: AlignSettings, threads: int = 1
    ) -> Aligner:
        """An aligner of an exported bundle (CPU)."""
        from effocr.pipeline import Pipeline

        pipeline = Pipeline.from_bundle(bundle_dir, intra_op_threads=threads)
        return cls(pipeline, settings, str(bundle_dir))

    def topk(self, img: np.ndarray, boxes: np.ndarray, vertical: bool) -> list[TopK]:
        """The k nearest reference labels of each box's full-line-height crop."""
        from effocr.localizer.postprocess import glyph_crop_boxes
        from effocr.recognizer.transforms import glyph_squares

        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if not len(boxes):
            return []
        cropper = self.pipeline.cropper
        h, w = img.shape[:2]
        crop = glyph_crop_boxes(boxes, (h, w), vertical, cropper.padding)
        squares = glyph_squares(img, crop, cropper.input_size, vertical)
        squares = np.broadcast_to(squares, squares.shape[:3] + (3,))
        embs = self.pipeline.recognizer(squares)
        search = self.pipeline.search
        k = max(1, min(self.settings.top_k, len(search.index)))
        sims, rows = search.index.search(np.ascontiguousarray(embs, np.float32), k)
        out = []
        for srow, rrow in zip(sims, rows, strict=True):
            labels = {search.chars[r]: float(v) for v, r in zip(srow, rrow, strict=True) if r >= 0}
            out.append(TopK(labels, float(srow[-1])))
        return out

    def propose(self, img: np.ndarray) -> Proposal:
        """Localizer boxes of a line and top-k labels of the boxes, halves and neighbour pairs."""
        det = self.pipeline.localizer(img)
        boxes = np.asarray(det.chars, np.float32).reshape(-1, 4)
        vertical = bool(det.vertical)
        n = len(boxes)
        halves_a, halves_b = [], []
        for b in boxes:
            first, second = split_box(b, 0.5, vertical)
            halves_a.append(first)
            halves_b.append(second)
        merged = [union_box(boxes[i], boxes[i + 1]) for i in range(n - 1)]
        # One recognizer call for all crops of the line.
        every = np.asarray([*boxes.tolist(), *halves_a, *halves_b, *merged], np.float32).reshape(
            -1, 4
        )
        rows = self.topk(img, every, vertical)
        scores = LineScores(
            whole=rows[:n],
            left=rows[n : 2 * n],
            right=rows[2 * n : 3 * n],
            merged=rows[3 * n :],
            word_start=[bool(v) for v in np.asarray(det.spaces, bool)]
            if len(det.spaces) == n
            else [False] * n,
        )
        size = (int(img.shape[0]), int(img.shape[1]))
        ink = np.packbits(ink_mask(img), axis=1) if self.settings.tighten else None
        return Proposal(boxes, scores, vertical, size, ink)

    def align(
        self, proposal: Proposal, text: str, widths: dict[str, float] | None = None
    ) -> LineAlignment:
        """Align a transcription to a proposal (`widths`: see `place_boxes`)."""
        chars, space_before = text_chars(text)
        steps = dp_align(chars, space_before, proposal.scores, self.settings)
        return finish(steps, chars, proposal, widths or {}, self.settings, self.known)


def finish(
    steps: list[Step],
    chars: Sequence[str],
    proposal: Proposal,
    widths: dict[str, float],
    settings: AlignSettings,
    known: set[str] | frozenset[str] | None,
) -> LineAlignment:
    """Boxes, figures and the verdict's problem (None when none) of a line's steps."""
    counts, mean_sim, one_to_one, conf, unknown = summarise(steps, chars, known)
    boxes, problem = place_boxes(
        steps, chars, proposal.boxes, proposal.image_size, proposal.vertical, widths, settings
    )
    if proposal.ink is not None:
        ink = np.unpackbits(proposal.ink, axis=1, count=proposal.image_size[1]).astype(bool)
        boxes = [None if b is None else tighten(b, ink) for b in boxes]
    return LineAlignment(steps, boxes, counts, mean_sim, one_to_one, conf, unknown, problem)


def match_widths(
    items: Sequence[tuple[list[Step], Sequence[str], Proposal]],
) -> dict[str, float]:
    """Median length along the line of each character's one-to-one boxes, in thicknesses."""
    per: dict[str, list[float]] = defaultdict(list)
    for steps, chars, prop in items:
        h, w = prop.image_size
        thickness = w if prop.vertical else h
        along = _along(prop.boxes, prop.vertical)
        for st in steps:
            if st.op == "match":
                b = along[st.boxes[0]]
                per[chars[st.chars[0]]].append((b[2] - b[0]) / max(thickness, 1))
    return {c: float(np.median(v)) for c, v in per.items()}


# ---------------------------------------------------------------------------
# A COCO file of lines
# ---------------------------------------------------------------------------


@dataclass
class LineReport:
    """One row of the report."""

    image_id: int | str
    file_name: str
    status: str  # accepted, rejected, given (had char boxes: kept as they are)
    confidence: float | None = None
    mean_similarity: float | None = None
    one_to_one: float | None = None
    chars: int = 0
    boxes: int = 0
    split: int = 0
    merge: int = 0
    missed: int = 0
    extra: int = 0
    unknown_chars: str = ""
    reason: str = ""


@dataclass
class AlignedLine:
    """One image of the input: its report row and, when it was aligned, the alignment."""

    image: dict
    report: LineReport
    alignment: LineAlignment | None = None
    given: list[dict] = field(default_factory=list)


def align_lines(aligner: Aligner, coco: dict, image_dir: str | os.PathLike) -> list[AlignedLine]:
    """Align every line of a raw COCO dict that has text but no char boxes.

    A line with as many char boxes as non-space characters is kept as it is (`given`); a line
    that cannot be read or aligned is rejected with the reason, and the others go on.
    """
    from effocr.imageio import decode_image

    image_dir = Path(image_dir)
    char_id = char_category_id(coco)
    word_id = word_category_id(coco)
    by_image: dict[object, dict[object, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for ann in coco["annotations"]:
        by_image[ann.get("image_id")][ann.get("category_id")].append(ann)
    settings = aligner.settings
    lines: list[AlignedLine] = []
    pending: list[tuple[AlignedLine, list[str], list[Step], Proposal]] = []
    for im in progress(coco["images"], desc="align", unit="line"):
        rep = LineReport(im.get("id"), str(im.get("file_name")), "rejected")
        line = AlignedLine(im, rep)
        lines.append(line)
        text = im.get("text")
        if not isinstance(text, str) or not text.strip():
            rep.reason = "no transcription (`text` missing or empty)"
            continue
        chars, space_before = text_chars(text)
        rep.chars = len(chars)
        given = by_image.get(im.get("id"), {}).get(char_id, [])
        if given:
            if len(given) == len(chars):
                rep.status, rep.boxes = "given", len(given)
                rep.reason = "has char boxes; kept as they are"
                words = by_image[im.get("id")].get(word_id, []) if word_id is not None else []
                line.given = [*given, *words]
            else:
                rep.reason = (
                    f"{len(given)} char boxes for {len(chars)} non-space characters; "
                    "remove the boxes to align it"
                )
            continue
        path = image_dir / str(im.get("file_name"))
        try:
            img = decode_image(path, keep_grey=True)
            proposal = aligner.propose(img)
        except EffOCRError as exc:
            rep.reason = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            continue
        except Exception as exc:  # one line ORT or the crops choke on must not stop the batch
            rep.reason = f"localizer or recognizer failed: {type(exc).__name__}: {exc}"
            continue
        rep.boxes = len(proposal.boxes)
        if not len(proposal.boxes):
            rep.reason = "the localizer found no character"
            continue
        steps = dp_align(chars, space_before, proposal.scores, settings)
        pending.append((line, chars, steps, proposal))

    # Split boxes and missed characters are cut by widths learnt from all one-to-one matches.
    widths = match_widths([(steps, chars, prop) for _, chars, steps, prop in pending])
    for line, chars, steps, prop in pending:
        res = finish(steps, chars, prop, widths, settings, aligner.known)
        line.alignment = res
        rep = line.report
        rep.confidence = round(res.confidence, 5)
        rep.mean_similarity = round(res.mean_similarity, 5)
        rep.one_to_one = round(res.one_to_one, 5)
        rep.split, rep.merge = res.counts["split"], res.counts["merge"]
        rep.missed, rep.extra = res.counts["missed"], res.counts["extra"]
        rep.unknown_chars = "".join(res.unknown)
        if res.problem is not None:
            rep.reason = res.problem
        elif len(res.unknown) == len(set(chars)):
            rep.reason = "no character of the text is in the reference index"
        elif res.confidence < settings.min_confidence:
            rep.reason = (
                f"confidence {res.confidence:.3f} < align.min_confidence "
                f"{settings.min_confidence} (similarity {res.mean_similarity:.3f}, "
                f"one-to-one {res.one_to_one:.3f})"
            )
        else:
            rep.status = "accepted"
            if res.unknown:
                rep.reason = "not in the reference index, placed by geometry: " + "".join(
                    res.unknown
                )
    return lines


def aligned_coco(coco: dict, lines: Sequence[AlignedLine]) -> dict:
    """The raw COCO of the accepted and given lines: char boxes in text order, word boxes."""
    char_id = char_category_id(coco)
    word_id = word_category_id(coco)
    categories = [dict(c) for c in coco["categories"]]
    if word_id is None:
        word_id = 1 + max(int(c["id"]) for c in categories)
        categories.append({"id": word_id, "name": "word"})
    images: list[dict] = []
    anns: list[dict] = [a for line in lines for a in line.given]
    next_id = 1 + max((a["id"] for a in anns if isinstance(a.get("id"), int)), default=0)
    for line in lines:
        if line.report.status == "given":
            images.append(line.image)
        if line.report.status != "accepted":
            continue
        assert line.alignment is not None
        images.append(line.image)
        boxes = line.alignment.char_boxes
        for cat, group in ((char_id, boxes), (word_id, word_boxes(line.image["text"], boxes))):
            for box in group:
                assert box is not None
                anns.append(_annotation(next_id, line.image["id"], cat, box))
                next_id += 1
    rest = {k: v for k, v in coco.items() if k not in ("images", "annotations", "categories")}
    return {**rest, "images": images, "annotations": anns, "categories": categories}


def report_summary(lines: Sequence[AlignedLine], settings: AlignSettings) -> dict:
    """Counts by status, the accepted fraction of the lines to align, settings, every row."""
    counts: dict[str, int] = dict.fromkeys(("accepted", "rejected", "given"), 0)
    for line in lines:
        counts[line.report.status] += 1
    to_align = counts["accepted"] + counts["rejected"]
    return {
        "lines": len(lines),
        **counts,
        "accepted_fraction": counts["accepted"] / to_align if to_align else 0.0,
        "settings": asdict(settings),
        "lines_report": [asdict(line.report) for line in lines],
    }


def rejection_reasons(summary: dict, top: int = 3) -> list[tuple[str, int]]:
    """The commonest reasons of a `report_summary`'s rejected lines, with their counts
    (figures left out: "confidence 0.412 < ..." and "confidence 0.377 < ..." are one)."""
    reasons: dict[str, int] = defaultdict(int)
    for row in summary["lines_report"]:
        if row["status"] == "rejected":
            reason = row["reason"].split(" (")[0]
            if reason.startswith("confidence "):
                reason = "confidence < align.min_confidence"
            reasons[reason] += 1
    return sorted(reasons.items(), key=lambda kv: -kv[1])[:top]


def require_training_lines(summary: dict, report: str | os.PathLike | None = None) -> None:
    """Raise when an alignment left nothing to train on (the workflow cannot go on).

    `report`: where the per-line reasons stay (None where they do not: Snakemake removes a
    failed job's outputs).

    Raises:
        EffOCRError: no line accepted or given, naming the report and the commonest reasons.
    """
    if summary["accepted"] or summary["given"]:
        return
    listed = "; ".join(f"{n} x {reason}" for reason, n in rejection_reasons(summary))
    where = f" (every line in {report})" if report is not None else ""
    raise EffOCRError(
        f"no line of {summary['lines']} was accepted, nothing to train on{where}: {listed}"
    )


def align_dataset(
    bundle: str | os.PathLike,
    coco_json: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    align: AlignSection,
    dataset: DatasetSection,
    threads: int,
) -> dict:
    """Rule align_lines: `align_coco` of the dataset's lines (their images in
    `dataset.image_dir`) with `bundle` and the settings of the config section `align`; fails,
    with the reasons, when no line is left to train on."""
    aligner = Aligner.from_bundle(bundle, AlignSettings.from_config(align), threads=threads)
    summary = align_coco(aligner, coco_json, dataset.image_dir, out_dir)
    # Fail here, with the reasons, rather than in the data stage with "the dataset is empty".
    require_training_lines(summary)
    return summary


def align_coco(
    aligner: Aligner,
    coco_json: str | os.PathLike,
    image_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
) -> dict:
    """`align_lines` on a raw COCO JSON, written to `out_dir`.

    `out_dir` gets `lines.json` (the accepted lines with `char` and `word` boxes, and lines
    that had char boxes, unchanged; `file_name`s relative to `image_dir` as before),
    `report.csv` and `report.json` (one row per line: status, figures, reason), together and
    atomically; an existing `out_dir` not written by effocr is refused before any work.

    Returns:
        The summary written into `report.json`.
    """
    coco_json, image_dir, out_dir = Path(coco_json), Path(image_dir), Path(out_dir)
    if out_dir.exists() and not (out_dir.is_dir() and replaceable_dir(out_dir)):
        raise EffOCRError(
            f"{out_dir}: exists and was not written by effocr (no {OUTPUT_MARKER} in it); "
            "remove it yourself or choose another output folder"
        )
    coco = load_coco(coco_json)
    lines = align_lines(aligner, coco, image_dir)
    out_coco = aligned_coco(coco, lines)
    summary = {
        "source": str(coco_json),
        "image_dir": str(image_dir),
        # Which model aligned: with align.rounds, each round's report names its own bundle.
        "bundle": aligner.bundle,
        **report_summary(lines, aligner.settings),
    }
    with atomic_path(out_dir, is_dir=True) as tmp:
        (tmp / COCO_FILE).write_text(
            json.dumps(out_coco, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        (tmp / REPORT_JSON).write_text(
            json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=REPORT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for line in lines:
            writer.writerow(asdict(line.report))
        (tmp / REPORT_CSV).write_text(buf.getvalue(), encoding="utf-8")
    LOG.info(
        "aligned %d lines: %d accepted, %d rejected, %d had boxes",
        summary["lines"],
        summary["accepted"],
        summary["rejected"],
        summary["given"],
    )
    return summary


def _annotation(ann_id: int, image_id, cat_id, box: Sequence[float]) -> dict:
    x0, y0, x1, y1 = (round(float(v), 2) for v in box)
    w, h = round(x1 - x0, 2), round(y1 - y0, 2)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat_id,
        "bbox": [x0, y0, w, h],
        "area": round(w * h, 2),
        "iscrowd": 0,
    }


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr align`."""
    parser.add_argument("bundle", help="exported bundle whose localizer and recognizer align")
    parser.add_argument("--coco", required=True, help="raw COCO JSON of lines with `text`")
    parser.add_argument("--images", required=True, help="folder the `file_name`s are relative to")
    parser.add_argument(
        "--output",
        required=True,
        help=f"output folder: {COCO_FILE}, {REPORT_CSV}, {REPORT_JSON} (replaced together)",
    )
    parser.add_argument("--config", default=None, help="config YAML (its `align` section)")
    parser.add_argument("--min-confidence", type=float, default=None, help="override")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")


def run(args: argparse.Namespace) -> int:
    """Run `effocr align`."""
    from effocr.config import config_sections, load_config

    overrides: dict = {"align": {}}
    if args.min_confidence is not None:
        overrides["align"]["min_confidence"] = args.min_confidence
    settings = AlignSettings.from_config(config_sections(load_config(args.config, overrides)).align)
    out = Path(args.output).resolve()
    for given in (args.coco, args.images):
        p = Path(given).resolve()
        if p == out or out in p.parents:
            raise EffOCRError(f"{given}: inside the output folder {args.output}, which is replaced")
    aligner = Aligner.from_bundle(args.bundle, settings, threads=args.threads)
    summary = align_coco(aligner, args.coco, args.images, args.output)
    print(
        f"{summary['accepted']} of {summary['lines'] - summary['given']} lines accepted "
        f"({summary['rejected']} rejected, {summary['given']} had boxes); report: "
        f"{Path(args.output) / REPORT_CSV}"
    )
    return 0
