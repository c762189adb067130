"""ONNX Runtime inference of the localizer, with the same pre/post-processing as PyTorch."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from effocr.data.coco import line_is_vertical
from effocr.localizer import postprocess as pp
from effocr.localizer.onnx_layouts import external_meta, get_adapter
from effocr.localizer.postprocess import DEFAULT_THRESHOLDS
from effocr.localizer.prepare import PreparedLine, prepare_line, resolve_allows_vertical
from effocr.utils import EffOCRError

# Key of the ONNX metadata entry holding our models' `meta` (JSON).
META_KEY = "effocr_localizer_meta"


def read_onnx_meta(onnx_path: str | os.PathLike) -> dict | None:
    """The `meta` stored in an ONNX file by `effocr.localizer.export.export_onnx`, if any."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except FileNotFoundError as exc:
        raise EffOCRError(f"{onnx_path}: ONNX localizer not found") from exc
    for prop in model.metadata_props:
        if prop.key == META_KEY:
            return json.loads(prop.value)
    return None


class LocalizerSession:
    """An ONNX localizer: ``detect(img) -> Detections`` in original image coordinates.

    Args:
        onnx_path: The ONNX model.
        meta: Localizer metadata (`localizer_meta`, or `onnx_layouts.external_meta` for an
            external model); None reads it from the ONNX file.
        threads: ONNX Runtime intra-op threads.
        providers: ONNX Runtime providers (default CPU).
        session: An ORT session of `onnx_path` already made by
            `effocr.onnx_session.make_session`; None makes one (`threads`, `providers`).
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike,
        meta: dict | None = None,
        threads: int = 1,
        providers: list[Any] | None = None,
        *,
        session: Any = None,
    ) -> None:
        from effocr.onnx_session import make_session

        if meta is None:
            meta = read_onnx_meta(onnx_path)
            if meta is None:
                raise EffOCRError(
                    f"{onnx_path}: no effocr metadata in the ONNX file; name its layout "
                    "(localizer.onnx_layout) to use an external model"
                )
        self.meta = {**DEFAULT_THRESHOLDS, **meta}
        self.layout = self.meta.get("layout", "effocr")
        self.adapter = get_adapter(self.layout)
        # The same session options as every other ONNX model (`effocr.onnx_session`).
        if session is None:
            session = make_session(onnx_path, providers, threads, what="ONNX localizer")
        self.session = session
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        # A fixed (H, W) input means the model wants a letterbox of that size.
        self.fixed_hw = (
            (int(shape[2]), int(shape[3]))
            if len(shape) == 4 and all(isinstance(d, int) for d in shape[2:])
            else None
        )

    def _prepare(
        self, img: np.ndarray, allows_vertical: bool = True
    ) -> tuple[np.ndarray, PreparedLine, tuple[float, float]]:
        """Network input, the mapping back, and the (x, y) letterbox offset in input pixels.

        `allows_vertical` (vertical lines occur) only matters to the effocr layout, which transposes
        vertical lines; external models see every line as it is.
        """
        if self.layout == "effocr":
            prepared = prepare_line(
                img, self.meta["input_height"], self.meta.get("pad_multiple", 32), allows_vertical
            )
            return prepared.array[None], prepared, (0.0, 0.0)
        img = np.asarray(img)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        img = img[:, :, :3].astype(np.uint8)
        h, w = img.shape[:2]
        pad = self.meta.get("pad_value", 114)
        if self.fixed_hw is not None and self.meta.get("letterbox", True):
            th, tw = self.fixed_hw
            scale = min(th / h, tw / w)
            nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
            canvas = np.full((th, tw, 3), pad, np.uint8)
            top, left = (th - nh) // 2, (tw - nw) // 2
            canvas[top : top + nh, left : left + nw] = np.asarray(
                Image.fromarray(img).resize((nw, nh), Image.BILINEAR)
            )
            offset = (float(left), float(top))
        else:
            th = self.fixed_hw[0] if self.fixed_hw else self.meta["input_height"]
            scale = th / h
            nw = max(1, round(w * scale))
            mult = self.meta.get("pad_multiple", 32)
            tw = self.fixed_hw[1] if self.fixed_hw else max(mult, -(-nw // mult) * mult)
            nw = min(nw, tw)
            canvas = np.full((th, tw, 3), pad, np.uint8)
            canvas[:, :nw] = np.asarray(Image.fromarray(img).resize((nw, th), Image.BILINEAR))
            offset = (0.0, 0.0)
        arr = canvas[:, :, ::-1] if self.meta.get("bgr") else canvas
        arr = arr.astype(np.float32) * float(self.meta.get("scale") or 1.0)
        prepared = PreparedLine(arr.transpose(2, 0, 1).copy(), scale, False, (h, w))
        return prepared.array[None], prepared, offset

    def raw(self, img: np.ndarray, allows_vertical: bool | None = None) -> list[np.ndarray]:
        """The model's raw outputs for one line (for parity checks); `allows_vertical` as in `detect`."""
        x, _, _ = self._prepare(img, resolve_allows_vertical(allows_vertical, self.meta))
        return self.session.run(None, {self.input_name: x})

    def detect(self, img: np.ndarray, allows_vertical: bool | None = None) -> pp.Detections:
        """Detect characters (and words) in one HxWx3 uint8 line image.

        Args:
            img: The line.
            allows_vertical: Whether vertical lines occur (the language profile's `allows_vertical`): False
                never transposes nor reads top to bottom (English), True treats a line taller
                than wide as vertical; None takes the model's meta (``vertical``, else True).
        """
        allows_vertical = resolve_allows_vertical(allows_vertical, self.meta)
        x, prepared, (ox, oy) = self._prepare(img, allows_vertical)
        outputs = self.session.run(None, {self.input_name: x})
        boxes, scores, labels = self.adapter(outputs, self.meta, tuple(x.shape[2:]))
        boxes = np.asarray(boxes, np.float32).copy()
        boxes[:, [0, 2]] -= ox
        boxes[:, [1, 3]] -= oy
        h, w = prepared.image_size
        return pp.postprocess(
            boxes,
            scores,
            labels,
            self.meta["classes"],
            image_size=(h, w),
            scale=prepared.scale,
            transposed=prepared.transposed,
            vertical=line_is_vertical(h, w, allows_vertical),
            **{k: self.meta[k] for k in DEFAULT_THRESHOLDS},
        )


def open_localizer(
    path: str | os.PathLike,
    layout: str | None = None,
    threads: int = 1,
    thresholds: dict | None = None,
    *,
    input_height: int,
) -> Any:
    """A localizer with ``.detect`` and ``.meta`` from a `model.pt` or an ONNX file.

    An ONNX file exported by effocr carries its metadata; an external one needs `layout`.
    """
    path = Path(path)
    if path.suffix == ".pt":
        from effocr.localizer.model import load_localizer

        loc = load_localizer(path)
        loc.meta.update(thresholds or {})
        return loc
    meta = None
    if layout not in (None, "effocr"):
        meta = external_meta(layout, input_height, **(thresholds or {}))
    session = LocalizerSession(path, meta, threads=threads)
    session.meta.update(thresholds or {})
    return session
