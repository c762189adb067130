"""Which model made each error: localizer or recognizer (`effocr evaluate --diagnose`).

Every character error of a line (the edit operations of the minimal Levenshtein script that
the CER counts, on the same normalised strings) is attributed to one class:

* localizer: ``missed`` (a reference character with no box), ``extra`` (a box with no
  reference character), ``merge`` (one box read for two reference characters), ``split`` (two
  boxes for one reference character), ``space_missed``, ``space_invented``;
* recognizer: ``substitution`` (one box for one character, labelled wrongly);
* ``failed``: the line was not read at all (its error record).

The rule: a line's class counts (``errors``) add up to its edit distance, exactly. A merge or a
split counts the edit operations it explains: ``rn`` read as one ``m`` box is 2, ``ll`` read as
one ``l`` box is 1. A reference space read as a box is ``extra``, a character read as a space
is ``missed``. ``events`` counts occurrences (one merge = 1 event).

How: rapidfuzz's opcodes find the edited stretches; each, widened by `CONTEXT` correct
characters on both sides, is re-aligned by a small dynamic programme whose steps are the
classes above, each costing exactly its Levenshtein cost, so the best path costs what the
stretch's edit script costs. Among the paths of that cost the one whose boxes fit best wins:
a box's extent along the line (in units of the line's median box) against the extent expected
for the reference characters it is aligned to (learnt from the set's correctly read characters,
`expected_sizes`). A box ~2x an ``r`` aligned to ``rn`` is a merge; a box the size of one
glyph is a substitution plus a missed character; an extra box lying over its neighbour is a
fragment or duplicate of that glyph (a split), one in empty space an ``extra``; a space moved
across a correctly read glyph is a space missed and one invented (`OVERLAP_WEIGHT`,
`GLYPH_UNIT`, `SPACE_SWAP`). Without boxes (no geometry) there are no merges or splits.
The edit cost comes first: a misread glyph with a space moved across it (`` f`` read as
``{ ``, 2 edits) cannot be three errors, so it is an extra box plus a missed character.

On COCO sets, whose lines carry true character boxes, `box_attribution` classifies the same
errors from the boxes alone (overlap along the reading direction) and `compare_methods` says
how often the two agree, per reference character.

Pure functions, no I/O except `write_errors_csv`.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rapidfuzz.distance import Levenshtein

from effocr.metrics import _QUOTE_TABLE, ScoreOptions, normalize
from effocr.utils import atomic_path

LOCALIZER_CLASSES = ("missed", "extra", "merge", "split", "space_missed", "space_invented")
RECOGNIZER_CLASSES = ("substitution",)
FAILED = "failed"
CLASSES = (*RECOGNIZER_CLASSES, *LOCALIZER_CLASSES, FAILED)
KINDS = ("recognizer", "localizer", "failed")
OK = "ok"

# Correct characters on each side of an edited stretch that its re-alignment may use (a merge
# or split the edit script spelt as a substitution plus an edit next to a matching character).
CONTEXT = 2
# Misfit (in `_fit` units, log size ratio) charged to an extra box per fraction of it lying on
# a neighbouring box: a box half over its neighbour weighs like a box 2.7x too wide.
OVERLAP_WEIGHT = 2.0
# Misfit charged for aligning a box with a reference space (or a character with a predicted
# space): at equal cost, a space put on the wrong side of a correctly read glyph (" G" read
# "G ") is a space missed and one invented, not an extra box plus a missed character.
SPACE_SWAP = 1.0
# Misfit charged for a glyph missed or an extra box: at equal cost, a space moved across a
# correctly read glyph is two space errors rather than the glyph missed and read again.
GLYPH_UNIT = 0.25
# Rows of each top-confusion list.
TOP = 12
# Box-level attribution: a box belongs to another when this much of it (along the reading
# direction) lies inside the other.
OWN_FRACTION = 0.5


def kind_of(cls: str) -> str:
    """``recognizer``, ``localizer`` or ``failed`` for an error class."""
    if cls in RECOGNIZER_CLASSES:
        return "recognizer"
    if cls in LOCALIZER_CLASSES:
        return "localizer"
    return FAILED


@dataclass(frozen=True)
class Token:
    """One character of a normalised text; `tag` is its box (hypothesis) or raw char index
    (reference), None for a space or when unknown."""

    char: str
    tag: int | None = None


@dataclass(frozen=True)
class AttributedError:
    """One error: its class, the reference and hypothesis text it covers, the edit operations it
    accounts for, where it is (normalised text positions) and the predicted boxes involved."""

    cls: str
    reference: str
    hypothesis: str
    edits: int
    ref_pos: int
    hyp_pos: int
    boxes: tuple[int, ...] = ()
    key: tuple[str, str] = ("", "")

    @property
    def kind(self) -> str:
        """``recognizer``, ``localizer`` or ``failed``."""
        return kind_of(self.cls)


@dataclass
class LineDiagnosis:
    """A line's normalised texts, edit distance, attributed errors and per-reference-token
    classes (`ref_classes[i]`, ``ok`` when right; used to compare with the box method)."""

    reference: str
    hypothesis: str
    distance: int
    errors: list[AttributedError] = field(default_factory=list)
    ref_classes: list[str] = field(default_factory=list)
    box_classes: dict[int, str] = field(default_factory=dict)
    # The box method's classes (`box_attribution`), for lines with true character boxes.
    box_true: list[str] | None = None
    box_pred: dict[int, str] | None = None


# ---------------------------------------------------------------------------
# Texts as tokens: the normalisation of effocr.metrics.normalize, keeping each char's origin
# ---------------------------------------------------------------------------


def _pairs_to_one(tokens: list[Token], pair: str, to: str) -> list[Token]:
    out: list[Token] = []
    i = 0
    while i < len(tokens):
        if i + 1 < len(tokens) and tokens[i].char + tokens[i + 1].char == pair:
            out.append(Token(to, tokens[i].tag))
            i += 2
        else:
            out.append(tokens[i])
            i += 1
    return out


def normalize_tokens(tokens: list[Token], options: ScoreOptions) -> list[Token]:
    """`effocr.metrics.normalize` on tokens: the same string, each char keeping its tag."""
    toks = [Token(c, t.tag) for t in tokens for c in t.char]
    if options.normalize_quotes:
        toks = [Token(t.char.translate(_QUOTE_TABLE), t.tag) for t in toks]
        toks = _pairs_to_one(_pairs_to_one(toks, "''", '"'), "``", '"')
    if options.ignore_case:
        toks = [Token(c, t.tag) for t in toks for c in t.char.lower()]
    if options.ignore_spaces:
        return [t for t in toks if not t.char.isspace()]
    out: list[Token] = []
    for t in toks:
        if t.char.isspace():
            if out and out[-1].char != " ":
                out.append(Token(" ", None))
        else:
            out.append(t)
    while out and out[-1].char == " ":
        out.pop()
    return out


def hypothesis_tokens(
    text: str | None, labels: Sequence[str] | None, options: ScoreOptions
) -> list[Token]:
    """The normalised hypothesis as tokens tagged with the index of the box that read them.

    `labels` are the line's recognised characters in reading order (`LineResult.chars`), whose
    concatenation with spaces is `text` (`effocr.pipeline.assemble_text`). When they do not
    spell `text` (or are not given) the tokens carry no box.
    """
    text = text or ""
    raw: list[Token] = []
    if labels is not None and "".join(labels) == "".join(c for c in text if not c.isspace()):
        box, used = 0, 0
        for c in text:
            if c.isspace():
                raw.append(Token(c, None))
                continue
            while box < len(labels) and used >= len(labels[box]):
                box, used = box + 1, 0
            raw.append(Token(c, box))
            used += 1
    else:
        raw = [Token(c, None) for c in text]
    toks = normalize_tokens(raw, options)
    if "".join(t.char for t in toks) != normalize(text, options):
        toks = [Token(c, None) for c in normalize(text, options)]  # no geometry, still the text
    return toks


def reference_tokens(text: str, options: ScoreOptions) -> list[Token]:
    """The normalised reference as tokens tagged with their raw non-space character's index
    (the order of a COCO line's char boxes)."""
    raw, k = [], 0
    for c in text:
        if c.isspace():
            raw.append(Token(c, None))
        else:
            raw.append(Token(c, k))
            k += 1
    return normalize_tokens(raw, options)


def token_spans(
    tokens: Sequence[Token], boxes: Sequence[Sequence[float]], vertical: bool = False
) -> list[tuple[float, float] | None]:
    """Each token's box span ``(start, end)`` along the line, in units of the line's median box
    extent (None for a space or a token without a box).

    A box read as several characters (a ligature label) is cut among them in equal parts.
    """
    a0, a1 = (1, 3) if vertical else (0, 2)
    spans = [(float(b[a0]), float(b[a1])) for b in boxes]
    positive = [e - s for s, e in spans if e > s]
    if not positive:
        return [None] * len(tokens)
    median = statistics.median(positive)
    shares = Counter(t.tag for t in tokens if t.tag is not None)
    seen: Counter = Counter()
    out: list[tuple[float, float] | None] = []
    for t in tokens:
        if t.tag is None or not 0 <= t.tag < len(spans) or spans[t.tag][1] <= spans[t.tag][0]:
            out.append(None)
            continue
        start, end = spans[t.tag]
        part = (end - start) / shares[t.tag]
        first = start + part * seen[t.tag]
        seen[t.tag] += 1
        out.append((first / median, (first + part) / median))
    return out


def _size(span: tuple[float, float] | None) -> float | None:
    return None if span is None else span[1] - span[0]


def expected_sizes(
    lines: Sequence[tuple[str, Sequence[Token], Sequence[tuple[float, float] | None]]],
    min_samples: int = 2,
) -> dict[str, float]:
    """Median extent (`token_spans` units) of each character where the set read it right.

    `lines` holds (normalised reference, hypothesis tokens, their spans). The key ``""`` is the
    median over all characters, used for characters seen fewer than `min_samples` times.
    """
    samples: dict[str, list[float]] = defaultdict(list)
    for ref, toks, spans in lines:
        hyp = "".join(t.char for t in toks)
        for op in Levenshtein.opcodes(ref, hyp):
            if op.tag != "equal":
                continue
            for j in range(op.dest_start, op.dest_end):
                if spans[j] is not None and not toks[j].char.isspace():
                    samples[toks[j].char].append(_size(spans[j]))
    out = {c: statistics.median(v) for c, v in samples.items() if len(v) >= min_samples}
    every = [s for v in samples.values() for s in v]
    out[""] = statistics.median(every) if every else 1.0
    return out


# ---------------------------------------------------------------------------
# Text-based attribution
# ---------------------------------------------------------------------------


def _fit(size: float, expected: float) -> float:
    # Misfit of a box against the characters aligned to it: symmetric in ratio, 0 when equal.
    return abs(math.log(max(size, 1e-6) / max(expected, 1e-6)))


def _align_window(
    ref: str,
    toks: Sequence[Token],
    spans: Sequence[tuple[float, float] | None],
    expected: dict[str, float],
) -> list[tuple[str, int, int, int, int, int]]:
    """Best attributed alignment of ref to toks: steps (class, i0, i1, j0, j1, edits).

    Lexicographic: fewest edits (= their Levenshtein distance), then best box fit.
    """
    n, m = len(ref), len(toks)
    hyp = [t.char for t in toks]
    sizes = [_size(sp) for sp in spans]
    # How much of each box lies on a neighbouring box: a box over another glyph is more
    # likely a fragment or a duplicate of it (a split) than a glyph of its own (extra).
    on_neighbour = [0.0] * m
    for j in range(m):
        for k in (j - 1, j + 1):
            if 0 <= k < m and spans[j] and spans[k] and toks[k].tag != toks[j].tag and sizes[j]:
                share = _overlap(spans[j], spans[k]) / sizes[j]
                on_neighbour[j] = max(on_neighbour[j], share)

    def exp(c: str) -> float:
        return expected.get(c, expected.get("", 1.0))

    inf = (math.inf, math.inf)
    best = [[inf] * (m + 1) for _ in range(n + 1)]
    back: list[list[tuple | None]] = [[None] * (m + 1) for _ in range(n + 1)]
    best[0][0] = (0, 0.0)

    def relax(i: int, j: int, i2: int, j2: int, cls: str, edits: int, pen: float) -> None:
        c, p = best[i][j]
        cand = (c + edits, p + pen)
        if cand < best[i2][j2]:
            best[i2][j2] = cand
            back[i2][j2] = (cls, i, i2, j, j2, edits)

    for i in range(n + 1):
        for j in range(m + 1):
            if best[i][j] == inf:
                continue
            r = ref[i] if i < n else None
            h = hyp[j] if j < m else None
            if r is not None and h is not None:
                if r == " " and h == " ":
                    relax(i, j, i + 1, j + 1, OK, 0, 0.0)
                elif r == " ":
                    relax(i, j, i + 1, j + 1, "extra", 1, SPACE_SWAP)
                elif h == " ":
                    relax(i, j, i + 1, j + 1, "missed", 1, SPACE_SWAP)
                else:
                    pen = _fit(sizes[j], exp(r)) if sizes[j] is not None else 0.0
                    relax(i, j, i + 1, j + 1, OK if r == h else "substitution", int(r != h), pen)
            if r is not None:
                if r == " ":
                    relax(i, j, i + 1, j, "space_missed", 1, 0.0)
                else:
                    relax(i, j, i + 1, j, "missed", 1, GLYPH_UNIT)
            if h is not None:
                if h == " ":
                    relax(i, j, i, j + 1, "space_invented", 1, 0.0)
                else:
                    relax(i, j, i, j + 1, "extra", 1, GLYPH_UNIT + OVERLAP_WEIGHT * on_neighbour[j])
            # Merge: one box for two reference characters.
            if i + 1 < n and h is not None and h != " " and sizes[j] is not None:
                pair = ref[i : i + 2]
                if " " not in pair:
                    pen = GLYPH_UNIT + _fit(sizes[j], exp(pair[0]) + exp(pair[1]))
                    relax(i, j, i + 2, j + 1, "merge", 2 - (h in pair), pen)
            # Split: two boxes for one reference character.
            if (
                r is not None
                and r != " "
                and j + 1 < m
                and " " not in hyp[j : j + 2]
                and spans[j] is not None
                and spans[j + 1] is not None
                and toks[j].tag != toks[j + 1].tag
            ):
                # The two boxes' union: a duplicate box over the same glyph is no wider.
                union = max(spans[j][1], spans[j + 1][1]) - min(spans[j][0], spans[j + 1][0])
                pen = GLYPH_UNIT + _fit(union, exp(r))
                relax(i, j, i + 1, j + 2, "split", 2 - (r in hyp[j : j + 2]), pen)
    steps = []
    i, j = n, m
    while (i, j) != (0, 0):
        step = back[i][j]
        steps.append(step)
        i, j = step[1], step[3]
    return steps[::-1]


def _windows(ref: str, hyp: str, context: int) -> list[tuple[int, int, int, int]]:
    """The edited stretches of rapidfuzz's opcodes, widened by `context` correct characters on
    each side and merged where they meet: (ref start, ref end, hyp start, hyp end)."""
    ops = list(Levenshtein.opcodes(ref, hyp))
    wins: list[list[int]] = []
    for k, op in enumerate(ops):
        if op.tag == "equal":
            continue
        left = min(context, ops[k - 1].src_end - ops[k - 1].src_start) if k > 0 else 0
        right = min(context, ops[k + 1].src_end - ops[k + 1].src_start) if k + 1 < len(ops) else 0
        w = [op.src_start - left, op.src_end + right, op.dest_start - left, op.dest_end + right]
        if wins and w[0] <= wins[-1][1]:
            wins[-1][1], wins[-1][3] = max(wins[-1][1], w[1]), max(wins[-1][3], w[3])
        else:
            wins.append(w)
    return [tuple(w) for w in wins]


def _key(cls: str, ref: str, r0: int, r1: int, hyp: str, j0: int, j1: int) -> tuple[str, str]:
    # What the top-confusion lists count. A space is shown with its neighbours, the place
    # being what tells why (after punctuation, inside a word...).
    if cls == "space_missed":
        return (ref[max(r0 - 1, 0) : r1 + 1], "")
    if cls == "space_invented":
        return ("", hyp[max(j0 - 1, 0) : j1 + 1])
    return (ref[r0:r1], hyp[j0:j1])


def attribute_line(
    reference: str,
    tokens: Sequence[Token],
    spans: Sequence[tuple[float, float] | None] | None = None,
    expected: dict[str, float] | None = None,
    context: int = CONTEXT,
) -> LineDiagnosis:
    """Attribute the errors of one line (see the module docstring for the classes and rule).

    Args:
        reference: The normalised reference (`effocr.metrics.normalize`).
        tokens: The normalised hypothesis (`hypothesis_tokens`).
        spans: Each token's box span along the line (`token_spans`); None: no geometry.
        expected: Expected size per character (`expected_sizes`); None: every character 1.0.
        context: Correct characters each side that a merge or split may take in.
    """
    hyp = "".join(t.char for t in tokens)
    spans = list(spans) if spans is not None else [None] * len(tokens)
    expected = expected or {"": 1.0}
    diag = LineDiagnosis(reference, hyp, Levenshtein.distance(reference, hyp))
    diag.ref_classes = [OK] * len(reference)
    for r0, r1, h0, h1 in _windows(reference, hyp, context):
        steps = _align_window(reference[r0:r1], tokens[h0:h1], spans[h0:h1], expected)
        for cls, i0, i1, j0, j1, edits in steps:
            if cls == OK:
                continue
            a0, a1, b0, b1 = r0 + i0, r0 + i1, h0 + j0, h0 + j1
            boxes = tuple(dict.fromkeys(t.tag for t in tokens[b0:b1] if t.tag is not None))
            diag.errors.append(
                AttributedError(
                    cls=cls,
                    reference=reference[a0:a1],
                    hypothesis=hyp[b0:b1],
                    edits=edits,
                    ref_pos=a0,
                    hyp_pos=b0,
                    boxes=boxes,
                    key=_key(cls, reference, a0, a1, hyp, b0, b1),
                )
            )
            for k in range(a0, a1):
                diag.ref_classes[k] = cls
            for b in boxes:
                diag.box_classes[b] = cls
    return diag


def failed_line(reference: str) -> LineDiagnosis:
    """A line the pipeline could not read: its whole distance is one ``failed`` error."""
    diag = LineDiagnosis(reference, "", len(reference))
    diag.ref_classes = [FAILED] * len(reference)
    if reference:
        diag.errors.append(
            AttributedError(FAILED, reference, "", len(reference), 0, 0, key=("", ""))
        )
    return diag


# ---------------------------------------------------------------------------
# Box-level attribution (sets with true character boxes)
# ---------------------------------------------------------------------------


def _span(box: Sequence[float], vertical: bool) -> tuple[float, float]:
    return (float(box[1]), float(box[3])) if vertical else (float(box[0]), float(box[2]))


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def box_attribution(
    true_chars: Sequence[tuple[str, Sequence[float]]],
    pred_chars: Sequence[tuple[str, Sequence[float]]],
    vertical: bool = False,
    same=lambda a, b: a == b,
) -> tuple[list[str], dict[int, str]]:
    """Classify each true character and each predicted box from the boxes alone.

    Boxes are ``[x0, y0, x1, y1]``; only their extent along the reading direction counts
    (true boxes are often tight, predicted ones full height). A box *owns* another when at
    least `OWN_FRACTION` of the other lies inside it. A predicted box owning two or more true
    boxes is a ``merge``; a true box owning two or more predicted boxes (and owned by none of
    them as a whole) a ``split``; one predicted box for one true box is ``ok`` or
    ``substitution`` by its label (`same` compares them, e.g. after normalisation); a true box
    left over is ``missed``, a predicted box left over ``extra``.

    Returns:
        The class of each true character (in order) and ``{predicted box index: class}`` for
        the boxes in an error.
    """
    ts = [_span(b, vertical) for _, b in true_chars]
    ps = [_span(b, vertical) for _, b in pred_chars]

    def frac(inner: tuple[float, float], outer: tuple[float, float]) -> float:
        length = inner[1] - inner[0]
        return (
            _overlap(inner, outer) / length
            if length > 0
            else float(outer[0] <= inner[0] <= outer[1])
        )

    owner_t: list[int | None] = []  # true box -> the predicted box holding most of it
    for t in ts:
        cands = [(frac(t, p), k) for k, p in enumerate(ps)]
        f, k = max(cands, default=(0.0, None))
        owner_t.append(k if f >= OWN_FRACTION else None)
    owner_p: list[int | None] = []  # predicted box -> the true box holding most of it
    for p in ps:
        cands = [(frac(p, t), k) for k, t in enumerate(ts)]
        f, k = max(cands, default=(0.0, None))
        owner_p.append(k if f >= OWN_FRACTION else None)

    true_cls = ["missed"] * len(ts)
    pred_cls: dict[int, str] = {}
    used_p: set[int] = set()
    held = defaultdict(list)
    for ti, k in enumerate(owner_t):
        if k is not None:
            held[k].append(ti)
    for k, tis in held.items():
        if len(tis) >= 2:
            for ti in tis:
                true_cls[ti] = "merge"
            pred_cls[k] = "merge"
            used_p.add(k)
    parts = defaultdict(list)
    for k, ti in enumerate(owner_p):
        if ti is not None and k not in used_p:
            parts[ti].append(k)
    for ti in range(len(ts)):
        if true_cls[ti] == "merge":
            continue
        pieces = parts.get(ti, [])
        if len(pieces) >= 2:
            true_cls[ti] = "split"
            for k in pieces:
                pred_cls[k] = "split"
                used_p.add(k)
            continue
        k = owner_t[ti]
        if k is None and len(pieces) == 1:
            k = pieces[0]
        if k is not None and k not in used_p:
            used_p.add(k)
            ok = same(true_chars[ti][0], pred_chars[k][0])
            true_cls[ti] = OK if ok else "substitution"
            if not ok:
                pred_cls[k] = "substitution"
    for k in range(len(ps)):
        if k not in used_p:
            pred_cls[k] = "extra"
    return true_cls, pred_cls


# ---------------------------------------------------------------------------
# A whole set
# ---------------------------------------------------------------------------


@dataclass
class LineInput:
    """What `diagnose_set` needs of one line: reference, EffOCR's record (predictions.jsonl
    form: `text`, `chars` with `bbox` and `char`, or `error`), orientation, true char boxes
    (``[(char, [x0, y0, x1, y1])]`` in reading order; None when the set has none)."""

    reference: str
    prediction: dict
    vertical: bool = False
    true_chars: list[tuple[str, list[float]]] | None = None


def diagnose_set(
    lines: Sequence[LineInput], options: ScoreOptions | None = None
) -> tuple[list[LineDiagnosis], dict]:
    """Attribute every error of a set; returns the per-line diagnoses and the summary (the
    `errors` section of metrics.json, `summarize`)."""
    options = options or ScoreOptions()
    prepared = []
    for line in lines:
        ref = normalize(line.reference, options)
        pred = line.prediction
        if pred.get("error") or pred.get("text") is None:
            prepared.append((ref, None, None))
            continue
        chars = pred.get("chars")
        labels = [c["char"] for c in chars] if chars is not None else None
        toks = hypothesis_tokens(pred.get("text"), labels, options)
        boxes = [c["bbox"] for c in chars] if chars else []
        spans = token_spans(toks, boxes, line.vertical) if boxes else [None] * len(toks)
        prepared.append((ref, toks, spans))
    expected = expected_sizes([p for p in prepared if p[1] is not None])
    diags = []
    for line, (ref, toks, spans) in zip(lines, prepared, strict=True):
        if toks is None:
            diags.append(failed_line(ref))
            continue
        diag = attribute_line(ref, toks, spans, expected)
        if line.true_chars is not None and line.prediction.get("chars") is not None:
            diag = _with_boxes(diag, line, options)
        diags.append(diag)
    return diags, summarize(diags, lines, options)


def _same_char(options: ScoreOptions):
    def same(a: str, b: str) -> bool:
        return normalize(a, options) == normalize(b, options)

    return same


def _with_boxes(diag: LineDiagnosis, line: LineInput, options: ScoreOptions) -> LineDiagnosis:
    pred = [(c["char"], c["bbox"]) for c in line.prediction["chars"]]
    true_cls, pred_cls = box_attribution(line.true_chars, pred, line.vertical, _same_char(options))
    diag.box_true, diag.box_pred = true_cls, pred_cls
    return diag


def compare_methods(diags: Sequence[LineDiagnosis], lines: Sequence[LineInput], options) -> dict:
    """How the text and box attributions agree, per true character (lines with true boxes).

    The text method's class of a reference character is that of the error covering it (``ok``
    when none); spaces and ``extra`` boxes have no true character and are compared on the
    predicted boxes (`extra_boxes`).
    """
    matrix: dict[str, Counter] = defaultdict(Counter)
    extra = Counter()
    for diag, line in zip(diags, lines, strict=True):
        box_true = diag.box_true
        if box_true is None:
            continue
        text_cls = [OK] * len(box_true)
        for t, cls in zip(
            reference_tokens(line.reference, options), diag.ref_classes, strict=False
        ):
            if t.tag is not None and t.tag < len(text_cls):
                text_cls[t.tag] = cls
        for a, b in zip(text_cls, box_true, strict=True):
            matrix[a][b] += 1
        box_pred = diag.box_pred or {}
        text_extra = {k for k, c in diag.box_classes.items() if c == "extra"}
        true_extra = {k for k, c in box_pred.items() if c == "extra"}
        extra["both"] += len(text_extra & true_extra)
        extra["text_only"] += len(text_extra - true_extra)
        extra["boxes_only"] += len(true_extra - text_extra)
    chars = sum(sum(row.values()) for row in matrix.values())
    same = sum(matrix[c][c] for c in matrix)
    err = sum(n for a, row in matrix.items() for b, n in row.items() if a != OK or b != OK)
    same_err = sum(matrix[c][c] for c in matrix if c != OK)
    return {
        "chars": chars,
        "same": same,
        "agreement": same / chars if chars else None,
        "error_chars": err,
        "same_on_errors": same_err,
        "agreement_on_errors": same_err / err if err else None,
        "matrix": {a: dict(sorted(row.items())) for a, row in sorted(matrix.items())},
        "extra_boxes": dict(extra),
    }


def _top(counter: Counter, n: int = TOP) -> list[dict]:
    ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [{"reference": r, "hypothesis": h, "count": c} for (r, h), c in ranked]


def _by_reference_char(diags: Sequence[LineDiagnosis], n: int = TOP * 2) -> list[dict]:
    """The reference characters most often in an error: how often each occurs, how often it is
    in an error (events) and by which model, most first."""
    seen: Counter = Counter()
    hit: dict[str, Counter] = defaultdict(Counter)
    for d in diags:
        seen.update(d.reference)
        for e in d.errors:
            if e.cls in (FAILED, "space_missed"):
                continue
            for c in e.reference:
                hit[c][e.kind] += 1
    ranked = sorted(hit.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))[:n]
    return [
        {
            "char": c,
            "count": seen[c],
            "in_errors": sum(k.values()),
            "rate": sum(k.values()) / seen[c] if seen[c] else None,
            "recognizer": k["recognizer"],
            "localizer": k["localizer"],
        }
        for c, k in ranked
    ]


def summarize(
    diags: Sequence[LineDiagnosis],
    lines: Sequence[LineInput] | None = None,
    options: ScoreOptions | None = None,
) -> dict:
    """The `errors` section of metrics.json.

    ``classes[c]``: ``errors`` (edit operations; their sum is ``char_errors``, the CER's
    numerator), ``events``, ``rate`` (errors / reference characters: this class's share of the
    CER in CER units) and ``share`` (errors / char_errors); ``kinds`` the same per model;
    ``top[c]``: the most frequent (reference, hypothesis) of each class; ``chars``: the
    reference characters most often in an error, by model (`_by_reference_char`). With true boxes,
    ``boxes`` holds the box method's counts and its agreement with the text method.
    """
    options = options or ScoreOptions()
    ref_chars = sum(len(d.reference) for d in diags)
    distance = sum(d.distance for d in diags)
    errors = Counter()
    events = Counter()
    keys: dict[str, Counter] = defaultdict(Counter)
    for d in diags:
        for e in d.errors:
            errors[e.cls] += e.edits
            events[e.cls] += 1
            keys[e.cls][e.key] += 1

    def figures(n: int) -> dict:
        return {
            "rate": n / ref_chars if ref_chars else 0.0,
            "share": n / distance if distance else 0.0,
        }

    out: dict = {
        "method": "text alignment + box geometry (effocr.diagnose)",
        "lines": len(diags),
        "ref_chars": ref_chars,
        "char_errors": distance,
        "attributed": sum(errors.values()),
        "classes": {
            c: {"kind": kind_of(c), "errors": errors[c], "events": events[c], **figures(errors[c])}
            for c in CLASSES
        },
        "kinds": {},
        "top": {c: _top(keys[c]) for c in CLASSES if c != FAILED and keys[c]},
        "chars": _by_reference_char(diags),
    }
    for kind in KINDS:
        n = sum(errors[c] for c in CLASSES if kind_of(c) == kind)
        out["kinds"][kind] = {"errors": n, **figures(n)}
    if lines is not None and any(d.box_true is not None for d in diags):
        true_counts, pred_counts = Counter(), Counter()
        for d in diags:
            if d.box_true is None:
                continue
            true_counts.update(d.box_true)
            pred_counts.update(d.box_pred.values())
        out["boxes"] = {
            "method": "true char boxes matched to predicted boxes along the line",
            "lines": sum(d.box_true is not None for d in diags),
            "true_chars": dict(sorted(true_counts.items())),
            "predicted_boxes_in_errors": dict(sorted(pred_counts.items())),
            "compare": compare_methods(diags, lines, options),
        }
    return out


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


ERRORS_CSV = "errors.csv"
CSV_COLUMNS = (
    "line", "class", "kind", "reference", "hypothesis", "edits", "ref_pos", "hyp_pos", "boxes"
)  # fmt: skip


def write_errors_csv(
    path: str | os.PathLike,
    line_ids: Sequence[str],
    diags: Sequence[LineDiagnosis],
    predictions: Sequence[dict] | None = None,
) -> None:
    """One row per attributed error: line id, class, kind, texts, edits, positions and the
    predicted boxes (``x0 y0 x1 y1`` in line pixels, ``;``-separated)."""
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(CSV_COLUMNS)
            for i, (line_id, d) in enumerate(zip(line_ids, diags, strict=True)):
                chars = (predictions[i].get("chars") or []) if predictions else []
                for e in d.errors:
                    boxes = ";".join(
                        " ".join(f"{v:g}" for v in chars[b]["bbox"])
                        for b in e.boxes
                        if b < len(chars)
                    )
                    w.writerow(
                        [line_id, e.cls, e.kind, e.reference, e.hypothesis, e.edits]
                        + [e.ref_pos, e.hyp_pos, boxes]
                    )


def _show(s: str) -> str:
    return s.replace(" ", "\u2423") if s else "\u2205"


def format_errors_table(summary: dict, name: str = "", top: int = 8) -> str:
    """The attribution as plain text: classes, kinds, top confusions, the box comparison."""
    n = summary["ref_chars"]
    out = [
        f"error attribution{f' of {name}' if name else ''}: {summary['lines']} lines, "
        f"{n} reference chars, {summary['char_errors']} char errors "
        f"(CER {summary['char_errors'] / n if n else 0:.4f})",
        f"{'class':<16} {'kind':<11} {'errors':>7} {'events':>7} {'CER part':>9} {'share':>7}",
    ]
    for c, v in summary["classes"].items():
        out.append(
            f"{c:<16} {v['kind']:<11} {v['errors']:>7} {v['events']:>7} "
            f"{v['rate']:>9.4f} {v['share']:>7.1%}"
        )
    for k, v in summary["kinds"].items():
        out.append(f"{'= ' + k:<28} {v['errors']:>7} {'':>7} {v['rate']:>9.4f} {v['share']:>7.1%}")
    for c, rows in summary["top"].items():
        items = ", ".join(
            f"{_show(r['reference'])}\u2192{_show(r['hypothesis'])} {r['count']}"
            for r in rows[:top]
        )
        out.append(f"top {c}: {items}")
    if summary.get("chars"):
        out.append(
            "reference chars most in errors (in errors/occurrences: recognizer+localizer): "
            + ", ".join(
                f"{_show(r['char'])} {r['in_errors']}/{r['count']} ({r['recognizer']}+{r['localizer']})"
                for r in summary["chars"][: top * 2]
            )
        )
    boxes = summary.get("boxes")
    if boxes:
        cmp = boxes["compare"]
        out.append(
            f"box method ({boxes['lines']} lines with true boxes): true chars "
            + ", ".join(f"{k} {v}" for k, v in boxes["true_chars"].items())
            + "; predicted boxes "
            + ", ".join(f"{k} {v}" for k, v in boxes["predicted_boxes_in_errors"].items())
        )
        if cmp["chars"]:
            out.append(
                f"text vs box method: same class for {cmp['same']}/{cmp['chars']} chars; "
                f"{cmp['same_on_errors']}/{cmp['error_chars']} of the chars either calls an error"
                f"; extra boxes {cmp['extra_boxes']}"
            )
            for a, row in cmp["matrix"].items():
                out.append(
                    f"  text {a:<13} -> box " + ", ".join(f"{b} {n}" for b, n in row.items())
                )
    return "\n".join(out)
