"""The default backend: torchvision FCOS heads on a small BatchNorm CNN + FPN (`LineDetector`)."""

from __future__ import annotations

from effocr.localizer.model import LineDetector


def create(classes: list[str], input_height: int, arch: dict | None = None) -> LineDetector:
    """An untrained `LineDetector` for `classes` (``char``, optionally ``word``)."""
    return LineDetector(list(classes), input_height, arch)
