"""Glyph image transforms: the one deterministic `preprocess` and the render augmentation.

`preprocess` is the only transform a glyph sees outside training (validation, hard-negative
mining, the reference index, ONNX export checks and inference), so every stage agrees on the
pixels. Training renders go through `RenderAugment`, which applies random distortions around
the same steps (pad to a white square, resize, normalise). `preprocess` is NumPy/PIL only so
that inference does not need torchvision; `RenderAugment` imports torchvision when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from effocr.utils import EffOCRError, to_rgb

# ImageNet statistics: timm's default for the encoders we use (pretrained_cfg mean/std).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Keys understood by `RenderAugment` (the profile's `augment` dict, overridable in the config).
AUGMENT_DEFAULTS: dict[str, Any] = {
    "affine_p": 0.7,
    "translate": 0.1,
    "scale": [0.9, 1.1],
    "rotate": 0.0,
    "erode_dilate_p": 0.5,
    "color_jitter_p": 0.5,
    "recolor_p": 0.25,
    "noise_p": 0.25,
    "blur_p": 0.3,
    "grayscale_p": 0.2,
}


def as_rgb_array(img: np.ndarray | Image.Image) -> np.ndarray:
    """Return an HxWx3 uint8 array from a PIL image or a gray/RGB/RGBA array (RGBA on white)."""
    if isinstance(img, Image.Image):
        img = np.asarray(to_rgb(img))
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise EffOCRError(f"glyph image must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        arr = (arr[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise EffOCRError(f"glyph image must be a non-empty HxWx3 array, got shape {arr.shape}")
    return arr


def pad_square(arr: np.ndarray) -> np.ndarray:
    """Pad an HxWx3 uint8 image with white to a square, the glyph centred.

    Centring (rather than the original's right/bottom padding) keeps a full-height crop's
    vertical position, which is what separates `,` from `'`, and treats both sides alike.
    """
    h, w = arr.shape[:2]
    side = max(h, w)
    if h == w:
        return arr
    out = np.full((side, side, 3), 255, dtype=np.uint8)
    top = (side - h) // 2
    left = (side - w) // 2
    out[top : top + h, left : left + w] = arr
    return out


def resize_square(arr: np.ndarray, size: int) -> np.ndarray:
    """Resize a square uint8 image to `size` x `size` (bilinear with antialiasing, as PIL does)."""
    if arr.shape[0] == size and arr.shape[1] == size:
        return arr
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR))


@lru_cache(maxsize=256)
def resample_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float32 weights of PIL's antialiased bilinear resize along one axis.

    The same coefficients as Pillow's `precompute_coeffs` (triangle filter widened by the
    downscaling factor), so a matrix product reproduces `Image.resize(..., BILINEAR)` up to
    PIL's fixed-point rounding.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = filterscale
    out = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        x = np.arange(lo, hi, dtype=np.float64)
        w = np.clip(1.0 - np.abs((x - center + 0.5) / filterscale), 0.0, None)
        total = w.sum()
        if total > 0:
            out[i, lo:hi] = w / total
    return out.astype(np.float32)


def glyph_squares(
    img: np.ndarray, boxes: np.ndarray, size: int, vertical: bool = False
) -> np.ndarray:
    """`resize_square(pad_square(crop))` of many full-line-height crops of one line, at once.

    The crops of a horizontal line share its height H, so every crop no wider than H pads to
    the same H x H square and one pair of resampling matrices serves them all: a gather and
    two batched matrix products replace a PIL call per glyph. Wider crops (and crops that do
    not span the full height) go through `pad_square`/`resize_square` one by one. Pixels
    match PIL's within one grey level (PIL rounds in fixed point).

    Args:
        img: (H, W, C) or (H, W) uint8 line image.
        boxes: (N, 4) integer ``x0, y0, x1, y1`` crop boxes.
        size: Output side.
        vertical: The crops span the full line width (a vertical line); the same work is done
            on the transposed line, which pad/resize commute with.

    Returns:
        (N, size, size, C) uint8 (C = 1 for a 2-D image).
    """
    arr = img[:, :, None] if img.ndim == 2 else img
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    if vertical:
        squares = glyph_squares(arr.swapaxes(0, 1), boxes[:, [1, 0, 3, 2]], size)
        return np.ascontiguousarray(squares.swapaxes(1, 2))
    h, w, c = arr.shape
    out = np.empty((len(boxes), size, size, c), np.uint8)
    if len(boxes) == 0:
        return out
    widths = boxes[:, 2] - boxes[:, 0]
    fast = (boxes[:, 1] == 0) & (boxes[:, 3] == h) & (widths <= h) & (widths > 0)
    for i in np.flatnonzero(~fast):
        x0, y0, x1, y1 = boxes[i].tolist()
        crop = arr[y0:y1, x0:x1]
        # pad_square/resize_square work on RGB; a grey line's crop keeps one channel.
        rgb = crop if c == 3 else np.repeat(crop[:, :, :1], 3, axis=2)
        out[i] = resize_square(pad_square(rgb), size)[:, :, :c]
    rows = np.flatnonzero(fast)
    if len(rows) == 0:
        return out
    # Column j of crop i's padded square: image column x0 + j - left, or white (column w).
    x0 = boxes[rows, 0][:, None]
    left = ((h - widths[rows]) // 2)[:, None]
    j = np.arange(h)[None, :]
    src = x0 + j - left
    inside = (j >= left) & (j < left + widths[rows][:, None])
    cols = np.where(inside, src, w)
    weights = resample_weights(h, size)  # (size, H)
    # Every fast crop spans rows 0..H, so the vertical pass is one product for the whole
    # line; a white column is appended for the padding. (PIL resizes horizontally first and
    # rounds in between, hence differences of one grey level.)
    line = np.empty((c, size, w + 1), np.float32)
    line[:, :, w] = 255.0
    planes = np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)  # (C, H, W)
    line[:, :, :w] = np.matmul(weights, planes)
    n = len(rows)
    squares = line[:, :, cols]  # (C, size, n, H)
    horiz = np.ascontiguousarray(squares).reshape(-1, h) @ weights.T  # (C*size*n, size)
    np.floor(horiz + 0.5, out=horiz)
    np.clip(horiz, 0, 255, out=horiz)
    out[rows] = horiz.reshape(c, size, n, size).transpose(2, 1, 3, 0)
    return out


def normalize(
    arr: np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """HxWx3 uint8 -> 3xHxW float32, scaled to [0, 1] and standardised per channel."""
    scale = 1.0 / (255.0 * np.asarray(std, dtype=np.float32))
    shift = np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)
    out = arr.astype(np.float32) * scale - shift
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def preprocess(
    img: np.ndarray | Image.Image,
    size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """The deterministic glyph transform: pad to a white square, resize, normalise.

    Args:
        img: HxWx3 uint8 RGB array (gray, RGBA and PIL images are accepted too).
        size: Side of the square model input.
        mean: Per-channel mean the encoder expects (timm `pretrained_cfg`, else ImageNet).
        std: Per-channel standard deviation.

    Returns:
        A float32 array of shape (3, size, size).
    """
    return normalize(resize_square(pad_square(as_rgb_array(img)), size), mean, std)


def preprocess_batch(
    images: Sequence[np.ndarray | Image.Image],
    size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """`preprocess` for several images, stacked to an (N, 3, size, size) float32 array."""
    out = np.empty((len(images), 3, size, size), dtype=np.float32)
    for i, img in enumerate(images):
        out[i] = preprocess(img, size, mean, std)
    return out


def resolve_augment(profile_augment: dict | None, overrides: dict | None = None) -> dict:
    """Merge the augmentation defaults, the profile's values and the config overrides.

    Raises:
        EffOCRError: for an unknown key, so that a typo does not silently do nothing.
    """
    merged = dict(AUGMENT_DEFAULTS)
    for source, values in (("profile", profile_augment), ("recognizer.augment", overrides)):
        for key, value in (values or {}).items():
            if key not in AUGMENT_DEFAULTS:
                raise EffOCRError(
                    f"{source}: unknown augmentation key {key!r}; known: {sorted(AUGMENT_DEFAULTS)}"
                )
            merged[key] = value
    return merged


class RenderAugment:
    """Random distortions of a rendered glyph, then the same pad/resize/normalise as `preprocess`.

    The image operations are library ops, torchvision's `transforms.v2.functional` (the
    original used torchvision, kornia and albumentations), so that each behaves as documented
    rather than as a hand-written approximation: `affine` (bilinear, white outside),
    `adjust_brightness`/`adjust_contrast`/`adjust_saturation`/`adjust_hue` in random order (as
    `ColorJitter`), `gaussian_blur` and `rgb_to_grayscale`. Erode/dilate is a 3x3 min/max at the
    render's own resolution (the result of `max_pool2d`, computed in NumPy as it is faster on
    glyph-sized images); background recolouring and Gaussian noise are plain tensor arithmetic.

    Every random parameter (whether an op fires, its factors, the noise itself) is drawn from a
    NumPy generator seeded per sample, never from torch's global RNG, so that a sample's pixels
    depend only on its seed: repeatable on CPU and independent of DataLoader workers and of the
    order in which samples are drawn. torchvision is imported only here, when the augmentation
    runs, so that `preprocess` and inference do not need it.
    """

    def __init__(
        self,
        size: int,
        params: dict | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.size = size
        self.p = resolve_augment(params)
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __call__(self, img: np.ndarray | Image.Image, seed: int) -> np.ndarray:
        """Augment one glyph image; returns a float32 (3, size, size) array."""
        return normalize(self.augment_uint8(img, seed), self.mean, self.std)

    def augment_uint8(self, img: np.ndarray | Image.Image, seed: int) -> np.ndarray:
        """The augmented, padded and resized glyph as a uint8 (size, size, 3) array."""
        import torch
        from torchvision.transforms.v2 import functional as F

        rng = np.random.default_rng(seed)
        p = self.p
        arr = as_rgb_array(img)
        if rng.random() < p["erode_dilate_p"]:
            arr = _erode_dilate(arr, thicken=bool(rng.random() < 0.5))
        # Pad and resize exactly as `preprocess` does, so that with every op off the two agree.
        arr = resize_square(pad_square(arr), self.size)
        # One conversion to a float (3, S, S) tensor in [0, 1]; every op below works on it.
        x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)).div_(
            255.0
        )
        if rng.random() < p["affine_p"]:
            x = self._affine(x, rng, F)
        if rng.random() < p["recolor_p"]:
            # Paper-coloured background: recolour near-white pixels.
            colour = torch.from_numpy(rng.uniform(150, 255, size=3).astype(np.float32) / 255.0)
            mask = x.amin(dim=0, keepdim=True) >= 0.8
            x = torch.where(mask, colour[:, None, None], x)
        if rng.random() < p["color_jitter_p"]:
            x = _color_jitter(x, rng, F)
        if rng.random() < p["noise_p"]:
            sigma = float(np.sqrt(rng.uniform(10.0, 150.0))) / 255.0
            noise = rng.standard_normal(size=tuple(x.shape), dtype=np.float32) * sigma
            x = (x + torch.from_numpy(noise)).clamp_(0.0, 1.0)
        if rng.random() < p["blur_p"]:
            # Sigma relative to a 224 px input as in the original (0.1-2 px at 224).
            sigma = float(rng.uniform(0.1, 2.0)) * self.size / 224.0
            k = 2 * max(1, int(np.ceil(3.0 * sigma))) + 1
            x = F.gaussian_blur(x, [k, k], [sigma, sigma])
        if rng.random() < p["grayscale_p"]:
            x = F.rgb_to_grayscale(x, num_output_channels=3)
        out = x.mul(255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)
        return np.ascontiguousarray(out.permute(1, 2, 0).numpy())

    def _affine(self, x: Any, rng: np.random.Generator, F: Any) -> Any:
        """Random scale/rotation/translation about the centre, bilinear, white outside.

        Applied to the negative (ink high, paper 0) with torchvision's zero padding, then
        inverted back: `affine(..., fill=[1, 1, 1])` blends the fill through a bilinearly
        sampled mask that is applied twice, which leaves a gray seam along the image edge even
        where the fill matches the paper (pytorch/vision#8083).
        """
        size = x.shape[-1]
        translate = float(self.p["translate"])
        lo, hi = self.p["scale"]
        scale = float(rng.uniform(lo, hi))
        angle = float(rng.uniform(-self.p["rotate"], self.p["rotate"])) if self.p["rotate"] else 0.0
        tx = float(rng.uniform(-translate, translate)) * size
        ty = float(rng.uniform(-translate, translate)) * size
        negative = F.affine(
            1.0 - x,
            angle=angle,
            translate=[tx, ty],
            scale=scale,
            shear=[0.0, 0.0],
            interpolation=F.InterpolationMode.BILINEAR,
        )
        return negative.neg_().add_(1.0)


def _erode_dilate(arr: np.ndarray, thicken: bool) -> np.ndarray:
    """3x3 min (thickens dark ink) or max (thins it) filter of an HxWx3 uint8 image.

    Separable (rows, then columns), ignoring pixels outside the image: the same result as
    `torch.nn.functional.max_pool2d(x, 3, 1, 1)` (or its negation), at a fraction of its cost
    on one CPU thread for a glyph-sized uint8 image.
    """
    op = np.minimum if thicken else np.maximum
    rows = arr.copy()
    op(rows[1:], arr[:-1], out=rows[1:])
    op(rows[:-1], arr[1:], out=rows[:-1])
    out = rows.copy()
    op(out[:, 1:], rows[:, :-1], out=out[:, 1:])
    op(out[:, :-1], rows[:, 1:], out=out[:, :-1])
    return out


def _color_jitter(x: Any, rng: np.random.Generator, F: Any) -> Any:
    """ColorJitter(brightness=0.5, contrast=0.3, saturation=0.3, hue=0.3), seeded by `rng`."""
    order = rng.permutation(4)
    brightness = float(rng.uniform(0.5, 1.5))
    contrast = float(rng.uniform(0.7, 1.3))
    saturation = float(rng.uniform(0.7, 1.3))
    hue = float(rng.uniform(-0.3, 0.3))
    for op in order:
        if op == 0:
            x = F.adjust_brightness(x, brightness)
        elif op == 1:
            x = F.adjust_contrast(x, contrast)
        elif op == 2:
            x = F.adjust_saturation(x, saturation)
        elif (x.amax(dim=0) - x.amin(dim=0)).max() > 0:
            # Skipped on an achromatic image (a plain render), where it is the identity anyway.
            x = F.adjust_hue(x, hue)
    return x


def render_augment(
    profile_augment: dict | None,
    size: int,
    overrides: dict | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> RenderAugment:
    """Build the render augmentation from a profile's `augment` dict and config overrides."""
    return RenderAugment(size, resolve_augment(profile_augment, overrides), mean, std)
