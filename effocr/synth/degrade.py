"""Scanned-print look for synthetic lines (`synth.style: print`).

Real lines differ from clean renders in ways a recognizer trained on renders never sees: ink
that spreads or fades, strokes thickened or thinned by the printer and the scanner's threshold,
blur and reduced resolution, paper texture and specks, and binarisation (UW3 and most archive
scans are bilevel). `degrade_print` applies these to a line's ink coverage, each drawn from
the generators it is given, so the same seeds give the same pixels.

Only NumPy and Pillow are used: augraphy (the maintained document-degradation library) pulls in
OpenCV and numba and takes tenths of a second per line on this machine's CPUs, which thousands
of lines per training run cannot afford; the effects it offers for print on paper (ink bleed,
fading, noise, low-resolution resampling, binarisation) are these few array operations.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image

# Share of lines that come out bilevel (0/255), as binarised archive scans do.
BINARIZE_P = 0.45
# Share of lines rendered through a lower resolution (down- then up-sampled).
LOW_RES_P = 0.4
LOW_RES_FACTOR = (0.45, 0.9)
# Stroke weight: coverage blurred by up to this sigma (px, relative to a 32 px font) then
# thresholded at a random level: a low level spreads the ink, a high one thins it.
STROKE_SIGMA = (0.3, 1.1)
STROKE_LEVEL = (0.25, 0.55)
STROKE_P = 0.6
# Faded, uneven ink: coverage multiplied by a smooth field in [1 - FADE_DEPTH, 1].
FADE_P = 0.3
FADE_DEPTH = (0.15, 0.5)
# Specks of dirt or toner on the paper (per 10,000 px).
SPECK_P = 0.3
SPECK_DENSITY = (0.5, 4.0)
# Optical blur of the scanner (sigma px, relative to a 32 px font) and sensor noise.
BLUR_P = 0.5
BLUR_SIGMA = (0.3, 1.0)
NOISE_P = 0.6
NOISE_STD = (2.0, 12.0)


def _resize(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a float32 image (Pillow's 32-bit float mode)."""
    img = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32), mode="F")
    return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def _gaussian(arr: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (edges repeated), float32."""
    radius = max(1, int(3 * sigma + 0.5))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    out = arr.astype(np.float32)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        out = sum(
            k * np.take(padded, np.arange(i, i + n), axis=axis)
            for i, k in enumerate(kernel.tolist())
        )
    return out.astype(np.float32)


def _smooth_field(shape: tuple[int, int], scale: float, nprng: np.random.Generator) -> np.ndarray:
    """Low-frequency noise in [0, 1] with features about `scale` px wide."""
    h, w = shape
    gh, gw = max(2, int(h / scale) + 2), max(2, int(w / scale) + 2)
    field = _resize(nprng.random((gh, gw)), w, h)
    lo, hi = float(field.min()), float(field.max())
    return (field - lo) / (hi - lo) if hi > lo else np.zeros(shape, np.float32)


def degrade_print(
    alpha: np.ndarray,
    size: int,
    rng: random.Random,
    nprng: np.random.Generator,
) -> np.ndarray:
    """A grey (or bilevel) scan of a line from its ink coverage.

    Args:
        alpha: uint8 ink coverage (255 = full ink), H x W.
        size: The font size (px) the line was drawn at; blur and texture scale with it.
        rng: Draws which effects apply and their strengths.
        nprng: Draws the noise fields.

    Returns:
        uint8 grey image H x W, white paper and dark ink.
    """
    scale = size / 32.0
    cover = alpha.astype(np.float32) / 255.0
    h, w = cover.shape

    if rng.random() < STROKE_P:
        sigma = rng.uniform(*STROKE_SIGMA) * scale
        level = rng.uniform(*STROKE_LEVEL)
        soft = _gaussian(cover, sigma)
        # A ramp 0.15 wide around the level keeps the edges anti-aliased.
        cover = np.clip((soft - level) / 0.15 + 0.5, 0.0, 1.0)
    if rng.random() < FADE_P:
        depth = rng.uniform(*FADE_DEPTH)
        cover = cover * (1.0 - depth * _smooth_field((h, w), 6.0 * scale, nprng))

    paper = rng.uniform(205.0, 255.0)
    ink = rng.uniform(0.0, 70.0)
    texture = rng.uniform(0.0, 12.0)
    background = paper - texture * _smooth_field((h, w), 12.0 * scale, nprng)
    img = background - (background - ink) * cover

    if rng.random() < SPECK_P:
        n = int(h * w / 10_000 * rng.uniform(*SPECK_DENSITY))
        if n:
            ys = nprng.integers(0, h, n)
            xs = nprng.integers(0, w, n)
            radius = max(1, round(scale))
            for y, x in zip(ys, xs, strict=True):
                img[max(0, y - radius // 2) : y + radius, max(0, x - radius // 2) : x + radius] = (
                    ink
                )
    if rng.random() < LOW_RES_P:
        f = rng.uniform(*LOW_RES_FACTOR)
        small = _resize(img, max(1, round(w * f)), max(1, round(h * f)))
        img = _resize(small, w, h)
    if rng.random() < BLUR_P:
        img = _gaussian(img, rng.uniform(*BLUR_SIGMA) * scale)
    if rng.random() < NOISE_P:
        img = img + nprng.normal(0.0, rng.uniform(*NOISE_STD), img.shape)
    if rng.random() < BINARIZE_P:
        # Threshold between paper and ink, moved a little either way (scanner settings).
        t = ink + (paper - ink) * rng.uniform(0.4, 0.65)
        img = np.where(img >= t, 255.0, 0.0)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
