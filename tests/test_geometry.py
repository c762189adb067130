"""effocr.geometry and the pipeline's GeometryCheck: `,`/`.` and case pairs decided by boxes."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from effocr.geometry import (
    CAPITAL_HEIGHT_MIN,
    COMMA_DESCENT_MIN,
    COMMA_HEIGHT_MIN,
    add_geometry_argument,
    geometric_label,
    geometry_choice,
    geometry_labels,
    line_metrics,
)
from effocr.pipeline import GeometryCheck, geometry_enabled

# A line with baseline y = 40 and x-height 20: x-height letters span y 20..40.
X = 20.0
BASE = 40.0


def letter(x: float, top: float = BASE - X, bottom: float = BASE) -> list[float]:
    return [x, top, x + 10, bottom]


def line(extra: list[tuple[str, list[float]]]) -> tuple[np.ndarray, list[str]]:
    """Three x-height letters (the baseline and x-height), then the glyphs under test."""
    glyphs = [("n", letter(0)), ("a", letter(12, BASE - X - 1, BASE + 1)), ("e", letter(24))]
    glyphs += extra
    return np.asarray([b for _, b in glyphs], np.float64), [lab for lab, _ in glyphs]


def comma_box(descent: float, height: float) -> list[float]:
    """A box whose bottom is `descent` x-heights below the baseline and `height` tall."""
    bottom = BASE + descent * X
    return [40, bottom - height * X, 45, bottom]


def test_line_metrics_are_medians_of_x_height_letters():
    boxes, labels = line([("l", [40, 5, 45, 40]), ("p", [50, 20, 60, 48])])
    m = line_metrics(boxes, labels)
    assert m.baseline == pytest.approx(BASE) and m.x_height == pytest.approx(X)
    # Two x-height letters are too few for a baseline: the line stays as read.
    assert line_metrics(boxes[1:], labels[1:]) is None
    few = [("n", letter(0)), ("e", letter(12)), (".", comma_box(0.3, 0.6))]
    assert geometry_labels(np.asarray([b for _, b in few]), [lab for lab, _ in few])[2] == "."


@pytest.mark.parametrize(
    ("read", "descent", "height", "decided"),
    [
        (".", 0.3, 0.6, ","),  # a comma's box read as a period
        (".", COMMA_DESCENT_MIN, COMMA_HEIGHT_MIN, ","),
        (".", 0.3, 0.3, "."),  # descends, but a period's size: the reading stands
        (".", 0.05, 0.6, "."),  # tall, but on the baseline
        (".", 0.0, 0.25, "."),
        (",", 0.0, 0.25, "."),  # a period's box read as a comma
        (",", 0.02, 0.37, "."),
        (",", 0.06, 0.3, ","),  # between the two: the reading stands
        (",", 0.25, 0.55, ","),
    ],
)
def test_comma_and_period_by_descent_and_height(read, descent, height, decided):
    boxes, labels = line([(read, comma_box(descent, height))])
    assert geometry_labels(boxes, labels)[-1] == decided


@pytest.mark.parametrize(
    ("read", "height", "decided"),
    [
        ("s", 1.4, "S"),
        ("s", CAPITAL_HEIGHT_MIN, "S"),
        ("s", 1.15, "s"),  # taller than an x-height, not a capital's height
        ("S", 1.0, "s"),
        ("S", 1.1, "S"),
        ("O", 0.95, "o"),
        ("w", 1.35, "W"),
        ("e", 1.5, "e"),  # not a case pair of one shape
        ("a", 1.5, "a"),
    ],
)
def test_case_pairs_by_height(read, height, decided):
    boxes, labels = line([(read, [40, BASE - height * X, 52, BASE])])
    assert geometry_labels(boxes, labels)[-1] == decided


def test_metrics_of_a_line_scale_with_it():
    """The same glyphs at twice the size (and moved down) are decided the same way."""
    boxes, labels = line([(".", comma_box(0.3, 0.6)), ("s", [60, BASE - 28, 70, BASE])])
    big = boxes * 2 + np.array([0, 7, 0, 7])
    assert geometry_labels(boxes, labels)[-2:] == geometry_labels(big, labels)[-2:] == [",", "S"]
    m = line_metrics(big, labels)
    assert geometric_label(",", big[-2], m) == ","


def test_geometry_check_moves_rows_and_takes_similarities_from_the_k_nearest():
    chars = ["n", "a", "e", ".", ",", "s", "S", "c"]
    check = GeometryCheck(chars)
    boxes, labels = line(
        [
            (".", comma_box(0.3, 0.6)),  # -> "," (in its k nearest)
            ("s", [60, BASE - 28, 70, BASE]),  # -> "S" (not in its k nearest)
            ("c", [75, BASE - 28, 85, BASE]),  # -> "C", which the index lacks: stays "c"
        ]
    )
    rows = np.array([chars.index(lab) for lab in labels])
    sims = np.linspace(0.9, 0.8, len(rows))
    k_rows = np.stack([rows, np.full(len(rows), 2)], axis=1)
    k_rows[3, 1] = chars.index(",")
    k_sims = np.stack([sims, sims - 0.1], axis=1)
    new_sims, new_rows = check(boxes, sims, rows, k_sims, k_rows)
    assert [chars[r] for r in new_rows] == ["n", "a", "e", ",", "S", "c"]
    assert new_sims[3] == pytest.approx(k_sims[3, 1])
    assert new_sims[4] == pytest.approx(sims[4]) and new_sims[5] == pytest.approx(sims[5])
    assert [chars[r] for r in rows] == labels  # the inputs are not changed


def test_geometry_enabled_by_override_then_bundle():
    assert geometry_enabled({"infer": {"geometry": True}}, None) is True
    assert geometry_enabled({"infer": {"geometry": True}}, False) is False
    assert geometry_enabled({"infer": {"geometry": False}}, None) is False
    assert geometry_enabled({}, True) is True


def test_geometry_argument():
    parser = argparse.ArgumentParser()
    add_geometry_argument(parser)
    assert geometry_choice(parser.parse_args([]).geometry) is None
    assert geometry_choice(parser.parse_args(["--geometry", "off"]).geometry) is False
    assert geometry_choice(parser.parse_args(["--geometry", "on"]).geometry) is True
    with pytest.raises(SystemExit):
        parser.parse_args(["--geometry", "maybe"])
