"""Preparation of a line image for the default localizer (torch-free, shared by all paths).

Resizing happens here in NumPy/PIL, never inside the graph, so training, PyTorch inference and
ONNX Runtime see the same pixels; `effocr.infer` imports this without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from effocr.data.coco import line_is_vertical
from effocr.utils import EffOCRError

# Normalisation of the network input (grey-level text: centre 0.5, scale 0.5).
MEAN = 0.5
STD = 0.5
PAD_VALUE = 255


@dataclass
class PreparedLine:
    """A line ready for the network and what is needed to map boxes back."""

    array: np.ndarray  # (3, H, W) float32, normalised
    scale: float  # network pixels per original pixel
    transposed: bool  # the image was transposed (vertical line)
    image_size: tuple[int, int]  # original (height, width)


def resolve_allows_vertical(allows_vertical: bool | None, meta: dict) -> bool:
    """`allows_vertical` when given, else the localizer's own setting (meta ``vertical``, the profile
    it was trained for; True for models and external layouts that do not say)."""
    return bool(meta.get("vertical", True)) if allows_vertical is None else bool(allows_vertical)


def prepare_line(
    img: np.ndarray, input_height: int, pad_multiple: int = 32, allows_vertical: bool | None = None
) -> PreparedLine:
    """Transpose vertical lines, resize to `input_height`, pad width with white, normalise.

    Args:
        img: (H, W, 3) uint8 RGB, or (H, W) uint8 grey.
        input_height: Height of the network input.
        pad_multiple: Width is padded to a multiple of this (the deepest stride).
        vertical: Whether vertical lines occur (see `line_is_vertical`): False never
            transposes; True or None transposes a line taller than wide.
    """
    img = np.asarray(img)
    # A grey line stays one channel until the end: resizing it is a third of the work, and
    # PIL resizes each band alike, so the result equals that of the RGB copy.
    if img.ndim == 3 and img.shape[2] in (3, 4):
        img = img[:, :, :3]
    elif img.ndim != 2:
        raise EffOCRError(f"line image must be HxWx3 uint8, got shape {img.shape}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise EffOCRError(f"line image must be HxWx3 uint8, got shape {img.shape}")
    h, w = img.shape[:2]
    transposed = line_is_vertical(h, w, allows_vertical)
    if transposed:
        img = np.ascontiguousarray(img.swapaxes(0, 1))
    scale = input_height / img.shape[0]
    new_w = max(1, int(round(img.shape[1] * scale)))
    resized = np.asarray(
        Image.fromarray(img.astype(np.uint8)).resize((new_w, input_height), Image.BILINEAR)
    )
    padded_w = max(pad_multiple, -(-new_w // pad_multiple) * pad_multiple)
    canvas = np.full((input_height, padded_w) + resized.shape[2:], PAD_VALUE, np.uint8)
    canvas[:, :new_w] = resized
    arr = (canvas.astype(np.float32) / 255.0 - MEAN) / STD
    if arr.ndim == 2:
        chw = np.empty((3,) + arr.shape, np.float32)
        chw[:] = arr
    else:
        chw = np.ascontiguousarray(arr.transpose(2, 0, 1))
    return PreparedLine(chw, scale, transposed, (h, w))
