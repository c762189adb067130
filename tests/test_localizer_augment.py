"""`augment_line` keeps every box on its glyph's ink through transpose, padding and scaling.

The glyphs are solid black rectangles of different shapes on white, far apart, so each box's
ink can be found in the output image without the code under test: the dark pixels (below
128, which the brightness jitter keeps black ink under and white paper above) between the
gaps around one glyph.
"""

from __future__ import annotations

import numpy as np
import pytest

from effocr.localizer.train import augment_line

INPUT_HEIGHT = 32


def _line(shape: tuple[int, int], boxes: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    img = np.full((*shape, 3), 255, np.uint8)
    for x0, y0, x1, y1 in boxes:
        img[y0:y1, x0:x1] = 0
    return img, np.array(boxes, np.float32)


# Horizontal: three glyphs of different sizes and heights in an 80 x 300 line.
HORIZONTAL = _line((80, 300), [[20, 10, 60, 70], [110, 30, 130, 50], [200, 5, 280, 40]])
# Vertical (taller than wide): glyphs stacked down a 90 x 320 line, each a different shape.
VERTICAL = _line((320, 90), [[10, 20, 80, 60], [30, 120, 50, 200], [5, 250, 60, 300]])


def _ink_boxes(out: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Bounding boxes of the `n` runs of ink along `axis` (1: x, 0: y) of an output line."""
    ink = out.min(axis=2) < 128
    along = ink.any(axis=0 if axis == 1 else 1)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], along.astype(np.int8), [0]])))
    runs = edges.reshape(-1, 2)
    assert len(runs) == n, runs
    boxes = []
    for a, b in runs:
        part = ink[:, a:b] if axis == 1 else ink[a:b, :]
        across = np.flatnonzero(part.any(axis=1 if axis == 1 else 0))
        lo, hi = across[0], across[-1] + 1
        boxes.append([a, lo, b, hi] if axis == 1 else [lo, a, hi, b])
    return np.array(boxes, float)


@pytest.mark.parametrize("seed", [None, *range(8)])
@pytest.mark.parametrize(
    ("line", "vertical", "transposed"),
    [
        (HORIZONTAL, False, False),
        (HORIZONTAL, None, False),
        (VERTICAL, True, True),
        (VERTICAL, None, True),
    ],
)
def test_boxes_stay_on_the_ink(line, vertical, transposed, seed):
    img, boxes = line
    rng = None if seed is None else np.random.default_rng(seed)
    out, got = augment_line(img, boxes, INPUT_HEIGHT, rng, allows_vertical=vertical, ink_spread=0.0)
    assert out.dtype == np.uint8 and out.shape[0] == INPUT_HEIGHT and out.shape[2] == 3
    # A vertical line reaches the network transposed: its glyphs run left to right.
    long_side = img.shape[0] if transposed else img.shape[1]
    short_side = img.shape[1] if transposed else img.shape[0]
    # Width: the long side scaled like the height (by 32 / the padded short side, at most
    # 32 / the short side), times the 0.9-1.1 stretch.
    assert out.shape[1] <= long_side * INPUT_HEIGHT / short_side * 1.1 + 1
    assert out.shape[1] >= long_side * INPUT_HEIGHT / (short_side * 1.24) * 0.9 - 1
    # Boxes follow the ink within the blur of resampling (one output pixel) and rounding.
    ink = _ink_boxes(out, len(boxes), axis=1)
    np.testing.assert_allclose(got, ink, atol=1.25)
    if seed is None:  # no padding: the short side fills the height exactly
        assert out.shape[1] == round(long_side * INPUT_HEIGHT / short_side)


# Thin strokes (2 px) a few pixels apart, in a 60 px line: spread ink closes the gaps.
STROKES = _line((60, 200), [[x, 15, x + 2, 45] for x in range(20, 180, 6)])


@pytest.mark.parametrize("seed", range(4))
def test_ink_spread_thickens_the_strokes_of_its_share_of_lines(seed):
    img, boxes = STROKES
    plain, _ = augment_line(img, boxes, 60, np.random.default_rng(seed), ink_spread=0.0)
    spread, got = augment_line(img, boxes, 60, np.random.default_rng(seed), ink_spread=1.0)
    ink_plain = (plain.min(axis=2) < 128).sum()
    ink_spread = (spread.min(axis=2) < 128).sum()
    # 1-3.5 % of 60 px is a radius of 1-2 px: each 2 px stroke at least doubles.
    assert ink_spread >= 1.8 * ink_plain
    assert got.shape == boxes.shape


def test_no_ink_spread_draws_what_the_augmentation_drew_before():
    """With ink_spread 0 the generator advances by the five draws of the margins, the stretch
    and the brightness jitter, as before the option existed: seeded runs stay as they were."""
    img, boxes = HORIZONTAL
    rng = np.random.default_rng(5)
    augment_line(img, boxes, INPUT_HEIGHT, rng, ink_spread=0.0)
    before = np.random.default_rng(5)
    before.random(5)
    assert rng.random() == before.random()
    # With a share above 0 it draws more (whether to spread, and how far).
    rng = np.random.default_rng(5)
    augment_line(img, boxes, INPUT_HEIGHT, rng, ink_spread=0.5)
    before = np.random.default_rng(5)
    before.random(5)
    assert rng.random() != before.random()
