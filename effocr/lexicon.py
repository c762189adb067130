"""The word list of the language model and the correction of words it does not hold.

The character model (`effocr.lm.CharLM`) prefers likely letter sequences but cannot say that
`desigm` or `flom` is no word. `Lexicon` can: it holds the words of the text the workflow
trains on and of the word lists in `lm.lexicon` (e.g. /usr/share/dict/american-english), and
`Lexicon.correct` rereads a line word by word. A word the lexicon does not hold, or one with
a digit or symbol among its letters (`exi8tence`, `t$rize`) or a case no word has
(`alSorithm`), is replaced by the reading of its glyphs, from their k nearest classes, that
the lexicon holds and whose cosines sum least below those of the nearest classes, if that is
at most `margin` more than the current reading's shortfall. A word with no such reading stays
as it was: names and numbers are read, not corrected away.

Two neighbouring words of which one is still suspect are then read as one: the space between
them goes if that reading is a word the lexicon holds within the margin (`s uitable` ->
`suitable`, the localizer having taken the gap after a narrow letter for a space).

A word still suspect after both is read once more with two neighbouring glyphs allowed to be
one letter the localizer boxed twice (`Lexicon.regroup`): where the caller says the pair may be
one (the pipeline: their boxes overlap), it crops the two as one and gives that crop's nearest
classes; the pair reads as one letter when the word it makes is one the lexicon holds, within
the margin (`nnonsters` -> `monsters`, `cormplicated` -> `complicated`).

Otherwise the glyphs and boxes stay; only labels change (and spaces inside a word go). Only
lines whose spaces are known are corrected (not Japanese), and a line's last word when it ends
in a hyphen (a word broken across lines: `charac-`) only when it is broken within its letters.

Words keep the case they were given in: a word known only capitalised (`Thai`, a name) is not
a reading of a lower-case word (`thei`, a misplaced space away from `the`), while a known
lower-case word reads capitalised or in capitals too. Stored in `lm.json` (key `words`,
sorted) beside the character model's counts. Words of fewer than four letters are not reread
(`MIN_LETTERS`).
No torch, no ONNX Runtime: inference imports this module.
"""

from __future__ import annotations

import bisect
import functools
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from effocr.utils import EffOCRError

# A word's letters (any script), without digits or the underscore.
LETTERS = re.compile(r"[^\W\d_]+")
# Inside a word, parts joined by hyphens and apostrophes are looked up one by one
# (`real-life`, `don't` -> don, t).
JOINERS = re.compile(r"[-'’]")
# Readings tried per word at most: a long word with many near classes cannot stall a line.
MAX_READINGS = 5000
# Shorter words are not reread: with one glyph changed most of them are another word of the
# lexicon (`lem` -> `len`, `(Fo` -> `(Po` on the base model's splits).
MIN_LETTERS = 4


def words_of(texts: Iterable[str]) -> set[str]:
    """The words (runs of letters, as written) of running texts."""
    out: set[str] = set()
    for text in texts:
        out.update(LETTERS.findall(text))
    return out


def reduced(words: Iterable[str]) -> set[str]:
    """`words` without the capitalised forms of words also given in lower case (which read in
    any case already)."""
    words = set(words)
    return {w for w in words if w.islower() or w.lower() not in words}


def read_word_list(path: str | os.PathLike) -> set[str]:
    """A word list: one word per line (UTF-8; blank lines and `#` comments skipped), as written.

    Raises:
        EffOCRError: a file that cannot be read, naming it (and the line for bad UTF-8).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise EffOCRError(f"{path}: cannot read the word list: {exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise EffOCRError(
            f"{path}: line {line}: the word list is not UTF-8 ({exc.reason})"
        ) from exc
    out: set[str] = set()
    for line in text.splitlines():
        word = line.strip()
        if word and not word.startswith("#"):
            out.add(word)
    return out


def read_word_lists(paths: Iterable[str | os.PathLike]) -> set[str]:
    """The words of several word lists (`read_word_list`), together."""
    words: set[str] = set()
    for path in paths:
        words |= read_word_list(path)
    return words


def _spans(spaces: Sequence[bool] | np.ndarray, n: int) -> list[tuple[int, int]]:
    """(first glyph, glyph after the last) of each word of a line of `n` glyphs, as its spaces
    part them (`spaces[i]`: a space before glyph i)."""
    starts = [0] + [i for i in range(1, n) if spaces[i]]
    return list(zip(starts, starts[1:] + [n], strict=True))


def _parts(core: str) -> list[str]:
    return [p for p in JOINERS.split(core) if p]


def _core_span(texts: Sequence[str]) -> tuple[int, int] | None:
    """First and last glyph of a word whose text has a letter or digit (None: none has)."""
    inner = [i for i, t in enumerate(texts) if any(ch.isalnum() for ch in t)]
    return (inner[0], inner[-1]) if inner else None


def _core(texts: Sequence[str]) -> str | None:
    """A word's text from its first to its last letter or digit (None: it has none)."""
    span = _core_span(texts)
    return None if span is None else "".join(texts[span[0] : span[1] + 1])


def _fits(text: str, i: int, first: int, last: int) -> bool:
    """Whether glyph `i` may read `text` in a reading whose letters run from glyph `first` to
    glyph `last`."""
    if i < first or i > last:
        return not any(ch.isalnum() for ch in text)
    if not all(ch.isalpha() or JOINERS.fullmatch(ch) for ch in text):
        return False
    return i not in (first, last) or any(ch.isalpha() for ch in text)


def _options(
    sims: np.ndarray, rows: np.ndarray, chars: Sequence[str], best: float, bound: float, width: int
) -> list[tuple[float, int, int, str]]:
    """(cost, width, column, text) of one glyph's (or pair's) neighbours, one per class (its
    best column), cheapest first, while the cost (`width` x the cosine given up against
    `best`) is within `bound`."""
    seen: set[str] = set()
    out = []
    for j in range(len(rows)):
        r = int(rows[j])
        cost = width * float(best - sims[j])
        if r < 0 or cost > bound:
            break
        if chars[r] not in seen:
            seen.add(chars[r])
            out.append((cost, width, j, chars[r]))
    return out


class Lexicon:
    """A set of words and the word-by-word correction of a line.

    Args:
        words: The words, in the case they are written in. A reading in lower case must be a
            word given in lower case; a Title or UPPER one may be any word in any case.
    """

    def __init__(self, words: Iterable[str]) -> None:
        self.words = frozenset(reduced(words))

    # The lookups are built on first use: an LM loaded with the lexicon off (lexicon_margin
    # 0, or only to be saved) does not pay a tenth of a second for 100,000 words.
    @functools.cached_property
    def _lower(self) -> frozenset[str]:
        return frozenset(w for w in self.words if w.islower())

    @functools.cached_property
    def _folded(self) -> frozenset[str]:
        return frozenset(w.lower() for w in self.words)

    @functools.cached_property
    def _sorted(self) -> list[str]:
        """The folded words sorted, for "does any word start with this?" by bisection."""
        return sorted(self._folded)

    def __len__(self) -> int:
        return len(self.words)

    def _begins_a_word(self, prefix: str) -> bool:
        """Whether some word (in any case) starts with `prefix` (lower case)."""
        at = bisect.bisect_left(self._sorted, prefix)
        return at < len(self._sorted) and self._sorted[at].startswith(prefix)

    def _known(self, part: str) -> bool:
        if LETTERS.fullmatch(part) is None:
            return False
        if part.islower():
            return part in self._lower
        return (part.istitle() or part.isupper()) and part.lower() in self._folded

    def holds(self, texts: Sequence[str]) -> bool:
        """Whether a word read as these glyph texts is one the lexicon holds: its letters (from
        its first to its last letter or digit) in known parts of a possible case."""
        core = _core(texts)
        if core is None:
            return False
        parts = _parts(core)
        return bool(parts) and all(self._known(p) for p in parts)

    def suspect(self, texts: Sequence[str], *, hyphenated_end: bool) -> bool:
        """Whether a word read as these glyph texts is to be reread: a part with letters that
        is not a known word, or that mixes letters with digits or symbols. Numbers and
        punctuation are not; the hyphenated end of a line only when it is broken."""
        core = _core(texts)
        if core is None or sum(ch.isalpha() for ch in core) < MIN_LETTERS:
            return False
        lettered = [p for p in _parts(core) if any(ch.isalpha() for ch in p)]
        if any(LETTERS.fullmatch(p) is None for p in lettered):
            return True
        if hyphenated_end:
            return False
        return not all(self._known(p) for p in lettered)

    def correct(
        self,
        sims: np.ndarray,
        rows: np.ndarray,
        chars: Sequence[str],
        picked: np.ndarray,
        spaces: Sequence[bool] | np.ndarray,
        margin: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The picked column of each glyph of a line and its spaces, with its suspect words
        reread, and two neighbours joined where a space split one word.

        A word is first reread alone. Then two neighbouring words of which one is still
        suspect are read as one, without the space between them: if a reading the lexicon holds
        gives up at most `margin` more cosine than the two readings do, it replaces them and
        the space goes (`JNTR ODUCT}ON` -> `INTRODUCTION`, the localizer having taken the gap
        after a narrow `R` for a space). Whatever stands between the two words' letters must
        read as letters then, so punctuation keeps its space (`problem, augmenting`).

        Args:
            sims: (n, k) cosines of each glyph's nearest reference rows, best first.
            rows: (n, k) those rows (-1: none).
            chars: Row -> its class text.
            picked: The column (0..k-1) chosen for each glyph so far.
            spaces: `spaces[i]` puts a space before glyph i.
            margin: How much more cosine a word may give up than its current reading does.
        """
        picked = np.asarray(picked, dtype=np.int64).copy()
        spaces = np.asarray(spaces, dtype=bool).copy()
        spans = _spans(spaces, len(picked))
        suspects = []
        for a, b in spans:
            suspects.append(self._reread_word(sims, rows, chars, picked, a, b, margin))
        w = 0
        while w + 1 < len(spans):
            if not (suspects[w] or suspects[w + 1]):
                w += 1
                continue
            (a, middle), (_, b) = spans[w], spans[w + 1]
            better = self._reread(sims[a:b], rows[a:b], chars, picked[a:b], margin)
            if better is None:
                w += 1
                continue
            picked[a:b] = [j for _, _, j in better]
            spaces[middle] = False
            w += 2  # the joined word is one the lexicon holds: no third part
        return picked, spaces

    def regroup(
        self,
        sims: np.ndarray,
        rows: np.ndarray,
        chars: Sequence[str],
        picked: np.ndarray,
        spaces: Sequence[bool] | np.ndarray,
        margin: float,
        splits: Sequence[bool] | np.ndarray,
        pair_knn: Callable[[list[int]], tuple[np.ndarray, np.ndarray]],
    ) -> tuple[np.ndarray, dict[int, int]]:
        """The words `correct` left suspect, reread with two neighbouring glyphs allowed to
        read as one letter: the localizer split a wide letter (`nnonsters` -> `monsters`,
        `cormplicated` -> `complicated`).

        Args:
            sims, rows, chars, picked, spaces, margin: As `correct` (after it).
            splits: `splits[i]`: glyphs i and i + 1 may be one letter the localizer split (the
                pipeline: their boxes overlap); (n - 1,). Only such pairs are read as one.
            pair_knn: Glyph starts i -> (cosines, rows) of the neighbours of glyphs i and i + 1
                cropped as one, (len, k') each; called once, only if a word is suspect.

        Returns:
            The columns of the glyphs not merged, and for each pair read as one its first glyph
            -> the column chosen among the pair's neighbours.
        """
        picked = np.asarray(picked, dtype=np.int64).copy()
        words = []
        for a, b in _spans(spaces, len(picked)):
            texts = self._suspect_texts(rows, chars, picked, a, b)
            span = None if texts is None else _core_span(texts)
            if span and span[1] > span[0]:
                pairs = [i for i in range(a + span[0], a + span[1]) if splits[i]]
                if pairs:
                    words.append((a, b, pairs))
        if not words:
            return picked, {}
        wanted = [i for _, _, pairs in words for i in pairs]
        psims, prows = pair_knn(wanted)
        knn = {i: (psims[w], prows[w]) for w, i in enumerate(wanted)}
        merged: dict[int, int] = {}
        for a, b, pairs in words:
            local = {i - a: knn[i] for i in pairs}
            better = self._reread(sims[a:b], rows[a:b], chars, picked[a:b], margin, local)
            for i, width, j in better or ():
                if width == 2:
                    merged[a + i] = j
                else:
                    picked[a + i] = j
        return picked, merged

    def _reread_word(
        self,
        sims: np.ndarray,
        rows: np.ndarray,
        chars: Sequence[str],
        picked: np.ndarray,
        a: int,
        b: int,
        margin: float,
    ) -> bool:
        """Reread glyphs a..b-1 (one word) into `picked` if suspect; whether it is still
        suspect after."""
        if self._suspect_texts(rows, chars, picked, a, b) is None:
            return False
        better = self._reread(sims[a:b], rows[a:b], chars, picked[a:b], margin)
        if better is None:
            return True
        picked[a:b] = [j for _, _, j in better]
        return False

    def _suspect_texts(
        self, rows: np.ndarray, chars: Sequence[str], picked: np.ndarray, a: int, b: int
    ) -> list[str] | None:
        """The texts of glyphs a..b-1 (one word) as picked, if the word is suspect (the line's
        last word ending in a hyphen as a hyphenated end); None if it is not."""
        texts = [chars[rows[i, picked[i]]] for i in range(a, b)]
        hyphenated = b == len(picked) and texts[-1].endswith("-")
        return texts if self.suspect(texts, hyphenated_end=hyphenated) else None

    def _reread(
        self,
        sims: np.ndarray,
        rows: np.ndarray,
        chars: Sequence[str],
        picked: np.ndarray,
        margin: float,
        pairs: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> list[tuple[int, int, int]] | None:
        """A word's cheapest reading the lexicon holds within `margin`, or None: its units
        (first glyph, glyphs taken: 1, or 2 for a pair read as one, column).

        A reading's cost is the sum over its glyphs of the nearest class's cosine minus the
        chosen one's. Its first and last letters or digits must be on the glyphs where the
        current reading has them: punctuation around a word may change (`Theony.` ->
        `Theory,`), but a letter may not become punctuation (`ZVI` -> `/V|`).

        `pairs` gives, for a glyph i, the neighbours (cosines, rows) of glyphs i and i + 1 cropped
        as one (`regroup`). Such a pair may read as one letter when its crop's nearest class is
        at least as near as the worse of the two glyphs' own: a letter split in two leaves a
        half that matches nothing well, while two letters cropped as one match nothing better
        than either (`GALIL` stays, not `GALL`). It costs each of its two glyphs what the
        merged crop gives up against its own nearest class, plus what that nearest class gives
        up against the two glyphs' own nearest (nothing when the merged crop reads better than
        the two did: `nn` -> `m`).
        """
        sims = np.asarray(sims, dtype=np.float64)
        best = sims[:, 0]
        n = len(picked)
        at = np.arange(n)
        bound = float((best - sims[at, picked]).sum()) + margin
        first, last = _core_span([chars[rows[i, picked[i]]] for i in at]) or (0, -1)
        # Per glyph, one column per class (the best), cheapest first, within the bound, and of
        # a text that fits where the glyph is: outside the word's first and last letter no
        # letter or digit, inside only letters and joiners, at its ends a letter (what a
        # reading the lexicon holds has there; the search tries no other).
        options: list[list[tuple[float, int, int, str]]] = []
        for i in at:
            opts = _options(sims[i], rows[i], chars, best[i], bound, 1)
            opts = [o for o in opts if _fits(o[3], i, first, last)]
            pair = pairs.get(int(i)) if pairs and first <= i < last else None
            if pair is not None and pair[0][0] >= min(best[i], best[i + 1]):
                psims, prows = np.asarray(pair[0], dtype=np.float64), pair[1]
                base = max(0.0, float(best[i] + best[i + 1]) - 2.0 * float(psims[0]))
                merged = _options(psims, prows, chars, psims[0], bound - base, 2)
                opts += [(c + base, 2, j, t) for c, _, j, t in merged if t.isalpha()]
                opts.sort(key=lambda o: o[0])
            elif not opts and not pairs:
                return None
            options.append(opts)
        found: tuple[float, list[tuple[int, int, int]]] | None = None
        tried = 0
        units: list[tuple[int, int, int]] = []
        texts: list[str] = []

        def search(i: int, cost: float) -> None:
            nonlocal found, tried
            if tried >= MAX_READINGS:
                return
            if i == n:
                tried += 1
                if self.holds(texts):
                    found = (cost, list(units))
                return
            for c, width, j, text in options[i]:
                total = cost + c
                if total > bound or (found is not None and total >= found[0]):
                    break  # options are cheapest first
                if first <= i <= last:
                    # The word part being read so far must begin some word.
                    part = JOINERS.split("".join(texts[first:]) + text)[-1].lower()
                    if part and not self._begins_a_word(part):
                        continue
                units.append((int(i), width, j))
                texts.append(text)
                search(i + width, total)
                units.pop()
                texts.pop()

        search(0, 0.0)
        return None if found is None else found[1]
