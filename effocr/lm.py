"""A character n-gram language model and the decoder that re-ranks a line's k nearest glyphs.

`CharLM` is an interpolated Witten-Bell character model of a configurable order, trained on
the text the workflow trains on (the training split's line texts and the synthetic text
source: rule `train_lm`) and stored in a bundle as `lm.json` (`effocr.bundle`, section `lm`).
`lm.json` also holds the lexicon (`effocr.lexicon`): the words of the same texts and of the
word lists in `lm.lexicon`. `LMDecoder` is the pipeline stage that uses both: for each glyph
of a line the reference search gives the k nearest classes with their cosines; a beam search
over the line picks the path maximising ``sum(cosine) + weight * ln P_LM(text)``, the spaces
the localizer found being part of the text (a `{` inside a word is improbable, after a space
less so). With `lexicon_margin` above 0 the lexicon then rereads the words it does not hold
(`Lexicon.correct`), and those still unknown with two overlapping glyphs allowed to be one
letter (`LMDecoder.regroup`: the pipeline crops such pairs). Otherwise only labels change: the
boxes stay, and each glyph's `score` stays the cosine of the class it ends up with (for a pair
read as one, the cosine of its crop's class).

A temperature on the cosine and a weight on the LM would be two names for one ratio, so there
is only the weight. With weight 0 and lexicon_margin 0 (or no LM) the decoder is not run at all:
the output is the top-1 search's, bit for bit.

No torch, no ONNX Runtime: inference imports this module.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from effocr.lexicon import Lexicon, read_word_lists, words_of
from effocr.utils import EffOCRError, read_json, write_json

if TYPE_CHECKING:  # the type only: inference imports this module, and not the config's
    from effocr.config import LMSection

LOG = logging.getLogger(__name__)

LM_FILE = "lm.json"
FORMAT = "effocr-char-ngram"
FORMAT_VERSION = 1


class CharLM:
    """Interpolated Witten-Bell character n-gram model.

    ``P(c | h) = (n(h, c) + T(h) * P(c | h')) / (n(h) + T(h))`` with `h'` the context `h`
    without its first character, `n` counts, `T(h)` the number of distinct characters seen
    after `h`; a context never seen falls through to `h'`. The base of the recursion is uniform
    over the vocabulary plus one unknown symbol, so every character (seen or not, in the
    vocabulary or not) gets a non-zero probability, and the probabilities of the vocabulary and
    the unknown symbol sum to 1 for every context.

    Args:
        order: n (the longest n-gram; contexts have up to n - 1 characters).
        counts: context -> {next character: count}, for contexts of 0..n-1 characters.
        words: The lexicon's words (as written), kept in the same file.
    """

    def __init__(
        self, order: int, counts: dict[str, dict[str, int]], words: Iterable[str] = ()
    ) -> None:
        if order < 1:
            raise ValueError(f"order must be at least 1, not {order}")
        self.order = int(order)
        self.counts = counts
        self.lexicon = Lexicon(words)
        self.vocab = sorted(counts.get("", {}))
        # Per context: total count and the number of distinct followers (Witten-Bell's T).
        self._totals = {h: (sum(f.values()), len(f)) for h, f in counts.items()}
        self._base = 1.0 / (len(self.vocab) + 1)
        # ln P per (context, character): lines repeat contexts, the decoder asks many times.
        self._cache: dict[tuple[str, str], float] = {}
        # The decoder's steps, (context, text) -> (ln P(text | context), the context after):
        # one dict lookup per hypothesis and candidate in `decode_lattice`'s inner loop.
        self._steps: dict[tuple[str, str], tuple[float, str]] = {}

    # -- training ------------------------------------------------------------

    @classmethod
    def train(cls, texts: Sequence[str], order: int, words: Iterable[str] = ()) -> CharLM:
        """Count the n-grams of each text (a line, or a whole running text) separately; the
        lexicon is the texts' words and `words`.

        Texts are not joined: the first characters of a text are counted with the shorter
        contexts they have, so no n-gram spans two lines.
        """
        if order < 1:
            raise ValueError(f"order must be at least 1, not {order}")
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for text in texts:
            for i, ch in enumerate(text):
                for n in range(order):
                    if n > i:
                        break
                    counts[text[i - n : i]][ch] += 1
        if not counts:
            raise EffOCRError("cannot train a language model on no text")
        return cls(order, {h: dict(f) for h, f in counts.items()}, words_of(texts) | set(words))

    # -- probabilities -------------------------------------------------------

    def prob(self, context: str, char: str) -> float:
        """P(char | context); only the last order - 1 characters of `context` matter."""
        return self._prob(context[max(0, len(context) - self.order + 1) :], char)

    def logp(self, context: str, char: str) -> float:
        """ln P(char | context), cached."""
        h = context[max(0, len(context) - self.order + 1) :]
        key = (h, char)
        lp = self._cache.get(key)
        if lp is None:
            lp = math.log(self._prob(h, char))
            if len(self._cache) < 1_000_000:  # a long job must not grow it without bound
                self._cache[key] = lp
        return lp

    def _prob(self, h: str, char: str) -> float:
        # Shortest context first: P for "" then for each longer suffix of h.
        p = self._base
        for start in range(len(h), -1, -1):
            ctx = h[start:]
            followers = self.counts.get(ctx)
            if followers is None:
                break  # a longer context containing an unseen one is unseen too
            total, types = self._totals[ctx]
            p = (followers.get(char, 0) + types * p) / (total + types)
        return p

    def logprob(self, context: str, text: str) -> float:
        """ln P(text | context), character by character."""
        if len(text) == 1:
            return self.logp(context, text)
        lp = 0.0
        for ch in text:
            lp += self.logp(context, ch)
            context = context + ch
        return lp

    def step(self, context: str, text: str) -> tuple[float, str]:
        """``(ln P(text | context), context + text cut to order - 1 characters)``, cached."""
        key = (context, text)
        got = self._steps.get(key)
        if got is None:
            got = (self.logprob(context, text), (context + text)[-max(1, self.order - 1) :])
            if len(self._steps) < 1_000_000:  # bounded, as `logp`'s cache
                self._steps[key] = got
        return got

    # -- file ----------------------------------------------------------------

    def to_dict(self) -> dict:
        """The JSON form (`lm.json`)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "order": self.order,
            "smoothing": "witten-bell",
            "counts": self.counts,
            "words": sorted(self.lexicon.words),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write `lm.json` (compact: one line)."""
        write_json(path, self.to_dict(), indent=None)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CharLM:
        """Read an `lm.json`.

        Raises:
            EffOCRError: naming the file and the problem.
        """
        path = Path(path)
        try:
            data = read_json(path)
        except EffOCRError:
            raise
        except (OSError, ValueError) as exc:
            raise EffOCRError(f"{path}: cannot read the language model: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise EffOCRError(f"{path}: not an effocr character language model ({FORMAT})")
        if data.get("format_version") != FORMAT_VERSION:
            raise EffOCRError(
                f"{path}: unsupported language model format_version "
                f"{data.get('format_version')!r} (this effocr reads {FORMAT_VERSION})"
            )
        order, counts = data.get("order"), data.get("counts")
        if not isinstance(order, int) or isinstance(order, bool) or order < 1:
            raise EffOCRError(f"{path}: `order` must be a positive integer, not {order!r}")
        if not isinstance(counts, dict) or "" not in counts:
            raise EffOCRError(f"{path}: `counts` must map contexts (with '') to counts")
        for h, followers in counts.items():
            if len(h) >= order or not isinstance(followers, dict):
                raise EffOCRError(f"{path}: counts[{h!r}]: bad context for order {order}")
            for ch, n in followers.items():
                if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                    raise EffOCRError(f"{path}: counts[{h!r}][{ch!r}]: bad count {n!r}")
        # Files written before the lexicon have no `words`: an empty lexicon corrects nothing.
        words = data.get("words", [])
        if not isinstance(words, list) or not all(isinstance(w, str) and w for w in words):
            raise EffOCRError(f"{path}: `words` must be a list of non-empty strings")
        return cls(order, counts, words)


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


class LMDecoder:
    """The `lm` stage: a line's k nearest classes per glyph -> the column chosen for each.

    Args:
        lm: The character model.
        chars: Row i of the reference index: its text (`ReferenceSearch.chars`).
        weight: LM weight: a path scores ``sum(cosine) + weight * ln P_LM(text)``.
        k: Neighbours searched per glyph.
        beam: Hypotheses kept per glyph (those with the same LM context are merged first,
            keeping the better: with a beam at least k ** (order - 1) the search is exact).
        margin: Only neighbours within this cosine of the nearest one are candidates (the LM
            picks among look-alikes, not among everything; and fewer candidates, less time).
        lexicon_margin: Words the LM's lexicon does not hold are reread from the k neighbours
            when a reading it holds gives up at most this much more cosine (0: not reread;
            `effocr.lexicon.Lexicon.correct`).
    """

    def __init__(
        self,
        lm: CharLM,
        chars: Sequence[str],
        *,
        weight: float,
        k: int,
        beam: int,
        margin: float,
        lexicon_margin: float,
    ) -> None:
        if k < 1 or beam < 1:
            raise EffOCRError(f"lm: k and beam must be at least 1 (k={k}, beam={beam})")
        if not math.isfinite(weight) or weight < 0:
            raise EffOCRError(f"lm: weight must be a finite number >= 0, not {weight}")
        self.lm = lm
        self.chars = list(chars)
        # Row -> one id per distinct class text (rows of the same class share it).
        ids: dict[str, int] = {}
        self._class_ids = np.asarray(
            [ids.setdefault(c, len(ids)) for c in self.chars] or [0], dtype=np.int64
        )
        self.weight = float(weight)
        self.k = int(k)
        self.beam = int(beam)
        self.margin = float(margin)
        if not math.isfinite(lexicon_margin) or lexicon_margin < 0:
            raise EffOCRError(
                f"lm: lexicon_margin must be a finite number >= 0, not {lexicon_margin}"
            )
        # No words, nothing to reread: the lexicon is off.
        self.lexicon_margin = float(lexicon_margin) if len(lm.lexicon) else 0.0

    @property
    def active(self) -> bool:
        """Whether decoding can change anything: more than one neighbour, and an LM weight or
        a lexicon margin above 0."""
        return self.k > 1 and (self.weight > 0 or self.lexicon_margin > 0)

    @property
    def regroups(self) -> bool:
        """Whether `regroup` can read two glyphs as one (the lexicon is on): callers skip the
        work of preparing its arguments otherwise."""
        return self.lexicon_margin > 0

    def __call__(self, sims: np.ndarray, rows: np.ndarray, spaces: np.ndarray | None) -> np.ndarray:
        """The column (0..k-1) picked for each glyph of one line (`read` without its spaces).

        Args:
            sims: (n, k) cosines of the neighbours, best first (FAISS order).
            rows: (n, k) their reference rows (-1: none, when the index has fewer than k).
            spaces: `spaces[i]` puts a space before glyph i (None: no spaces).
        """
        return self.read(sims, rows, spaces)[0]

    def read(
        self, sims: np.ndarray, rows: np.ndarray, spaces: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The column picked for each glyph of one line, and the line's spaces: those given,
        less any the lexicon found inside a word (`Lexicon.correct`). Arguments as `__call__`.
        """
        n = len(rows)
        if n == 0:
            return np.zeros(0, dtype=np.int64), spaces
        picked = np.zeros(n, dtype=np.int64)
        if self.weight > 0:
            cands = self._line_candidates(sims, rows)
            # With one path through the lattice, its nearest neighbours (column 0) are it.
            if not all(len(c) == 1 for c in cands):
                picked = np.asarray(
                    decode_lattice(cands, spaces, self.lm, self.weight, self.beam), dtype=np.int64
                )
        if self.lexicon_margin > 0 and spaces is not None:
            picked, spaces = self.lm.lexicon.correct(
                sims, rows, self.chars, picked, spaces, self.lexicon_margin
            )
        return picked, spaces

    def regroup(
        self,
        sims: np.ndarray,
        rows: np.ndarray,
        picked: np.ndarray,
        spaces: np.ndarray | None,
        splits: np.ndarray,
        pair_knn: Callable[[list[int]], tuple[np.ndarray, np.ndarray]],
    ) -> tuple[np.ndarray, dict[int, int]]:
        """After `read`: the words still suspect reread with two neighbouring glyphs allowed to
        read as one where `splits` says they may be (`Lexicon.regroup`; `pair_knn` crops and
        searches such pairs). Returns the columns and, per pair read as one, its first glyph
        -> its column; nothing is merged unless `regroups`, or in a line without spaces."""
        picked = np.asarray(picked, dtype=np.int64)
        if not self.regroups or spaces is None or len(picked) < 2:
            return picked, {}

        def knn(starts: list[int]) -> tuple[np.ndarray, np.ndarray]:
            pair_sims, pair_rows = pair_knn(starts)
            return pair_sims[:, : self.k], pair_rows[:, : self.k]

        return self.lm.lexicon.regroup(
            sims, rows, self.chars, picked, spaces, self.lexicon_margin, splits, knn
        )

    def _candidates(self, sims: np.ndarray, rows: np.ndarray) -> list[tuple[int, str, float]]:
        """The candidates of one glyph (`_line_candidates` of a one-glyph line)."""
        return self._line_candidates(np.asarray(sims)[None], np.asarray(rows)[None])[0]

    def _line_candidates(
        self, sims: np.ndarray, rows: np.ndarray
    ) -> list[list[tuple[int, str, float]]]:
        """Per glyph, its (column, class, cosine) candidates: the neighbours within `margin`
        of the nearest, one per class.

        One entry per class: an index with several vectors of a class (one per font) must not
        give it several votes; the first (best) column of each class is kept. Masks for the
        whole line, Python only for the candidates that remain (this runs on every glyph).
        """
        sims64 = np.asarray(sims, dtype=np.float64)
        rows = np.asarray(rows, dtype=np.int64)
        valid = (rows >= 0) & (sims64 >= sims64[:, :1] - self.margin)
        cls = np.where(valid, self._class_ids[np.maximum(rows, 0)], -1)
        # Column j repeats a class when an earlier valid column has it.
        same = (cls[:, :, None] == cls[:, None, :]) & valid[:, None, :]
        earlier = np.tril(np.ones((cls.shape[1],) * 2, dtype=bool), -1)
        valid &= ~(same & earlier).any(axis=2)
        chars = self.chars
        out: list[list[tuple[int, str, float]]] = []
        for keep, srow, rrow in zip(valid.tolist(), sims64.tolist(), rows.tolist(), strict=True):
            out.append([(j, chars[rrow[j]], srow[j]) for j, ok in enumerate(keep) if ok])
        return out


def decode_lattice(
    cands: Sequence[Sequence[tuple[int, str, float]]],
    spaces: Sequence[bool] | np.ndarray | None,
    lm: CharLM,
    weight: float,
    beam: int,
) -> list[int]:
    """Beam search over a line's candidate lattice; returns the chosen id of each position.

    Args:
        cands: Per position, (id, text, visual score) candidates (at least one each).
        spaces: `spaces[i]`: a space precedes position i (it is text the LM scores, fixed).
        lm: The character model.
        weight: ``score = sum(visual) + weight * ln P_LM``.
        beam: Hypotheses kept after each position.
    """
    # `CharLM.step`'s cache read inline: this loop is the whole cost of the LM stage.
    steps, step = lm._steps, lm.step
    # context -> (score, back pointer); a back pointer is (parent pointer, chosen id).
    hyps: dict[str, tuple[float, tuple | None]] = {"": (0.0, None)}
    for i, options in enumerate(cands):
        if not options:
            raise ValueError(f"position {i} has no candidates")
        if spaces is not None and i > 0 and spaces[i]:
            spaced: dict[str, tuple[float, tuple | None]] = {}
            for ctx, (score, back) in hyps.items():
                lp, new = steps.get((ctx, " ")) or step(ctx, " ")
                s = score + weight * lp
                old = spaced.get(new)
                if old is None or s > old[0]:
                    spaced[new] = (s, back)
            hyps = spaced
        nxt: dict[str, tuple[float, tuple | None]] = {}
        for ctx, (score, back) in hyps.items():
            for cid, text, visual in options:
                lp, new = steps.get((ctx, text)) or step(ctx, text)
                s = score + visual + weight * lp
                old = nxt.get(new)
                if old is None or s > old[0]:
                    nxt[new] = (s, (back, cid))
        if len(nxt) > beam:
            nxt = dict(sorted(nxt.items(), key=lambda kv: -kv[1][0])[:beam])
        hyps = nxt
    _, back = max(hyps.values(), key=lambda v: v[0])
    picked: list[int] = []
    while back is not None:
        back, cid = back
        picked.append(cid)
    return picked[::-1]


# ---------------------------------------------------------------------------
# Training texts and the command line (rule train_lm)
# ---------------------------------------------------------------------------


def training_texts(
    coco_jsons: Sequence[str | os.PathLike], text_files: Sequence[str | os.PathLike]
) -> list[str]:
    """The line texts of COCO files (`images[].text`) plus whole text files (running text).

    Raises:
        EffOCRError: a file that cannot be read, or no text at all.
    """
    from effocr.data.coco import load_coco
    from effocr.synth.text import read_text_source

    texts: list[str] = []
    for path in coco_jsons:
        coco = load_coco(path)
        texts.extend(t for im in coco["images"] if (t := im.get("text")))
    for path in text_files:
        texts.append(read_text_source(path))
    if not any(texts):
        names = ", ".join(str(p) for p in (*coco_jsons, *text_files))
        raise EffOCRError(f"no training text for the language model in {names}")
    return texts


def train_lm_file(
    coco_jsons: Sequence[str | os.PathLike],
    text_files: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    word_lists: Sequence[str | os.PathLike],
    lm: LMSection,
) -> CharLM:
    """Train on the given texts with the config section `lm` (`order`) and write `out`
    (`lm.json`), its lexicon the texts' words and those of `word_lists` (`lm.lexicon`);
    returns the model."""
    texts = training_texts(coco_jsons, text_files)
    model = CharLM.train(texts, lm.order, read_word_lists(word_lists))
    model.save(out)
    LOG.info(
        "%s: order %d, %d characters, %d contexts, %d words, from %d texts (%d characters)",
        out,
        model.order,
        len(model.vocab),
        len(model.counts),
        len(model.lexicon),
        len(texts),
        sum(map(len, texts)),
    )
    return model


def add_lm_arguments(parser: argparse.ArgumentParser) -> None:
    """`--lm on|off`, `--lm-weight` and `--lexicon-margin` (`effocr infer`, `effocr evaluate`)."""
    parser.add_argument(
        "--lm",
        choices=("on", "off"),
        default=None,
        help="re-rank the k nearest glyphs with the bundle's character language model "
        "(lm.json), or not (default: the bundle's lm.enabled)",
    )
    parser.add_argument(
        "--lm-weight",
        type=float,
        default=None,
        help="language model weight: a line's text scores sum(cosine) + W * ln P_LM "
        "(default: the bundle's lm.weight)",
    )
    parser.add_argument(
        "--lexicon-margin",
        type=float,
        default=None,
        help="reread the words the LM's lexicon does not hold when a reading it holds gives "
        "up at most this much more cosine; 0: no rereading (default: the bundle's "
        "lm.lexicon_margin)",
    )


def lm_choice(value: str | None) -> bool | None:
    """`--lm` as `Engine(lm=...)`."""
    return None if value is None else value == "on"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr train-lm`."""
    parser.add_argument(
        "--coco", nargs="*", default=[], help="COCO JSON files whose line texts are trained on"
    )
    parser.add_argument(
        "--text",
        nargs="*",
        default=None,
        help="UTF-8 text files (running text) trained on (default: config's lm.text)",
    )
    parser.add_argument(
        "--lexicon",
        nargs="*",
        default=None,
        help="word lists (one word per line) whose words join the lexicon besides those of the "
        "texts (default: config's lm.lexicon)",
    )
    parser.add_argument("--output", "-o", required=True, help="lm.json to write")
    parser.add_argument(
        "--config", default=None, help="config YAML (section lm: order, text, lexicon)"
    )


def run(args: argparse.Namespace) -> int:
    """Run `effocr train-lm`."""
    from effocr.config import config_sections, load_config

    section = config_sections(load_config(args.config)).lm
    text = list(section.text) if args.text is None else args.text
    word_lists = list(section.lexicon) if args.lexicon is None else args.lexicon
    lm = train_lm_file(args.coco, text, args.output, word_lists=word_lists, lm=section)
    print(
        f"{args.output}: order {lm.order}, {len(lm.vocab)} characters, {len(lm.counts)} "
        f"contexts, {len(lm.lexicon)} words"
    )
    return 0


def lm_section(lm: LMSection, order: int) -> dict:
    """The bundle manifest's `lm` section from the config section `lm` (`enabled`, `weight`,
    `k`, `beam`, `margin`, `lexicon_margin`) and the model's order."""
    return {
        "file": LM_FILE,
        "order": int(order),
        "enabled": bool(lm.enabled),
        "weight": float(lm.weight),
        "k": int(lm.k),
        "beam": int(lm.beam),
        "margin": float(lm.margin),
        "lexicon_margin": float(lm.lexicon_margin),
    }


def lm_settings(
    section: dict,
    enable: bool | None,
    weight: float | None,
    *,
    source: str,
    lexicon_margin: float | None = None,
) -> dict | None:
    """The LM settings a run uses: the bundle's `lm` section with the caller's overrides
    (`weight`, `lexicon_margin`; None: the bundle's), or None when the LM is off (`enable`
    False, or None and the bundle's `enabled` false or no LM).

    Raises:
        EffOCRError: `enable` True for a bundle without an LM (named by `source`).
    """
    if enable is None:
        enable = bool(section) and bool(section["enabled"])
    if not enable:
        return None
    if not section:
        raise EffOCRError(
            f"{source}: this bundle has no language model (no `lm` in model.yaml); "
            "run without --lm on, or export it again with one"
        )
    out = {**section, "weight": section["weight"] if weight is None else float(weight)}
    if lexicon_margin is not None:
        out["lexicon_margin"] = float(lexicon_margin)
    return out
