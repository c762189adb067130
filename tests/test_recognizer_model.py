"""effocr.recognizer.model: unit-length embeddings, model.pt round trip, ONNX export parity."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from effocr.recognizer.model import (
    RecognizerNet,
    config_encoder_args,
    create_encoder,
    export_onnx,
    load_recognizer,
    save_recognizer,
)
from effocr.recognizer.transforms import preprocess_batch
from effocr.utils import EffOCRError

torch.set_num_threads(1)


def _glyphs(n: int, size: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = np.full((size, size // 2 + i, 3), 255, np.uint8)
        img[5 + i : 30, 3:10] = rng.integers(0, 80, size=3, dtype=np.uint8)
        out.append(img)
    return out


def test_forward_is_l2_normalised_and_metadata():
    torch.manual_seed(0)
    model = RecognizerNet("mobilenetv3_small_050", 32).eval()
    x = torch.from_numpy(preprocess_batch(_glyphs(3), 32, model.mean, model.std))
    with torch.no_grad():
        emb = model(x)
    assert emb.shape == (3, model.dim)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    meta = model.metadata()
    assert meta["encoder"] == "mobilenetv3_small_050" and meta["input_size"] == 32
    assert len(meta["mean"]) == 3 and meta["dim"] == model.dim


def test_save_load_roundtrip_and_errors(tmp_path):
    torch.manual_seed(0)
    model = RecognizerNet("mobilenetv3_small_050", 32).eval()
    path = save_recognizer(model, tmp_path / "model.pt", {"seed": 1}, extra={"pass": "pass1"})
    loaded = load_recognizer(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=1e-6)
    assert loaded.info["pass"] == "pass1" and loaded.info["config"] == {"seed": 1}
    torch.save({"kind": "localizer", "model": {}}, tmp_path / "other.pt")
    with pytest.raises(EffOCRError, match="not a recognizer"):
        load_recognizer(tmp_path / "other.pt")
    with pytest.raises(EffOCRError, match="not found"):
        load_recognizer(tmp_path / "missing.pt")
    with pytest.raises(EffOCRError, match="unknown timm model"):
        create_encoder("no_such_encoder_xyz")


def test_encoder_args_shape_the_encoder_and_round_trip(tmp_path):
    torch.manual_seed(0)
    args = {"channels": [16, 32, 64, 128], "stem_width": 16}
    slim = RecognizerNet("resnet10t", 32, encoder_args=args).eval()
    full = RecognizerNet("resnet10t", 32).eval()
    assert slim.dim == 128 and full.dim == 512
    n_params = sum(p.numel() for p in slim.parameters())
    assert n_params * 10 < sum(p.numel() for p in full.parameters())
    assert slim.metadata()["encoder_args"] == args
    loaded = load_recognizer(save_recognizer(slim, tmp_path / "model.pt", {}))
    assert loaded.encoder_args == args and loaded.dim == 128
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(slim(x), loaded(x), atol=1e-6)
    with pytest.raises(EffOCRError, match="encoder_args"):
        create_encoder("resnet10t", encoder_args={"no_such_argument": 3})


def test_encoder_args_default_to_the_profile():
    from effocr.config import load_config

    rcfg = load_config(None)["recognizer"]
    assert rcfg["encoder_args"] is None
    assert config_encoder_args(rcfg["encoder_args"], "en") == {
        "channels": [32, 64, 128, 256],
        "stem_width": 16,
    }
    assert config_encoder_args(rcfg["encoder_args"], "jp") == {}
    # An explicit value wins, {} included (plain resnet10t for English).
    assert config_encoder_args({}, "en") == {}
    assert config_encoder_args({"stem_width": 32}, "jp") == {"stem_width": 32}


def test_init_checkpoint_initialises_encoder(tmp_path):
    torch.manual_seed(1)
    source = RecognizerNet("mobilenetv3_small_050", 32)
    # The original's enc_best.pth prefixed keys with "net."; both forms load.
    torch.save(
        {f"net.{k}": v for k, v in source.encoder.state_dict().items()}, tmp_path / "enc.pth"
    )
    torch.manual_seed(2)
    model = RecognizerNet("mobilenetv3_small_050", 32, init_checkpoint=tmp_path / "enc.pth")
    for (k, a), b in zip(
        source.encoder.state_dict().items(), model.encoder.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    with pytest.raises(EffOCRError, match="does not fit"):
        create_encoder("lcnet_050", tmp_path / "enc.pth")


def test_onnx_export_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model = RecognizerNet("mobilenetv3_small_050", 32)
    # A trained-looking model: give BatchNorm non-trivial running statistics.
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 32, 32))
    model.eval()
    pt = save_recognizer(model, tmp_path / "model.pt", {})
    out = export_onnx(pt, tmp_path / "recognizer.onnx", opset=17)
    onnx.checker.check_model(onnx.load(str(out)))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["images"]
    assert [o.name for o in sess.get_outputs()] == ["embeddings"]
    x = preprocess_batch(_glyphs(5), 32, model.mean, model.std)  # batch 5: dynamic axis
    (onnx_emb,) = sess.run(None, {"images": x})
    with torch.no_grad():
        torch_emb = model(torch.from_numpy(x)).numpy()
    assert onnx_emb.shape == torch_emb.shape == (5, model.dim)
    assert np.abs(onnx_emb - torch_emb).max() < 1e-4
    assert np.allclose(np.linalg.norm(onnx_emb, axis=1), 1.0, atol=1e-5)
