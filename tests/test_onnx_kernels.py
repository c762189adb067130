"""effocr.onnx_kernels: convolution kernels cropped to the taps that read real input."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from effocr.onnx_kernels import crop_conv_kernels, crop_conv_kernels_file, used_taps


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pads", "expected"),
    [
        (1, 3, 1, (1, 1), (1, 1)),  # 3x3 on a 1x1 map: the centre tap only
        (2, 3, 2, (1, 1), (1, 2)),  # stride 2 from 2 to 1: the last two taps
        (1, 5, 1, (2, 2), (2, 2)),
        (2, 5, 1, (2, 2), (1, 3)),
        (4, 3, 1, (1, 1), None),  # every tap reads input somewhere
        (8, 3, 2, (1, 1), None),
        (1, 1, 1, (0, 0), None),
        (3, 3, 1, (0, 0), None),  # no padding: nothing to crop
    ],
)
def test_used_taps(size, kernel, stride, pads, expected):
    assert used_taps(size, kernel, stride, *pads) == expected


class Convs(torch.nn.Module):
    """Convolutions whose kernels overhang small maps in every way the rewrite handles."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)  # 4x4 -> 2x2: all taps used
        self.b = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)  # 2x2 -> 1x1: taps 1..2
        self.c = torch.nn.Conv2d(8, 6, 3, padding=1)  # 1x1: centre tap
        self.d = torch.nn.Conv2d(6, 5, 5, padding=2)  # 1x1: centre of 5x5
        self.e = torch.nn.Conv2d(5, 4, (3, 1), padding=(1, 0))  # one axis only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.a(x))
        x = torch.relu(self.b(x))
        y = self.c(x)
        return self.e(torch.relu(self.d(y))) + y.mean(dim=1, keepdim=True)


def _export(model: torch.nn.Module, path, shape, dynamic_width: bool = False) -> None:
    dynamic = {"x": {0: "batch", 3: "width"}} if dynamic_width else {"x": {0: "batch"}}
    torch.onnx.export(
        model.eval(),
        (torch.zeros(*shape),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes=dynamic,
        opset_version=17,
        dynamo=False,
    )


def _kernels(path) -> dict[str, list[int]]:
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {
        n.name: list(inits[n.input[1]].shape[2:]) for n in model.graph.node if n.op_type == "Conv"
    }


def _run(path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[
        0
    ]


def test_cropped_model_computes_the_same(tmp_path):
    src, out = tmp_path / "full.onnx", tmp_path / "cropped.onnx"
    _export(Convs(), src, (2, 3, 4, 4))
    out.write_bytes(src.read_bytes())
    changed = crop_conv_kernels_file(out)
    before, after = _kernels(src), _kernels(out)
    assert len(changed) == 4
    assert sorted(after.values()) == sorted([[3, 3], [2, 2], [1, 1], [1, 1], [1, 1]])
    assert sum(np.prod(k) for k in after.values()) < sum(np.prod(k) for k in before.values())
    x = np.random.default_rng(1).standard_normal((5, 3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(_run(out, x), _run(src, x), rtol=1e-5, atol=1e-5)


def test_dynamic_axis_is_left_alone(tmp_path):
    """A line's width is dynamic: only the fixed height is cropped, and any width still runs."""
    src, out = tmp_path / "full.onnx", tmp_path / "cropped.onnx"
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 2, 3, padding=1)
    )
    _export(model, src, (1, 3, 1, 16), dynamic_width=True)
    proto = onnx.load(str(src))
    assert len(crop_conv_kernels(proto)) == 2
    onnx.save(proto, str(out))
    assert sorted(_kernels(out).values()) == [[1, 3], [1, 3]]
    for width in (7, 40):
        x = np.random.default_rng(width).standard_normal((1, 3, 1, width)).astype(np.float32)
        np.testing.assert_allclose(_run(out, x), _run(src, x), rtol=1e-5, atol=1e-5)


def test_nothing_to_crop_leaves_the_file(tmp_path):
    src = tmp_path / "full.onnx"
    _export(torch.nn.Conv2d(3, 4, 3, padding=1), src, (1, 3, 8, 8))
    data = src.read_bytes()
    assert crop_conv_kernels_file(src) == []
    assert src.read_bytes() == data


def test_recognizer_export_crops_its_last_stage(tmp_path):
    """The demo's encoder at 32 px: layer4 works on 1x1 maps, so its 3x3 kernels shrink, and
    ONNX Runtime still reproduces PyTorch."""
    from effocr.recognizer.model import RecognizerNet, export_model_onnx

    torch.manual_seed(0)
    net = RecognizerNet(
        "resnet10t", input_size=32, encoder_args={"channels": [8, 16, 24, 32], "stem_width": 8}
    ).eval()
    path = export_model_onnx(net, tmp_path / "recognizer.onnx", 17)
    kernels = _kernels(path)
    layer4 = {k: v for k, v in kernels.items() if "layer4" in k and "downsample" not in k}
    assert sorted(layer4.values()) == [[1, 1], [2, 2]], kernels
    x = np.random.default_rng(2).standard_normal((6, 3, 32, 32)).astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"images": x}
    )[0]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert float((got * want).sum(axis=1).min()) > 0.9999
