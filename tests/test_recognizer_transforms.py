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
    glyph_squares,
    pad_square,
    preprocess,
    render_augment,
    resample_weights,
    resize_square,
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


# --- RenderAugment: torchvision ops driven by a seeded NumPy generator ---------------------------

OPS = (
    "erode_dilate_p",
    "affine_p",
    "recolor_p",
    "color_jitter_p",
    "noise_p",
    "blur_p",
    "grayscale_p",
)


def _only(op: str | None, size: int = 32, **extra) -> RenderAugment:
    """An augmentation with every op off except `op` (forced on), plus `extra` parameters."""
    params = {k: 0.0 for k in OPS}
    if op is not None:
        params[op] = 1.0
    params.update(extra)
    return RenderAugment(size, resolve_augment(None, params))


def _glyph() -> np.ndarray:
    """A coloured glyph (dark blue stem, red bar, gray dot) on white, so every op shows."""
    img = np.full((40, 24, 3), 255, np.uint8)
    img[6:34, 10:14] = (20, 30, 120)
    img[18:22, 4:20] = (200, 30, 30)
    img[30:34, 16:20] = 128
    return img


def test_render_augment_same_seed_same_pixels_whatever_the_torch_rng_or_call_order():
    aug = render_augment(get_profile("en").augment, size=32)
    img = _glyph()
    import torch

    torch.manual_seed(0)
    first = [aug.augment_uint8(img, s) for s in range(10)]
    torch.manual_seed(1234)
    again = render_augment(get_profile("en").augment, size=32)
    for s in reversed(range(10)):  # a fresh instance, another order, another torch seed
        assert np.array_equal(again.augment_uint8(img, s), first[s])
        assert np.array_equal(aug(img, s), aug(img, s))


def test_render_augment_different_seeds_give_different_pixels():
    aug = render_augment(get_profile("en").augment, size=32)
    img = _glyph()
    outs = [aug.augment_uint8(img, s).tobytes() for s in range(20)]
    assert len(set(outs)) >= 18


def test_render_augment_all_ops_off_is_preprocess_pixel_for_pixel():
    img = _glyph()
    off = _only(None)
    for s in range(3):
        assert np.allclose(off(img, s), preprocess(img, 32), atol=1e-6)


@pytest.mark.parametrize("op", OPS)
def test_each_op_forced_on_changes_the_image_and_keeps_shape_and_dtype(op):
    # Size 64: the blur sigma scales with the input (0.1-2 px at 224), so at 32 px it is below
    # a third of a pixel and a true Gaussian leaves the uint8 pixels as they are.
    img = _glyph()
    aug = _only(op, size=64)
    base = _only(None, size=64).augment_uint8(img, 0)
    outs = [aug.augment_uint8(img, s) for s in range(8)]
    for out in outs:
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert sum(not np.array_equal(out, base) for out in outs) >= 4, op
    normed = aug(img, 3)
    assert normed.shape == (3, 64, 64) and normed.dtype == np.float32


def test_affine_fills_with_white():
    # A small glyph in the middle: translating it never uncovers the corners, which stay white.
    img = np.full((32, 32, 3), 255, np.uint8)
    img[12:20, 14:18] = 0
    aug = _only("affine_p", translate=0.2, scale=[0.9, 1.1], rotate=10.0)
    moved = 0
    for s in range(10):
        out = aug.augment_uint8(img, s)
        for corner in (out[:3, :3], out[:3, -3:], out[-3:, :3], out[-3:, -3:]):
            assert (corner == 255).all()
        moved += not np.array_equal(out, _only(None).augment_uint8(img, s))
    assert moved >= 8
    # No gray seam along the edges (pytorch/vision#8083): white paper stays exactly white.
    for s in range(10):
        assert (aug.augment_uint8(np.full((20, 12, 3), 255, np.uint8), s) == 255).all()
    # An all-black square: what the shift uncovers is filled white (torchvision's default is 0).
    black = np.zeros((32, 32, 3), np.uint8)
    out = _only("affine_p", translate=0.3, scale=[1.0, 1.0]).augment_uint8(black, 1)
    assert (out == 255).all(axis=2).sum() >= 10


def test_grayscale_gives_equal_channels():
    img = _glyph()
    params = dict(resolve_augment(get_profile("en").augment), grayscale_p=1.0)
    aug = RenderAugment(32, params)
    for s in range(10):
        out = aug.augment_uint8(img, s)
        assert np.array_equal(out[..., 0], out[..., 1])
        assert np.array_equal(out[..., 0], out[..., 2])


def test_erode_dilate_is_a_3x3_min_max_like_max_pool2d():
    import torch

    from effocr.recognizer.transforms import _erode_dilate

    img = np.random.default_rng(0).integers(0, 256, (17, 9, 3), dtype=np.uint8)
    t = torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()
    thin = torch.nn.functional.max_pool2d(t, 3, stride=1, padding=1)
    thick = 255 - torch.nn.functional.max_pool2d(255 - t, 3, stride=1, padding=1)
    assert np.array_equal(_erode_dilate(img, thicken=False), thin[0].permute(1, 2, 0).numpy())
    assert np.array_equal(_erode_dilate(img, thicken=True), thick[0].permute(1, 2, 0).numpy())
    # On a glyph: the min filter thickens the ink, the max filter thins it.
    bar = _bar()
    ink = (bar < 128).all(axis=2).sum()
    assert (_erode_dilate(bar, thicken=True) < 128).all(axis=2).sum() > ink
    assert (_erode_dilate(bar, thicken=False) < 128).all(axis=2).sum() < ink


def test_preprocess_does_not_import_torchvision():
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from effocr.recognizer.transforms import preprocess\n"
        "preprocess(np.zeros((4, 6, 3), np.uint8), 8)\n"
        "assert 'torchvision' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- glyph_squares: all crops of a line at once ------------------------------------------


def _line(h: int, w: int, channels: int, seed: int = 0) -> np.ndarray:
    """A smooth random line image (blurred noise, like ink strokes at scan resolution)."""
    rng = np.random.default_rng(seed)
    shape = (h // 3 + 1, w // 3 + 1) + ((channels,) if channels == 3 else ())
    small = rng.integers(0, 256, shape, dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def _crop_boxes(h: int, w: int, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x0 = np.sort(rng.integers(0, w - 2, n))
    x1 = np.minimum(x0 + rng.integers(1, int(1.4 * h), n), w)
    return np.stack([x0, np.zeros(n, int), x1, np.full(n, h)], axis=1)


def _reference(img: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    rgb = img if img.ndim == 3 else np.repeat(img[:, :, None], 3, axis=2)
    return np.stack(
        [resize_square(pad_square(rgb[y0:y1, x0:x1]), size) for x0, y0, x1, y1 in boxes]
    )


@pytest.mark.parametrize(
    "h,w,channels,size", [(40, 700, 3, 32), (37, 300, 1, 32), (64, 500, 3, 48)]
)
def test_glyph_squares_match_pad_and_resize(h, w, channels, size):
    img = _line(h, w, channels)
    boxes = _crop_boxes(h, w, 30)
    fast = glyph_squares(img, boxes, size)
    ref = _reference(img, boxes, size)[..., :channels]
    assert fast.shape == (30, size, size, channels) and fast.dtype == np.uint8
    diff = np.abs(fast.astype(int) - ref.astype(int))
    # PIL rounds to 8 bits between its two passes: at most one grey level apart, rarely.
    assert diff.max() <= 1 and (diff > 0).mean() < 0.15
    # Crops wider than the line is tall take the exact per-crop path.
    wide = (boxes[:, 2] - boxes[:, 0]) > h
    assert wide.any() and not diff[wide].any()


def test_glyph_squares_vertical_is_the_transposed_horizontal():
    img = _line(40, 300, 3).swapaxes(0, 1).copy()  # (300, 40): a vertical line
    boxes = _crop_boxes(40, 300, 12)[:, [1, 0, 3, 2]]  # full width, a y range each
    vert = glyph_squares(img, boxes, 32, vertical=True)
    ref = np.stack([resize_square(pad_square(img[y0:y1, x0:x1]), 32) for x0, y0, x1, y1 in boxes])
    assert vert.shape == (12, 32, 32, 3)
    assert np.abs(vert.astype(int) - ref.astype(int)).max() <= 1


def test_glyph_squares_white_padding_and_no_boxes():
    img = np.zeros((30, 100), np.uint8)  # black line, grey
    out = glyph_squares(img, np.array([[10, 0, 16, 30]]), 30)
    assert out.shape == (1, 30, 30, 1)
    assert (
        out[0, :, :10].min() == 255 and out[0, :, 14:16].max() == 0 and out[0, :, 22:].min() == 255
    )
    assert glyph_squares(img, np.zeros((0, 4), int), 32).shape == (0, 32, 32, 1)


def test_resample_weights_rows_sum_to_one():
    for n_in, n_out in ((40, 32), (32, 32), (20, 32), (301, 48)):
        weights = resample_weights(n_in, n_out)
        assert weights.shape == (n_out, n_in) and np.allclose(weights.sum(axis=1), 1.0)
    # The coefficients are PIL's: its float ("F") resize, which does not round, agrees.
    rng = np.random.default_rng(0)
    for n_in, n_out in ((40, 32), (7, 32), (301, 48)):
        row = rng.random(n_in).astype(np.float32)
        pil = np.asarray(Image.fromarray(row[None, :], mode="F").resize((n_out, 1), Image.BILINEAR))
        assert np.allclose(resample_weights(n_in, n_out) @ row, pil[0], atol=1e-5)
