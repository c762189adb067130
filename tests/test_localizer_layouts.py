"""External localizer ONNX layouts: small ONNX graphs emit each layout; boxes must come back
in original image coordinates through the real ONNX Runtime session."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from effocr.config import load_schema, validate_config
from effocr.localizer.onnx_layouts import ADAPTERS, external_meta
from effocr.localizer.runtime import LocalizerSession
from effocr.utils import EffOCRError

LINE = np.full((40, 1000, 3), 255, np.uint8)
CHAR = [100.0, 5.0, 120.0, 35.0]  # in the original 40 x 1000 line
WORD = [100.0, 2.0, 180.0, 38.0]


def _const_model(path, input_shape, outputs: dict[str, np.ndarray]) -> None:
    """An ONNX graph with one image input that emits fixed arrays (plus 0 x the input mean,
    so the outputs depend on the graph input)."""
    nodes = [helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0)]
    nodes.append(helper.make_node("Mul", ["mean", "zero"], ["nothing"]))
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    outs = []
    for name, arr in outputs.items():
        inits.append(numpy_helper.from_array(arr, f"{name}_value"))
        if arr.dtype == np.float32:
            nodes.append(helper.make_node("Add", [f"{name}_value", "nothing"], [name]))
        else:
            nodes.append(helper.make_node("Identity", [f"{name}_value"], [name]))
        elem = TensorProto.FLOAT if arr.dtype == np.float32 else TensorProto.INT64
        outs.append(helper.make_tensor_value_info(name, elem, list(arr.shape)))
    graph = helper.make_graph(
        nodes,
        "layout",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, input_shape)],
        outs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _cxcywh(box, scale, ox=0.0, oy=0.0):
    x0, y0, x1, y1 = (v * scale for v in box)
    return [(x0 + x1) / 2 + ox, (y0 + y1) / 2 + oy, x1 - x0, y1 - y0]


def _xyxy(box, scale):
    return [v * scale for v in box]


def _check(det):
    assert det.chars.tolist() == [pytest.approx(CHAR, abs=1e-3)]
    assert det.words.tolist() == [pytest.approx(WORD, abs=1e-3)]
    assert det.spaces.tolist() == [False]


def test_yolov8_letterbox(tmp_path):
    # fixed 640 x 640 input: letterbox scale 0.64, line centred vertically (offset 307 px)
    scale, oy = 0.64, (640 - 26) // 2
    rows = [
        _cxcywh(CHAR, scale, oy=oy) + [0.9, 0.05],
        _cxcywh(WORD, scale, oy=oy) + [0.1, 0.8],
        _cxcywh([500, 5, 520, 35], scale, oy=oy) + [0.1, 0.05],  # below threshold
    ]
    out = np.asarray(rows, np.float32).T[None]  # (1, 4 + nc, N)
    _const_model(tmp_path / "y8.onnx", [1, 3, 640, 640], {"output0": out})
    session = LocalizerSession(tmp_path / "y8.onnx", external_meta("yolov8", 32))
    _check(session.detect(LINE))


def test_yolov5_dynamic_width(tmp_path):
    # dynamic width: the line is resized to input_height 32 (scale 0.8), no letterbox
    rows = [
        _cxcywh(CHAR, 0.8) + [0.9, 1.0, 0.0],
        _cxcywh(WORD, 0.8) + [0.9, 0.0, 1.0],
        _cxcywh(WORD, 0.8) + [0.2, 0.0, 1.0],  # objectness x class too low
    ]
    out = np.asarray(rows, np.float32)[None]  # (1, N, 5 + nc)
    _const_model(tmp_path / "y5.onnx", [1, 3, 32, "width"], {"output": out})
    session = LocalizerSession(tmp_path / "y5.onnx", external_meta("yolov5", input_height=32))
    _check(session.detect(LINE))


def test_detectron2_boxes_labels_scores(tmp_path):
    boxes = np.asarray([_xyxy(WORD, 0.8), _xyxy(CHAR, 0.8)], np.float32)
    outputs = {
        "boxes": boxes,
        "labels": np.asarray([1, 0], np.int64),  # Detectron2 order: boxes, classes, scores
        "scores": np.asarray([0.7, 0.95], np.float32),
    }
    _const_model(tmp_path / "d2.onnx", [1, 3, 32, "width"], outputs)
    _check(LocalizerSession(tmp_path / "d2.onnx", external_meta("detectron2", 32)).detect(LINE))


def test_mmdet_dets_and_labels(tmp_path):
    dets = np.asarray([[*_xyxy(CHAR, 0.8), 0.95], [*_xyxy(WORD, 0.8), 0.7]], np.float32)[None]
    outputs = {"dets": dets, "labels": np.asarray([[0, 1]], np.int64)}
    _const_model(tmp_path / "mm.onnx", [1, 3, 32, "width"], outputs)
    _check(LocalizerSession(tmp_path / "mm.onnx", external_meta("mmdet", 32)).detect(LINE))


def test_wrong_layout_is_a_clear_error(tmp_path):
    with pytest.raises(EffOCRError, match="unknown localizer ONNX layout"):
        external_meta("yolov99", 32)
    out = np.zeros((1, 3, 7), np.float32)
    _const_model(tmp_path / "bad.onnx", [1, 3, 32, "width"], {"output": out})
    session = LocalizerSession(tmp_path / "bad.onnx", external_meta("yolov8", 32))
    with pytest.raises(EffOCRError, match="yolov8 layout expects"):
        session.detect(LINE)
    with pytest.raises(EffOCRError, match="no effocr metadata"):
        LocalizerSession(tmp_path / "bad.onnx")


def test_schema_lists_every_layout():
    # config/schema.yaml names the layouts so that a typo fails at config validation
    prop = load_schema()["properties"]["localizer"]["properties"]["onnx_layout"]
    assert prop["enum"] == sorted(ADAPTERS)
    assert prop["default"] in ADAPTERS
    with pytest.raises(EffOCRError, match="onnx_layout"):
        validate_config({"localizer": {"onnx_layout": "yolov99"}})
