"""`detection_loss` assigns each box to the right cells of the right level.

The expected cells are worked out by hand from the rule the loss documents (FCOS centre
sampling): a cell is positive for a box when its centre lies inside the box (widened to at
least one stride) and within 1.5 strides of the box centre, on the box's own class level.
Cell (row r, column c) of a level with stride s has its centre at ((c + 0.5) s, (r + 0.5) s),
rows first. Which cells the loss treats as positive is read off the gradient of the focal
loss: with a zero logit it pushes a positive cell's score up and a negative cell's down.
"""

from __future__ import annotations

import math

import pytest
import torch

from effocr.localizer.backends import create_localizer
from effocr.localizer.model import detection_loss

H, W = 32, 64
# The default model's levels: chars on stride 4 (box unit 4 px), words on stride 8 (32 px).
LEVELS = [
    {"class": 0, "stride": [4, 4], "size": 4.0},
    {"class": 1, "stride": [8, 8], "size": 32.0},
]
N_CHAR = (H // 4) * (W // 4)  # 8 rows x 16 columns
N_WORD = (H // 8) * (W // 8)  # 4 rows x 8 columns


def _cells(rows, cols, n_cols, offset=0) -> set[int]:
    return {offset + r * n_cols + c for r in rows for c in cols}


# char [11, 7, 23, 27], centre (17, 17): cell centres 14, 18, 22 lie inside and within 6 px
# of 17 on both axes (10 is 7 px away) -> rows and columns 3, 4, 5.
CHAR = [11.0, 7.0, 23.0, 27.0]
CHAR_CELLS = _cells((3, 4, 5), (3, 4, 5), 16)
# word [9, 5, 41, 29], centre (25, 17): x centres 20, 28, 36 (12 is 13 px away, not < 12),
# y centres 12, 20, 28 (4 is 13 px away) -> columns 2, 3, 4 and rows 1, 2, 3 of 8 columns.
WORD = [9.0, 5.0, 41.0, 29.0]
WORD_CELLS = _cells((1, 2, 3), (2, 3, 4), 8, offset=N_CHAR)


def _target(boxes, labels) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def _positives(targets) -> list[set[int]]:
    raw = torch.zeros(len(targets), N_CHAR + N_WORD, 6, requires_grad=True)
    detection_loss(raw, targets, (H, W), LEVELS)["classification"].backward()
    grad = raw.grad[:, :, 5]
    return [set(torch.nonzero(g < 0).flatten().tolist()) for g in grad]


def _encode(box, cell: int, stride: int, size: float, n_cols: int) -> list[float]:
    """The row that decodes to `box` at `cell`: centre offset and log size, in `size` units."""
    r, c = divmod(cell, n_cols)
    px, py = (c + 0.5) * stride, (r + 0.5) * stride
    x0, y0, x1, y1 = box
    return [
        ((x0 + x1) / 2 - px) / size,
        ((y0 + y1) / 2 - py) / size,
        math.log((x1 - x0) / size),
        math.log((y1 - y0) / size),
    ]


def test_levels_are_the_default_models():
    model = create_localizer("default", classes=["char", "word"], input_height=H)
    assert model.level_meta() == LEVELS
    assert model(torch.zeros(1, 3, H, W)).shape == (1, N_CHAR + N_WORD, 6)


def test_each_box_gets_its_centre_cells_on_its_own_level():
    both, char_only, word_only, empty = _positives(
        [
            _target([CHAR, WORD], [0, 1]),
            _target([CHAR], [0]),
            _target([WORD], [1]),
            _target([], []),
        ]
    )
    assert both == CHAR_CELLS | WORD_CELLS
    assert char_only == CHAR_CELLS
    assert word_only == WORD_CELLS
    assert empty == set()


def test_a_box_narrower_than_a_stride_still_gets_a_column():
    # An `i` 1 px wide, centre x 17: no cell centre lies inside it, but widened to one stride
    # (15..19) it takes column 4 (centre 18). Rows: centres 10, 14, 18 lie inside 9.5..21.5
    # and within 6 px of 15.5 (22 is 6.5 px away).
    (got,) = _positives([_target([[16.5, 9.5, 17.5, 21.5]], [0])])
    assert got == _cells((2, 3, 4), (4,), 16)


def test_the_smaller_box_owns_a_shared_cell():
    # A comma inside its word's box on the char level: the cells of both go to the comma.
    small = [13.0, 13.0, 19.0, 19.0]  # centre (16, 16): centres 14, 18 -> rows/cols 3, 4
    raw = torch.zeros(1, N_CHAR + N_WORD, 6)
    for cell in CHAR_CELLS:
        raw[0, cell, :4] = torch.tensor(_encode(CHAR, cell, 4, 4.0, 16))
    for cell in _cells((3, 4), (3, 4), 16):
        raw[0, cell, :4] = torch.tensor(_encode(small, cell, 4, 4.0, 16))
    losses = detection_loss(raw, [_target([CHAR, small], [0, 0])], (H, W), LEVELS)
    assert float(losses["bbox_l1"]) == pytest.approx(0.0, abs=1e-4)
    assert float(losses["bbox_regression"]) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize(("char_shift", "word_shift"), [(0, 0), (1, 1), (-16, -8)])
def test_box_targets_are_the_box_seen_from_each_cell(char_shift, word_shift):
    # Rows that decode exactly to the boxes from their own cells cost nothing in the box
    # losses; the same rows written one cell to the right (or one row up) do.
    raw = torch.zeros(1, N_CHAR + N_WORD, 6)
    for cell in CHAR_CELLS:
        raw[0, cell + char_shift, :4] = torch.tensor(_encode(CHAR, cell, 4, 4.0, 16))
    for cell in WORD_CELLS:
        raw[0, cell + word_shift, :4] = torch.tensor(_encode(WORD, cell - N_CHAR, 8, 32.0, 8))
    losses = detection_loss(raw, [_target([CHAR, WORD], [0, 1])], (H, W), LEVELS)
    for key in ("bbox_l1", "bbox_regression"):
        if char_shift == 0:
            assert float(losses[key]) == pytest.approx(0.0, abs=1e-4), key
        else:
            assert float(losses[key]) > 0.05, key
