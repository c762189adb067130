"""Post-training int8 quantization of the recognizer and localizer ONNX models (ONNX Runtime's
own tools).

The recognizer dominates CPU inference time (one network run per glyph). Static quantization
(QDQ format, per-channel weights, uint8 activations calibrated on real glyph crops) cuts its
cost on x86 CPUs. `effocr.export` checks the quantized model against PyTorch with its own
tolerances (`export.quantized_min_cosine`, `export.quantized_top1_agreement`) before it goes
into a bundle, so a quantization that changes predictions is never shipped. The localizer is
quantized the same way, calibrated on whole lines, and shipped only when its boxes agree with
PyTorch's (`export.quantized_box_agreement`): without VNNI it is the larger part of a line's
time once the recognizer is int8.

Weights are int8 restricted to 7 bits (`reduce_range`, [-64, 64]) by default, the stem conv
that reads the image kept float. On x86 CPUs without VNNI (AVX2 or AVX-512 alone: AMD before
Zen 4, Intel server CPUs before Cascade Lake) ONNX Runtime's
u8 x s8 kernels use `vpmaddubsw`, which adds two u8*s8 products into an int16 and saturates:
with full 8-bit weights 255 * 127 * 2 overflows 32767 and embeddings go wrong (min cosine 0.51
on an EPYC), while VNNI CPUs accumulate in int32 and never see it. With 7-bit weights
255 * 64 * 2 = 32640 fits, so the model computes the same on every x86 CPU by construction
(`bench/int8_cpu_paths.py` shows both under an emulated AVX2 CPU).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from effocr.utils import EffOCRError

LOG = logging.getLogger(__name__)

# Largest |int8 weight| whose pairwise u8*s8 sums fit an int16 (non-VNNI x86 kernels).
INT16_SAFE_WEIGHT = 32767 // (2 * 255)  # 64
# weights= choices: (ONNX Runtime weight type, reduce_range, image-facing convs kept float).
# "int7" is what bundles ship; "int8" (the settings before it) and "uint8" (U8U8 kernels) are
# kept for bench/int8_cpu_paths.py, which compares them.
WEIGHT_CHOICES = {
    "int7": ("QInt8", True, True),
    "int8": ("QInt8", False, False),
    "uint8": ("QUInt8", False, False),
}


def quantize_recognizer(
    fp32_onnx: str | os.PathLike,
    out_onnx: str | os.PathLike,
    calibration: np.ndarray,
    batch_size: int = 32,
    weights: str = "int7",
) -> Path:
    """Write a static int8 (QDQ) copy of a recognizer ONNX model.

    Args:
        fp32_onnx: The float recognizer exported by `effocr.recognizer.model.export_onnx`.
        out_onnx: Where the quantized model goes.
        calibration: Preprocessed glyph crops (N, 3, S, S) float32 that set activation ranges;
            real crops of the kind inference sees (not renders).
        batch_size: Calibration batch size.
        weights: "int7" (int8 in [-64, 64]: no int16 saturation on non-VNNI CPUs), "int8" (full
            range, saturates there) or "uint8" (U8U8 kernels).

    Returns:
        `out_onnx` as a Path.

    Raises:
        EffOCRError: no calibration data, or ONNX Runtime's quantizer failed.
    """
    if calibration is None or len(calibration) == 0:
        raise EffOCRError("int8 quantization needs calibration crops, none were given")
    data = np.asarray(calibration, np.float32)
    batches = [data[start : start + batch_size] for start in range(0, len(data), batch_size)]
    _quantize_static(fp32_onnx, out_onnx, batches, weights)
    LOG.info(
        "quantized %s -> %s (%s weights, %d calibration crops)",
        fp32_onnx,
        out_onnx,
        weights,
        len(data),
    )
    return Path(out_onnx)


def quantize_localizer(
    fp32_onnx: str | os.PathLike, out_onnx: str | os.PathLike, lines: list[np.ndarray]
) -> Path:
    """Write a static int8 (QDQ, 7-bit weights) copy of a localizer ONNX model.

    Args:
        fp32_onnx: The float localizer (`effocr.localizer.export`), its metadata included.
        out_onnx: Where the quantized model goes; it keeps the source's metadata, which
            `LocalizerSession` reads.
        lines: Network inputs of real lines, (1, 3, H, W) float32 each (widths may differ),
            as `effocr.localizer.prepare.prepare_line` makes them.

    Raises:
        EffOCRError: no calibration lines, or ONNX Runtime's quantizer failed.
    """
    import onnx

    if not lines:
        raise EffOCRError("int8 quantization needs calibration lines, none were given")
    _quantize_static(fp32_onnx, out_onnx, [np.asarray(x, np.float32) for x in lines], "int7")
    quantized = onnx.load(str(out_onnx))
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(onnx.load(str(fp32_onnx)).metadata_props)
    onnx.save(quantized, str(out_onnx))
    LOG.info("quantized %s -> %s (%d calibration lines)", fp32_onnx, out_onnx, len(lines))
    return Path(out_onnx)


def _quantize_static(
    fp32_onnx: str | os.PathLike, out_onnx: str | os.PathLike, batches: list, weights: str
) -> None:
    """ONNX Runtime's static QDQ quantization of a one-input model, calibrated on `batches`."""
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if weights not in WEIGHT_CHOICES:
        raise EffOCRError(f"weights={weights!r}: expected one of {sorted(WEIGHT_CHOICES)}")
    weight_type, reduce_range, float_stem = WEIGHT_CHOICES[weights]
    session = ort.InferenceSession(str(fp32_onnx), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    class Reader(CalibrationDataReader):
        """Hands the calibration batches to the quantizer one at a time."""

        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            return {input_name: np.ascontiguousarray(batch, dtype=np.float32)}

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            # Shape inference and graph folding first, as ONNX Runtime's docs recommend.
            quant_pre_process(str(fp32_onnx), str(pre))
            # The 7th bit costs most in the stem, whose few weights per output (3 channels x
            # kernel) see the image itself: keeping it float took the min cosine of a trained en
            # recognizer from 0.96 to 0.99 (7-bit elsewhere) for a few percent of the time.
            exclude = _image_convs(pre) if float_stem else []
            quantize_static(
                str(pre),
                str(out_onnx),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=getattr(QuantType, weight_type),
                reduce_range=reduce_range,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=exclude,
            )
        except Exception as exc:  # the quantizer raises assorted exception types
            raise EffOCRError(f"{fp32_onnx}: int8 quantization failed: {exc}") from exc


def _image_convs(onnx_path: Path) -> list[str]:
    """Names of the Conv nodes that read a graph input (the image) directly."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    inputs = {i.name for i in graph.input}
    return [n.name for n in graph.node if n.op_type == "Conv" and n.input[0] in inputs]


def int16_unsafe_weights(onnx_path: str | os.PathLike) -> list[str]:
    """Int8 weights of a QDQ model that can saturate non-VNNI x86 kernels (empty: none can).

    A weight initializer feeding a Conv, Gemm or MatMul through DequantizeLinear is unsafe when
    it is int8 with some |w - zero_point| > `INT16_SAFE_WEIGHT`; uint8 weights take ONNX
    Runtime's U8U8 kernels, which widen to int16 before multiplying and cannot saturate.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    unsafe = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        if not {"Conv", "Gemm", "MatMul"} & set(consumers.get(node.output[0], [])):
            continue
        weight = numpy_helper.to_array(inits[node.input[0]])
        if weight.dtype != np.int8:
            continue
        zero = 0
        if len(node.input) > 2 and node.input[2] in inits:
            zero = numpy_helper.to_array(inits[node.input[2]]).astype(np.int32)
            if zero.ndim:  # per-channel zero points lie along the DequantizeLinear axis
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                shape = [1] * weight.ndim
                shape[axis] = -1
                zero = zero.reshape(shape)
        if np.abs(weight.astype(np.int32) - zero).max() > INT16_SAFE_WEIGHT:
            unsafe.append(node.input[0])
    return unsafe
