"""Localizer backend registry.

A backend is a module in this package with ``create(classes, input_height, arch) -> nn.Module``
whose model's forward maps a normalised ``(B, 3, H, W)`` line batch to the raw rows decoded by
`effocr.localizer.postprocess` (the `effocr` ONNX layout).

Supported (tested): ``default`` (alias ``fcos``): torchvision FCOS heads on a small CNN + FPN,
see `effocr.localizer.model`.

Extension points, not shipped: Ultralytics YOLO (AGPL-3.0), MMDetection and Detectron2 are not
installable from PyPI in CI (see docs), so no backend module wraps them. A user who trains one
elsewhere exports it to ONNX and sets `localizer.onnx_model` + `localizer.onnx_layout`
(`yolov5`, `yolov8`, `boxes_scores_labels`; see `effocr.localizer.onnx_layouts`). A new
trainable backend is a module here registered in `BACKENDS`.
"""

from __future__ import annotations

import importlib
from typing import Any

from effocr.utils import EffOCRError

# name -> module implementing it
BACKENDS: dict[str, str] = {
    "default": "effocr.localizer.backends.fcos",
    "fcos": "effocr.localizer.backends.fcos",
}


def available_backends() -> list[str]:
    """Names accepted by `create_localizer`."""
    return sorted(BACKENDS)


def create_localizer(backend: str, **kw: Any) -> Any:
    """Create an untrained localizer model of `backend` (keyword arguments as the backend's)."""
    if backend not in BACKENDS:
        raise EffOCRError(
            f"unknown localizer backend {backend!r}; supported: {available_backends()} "
            "(external detectors: export to ONNX and set localizer.onnx_model/onnx_layout)"
        )
    return importlib.import_module(BACKENDS[backend]).create(**kw)
