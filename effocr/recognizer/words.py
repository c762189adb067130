"""The word-level recognizer of the original EffOCR package, for English lines.

A word's crop (full line height, the x-range of its letters) is embedded by a recognizer
trained on words, and searched in an index of rendered vocabulary words. A word whose nearest
reference is at least `min_similarity` (cosine) is read as that word; any other keeps what the
character recognizer read (the character fallback). Punctuation at a word's ends and words with
digits stay with the character recognizer, as the original's `final_puncs` do.

The word recognizer is the character recognizer's model, trainer and index with words as
classes: `word_vocabulary` picks the words of a running text (`ranked_vocabulary` those of a
word list); `effocr.synth.render.render_glyphs` renders them as it renders glyphs and
`crop_words` cuts them from annotated lines, each writing a recognizer dataset manifest that
`effocr.recognizer.train` and `effocr.recognizer.index` take as they take glyphs; `WordReader`
reads the words of lines the pipeline has read. bench/word_recognizer.py trains one for a bundle and measures it.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from effocr.data.coco import index_coco, line_chars, load_coco
from effocr.data.crops import crop_box, jitter_box
from effocr.recognizer.dataset import MANIFEST_COLUMNS
from effocr.utils import EffOCRError, atomic_path, label_to_codepoints, open_rgb


def word_vocabulary(text: str, size: int, min_length: int = 2) -> list[str]:
    """The `size` most frequent words of `text` (`ranked_vocabulary` of them by frequency).

    A word is a whitespace-separated token stripped of non-letters at both ends, made of letters
    only and at least `min_length` long; case is folded for counting (ties: alphabetical).
    """
    counts: Counter[str] = Counter()
    for token in text.split():
        a, b = letter_span(list(token))
        word = token[a:b]
        if len(word) >= min_length and word.isalpha():
            counts[word.lower()] += 1
    ranked = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return ranked_vocabulary(ranked, size, min_length)


def ranked_vocabulary(words: Iterable[str], size: int, min_length: int = 2) -> list[str]:
    """The first `size` distinct words of a ranked word list (letters only, at least
    `min_length` long, case folded), each in lower and title case: any word can start a
    sentence.
    """
    if size < 1:
        raise EffOCRError(f"word vocabulary size must be >= 1, got {size}")
    top: list[str] = []
    seen: set[str] = set()
    for word in words:
        word = word.strip().lower()
        if len(word) >= min_length and word.isalpha() and word not in seen:
            seen.add(word)
            top.append(word)
            if len(top) == size:
                break
    out: list[str] = []
    for word in top:
        out.append(word)
        title = word[:1].upper() + word[1:]
        if title != word:
            out.append(title)
    return out


def letter_span(labels: Sequence[str]) -> tuple[int, int]:
    """(start, end) of the labels between the first and the last alphabetic one ((0, 0) if none)."""
    alpha = [i for i, lab in enumerate(labels) if lab.isalpha()]
    if not alpha:
        return 0, 0
    return alpha[0], alpha[-1] + 1


def word_spans(text: str, labels: Sequence[str]) -> list[tuple[int, int]]:
    """(start, end) label indices of each space-separated word of `text`, whose non-space
    characters are the labels joined (a label may hold several characters, e.g. a ligature).

    Raises:
        ValueError: when the labels do not spell `text` without its spaces.
    """
    spans: list[tuple[int, int]] = []
    pos, start = 0, 0
    for i, label in enumerate(labels):
        if pos < len(text) and text[pos] == " ":
            while pos < len(text) and text[pos] == " ":
                pos += 1
            if i > start:
                spans.append((start, i))
            start = i
        if not text.startswith(label, pos):
            raise ValueError(f"label {i} {label!r} is not at position {pos} of {text!r}")
        pos += len(label)
    if text[pos:].strip():
        raise ValueError(f"text {text!r} goes on after the last label")
    if len(labels) > start:
        spans.append((start, len(labels)))
    return spans


def word_core(labels: Sequence[str], min_labels: int = 2) -> tuple[int, int] | None:
    """The part of a word's labels the word recognizer reads: its letters without punctuation
    at the ends; None for a word with a digit or fewer than `min_labels` labels left."""
    if any(ch.isdigit() for lab in labels for ch in lab):
        return None
    a, b = letter_span(labels)
    return (a, b) if b - a >= min_labels else None


# ---------------------------------------------------------------------------
# Training data
# ---------------------------------------------------------------------------


def crop_words(
    split_jsons: dict[str, str | os.PathLike],
    image_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    manifest_path: str | os.PathLike,
    vocabulary: Sequence[str],
    *,
    padding: int,
    jitter: int,
    jitter_range: float,
    seed: int,
    char_category: str,
    word_category: str,
) -> dict[str, int]:
    """Cut the vocabulary words of annotated horizontal lines (full line height) and write a
    recognizer dataset manifest of them (columns of docs/architecture.md).

    A word's box spans its letters' char boxes (`word_core`) plus `padding`; with `jitter` > 0
    each `train` word is cut that many more times with its ends moved (`crops.jitter_box`,
    seeded per line and word). Crops go to `out_dir/<split>/<code points>/<stem>_<k>.png`.

    Returns:
        Number of crops per split.

    Raises:
        EffOCRError: naming the COCO file and image of a line whose boxes do not match its text
            or whose image cannot be read.
    """
    vocab = set(vocabulary)
    image_dir, out_dir, manifest_path = Path(image_dir), Path(out_dir), Path(manifest_path)
    rel_root = Path(os.path.relpath(out_dir, manifest_path.parent))
    rows: list[dict] = []
    counts: dict[str, int] = {}
    with atomic_path(out_dir, is_dir=True) as tmp_dir:
        for split, json_path in split_jsons.items():
            coco = load_coco(json_path)
            index = index_coco(coco, char_category, word_category)
            counts[split] = 0
            for image in coco["images"]:
                where = f"{json_path}: image {image.get('id')} ({image.get('file_name')})"
                try:
                    pairs = line_chars(index, image, allows_vertical=False)
                    spans = word_spans(image["text"].strip(), [c for c, _ in pairs])
                except (EffOCRError, ValueError) as exc:
                    raise EffOCRError(f"{where}: {exc}") from exc
                line = None
                stem = Path(image["file_name"]).stem
                for k, (start, end) in enumerate(spans):
                    labels = [c for c, _ in pairs[start:end]]
                    core = word_core(labels)
                    word = "".join(labels[core[0] : core[1]]) if core else ""
                    if word not in vocab:
                        continue
                    if line is None:
                        try:
                            line = open_rgb(image_dir / image["file_name"])
                        except (OSError, ValueError) as exc:
                            raise EffOCRError(f"{where}: cannot read the image: {exc}") from exc
                    anns = [a for _, a in pairs[start + core[0] : start + core[1]]]
                    x0 = min(a["bbox"][0] for a in anns)
                    x1 = max(a["bbox"][0] + a["bbox"][2] for a in anns)
                    box = crop_box(
                        [x0, 0, x1 - x0, line.height], line.width, line.height, False, True, padding
                    )
                    cuts = [("", box)]
                    if split == "train" and jitter > 0:
                        rng = random.Random(f"{seed}/{image['file_name']}/word{k}")
                        cuts += [
                            (
                                f"_j{j}",
                                jitter_box(box, line.width, line.height, False, jitter_range, rng),
                            )
                            for j in range(1, jitter + 1)
                        ]
                    code = label_to_codepoints(word)
                    for suffix, cut in cuts:
                        rel = Path(split) / code / f"{stem}_{k}{suffix}.png"
                        (tmp_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                        line.crop(cut).save(tmp_dir / rel, compress_level=1)
                        rows.append(
                            {
                                "path": (rel_root / rel).as_posix(),
                                "codepoints": code,
                                "source": "real",
                                "origin": image["file_name"],
                                "split": split,
                            }
                        )
                        counts[split] += 1
    with atomic_path(manifest_path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return counts


# ---------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------


@dataclass
class WordCandidate:
    """One word of a read line that the word recognizer may read: labels `start:end` of the
    line's chars, the crop box (x0, y0, x1, y1) of its letters and the word's place in the line."""

    start: int
    end: int
    box: tuple[int, int, int, int]
    word: int


class WordReader:
    """Reads the words of lines the character pipeline has read (see the module docstring).

    Args:
        recognizer: `effocr.pipeline.RecognizerStage` of the word model.
        search: `effocr.pipeline.ReferenceSearch` of the word index.
        input_size: The word model's input side.
        padding: Pixels added to each end of a word's box.
        min_similarity: Cosine from which the nearest word is accepted.
    """

    def __init__(
        self,
        recognizer: Any,
        search: Any,
        input_size: int,
        padding: int,
        min_similarity: float,
    ) -> None:
        self.recognizer = recognizer
        self.search = search
        self.input_size = int(input_size)
        self.padding = int(padding)
        self.min_similarity = float(min_similarity)

    def candidates(self, res: Any) -> list[WordCandidate]:
        """The words of `res` (a read horizontal `LineResult`) the word recognizer reads."""
        if res.error is not None or res.vertical or not res.chars:
            return []
        labels = [c.char for c in res.chars]
        out = []
        for k, (start, end) in enumerate(word_spans(res.text, labels)):
            core = word_core(labels[start:end])
            if core is None:
                continue
            a, b = start + core[0], start + core[1]
            x0 = min(c.bbox[0] for c in res.chars[a:b])
            x1 = max(c.bbox[2] for c in res.chars[a:b])
            x0 = max(0, math.floor(x0) - self.padding)
            x1 = min(res.width, math.ceil(x1) + self.padding)
            if x1 > x0:
                out.append(WordCandidate(a, b, (x0, 0, x1, res.height), k))
        return out

    def nearest(
        self, img: np.ndarray, candidates: Sequence[WordCandidate]
    ) -> tuple[np.ndarray, list[str]]:
        """Cosine and label of the nearest reference word of each candidate of one line."""
        from effocr.recognizer.transforms import glyph_squares

        if not candidates:
            return np.zeros(0, np.float32), []
        boxes = np.asarray([c.box for c in candidates], np.int64)
        embs = self.recognizer(glyph_squares(img, boxes, self.input_size))
        sims, rows = self.search(embs, 1)
        return sims[:, 0], [self.search.chars[r] for r in rows[:, 0]]

    def apply(
        self,
        res: Any,
        candidates: Sequence[WordCandidate],
        sims: np.ndarray,
        words: Sequence[str],
        min_similarity: float | None = None,
    ) -> tuple[Any, int]:
        """A copy of `res` with each candidate at least `min_similarity` (default the
        reader's) read as its nearest word; returns it and the number of words replaced."""
        from effocr.pipeline import CharResult

        threshold = self.min_similarity if min_similarity is None else min_similarity
        out = copy.deepcopy(res)
        chosen = [
            (c, w, float(s))
            for c, s, w in zip(candidates, sims, words, strict=True)
            if s >= threshold
        ]
        labels = [c.char for c in res.chars]
        spans = word_spans(res.text, labels)
        # Later words first, so earlier indices stay valid while chars are replaced.
        for cand, word, sim in sorted(chosen, key=lambda t: -t[0].start):
            old = out.chars[cand.start : cand.end]
            if "".join(c.char for c in old) == word:
                for c in old:
                    c.score = max(c.score, sim)
                continue
            if len(old) == len(word):
                boxes = [c.bbox for c in old]
            else:  # a split or merged glyph: the word's letters share its span evenly
                x0, x1 = old[0].bbox[0], old[-1].bbox[2]
                y0, y1 = min(c.bbox[1] for c in old), max(c.bbox[3] for c in old)
                step = (x1 - x0) / len(word)
                boxes = [[x0 + i * step, y0, x0 + (i + 1) * step, y1] for i in range(len(word))]
            new = [
                CharResult(list(box), label_to_codepoints(ch), ch, sim, 0.0)
                for ch, box in zip(word, boxes, strict=True)
            ]
            shift = len(new) - len(old)
            out.chars[cand.start : cand.end] = new
            spans = [
                (s + (shift if s > cand.start else 0), e + (shift if e > cand.start else 0))
                for s, e in spans
            ]
        out.text = " ".join("".join(c.char for c in out.chars[s:e]) for s, e in spans)
        return out, len(chosen)

    def __call__(self, img: np.ndarray, res: Any) -> tuple[Any, int]:
        """`apply` at the reader's threshold, on the line image `res` was read from."""
        cands = self.candidates(res)
        sims, words = self.nearest(img, cands)
        return self.apply(res, cands, sims, words)
