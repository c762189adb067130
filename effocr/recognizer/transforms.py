"""Glyph image transforms: the one deterministic `preprocess` and the render augmentation.

`preprocess` is the only transform a glyph sees outside training (validation, hard-negative
mining, the reference index, ONNX export checks and inference), so every stage agrees on the
pixels. Training renders go through `RenderAugment`, which applies random distortions around
the same steps (pad to a white square, resize, normalise). Both are NumPy/PIL only so that
inference does not need torchvision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from effocr.utils import EffOCRError

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
        if img.mode in ("RGBA", "LA", "P"):
            img = img.convert("RGBA")
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img)
        img = np.asarray(img.convert("RGB"))
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

    The original used torchvision, kornia and albumentations; this is the same list of
    operations with PIL and NumPy, driven by a NumPy generator so that a sample's pixels depend
    only on its seed (repeatable on CPU, independent of DataLoader workers):
    erode/dilate (PIL min/max filter at the render's own resolution), random affine with white
    fill, background recolouring, colour jitter, Gaussian noise, Gaussian blur, grayscale.
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
        rng = np.random.default_rng(seed)
        p = self.p
        arr = as_rgb_array(img)
        pil = Image.fromarray(arr)
        if rng.random() < p["erode_dilate_p"]:
            # MinFilter thickens dark ink (dilates the glyph), MaxFilter thins it.
            filt = ImageFilter.MinFilter(3) if rng.random() < 0.5 else ImageFilter.MaxFilter(3)
            pil = pil.filter(filt)
        arr = resize_square(pad_square(np.asarray(pil)), self.size)
        pil = Image.fromarray(arr)
        if rng.random() < p["affine_p"]:
            pil = self._affine(pil, rng)
        arr = np.asarray(pil).astype(np.float32)
        if rng.random() < p["recolor_p"]:
            # Paper-coloured background: recolour near-white pixels.
            mask = arr.min(axis=2) >= 0.8 * 255
            arr[mask] = rng.uniform(150, 255, size=3).astype(np.float32)
        if rng.random() < p["color_jitter_p"]:
            arr = self._color_jitter(arr, rng)
        if rng.random() < p["noise_p"]:
            sigma = np.sqrt(rng.uniform(10.0, 150.0))
            arr = arr + rng.normal(0.0, sigma, size=arr.shape).astype(np.float32)
        arr = np.clip(arr, 0, 255).round().astype(np.uint8)
        if rng.random() < p["blur_p"]:
            # Sigma relative to a 224 px input as in the original (0.1-2 px at 224).
            radius = float(rng.uniform(0.1, 2.0)) * self.size / 224.0
            arr = np.asarray(Image.fromarray(arr).filter(ImageFilter.GaussianBlur(radius)))
        if rng.random() < p["grayscale_p"]:
            gray = np.asarray(Image.fromarray(arr).convert("L"))
            arr = np.repeat(gray[:, :, None], 3, axis=2)
        return np.ascontiguousarray(arr)

    def _affine(self, pil: Image.Image, rng: np.random.Generator) -> Image.Image:
        size = pil.size[0]
        translate = float(self.p["translate"])
        lo, hi = self.p["scale"]
        scale = float(rng.uniform(lo, hi))
        angle = float(rng.uniform(-self.p["rotate"], self.p["rotate"])) if self.p["rotate"] else 0.0
        tx = float(rng.uniform(-translate, translate)) * size
        ty = float(rng.uniform(-translate, translate)) * size
        # Inverse map about the centre: PIL's affine takes output -> input coefficients.
        c = (size - 1) / 2.0
        theta = np.deg2rad(angle)
        cos, sin = np.cos(theta) / scale, np.sin(theta) / scale
        a, b = cos, sin
        d, e = -sin, cos
        cx, cy = c + tx, c + ty
        coeffs = (a, b, c - a * cx - b * cy, d, e, c - d * cx - e * cy)
        return pil.transform(
            pil.size, Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=(255, 255, 255)
        )

    @staticmethod
    def _color_jitter(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # ColorJitter(brightness=0.5, contrast=0.3, saturation=0.3, hue-like channel shift 0.3).
        arr = arr * float(rng.uniform(0.5, 1.5))
        mean = arr.mean()
        arr = (arr - mean) * float(rng.uniform(0.7, 1.3)) + mean
        gray = arr.mean(axis=2, keepdims=True)
        arr = (arr - gray) * float(rng.uniform(0.7, 1.3)) + gray
        arr = arr + rng.uniform(-0.3, 0.3, size=3).astype(np.float32) * 40.0
        return arr


def render_augment(
    profile_augment: dict | None,
    size: int = 64,
    overrides: dict | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> RenderAugment:
    """Build the render augmentation from a profile's `augment` dict and config overrides."""
    return RenderAugment(size, resolve_augment(profile_augment, overrides), mean, std)
