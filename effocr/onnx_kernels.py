"""Crop convolution kernels to the taps that can reach the input (an exact ONNX graph rewrite).

The recognizer sees glyph squares of one fixed size, so the spatial size of every feature map
is known when it is exported. Deep in the network the maps are tiny: the last stage of the
demo's ResNet works on 1x1 maps, where a 3x3 convolution with padding 1 multiplies eight of
its nine taps by padding zeros. ONNX Runtime computes them anyway (one im2col and a GEMM nine
times too wide): that convolution alone was 16 % of the int8 recognizer's time on an AVX2 CPU.

`crop_conv_kernels` keeps, per spatial axis, only the taps that read real input for some
output position, and shifts the padding so that every output reads the same inputs with the
same weights. The products left out were products with zero padding, so the result is the
same function (summed in another order in float32, identical in exact arithmetic), and int8
quantization afterwards sees the same numbers: its padding is the zero point, which is zero.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["crop_conv_kernels", "crop_conv_kernels_file", "used_taps"]


def conv_outputs(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int) -> int:
    """Outputs along one axis of a convolution (no dilation)."""
    return (size + pad_begin + pad_end - kernel) // stride + 1


def used_taps(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int):
    """The taps ``(first, last)`` of a 1-D convolution that read real input, or None.

    None when every tap is used, or when the used taps would not give an equivalent
    convolution with the same number of outputs (then the node is left as it is).
    """
    out = conv_outputs(size, kernel, stride, pad_begin, pad_end)
    if out < 1:
        return None
    taps = sorted(
        {t for j in range(out) for t in range(kernel) if 0 <= j * stride - pad_begin + t < size}
    )
    if not taps or (taps[0] == 0 and taps[-1] == kernel - 1):
        return None
    first, last = taps[0], taps[-1]
    if taps != list(range(first, last + 1)) or first > pad_begin:
        return None
    return first, last


def _attr(node, name: str, default):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _set_ints(node, name: str, values: list[int]) -> None:
    import onnx

    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(onnx.helper.make_attribute(name, [int(v) for v in values]))


def _spatial_shapes(model) -> dict[str, list[int | None]]:
    """Spatial (H, W) of every 4-D tensor, None along an axis that is not static (a line's
    width)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    shapes: dict[str, list[int | None]] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == 4:
            shapes[vi.name] = [
                int(d.dim_value) if d.HasField("dim_value") else None for d in dims[2:]
            ]
    return shapes


def crop_conv_kernels(model):
    """Crop the 2-D Conv nodes of an ONNX model in place; returns the names of those changed.

    Only convolutions whose weight is an initializer used by no other node, with explicit
    padding (`auto_pad` NOTSET) and no dilation are considered, along the axes whose size is
    static.
    """
    from onnx import numpy_helper

    shapes = _spatial_shapes(model)
    inits = {init.name: init for init in model.graph.initializer}
    users: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    changed: list[str] = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        if users.get(node.input[1], 0) != 1 or node.input[0] not in shapes:
            continue
        if _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if weight.ndim != 4:
            continue
        kernel = list(weight.shape[2:])
        strides = list(_attr(node, "strides", [1, 1]))
        pads = list(_attr(node, "pads", [0, 0, 0, 0]))
        if list(_attr(node, "dilations", [1, 1])) != [1, 1]:
            continue
        size = shapes[node.input[0]]
        spans = [
            None
            if size[a] is None
            else used_taps(size[a], kernel[a], strides[a], pads[a], pads[a + 2])
            for a in (0, 1)
        ]
        if spans == [None, None]:
            continue
        new_kernel, new_pads = list(kernel), list(pads)
        slices = [slice(None), slice(None)]
        for a, span in enumerate(spans):
            if span is None:
                slices.append(slice(None))
                continue
            first, last = span
            out = conv_outputs(size[a], kernel[a], strides[a], pads[a], pads[a + 2])
            k = last - first + 1
            begin = pads[a] - first
            end = max(0, (out - 1) * strides[a] + k - size[a] - begin)
            if conv_outputs(size[a], k, strides[a], begin, end) != out:
                break
            new_kernel[a], new_pads[a], new_pads[a + 2] = k, begin, end
            slices.append(slice(first, last + 1))
        else:
            cropped = np.ascontiguousarray(weight[tuple(slices)])
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(cropped, node.input[1]))
            _set_ints(node, "kernel_shape", new_kernel)
            _set_ints(node, "pads", new_pads)
            changed.append(node.name or node.output[0])
    return changed


def crop_conv_kernels_file(path: str | os.PathLike) -> list[str]:
    """`crop_conv_kernels` on an ONNX file, rewritten in place when anything changed."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    changed = crop_conv_kernels(model)
    if changed:
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return changed
