"""Text-line OCR metrics: CER, WER, exact match, confusions, CER by line length.

Rates are pooled over a set as the original EffOCR evaluation does: the total edit distance
divided by the total number of reference characters (or words), not a mean of per-line rates.
Edit distances come from rapidfuzz (Levenshtein with unit costs).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from rapidfuzz.distance import Levenshtein

from effocr.config import section_defaults

# Curly and low quotes the original maps to straight ones (it also maps '' to "; we map the
# TeX-style `` of sets such as UW3 the same way).
_DOUBLE_QUOTES = "\u201c\u201d\u201e\u201f\u00ab\u00bb\u2033"
_SINGLE_QUOTES = "\u2018\u2019\u201a\u201b\u2032"
_QUOTE_TABLE = str.maketrans(
    {**{c: '"' for c in _DOUBLE_QUOTES}, **{c: "'" for c in _SINGLE_QUOTES}}
)
_SPACES = re.compile(r"\s+")

# Upper bounds (inclusive) of the reference-length buckets of `cer_by_length`.
LENGTH_BUCKETS: tuple[int, ...] = (10, 20, 40, 80)


@dataclass(frozen=True)
class ScoreOptions:
    """Normalisations applied to both reference and hypothesis before scoring.

    Attributes:
        normalize_quotes: Map curly quotes to straight ones, and ``''`` and two backticks to ``"``.
        ignore_case: Lower-case both sides.
        ignore_spaces: Remove all whitespace (otherwise runs of whitespace become one space).
    """

    # Unset: as a config without them scores (the schema's `evaluate` defaults).
    normalize_quotes: bool = section_defaults("evaluate")["normalize_quotes"]
    ignore_case: bool = section_defaults("evaluate")["ignore_case"]
    ignore_spaces: bool = section_defaults("evaluate")["ignore_spaces"]

    @classmethod
    def from_config(cls, section: Mapping) -> ScoreOptions:
        """Build from the validated `evaluate` config section (other keys are ignored)."""
        return cls(
            normalize_quotes=bool(section["normalize_quotes"]),
            ignore_case=bool(section["ignore_case"]),
            ignore_spaces=bool(section["ignore_spaces"]),
        )


def normalize(text: str | None, options: ScoreOptions = ScoreOptions()) -> str:
    """Normalise one line for scoring; `None` (a failed prediction) counts as empty."""
    text = text or ""
    if options.normalize_quotes:
        text = text.translate(_QUOTE_TABLE).replace("''", '"').replace("``", '"')
    if options.ignore_case:
        text = text.lower()
    if options.ignore_spaces:
        return _SPACES.sub("", text)
    # Line breaks and doubled spaces are layout, not content.
    return _SPACES.sub(" ", text).strip()


@dataclass(frozen=True)
class LineScore:
    """Scores of one line (on the normalised strings)."""

    reference: str
    hypothesis: str
    distance: int
    ref_chars: int
    word_distance: int
    ref_words: int

    @property
    def cer(self) -> float:
        """This line's CER (distance / reference characters; 1 per error on an empty reference)."""
        return self.distance / self.ref_chars if self.ref_chars else float(self.distance)

    @property
    def exact(self) -> bool:
        """Whether hypothesis equals reference."""
        return self.reference == self.hypothesis


@dataclass
class SetScore:
    """Pooled scores of a set of lines."""

    lines: int
    ref_chars: int
    char_errors: int
    ref_words: int
    word_errors: int
    exact_lines: int
    cer: float
    wer: float
    exact_match: float
    by_length: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


def score_line(
    reference: str, hypothesis: str | None, options: ScoreOptions = ScoreOptions()
) -> LineScore:
    """Score one line: character and word edit distances after normalisation."""
    ref = normalize(reference, options)
    hyp = normalize(hypothesis, options)
    ref_words, hyp_words = ref.split(), hyp.split()
    return LineScore(
        reference=ref,
        hypothesis=hyp,
        distance=Levenshtein.distance(ref, hyp),
        ref_chars=len(ref),
        word_distance=Levenshtein.distance(ref_words, hyp_words),
        ref_words=len(ref_words),
    )


def _rate(errors: int, total: int) -> float:
    # An empty reference set has no rate; any error against it counts fully.
    return errors / total if total else float(errors > 0)


def pool(scores: Sequence[LineScore]) -> SetScore:
    """Pool line scores into set-level CER, WER and exact-match accuracy."""
    ref_chars = sum(s.ref_chars for s in scores)
    char_errors = sum(s.distance for s in scores)
    ref_words = sum(s.ref_words for s in scores)
    word_errors = sum(s.word_distance for s in scores)
    exact = sum(s.exact for s in scores)
    return SetScore(
        lines=len(scores),
        ref_chars=ref_chars,
        char_errors=char_errors,
        ref_words=ref_words,
        word_errors=word_errors,
        exact_lines=exact,
        cer=_rate(char_errors, ref_chars),
        wer=_rate(word_errors, ref_words),
        exact_match=exact / len(scores) if scores else 0.0,
        by_length=cer_by_length(scores),
    )


def score_set(
    references: Sequence[str],
    hypotheses: Sequence[str | None],
    options: ScoreOptions = ScoreOptions(),
) -> tuple[list[LineScore], SetScore]:
    """Score paired lines; returns the per-line scores and the pooled set score."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    lines = [score_line(r, h, options) for r, h in zip(references, hypotheses, strict=True)]
    return lines, pool(lines)


def cer(references: Sequence[str], hypotheses: Sequence[str | None], **options) -> float:
    """Pooled character error rate (total edit distance / total reference characters)."""
    return score_set(references, hypotheses, ScoreOptions(**options))[1].cer


def wer(references: Sequence[str], hypotheses: Sequence[str | None], **options) -> float:
    """Pooled word error rate (total word edit distance / total reference words)."""
    return score_set(references, hypotheses, ScoreOptions(**options))[1].wer


def bucket_name(length: int, buckets: Sequence[int] = LENGTH_BUCKETS) -> str:
    """Name of the reference-length bucket `length` falls in, e.g. ``"11-20"`` or ``"81+"``."""
    low = 1
    for high in buckets:
        if length <= high:
            return f"{low}-{high}" if length > 0 else "0"
        low = high + 1
    return f"{low}+"


def cer_by_length(
    scores: Sequence[LineScore], buckets: Sequence[int] = LENGTH_BUCKETS
) -> list[dict]:
    """Pooled CER per reference-length bucket, in bucket order (empty buckets left out)."""
    order = [bucket_name(b, buckets) for b in buckets] + [f"{buckets[-1] + 1}+"]
    acc: dict[str, list[int]] = {}
    for s in scores:
        entry = acc.setdefault(bucket_name(s.ref_chars, buckets), [0, 0, 0])
        entry[0] += 1
        entry[1] += s.ref_chars
        entry[2] += s.distance
    names = (["0"] if "0" in acc else []) + [n for n in order if n in acc]
    return [
        {
            "bucket": n,
            "lines": acc[n][0],
            "ref_chars": acc[n][1],
            "cer": _rate(acc[n][2], acc[n][1]),
        }
        for n in names
    ]


def confusions(scores: Sequence[LineScore]) -> Counter[tuple[str, str]]:
    """Count character edit operations as (reference char, hypothesis char) pairs.

    A substitution is ``("e", "c")``, a deletion ``("e", "")``, an insertion ``("", "e")``.
    The alignment is rapidfuzz's minimal Levenshtein edit script of each line.
    """
    counts: Counter[tuple[str, str]] = Counter()
    for s in scores:
        for op in Levenshtein.editops(s.reference, s.hypothesis):
            if op.tag == "replace":
                counts[(s.reference[op.src_pos], s.hypothesis[op.dest_pos])] += 1
            elif op.tag == "delete":
                counts[(s.reference[op.src_pos], "")] += 1
            elif op.tag == "insert":
                counts[("", s.hypothesis[op.dest_pos])] += 1
    return counts
