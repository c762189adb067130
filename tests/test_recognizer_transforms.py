"""effocr.recognizer.transforms: the deterministic preprocess and the seeded render augmentation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from effocr.profiles import get_profile
from effocr.recognizer.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RenderAugment,
    pad_square,
    preprocess,
    render_augment,
    resolve_augment,
)
from effocr.utils import EffOCRError


def _bar(h: int = 40, w: int = 10) -> np.ndarray:
    img = np.full((h, w, 3), 255, np.uint8)
    img[:, w // 2 - 1 : w // 2 + 1] = 0
    return img


def _denorm(chw: np.ndarray) -> np.ndarray:
    """Back to 0..255 HxWx3 for checking pixels."""
    mean = np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, np.float32)[:, None, None]
    return ((chw * std + mean) * 255).transpose(1, 2, 0)


def test_preprocess_shape_normalisation_and_determinism():
    out = preprocess(_bar(), 32)
    assert out.shape == (3, 32, 32) and out.dtype == np.float32 and out.flags.c_contiguous
    assert np.array_equal(out, preprocess(_bar(), 32))
    white = preprocess(np.full((8, 8, 3), 255, np.uint8), 16)
    expected = (1.0 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    assert np.allclose(white[:, 0, 0], expected, atol=1e-5)


def test_pad_square_centres_the_glyph():
    sq = pad_square(_bar(40, 10))
    assert sq.shape == (40, 40, 3)
    cols = np.nonzero(sq.min(axis=(0, 2)) < 128)[0]
    # Ink at columns 4-5 of the 10-wide crop, padded by 15 on each side.
    assert cols.tolist() == [19, 20]
    wide = pad_square(np.zeros((10, 30, 3), np.uint8))
    rows = np.nonzero(wide.min(axis=(1, 2)) < 128)[0]
    assert rows.min() == 10 and rows.max() == 19  # vertical padding split evenly
    # Full-height crops keep their vertical position: a low mark stays low.
    comma = np.full((40, 10, 3), 255, np.uint8)
    comma[32:38, 4:6] = 0
    px = _denorm(preprocess(comma, 40))
    ink_rows = np.nonzero(px.min(axis=(1, 2)) < 128)[0]
    assert ink_rows.min() >= 30


def test_preprocess_accepts_gray_rgba_and_pil_and_rejects_bad_input():
    gray = np.full((20, 10), 255, np.uint8)
    rgba = np.zeros((20, 10, 4), np.uint8)  # fully transparent -> white
    a = preprocess(gray, 16)
    assert np.allclose(a, preprocess(rgba, 16), atol=1e-6)
    assert np.allclose(a, preprocess(Image.fromarray(gray), 16), atol=1e-6)
    with pytest.raises(EffOCRError, match="uint8"):
        preprocess(np.zeros((4, 4, 3), np.float32), 16)
    with pytest.raises(EffOCRError, match="non-empty"):
        preprocess(np.zeros((0, 4, 3), np.uint8), 16)


def test_render_augment_is_seeded_and_changes_pixels():
    aug = render_augment(get_profile("en").augment, size=32)
    img = _bar()
    a, b = aug(img, 123), aug(img, 123)
    assert a.shape == (3, 32, 32) and a.dtype == np.float32
    assert np.array_equal(a, b)
    outs = [aug(img, s) for s in range(20)]
    assert sum(not np.allclose(o, preprocess(img, 32)) for o in outs) >= 15
    # With every probability at 0 the augmentation is exactly the deterministic transform.
    off = {k: 0.0 for k in resolve_augment(None) if k.endswith("_p")}
    assert np.allclose(
        RenderAugment(32, resolve_augment(None, off))(img, 5), preprocess(img, 32), atol=1e-6
    )


def test_unknown_augment_key_is_an_error():
    with pytest.raises(EffOCRError, match="recognizer.augment.*blurr_p"):
        resolve_augment(get_profile("en").augment, {"blurr_p": 0.5})
