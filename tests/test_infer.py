"""`effocr infer` parts that need no model: inputs, decoding, providers, writers, text."""

import argparse
import inspect
import json

import numpy as np
import pytest
from PIL import Image

from effocr.infer import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    CharResult,
    Engine,
    LineResult,
    OutputWriter,
    assemble_text,
    configure_parser,
    decode_image,
    expand_inputs,
    load_model_yaml,
    select_providers,
    uses_cuda,
)
from effocr.utils import EffOCRError


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "lines"
    d.mkdir()
    for name in ("b.png", "a.png", "c.jpg"):
        Image.new("RGB", (40, 12), "white").save(d / name)
    (d / "a.gt.txt").write_text("not an image\n")
    return d


# -- providers ---------------------------------------------------------------


def test_cpu_is_cpu_even_with_a_gpu():
    assert select_providers("cpu", [CUDA_PROVIDER, CPU_PROVIDER]) == [CPU_PROVIDER]


def test_auto_prefers_cuda_with_cpu_fallback():
    providers = select_providers("auto", ["TensorrtExecutionProvider", CUDA_PROVIDER, CPU_PROVIDER])
    assert providers == [(CUDA_PROVIDER, {"device_id": 0}), CPU_PROVIDER]
    assert uses_cuda(providers)


def test_auto_without_gpu_is_cpu():
    providers = select_providers("auto", ["AzureExecutionProvider", CPU_PROVIDER])
    assert providers == [CPU_PROVIDER]
    assert not uses_cuda(providers)


def _default_device() -> str:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    cli = parser.parse_args(["line.png", "--model", "bundle"]).device
    assert cli == inspect.signature(Engine).parameters["device"].default
    return cli


def test_default_device_is_auto():
    # `effocr infer` and `Engine` default to auto: CUDA when onnxruntime-gpu offers it.
    device = _default_device()
    assert device == "auto"
    assert select_providers(device, [CUDA_PROVIDER, CPU_PROVIDER]) == [
        (CUDA_PROVIDER, {"device_id": 0}),
        CPU_PROVIDER,
    ]
    assert select_providers(device, [CPU_PROVIDER]) == [CPU_PROVIDER]


@pytest.mark.parametrize("device", ["auto", "AUTO", " auto ", "", None])
def test_auto_spellings(device):
    assert uses_cuda(select_providers(device, [CUDA_PROVIDER, CPU_PROVIDER]))
    assert select_providers(device, [CPU_PROVIDER]) == [CPU_PROVIDER]


def test_cli_device_cpu_still_works():
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(["line.png", "--model", "bundle", "--device", "cpu"])
    assert select_providers(args.device, [CUDA_PROVIDER, CPU_PROVIDER]) == [CPU_PROVIDER]


def test_cuda_device_index():
    assert select_providers("cuda:1", [CUDA_PROVIDER, CPU_PROVIDER])[0] == (
        CUDA_PROVIDER,
        {"device_id": 1},
    )


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_provider_is_an_error(device):
    with pytest.raises(EffOCRError, match="CPUExecutionProvider"):
        select_providers(device, [CPU_PROVIDER])


@pytest.mark.parametrize("device", ["gpu", "cuda:x"])
def test_unknown_device(device):
    with pytest.raises(EffOCRError, match="device"):
        select_providers(device, [CUDA_PROVIDER, CPU_PROVIDER])


def test_installed_onnxruntime_answers():
    # The real ORT of this environment: `auto` must give a usable list either way.
    providers = select_providers("auto")
    assert providers[-1] == CPU_PROVIDER


# -- inputs --------------------------------------------------------------------


def test_expand_directory_sorted_images_only(images):
    assert [p.split("/")[-1] for p in expand_inputs([str(images)])] == ["a.png", "b.png", "c.jpg"]


def test_expand_glob_and_list_and_missing(images, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\nlines/b.png\n\nlines/missing.png\n")
    out = expand_inputs([str(images / "*.png"), f"@{listing}", str(images / "c.jpg")])
    names = [p.split("/")[-1] for p in out]
    assert names == ["a.png", "b.png", "b.png", "missing.png", "c.jpg"]
    # A missing file is kept, to be reported as a failed line.
    assert out[3] == str(tmp_path / "lines" / "missing.png")


@pytest.mark.parametrize("arg", ["@{d}/nope.txt", "{d}/*.tif"])
def test_expand_errors(images, arg):
    with pytest.raises(EffOCRError):
        expand_inputs([arg.format(d=images)])


def test_expand_empty_directory(tmp_path):
    with pytest.raises(EffOCRError, match="no image"):
        expand_inputs([str(tmp_path)])


# -- decoding ------------------------------------------------------------------


def test_decode_modes(tmp_path):
    Image.new("L", (30, 10), 200).save(tmp_path / "g.png")
    Image.new("1", (30, 10), 1).save(tmp_path / "b.png")
    Image.new("RGBA", (30, 10), (1, 2, 3, 4)).save(tmp_path / "a.png")
    Image.new("I;16", (30, 10), 60000).save(tmp_path / "d.png")
    for name in ("g.png", "b.png", "a.png", "d.png"):
        arr = decode_image(tmp_path / name)
        assert arr.shape == (10, 30, 3) and arr.dtype == np.uint8
    assert decode_image(tmp_path / "d.png").max() > 200
    assert decode_image(np.zeros((5, 7), np.uint8)).shape == (5, 7, 3)


def test_decode_keep_grey(tmp_path):
    Image.new("L", (30, 10), 200).save(tmp_path / "g.png")
    Image.new("1", (30, 10), 1).save(tmp_path / "b.png")
    Image.new("RGB", (30, 10), (9, 8, 7)).save(tmp_path / "c.png")
    grey = decode_image(tmp_path / "g.png", keep_grey=True)
    assert grey.shape == (10, 30) and grey.dtype == np.uint8 and (grey == 200).all()
    rgb = decode_image(tmp_path / "g.png")
    assert (rgb == grey[:, :, None]).all()  # the same pixels in every channel
    assert (decode_image(tmp_path / "b.png", keep_grey=True) == 255).all()
    assert decode_image(tmp_path / "c.png", keep_grey=True).shape == (10, 30, 3)
    Image.new("RGBA", (30, 10), (5, 5, 5, 255)).save(tmp_path / "grey_rgba.png")
    grey_rgba = decode_image(tmp_path / "grey_rgba.png", keep_grey=True)
    assert grey_rgba.shape == (10, 30) and (grey_rgba == 5).all()
    assert decode_image(np.full((5, 7), 3, np.uint8), keep_grey=True).shape == (5, 7)


def test_decode_bad_inputs(tmp_path):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    good = tmp_path / "good.png"
    Image.new("RGB", (60, 20), "white").save(good)
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:40])
    with pytest.raises(EffOCRError, match="not found"):
        decode_image(tmp_path / "missing.png")
    for name in ("corrupt.png", "truncated.png"):
        with pytest.raises(EffOCRError, match="image"):
            decode_image(tmp_path / name)
    with pytest.raises(EffOCRError, match="shape"):
        decode_image(np.zeros((0, 4, 3), np.uint8))


# -- bundle and text -----------------------------------------------------------


def test_incomplete_bundle_is_named(tmp_path):
    with pytest.raises(EffOCRError, match="not found"):
        load_model_yaml(tmp_path / "nope")
    (tmp_path / "model.yaml").write_text("format_version: 1\n")
    with pytest.raises(EffOCRError, match="missing localizer.onnx"):
        load_model_yaml(tmp_path)


def test_assemble_text():
    assert assemble_text(list("abcd"), np.array([False, False, True, False])) == "ab cd"
    assert assemble_text(list("abcd"), np.array([True, False, False, False])) == "abcd"
    assert assemble_text(list("日本語"), None) == "日本語"
    assert assemble_text([], None) == ""


def _result(image, text="ab"):
    chars = [
        CharResult([0, 0, 5, 10], "U+0061", "a", 0.9),
        CharResult([5, 0, 9, 10], "U+0062", "b", 0.8),
    ]
    return LineResult(
        image=image, text=text, chars=chars, words=[[0, 0, 9, 10]], width=9, height=10
    )


def test_writer_outputs(tmp_path):
    out = tmp_path / "out"
    writer = OutputWriter(out, coco=True)
    writer.write(_result("x/line.png", "ab"))
    writer.write(_result("y/line.png", "ba"))
    writer.write(LineResult(image="bad.png", error="not a readable image"))
    writer.close()
    records = [json.loads(ln) for ln in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["image"] for r in records] == ["x/line.png", "y/line.png", "bad.png"]
    assert records[0]["chars"][1] == {
        "bbox": [5, 0, 9, 10],
        "codepoints": "U+0062",
        "char": "b",
        "score": 0.8,
    }
    assert records[0]["words"] == [{"bbox": [0, 0, 9, 10]}]
    assert records[2]["error"] == "not a readable image" and records[2]["text"] is None
    # Same stem twice: the second text file is disambiguated, not overwritten.
    assert (out / "text" / "line.txt").read_text() == "ab\n"
    assert (out / "text" / "line__2.txt").read_text() == "ba\n"
    coco = json.loads((out / "predictions_coco.json").read_text())
    assert len(coco["images"]) == 2 and len(coco["annotations"]) == 6
    assert coco["annotations"][0]["bbox"] == [0, 0, 5, 10] and coco["annotations"][0]["text"] == "a"
    assert not list(out.glob(".*tmp"))


def test_writer_incomplete_run_leaves_no_jsonl(tmp_path):
    writer = OutputWriter(tmp_path, coco=False)
    writer.write(_result("a.png"))
    writer.close(complete=False)
    assert not (tmp_path / "predictions.jsonl").exists()
    assert not list(tmp_path.glob(".*tmp"))
