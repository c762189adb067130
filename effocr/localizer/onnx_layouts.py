"""Output layouts of localizer ONNX models: ours and ones exported by other detectors.

`localizer.onnx_layout` names the layout of `localizer.onnx_model`:

* ``effocr``: the default backend's raw rows ``(1, N, 6)`` (see `effocr.localizer.model`);
  decoded with the level metadata stored in the ONNX file.
* ``yolov8``: Ultralytics YOLOv8/v11 raw head ``(1, 4 + nc, N)``: ``cx, cy, w, h`` then class
  scores (already sigmoid), no NMS in the graph.
* ``yolov5``: YOLOv5 ``(1, N, 5 + nc)``: ``cx, cy, w, h, objectness``, class scores; the score
  is objectness x class score.
* ``boxes_scores_labels`` (aliases ``detectron2``, ``mmdet``): NMS-ed outputs as Detectron2's
  and MMDeploy's exports give them: boxes ``(N, 4)`` or ``(1, N, 4)`` ``x0, y0, x1, y1`` (or
  MMDeploy's ``dets (1, N, 5)`` with the score last), float scores ``(N,)`` and integer labels
  ``(N,)``. Outputs are recognised by shape and dtype, so their order does not matter.

Class index 0 is ``char`` and 1 is ``word`` in every external layout (the original EffOCR's
category order). External models get the original's input: YOLO layouts a 640 x 640 letterbox
(grey 114, RGB / 255) when the graph's input size is fixed, else the line resized to
`input_height`; Detectron2/MMDetection layouts float pixels 0-255 (BGR for Detectron2, RGB
for MMDetection), normalisation being part of their exported graphs. Vertical lines are not
transposed for external models (they were trained on what they see).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from effocr.localizer import postprocess as pp
from effocr.utils import EffOCRError

# Preprocessing defaults of each layout (see the module docstring).
LAYOUT_INPUT: dict[str, dict] = {
    "effocr": {
        "scale": None,
        "bgr": False,
        "letterbox": False,
        "pad_value": 255,
        "transpose": True,
    },
    "yolov8": {
        "scale": 1 / 255,
        "bgr": False,
        "letterbox": True,
        "pad_value": 114,
        "transpose": False,
    },
    "yolov5": {
        "scale": 1 / 255,
        "bgr": False,
        "letterbox": True,
        "pad_value": 114,
        "transpose": False,
    },
    "boxes_scores_labels": {
        "scale": 1.0,
        "bgr": False,
        "letterbox": False,
        "pad_value": 0,
        "transpose": False,
    },
    "detectron2": {
        "scale": 1.0,
        "bgr": True,
        "letterbox": False,
        "pad_value": 0,
        "transpose": False,
    },
    "mmdet": {"scale": 1.0, "bgr": False, "letterbox": False, "pad_value": 0, "transpose": False},
}

Adapter = Callable[
    [list[np.ndarray], dict, tuple[int, int]], tuple[np.ndarray, np.ndarray, np.ndarray]
]


def _yolov8(outputs: list[np.ndarray], meta: dict, input_hw: tuple[int, int]):
    out = np.asarray(outputs[0], np.float32)
    if out.ndim != 3 or out.shape[1] < 5:
        raise EffOCRError(f"yolov8 layout expects (1, 4+nc, N), got {out.shape}")
    rows = out[0].T  # (N, 4 + nc)
    cls = rows[:, 4:]
    labels = cls.argmax(1)
    scores = cls[np.arange(len(rows)), labels]
    return _cxcywh(rows[:, :4]), scores, labels


def _yolov5(outputs: list[np.ndarray], meta: dict, input_hw: tuple[int, int]):
    out = np.asarray(outputs[0], np.float32)
    if out.ndim != 3 or out.shape[2] < 6:
        raise EffOCRError(f"yolov5 layout expects (1, N, 5+nc), got {out.shape}")
    rows = out[0]
    cls = rows[:, 5:]
    labels = cls.argmax(1)
    scores = rows[:, 4] * cls[np.arange(len(rows)), labels]
    return _cxcywh(rows[:, :4]), scores, labels


def _cxcywh(b: np.ndarray) -> np.ndarray:
    return np.stack(
        [
            b[:, 0] - b[:, 2] / 2,
            b[:, 1] - b[:, 3] / 2,
            b[:, 0] + b[:, 2] / 2,
            b[:, 1] + b[:, 3] / 2,
        ],
        axis=1,
    )


def _boxes_scores_labels(outputs: list[np.ndarray], meta: dict, input_hw: tuple[int, int]):
    boxes = scores = labels = None
    for out in outputs:
        arr = np.asarray(out)
        if arr.ndim >= 2 and arr.shape[-1] in (4, 5) and np.issubdtype(arr.dtype, np.floating):
            flat = arr.reshape(-1, arr.shape[-1])
            boxes = flat[:, :4]
            if arr.shape[-1] == 5:
                scores = flat[:, 4]
        elif np.issubdtype(arr.dtype, np.integer):
            labels = arr.reshape(-1)
        elif np.issubdtype(arr.dtype, np.floating) and scores is None:
            scores = arr.reshape(-1)
    if boxes is None or scores is None or labels is None:
        shapes = [(np.asarray(o).shape, str(np.asarray(o).dtype)) for o in outputs]
        raise EffOCRError(
            f"boxes_scores_labels layout expects boxes (N,4)/dets (N,5), float scores and "
            f"integer labels; got outputs {shapes}"
        )
    if not len(boxes) == len(scores) == len(labels):
        raise EffOCRError(
            f"boxes_scores_labels layout: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels"
        )
    return boxes.astype(np.float32), scores.astype(np.float32), labels.astype(np.int64)


def _effocr(outputs: list[np.ndarray], meta: dict, input_hw: tuple[int, int]):
    return pp.decode_effocr(
        outputs[0],
        input_hw,
        meta["levels"],
        len(meta["classes"]),
        score_threshold=meta.get("score_threshold"),
    )


ADAPTERS: dict[str, Adapter] = {
    "effocr": _effocr,
    "yolov8": _yolov8,
    "yolov5": _yolov5,
    "boxes_scores_labels": _boxes_scores_labels,
    "detectron2": _boxes_scores_labels,
    "mmdet": _boxes_scores_labels,
}


def get_adapter(layout: str) -> Adapter:
    """The decoder of `layout` (outputs, meta, input (h, w)) -> boxes, scores, labels."""
    try:
        return ADAPTERS[layout]
    except KeyError as exc:
        raise EffOCRError(
            f"unknown localizer ONNX layout {layout!r}; known: {sorted(ADAPTERS)}"
        ) from exc


def external_meta(layout: str, input_height: int, **thresholds) -> dict:
    """Metadata for an ONNX localizer exported elsewhere (thresholds from the config)."""
    get_adapter(layout)
    if layout == "effocr":
        raise EffOCRError("the effocr layout's metadata is stored in its ONNX file")
    meta = {
        "backend": "onnx",
        "layout": layout,
        "input_height": int(input_height),
        "pad_multiple": 32,
        "classes": ["char", "word"],  # label 0 char, 1 word; other labels are ignored
        **LAYOUT_INPUT[layout],
    }
    meta.update(thresholds)
    return meta
