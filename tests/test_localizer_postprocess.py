"""Post-processing shared by the PyTorch and ONNX localizer paths (pure NumPy, fast)."""

from __future__ import annotations

import numpy as np
import pytest

from effocr.config import section_defaults
from effocr.data.coco import line_is_vertical
from effocr.localizer import postprocess as pp
from effocr.localizer.model import prepare_line, resolve_allows_vertical
from effocr.profiles import get_profile
from effocr.utils import EffOCRError

# The config's post-processing (the schema's defaults); a test overrides what it checks.
THRESHOLDS = pp.config_thresholds(section_defaults("localizer"))


def test_nms_suppresses_overlaps_and_keeps_neighbours():
    boxes = np.array([[0, 0, 10, 20], [1, 0, 11, 20], [12, 0, 20, 20], [30, 0, 40, 20]], float)
    scores = np.array([0.9, 0.95, 0.5, 0.1])
    keep = pp.nms(boxes, scores, 0.3)
    assert keep.tolist() == [1, 2, 3]  # box 0 overlaps box 1 (IoU 0.82) and scores lower
    assert pp.nms(boxes, scores, 0.9).tolist() == [1, 0, 2, 3]


def test_reading_order_x_and_y():
    boxes = np.array([[20, 0, 30, 10], [0, 5, 10, 15], [10, 0, 20, 10]], float)
    assert pp.reading_order(boxes).tolist() == [1, 2, 0]
    vertical = boxes[:, [1, 0, 3, 2]]  # the same boxes in a top-to-bottom line
    assert pp.reading_order(vertical, vertical=True).tolist() == [1, 2, 0]


def _line(spec: str, w: float = 10.0, gap: float = 2.0, space: float = 12.0):
    """Char and word boxes of a text like "ab cd" drawn left to right."""
    chars, words, x, start = [], [], 0.0, None
    for ch in spec + " ":
        if ch == " ":
            if start is not None:
                words.append([start, 0, x - gap, 30])
                start = None
            x += space - gap
            continue
        start = x if start is None else start
        chars.append([x, 5, x + w, 25])
        x += w + gap
    return np.array(chars, float), np.array(words, float)


def test_spaces_from_word_boxes():
    chars, words = _line("ab c def")
    flags = pp.assign_spaces(chars, words)
    assert flags.tolist() == [False, False, True, True, False, False]
    # vertical: transpose everything, same answer
    flags_v = pp.assign_spaces(chars[:, [1, 0, 3, 2]], words[:, [1, 0, 3, 2]], vertical=True)
    assert flags_v.tolist() == flags.tolist()


def test_spaces_fallback_from_gaps():
    chars, _ = _line("ab c def", gap=2.0, space=14.0)
    flags = pp.spaces_from_gaps(chars, line_thickness=30.0, vertical=False, gap_factor=2.5)
    assert flags.tolist() == [False, False, True, True, False, False]
    # touching glyphs: the floor (5 % of line height) keeps 1-px gaps from being spaces
    chars2, _ = _line("abcd", gap=0.0)
    chars2[2:, [0, 2]] += 1.0
    assert not pp.spaces_from_gaps(
        chars2, line_thickness=30.0, vertical=False, gap_factor=2.5
    ).any()


def test_postprocess_uses_gap_fallback_only_without_words():
    chars, words = _line("ab cd")
    n = len(chars)
    boxes = np.concatenate([chars, words])
    labels = np.array([0] * n + [1] * len(words))
    scores = np.full(len(boxes), 0.9)
    det = pp.postprocess(boxes, scores, labels, ["char", "word"], image_size=(30, 60), **THRESHOLDS)
    assert len(det.words) == 2 and det.spaces.tolist() == [False, False, True, False]
    # no word predicted: the gap fallback finds the same space
    det = pp.postprocess(
        chars, scores[:n], labels[:n], ["char", "word"], image_size=(30, 60), **THRESHOLDS
    )
    assert len(det.words) == 0 and det.spaces.tolist() == [False, False, True, False]
    det = pp.postprocess(
        boxes, scores, labels, ["char", "word"], image_size=(30, 60), spaces=False, **THRESHOLDS
    )
    assert not det.spaces.any()


def test_contained_boxes():
    m = [10, 5, 40, 25]  # an m, 30 x 20
    leg = [28, 6, 39, 24]  # its right leg: all inside
    edge = [30, 5, 46, 25]  # 10 of its 16 columns inside the m: 0.625 of its area
    kerned = [36, 5, 56, 25]  # a neighbour kerned 4 px into it: 0.2 of its area
    boxes = np.array([m, leg, edge, kerned], float)
    assert pp.contained(boxes, 0.65).tolist() == [False, True, False, False]
    assert pp.contained(boxes, 0.6).tolist() == [False, True, True, False]
    assert not pp.contained(boxes, 1.0).any()
    # Equal boxes (NMS would have merged them; here neither is larger): both kept.
    assert not pp.contained(np.array([m, m], float), 0.5).any()
    assert pp.contained(np.zeros((0, 4)), 0.5).shape == (0,)


def test_postprocess_drops_nested_char_boxes_only():
    chars, words = _line("ab cd")
    nested = chars[3] + np.array([1.0, 1.0, -1.0, -1.0])  # a part of the c
    boxes = np.concatenate([chars, [nested], words])
    labels = np.array([0] * (len(chars) + 1) + [1] * len(words))
    scores = np.full(len(boxes), 0.9)
    scores[len(chars)] = 0.95  # scoring higher than its glyph does not save it
    kw = {"image_size": (30, 60), **THRESHOLDS, "nms_iou": 0.95}
    det = pp.postprocess(boxes, scores, labels, ["char", "word"], **kw)
    assert det.chars.tolist() == chars.tolist()
    assert len(det.words) == 2 and det.spaces.tolist() == [False, False, True, False]
    kept = pp.postprocess(boxes, scores, labels, ["char", "word"], **{**kw, "contained_share": 1})
    assert len(kept.chars) == len(chars) + 1 and len(kept.spaces) == len(kept.chars)


def test_postprocess_threshold_max_and_mapping_back():
    # network boxes at scale 0.5 of a transposed (vertical) image of 200 x 40
    boxes = np.array([[2, 1, 10, 9], [12, 2, 18, 8], [30, 1, 36, 9]], float)
    scores = np.array([0.8, 0.9, 0.2])
    det = pp.postprocess(
        boxes,
        scores,
        np.zeros(3, int),
        ["char"],
        image_size=(200, 40),
        scale=0.5,
        transposed=True,
        vertical=True,
        **{**THRESHOLDS, "score_threshold": 0.3, "max_detections": 5},
    )
    assert det.chars.tolist() == [[2, 4, 18, 20], [4, 24, 16, 36]]
    assert det.char_scores.tolist() == pytest.approx([0.8, 0.9])
    det1 = pp.postprocess(
        boxes,
        scores,
        np.zeros(3, int),
        ["char"],
        image_size=(20, 80),
        **{**THRESHOLDS, "max_detections": 1, "detections_per_height": 0.1},
    )
    assert det1.char_scores.tolist() == pytest.approx([0.9]) and det1.dropped == 1


def test_glyph_crop_boxes_full_height_and_width():
    chars = np.array([[3.4, 5, 9.6, 20], [-2, 0, 0.2, 3], [95, 1, 120, 4]], float)
    crops = pp.glyph_crop_boxes(chars, (30, 100), vertical=False, padding=1)
    assert crops.tolist() == [[2, 0, 11, 30], [0, 0, 2, 30], [94, 0, 100, 30]]
    vcrops = pp.glyph_crop_boxes(chars[:, [1, 0, 3, 2]], (100, 30), vertical=True, padding=0)
    assert vcrops.tolist() == [[0, 3, 30, 10], [0, 0, 30, 1], [0, 95, 30, 100]]
    det = pp.Detections(chars=chars, char_scores=np.ones(3), image_size=(30, 100))
    assert det.crop_boxes(1).tolist() == crops.tolist()


def test_decode_round_trip():
    levels = [
        {"class": 0, "stride": [4, 4], "size": 4.0},
        {"class": 1, "stride": [8, 8], "size": 32.0},
    ]
    h, w = 32, 64
    n0, n1 = (h // 4) * (w // 4), (h // 8) * (w // 8)
    raw = np.zeros((1, n0 + n1, 6), np.float32)
    raw[0, 5, :] = [0.25, -0.5, np.log(2.0), np.log(3.0), 10, 10]  # cell (0, 5): centre (22, 2)
    boxes, scores, labels = pp.decode_effocr(raw, (h, w), levels, 2)
    assert boxes[5].tolist() == pytest.approx([19.0, -6.0, 27.0, 6.0])
    assert scores[5] == pytest.approx(1.0, abs=1e-4) and scores[0] == pytest.approx(0.5)
    assert labels[:n0].tolist() == [0] * n0 and labels[n0:].tolist() == [1] * n1
    # The function's own messages: numpy's broadcast error on a short level is a ValueError too.
    with pytest.raises(ValueError, match=r"raw output has 159 rows; levels .* need more"):
        pp.decode_effocr(raw[:, :-1], (h, w), levels, 2)
    extra = np.concatenate([raw, raw[:, :1]], axis=1)
    with pytest.raises(ValueError, match=r"raw output has 161 rows, levels .* account for 160"):
        pp.decode_effocr(extra, (h, w), levels, 2)
    # With a threshold, only the rows that pass are decoded, and they come out the same.
    raw[0, 7, 4:] = [1.0, 1.0]
    boxes, scores, labels = pp.decode_effocr(raw, (h, w), levels, 2)
    kept = pp.decode_effocr(raw, (h, w), levels, 2, score_threshold=0.6)
    full_mask = scores >= 0.6
    assert full_mask.sum() == 2 and len(kept[0]) == 2
    for got, want in zip(
        kept, (boxes[full_mask], scores[full_mask], labels[full_mask]), strict=True
    ):
        assert np.allclose(got, want)


def test_nms_agrees_with_torchvision():
    import torch
    import torchvision

    rng = np.random.default_rng(0)
    for case in range(300):
        n = int(rng.integers(0, 150))
        xy = rng.random((n, 2)) * 300
        boxes = np.concatenate([xy, xy + rng.random((n, 2)) * 40 + 0.5], axis=1)
        scores = rng.random(n).astype(np.float32)
        if case % 5 == 0:
            scores[: n // 2] = 0.5  # ties
        thr = float(rng.choice([0.1, 0.3, 0.5]))
        ours = pp.nms(boxes, scores, thr)
        ref = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores).double(), thr)
        assert sorted(ours.tolist()) == sorted(ref.tolist())


def test_class_wise_nms_agrees_with_torchvision_batched_nms():
    """One `nms` over `class_apart` boxes is NMS within each class: a word box never suppresses
    the characters under it, however much they overlap."""
    import torch
    import torchvision

    rng = np.random.default_rng(1)
    for case in range(200):
        n = int(rng.integers(0, 120))
        xy = rng.random((n, 2)) * np.array([300, 20]) - (50 if case % 7 == 0 else 0)
        boxes = np.concatenate([xy, xy + rng.random((n, 2)) * 40 + 0.5], axis=1)
        labels = rng.integers(0, 2, n)
        scores = rng.random(n).astype(np.float32)
        thr = float(rng.choice([0.1, 0.3, 0.5]))
        ours = pp.nms(pp.class_apart(boxes, labels), scores, thr)
        ref = torchvision.ops.batched_nms(
            torch.from_numpy(boxes),
            torch.from_numpy(scores).double(),
            torch.from_numpy(labels),
            thr,
        )
        assert sorted(ours.tolist()) == sorted(ref.tolist())
    # A word box over its two characters: all three kept.
    boxes = np.array([[0, 0, 10, 30], [10, 0, 20, 30], [0, 0, 20, 30]], float)
    keep = pp.nms(pp.class_apart(boxes, np.array([0, 0, 1])), np.array([0.9, 0.8, 0.7]), 0.3)
    assert sorted(keep.tolist()) == [0, 1, 2]


def test_prepare_line_resizes_pads_and_transposes():
    img = np.zeros((40, 1010, 3), np.uint8)
    p = prepare_line(img, 32)
    assert p.array.shape == (3, 32, 832) and p.scale == pytest.approx(0.8) and not p.transposed
    assert p.array[:, :, 808:].min() == pytest.approx(1.0)  # white padding after 808 columns
    assert p.array[:, :, :808].max() == pytest.approx(-1.0)
    v = prepare_line(np.zeros((300, 50, 3), np.uint8), 32)
    assert v.transposed and v.array.shape == (3, 32, 192) and v.image_size == (300, 50)


def test_prepare_line_grey_equals_its_rgb_copy():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (37, 410), dtype=np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    for vertical in (False, True):
        a = prepare_line(grey, 40, allows_vertical=vertical)
        b = prepare_line(rgb, 40, allows_vertical=vertical)
        assert a.array.shape == b.array.shape == (3, 40, 448)
        assert np.array_equal(a.array, b.array) and a.scale == b.scale
    tall = prepare_line(grey.T.copy(), 40, allows_vertical=True)
    assert tall.transposed and tall.array.shape == (3, 40, 448)
    with pytest.raises(EffOCRError, match="shape"):
        prepare_line(np.zeros((4, 5, 2), np.uint8), 40)


def _tall_l() -> np.ndarray:
    """An English line of one glyph, `l`, 20 px wide and 60 px tall (taller than wide)."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.new("RGB", (20, 60), "white")
    ImageDraw.Draw(im).text(
        (10, 30), "l", fill="black", font=ImageFont.load_default(size=48), anchor="mm"
    )
    img = np.asarray(im)
    assert (img < 128).any()
    return img


def test_tall_english_line_is_not_transposed_but_japanese_is():
    img = _tall_l()
    en = prepare_line(img, 32, allows_vertical=get_profile("en").allows_vertical)
    assert not en.transposed and en.image_size == (60, 20)
    # 20 px at scale 32/60 is 11 columns, padded with white to 32
    assert en.scale == pytest.approx(32 / 60) and en.array.shape == (3, 32, 32)
    assert en.array[:, :, 11:].min() == pytest.approx(1.0)
    jp = prepare_line(img, 32, allows_vertical=get_profile("jp").allows_vertical)
    assert jp.transposed and jp.scale == pytest.approx(32 / 20) and jp.array.shape == (3, 32, 96)
    # Without a profile: by shape, as before.
    assert prepare_line(img, 32).transposed
    # Wide lines are horizontal whatever the profile says.
    wide = np.ascontiguousarray(img.transpose(1, 0, 2))
    assert not prepare_line(wide, 32, allows_vertical=True).transposed


def test_vertical_choice_follows_profile_and_meta():
    assert not line_is_vertical(60, 20, False)
    assert line_is_vertical(60, 20, True) and line_is_vertical(60, 20, None)
    assert not line_is_vertical(20, 60, True)
    # Explicit choice wins; else the model's meta; models from before `vertical`: by shape.
    assert resolve_allows_vertical(False, {"vertical": True}) is False
    assert resolve_allows_vertical(None, {"vertical": False}) is False
    assert resolve_allows_vertical(None, {}) is True
