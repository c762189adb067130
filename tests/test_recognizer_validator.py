"""`Validator.precision_at_1`, the figure that picks the recognizer epoch that is saved.

The glyphs are solid colour squares and the encoder is a stand-in whose embedding is the
normalised mean colour, so every embedding is known in advance: the expected precision is
worked out by hand for one set and by brute force (plain loops) for a random one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from effocr.recognizer.dataset import GlyphRecord
from effocr.recognizer.train import Validator

SIZE = 8


class MeanColour(torch.nn.Module):
    """An 'encoder' embedding a glyph as its L2-normalised mean colour (3 dimensions)."""

    dim = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x.mean(dim=(2, 3)), dim=1)


def _glyph(tmp: Path, rgb, code: str, split: str = "train") -> GlyphRecord:
    path = tmp / f"{len(list(tmp.iterdir()))}.png"
    colour = np.round(np.asarray(rgb, float) * 255).astype(np.uint8)
    Image.fromarray(np.tile(colour, (SIZE, SIZE, 1))).save(path)
    return GlyphRecord(path, code, "render" if split == "train" else "real", "f", split)


def _validator(refs: dict[str, list], vals: list[GlyphRecord]) -> Validator:
    # mean 0, std 1: the network sees the colour in [0, 1] as it is.
    return Validator(refs, vals, SIZE, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def test_known_answer_uses_class_means_and_counts_unreferenced_classes_as_misses(tmp_path):
    refs = {
        "U+0041": [_glyph(tmp_path, [1, 0, 0], "U+0041"), _glyph(tmp_path, [0, 1, 0], "U+0041")],
        "U+0042": [_glyph(tmp_path, [0, 0, 1], "U+0042")],
        "U+0043": [_glyph(tmp_path, [1, 1, 1], "U+0043")],
    }
    # Class embeddings: A (1, 1, 0)/sqrt 2, B (0, 0, 1), C (1, 1, 1)/sqrt 3.
    cases = [
        ([0.9, 0.1, 0.0], "U+0041"),  # A 0.78, C 0.64: hit
        # Nearest single render is A's red (0.89), but the class means say C (0.80 > 0.66): miss
        # (unnormalised class sums, A 0.94 > C 0.80, would call it a hit)
        ([1.0, 0.05, 0.5], "U+0041"),
        ([0.1, 0.1, 1.0], "U+0042"),  # hit
        ([0.2, 0.0, 1.0], "U+0042"),  # B 0.98, C 0.68: hit
        ([0.1, 0.1, 1.0], "U+0044"),  # no reference render for D: never right
    ]
    vals = [_glyph(tmp_path, rgb, code, "val") for rgb, code in cases]
    model = MeanColour()
    assert _validator(refs, vals).precision_at_1(model, "cpu") == pytest.approx(3 / 5)
    # More glyphs than one chunk of the search (1024): every chunk counts, in order.
    many = vals * 205 + vals[:3]  # 1028 glyphs, 615 + 2 hits
    assert _validator(refs, many).precision_at_1(model, "cpu") == pytest.approx(617 / 1028)
    assert np.isnan(_validator(refs, []).precision_at_1(model, "cpu"))


def test_matches_brute_force_on_random_colours(tmp_path):
    rng = np.random.default_rng(2)
    codes = [f"U+{0x41 + k:04X}" for k in range(6)]
    refs = {
        c: [_glyph(tmp_path, rng.random(3), c) for _ in range(rng.integers(1, 4))] for c in codes
    }
    # Each validation glyph: a render of its class, its colour shifted (some cross over).
    vals = []
    for _ in range(60):
        code = codes[rng.integers(6)]
        rgb = np.asarray(Image.open(refs[code][rng.integers(len(refs[code]))].path), float)[0, 0]
        vals.append(_glyph(tmp_path, np.clip(rgb / 255 + rng.normal(0, 0.2, 3), 0, 1), code, "val"))

    def colour(record: GlyphRecord) -> np.ndarray:
        with Image.open(record.path) as im:
            return np.asarray(im, float)[0, 0] / 255

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v)

    class_emb = {c: unit(sum(unit(colour(r)) for r in rs)) for c, rs in refs.items()}
    hits = 0
    for v in vals:
        e = unit(colour(v))
        scores = {c: float(e @ m) for c, m in class_emb.items()}
        top = sorted(scores.values())
        assert top[-1] - top[-2] > 1e-4  # no near tie that float32 rounding could flip
        hits += max(scores, key=scores.get) == v.codepoints
    expected = hits / len(vals)
    assert 0.2 < expected < 0.9  # a set with both hits and misses
    got = _validator(refs, vals).precision_at_1(MeanColour(), "cpu")
    assert got == pytest.approx(expected)
