"""Export of the default localizer to ONNX (used by the bundle export, `effocr.export`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from effocr.localizer.model import load_model, localizer_meta
from effocr.localizer.runtime import META_KEY
from effocr.utils import atomic_path

__all__ = ["export_onnx", "localizer_meta"]

# Width of the example input traced at export; the width axis is dynamic.
EXAMPLE_WIDTH = 256


def export_onnx(model_pt: str | os.PathLike, out_path: str | os.PathLike, opset: int) -> Path:
    """Export `model.pt` to ONNX: input ``image (1, 3, H, W)``, output ``raw (1, N, 6)``.

    The width is dynamic, the height fixed (`input_height`): lines are resized in NumPy first
    (`model.prepare_line`). Exported with ``dynamo=False`` (the TorchScript exporter), and the
    localizer metadata is stored in the file (key `effocr_localizer_meta`), so the ONNX model
    can be used on its own by `LocalizerSession`.
    """
    return export_model_onnx(*load_model(model_pt), out_path, opset)


def export_model_onnx(
    model: torch.nn.Module, meta: dict, out_path: str | os.PathLike, opset: int
) -> Path:
    """`export_onnx` of a loaded `LineDetector` and its metadata."""
    return export_traced(
        model,
        meta,
        out_path,
        opset,
        output="raw",
        dynamic_axes={"image": {3: "width"}, "raw": {1: "rows"}},
        meta_key=META_KEY,
    )


def export_traced(
    model: torch.nn.Module,
    meta: dict,
    out_path: str | os.PathLike,
    opset: int,
    *,
    output: str,
    dynamic_axes: dict,
    meta_key: str,
) -> Path:
    """Trace `model` on a ``(1, 3, input_height, EXAMPLE_WIDTH)`` image with the TorchScript
    exporter, crop its kernels to the fixed height (`effocr.onnx_kernels`), store `meta` under
    `meta_key` in the file, check it and write it atomically (the localizer's and the line
    detector's export)."""
    import onnx

    from effocr.onnx_kernels import crop_conv_kernels

    model.eval()
    x = torch.zeros(1, 3, meta["input_height"], EXAMPLE_WIDTH)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        torch.onnx.export(
            model,
            (x,),
            str(tmp),
            input_names=["image"],
            output_names=[output],
            dynamic_axes=dynamic_axes,
            opset_version=int(opset),
            dynamo=False,
        )
        proto = onnx.load(str(tmp))
        crop_conv_kernels(proto)
        entry = proto.metadata_props.add()
        entry.key = meta_key
        entry.value = json.dumps(meta)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return out_path
