"""The recognizer network: a timm encoder whose pooled features, L2-normalised, are the embedding.

`RecognizerNet.forward` normalises, so the exported ONNX model outputs unit vectors and the
FAISS inner-product index computes cosine similarity without further steps.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from effocr.recognizer.transforms import IMAGENET_MEAN, IMAGENET_STD
from effocr.utils import EffOCRError, atomic_path, load_checkpoint, save_checkpoint

LOG = logging.getLogger(__name__)


def create_encoder(
    name: str, init_checkpoint: str | Path | None = None, encoder_args: dict | None = None
) -> nn.Module:
    """Create a timm encoder without classifier (`num_classes=0`) and without downloads.

    Args:
        name: Any timm model name, e.g. ``mobilenetv3_small_050``.
        encoder_args: Keyword arguments of `timm.create_model` that shape the architecture,
            e.g. ``{"channels": [32, 64, 128, 256], "stem_width": 16}`` for a slimmer ResNet.
        init_checkpoint: Optional local file with a state dict (or a dict holding one under
            ``model``/``state_dict``) to initialise the encoder; keys may carry an ``encoder.``
            or ``net.`` prefix (the original's `enc_best.pth`). Classifier keys are ignored.

    Raises:
        EffOCRError: for an unknown model name or an unreadable or mismatched checkpoint.
    """
    import timm

    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in (encoder_args or {}).items()}
    try:
        encoder = timm.create_model(name, num_classes=0, pretrained=False, **kwargs)
    except RuntimeError as exc:
        raise EffOCRError(f"recognizer.encoder: unknown timm model {name!r}: {exc}") from exc
    except TypeError as exc:
        raise EffOCRError(
            f"recognizer.encoder_args: {sorted(kwargs)} do not fit timm model {name!r}: {exc}"
        ) from exc
    if init_checkpoint:
        path = Path(init_checkpoint)
        if not path.exists():
            raise EffOCRError(f"recognizer.init_checkpoint: {path}: file not found")
        state = load_checkpoint(path, "recognizer.init_checkpoint")
        if isinstance(state, dict):
            for key in ("model", "state_dict"):
                if isinstance(state.get(key), dict):
                    state = state[key]
                    break
        if not isinstance(state, dict):
            raise EffOCRError(f"{path}: no state dict found")
        cleaned = {}
        for key, value in state.items():
            for prefix in ("encoder.", "net.", "module."):
                if key.startswith(prefix):
                    key = key[len(prefix) :]
            cleaned[key] = value
        try:
            result = encoder.load_state_dict(cleaned, strict=False)
        except RuntimeError as exc:  # shape mismatches raise even with strict=False
            raise EffOCRError(
                f"{path}: checkpoint does not fit encoder {name!r}: {str(exc)[:300]}"
            ) from exc
        missing = list(result.missing_keys)
        if missing:
            raise EffOCRError(
                f"{path}: checkpoint does not fit encoder {name!r}: {len(missing)} missing keys, "
                f"e.g. {missing[:3]}"
            )
        LOG.info("initialised %s from %s (%d unused keys)", name, path, len(result.unexpected_keys))
    return encoder


def config_encoder_args(encoder_args: dict | None, language: str) -> dict:
    """`recognizer.encoder_args` of a config, the language profile's when null."""
    from effocr.profiles import get_profile

    return dict(get_profile(language).encoder_args if encoder_args is None else encoder_args)


class RecognizerNet(nn.Module):
    """Encoder + L2 normalisation. Input (N, 3, S, S) normalised images, output (N, D) unit vectors.

    Attributes:
        encoder_name: timm model name.
        encoder_args: Architecture arguments given to `timm.create_model`.
        input_size: Side S of the square input.
        mean, std: Normalisation the input was standardised with (see `transforms.preprocess`).
        dim: Embedding dimension D.
    """

    def __init__(
        self,
        encoder_name: str,
        input_size: int,
        init_checkpoint: str | Path | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        encoder_args: dict | None = None,
    ) -> None:
        super().__init__()
        self.encoder_args = dict(encoder_args or {})
        self.encoder = create_encoder(encoder_name, init_checkpoint, self.encoder_args)
        self.encoder_name = encoder_name
        self.input_size = int(input_size)
        cfg = getattr(self.encoder, "pretrained_cfg", None) or {}
        self.mean = tuple(mean or cfg.get("mean") or IMAGENET_MEAN)
        self.std = tuple(std or cfg.get("std") or IMAGENET_STD)
        with torch.no_grad():
            was_training = self.encoder.training
            self.encoder.eval()
            probe = self.encoder(torch.zeros(1, 3, self.input_size, self.input_size))
            self.encoder.train(was_training)
        self.dim = int(probe.shape[-1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Embed a batch of preprocessed glyph images as L2-normalised vectors."""
        feats = self.encoder(images)
        return F.normalize(feats.float(), p=2.0, dim=1)

    def metadata(self) -> dict[str, Any]:
        """What inference needs to rebuild the model and its input transform."""
        return {
            "encoder": self.encoder_name,
            "encoder_args": dict(self.encoder_args),
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "dim": self.dim,
        }


def save_recognizer(
    model: RecognizerNet,
    path: str | Path,
    config: dict,
    extra: dict | None = None,
    state_dict: dict | None = None,
) -> Path:
    """Write `model.pt` atomically: state dict, full config, `kind`, model metadata."""
    payload = {
        "kind": "recognizer",
        "model": state_dict if state_dict is not None else model.state_dict(),
        "config": config,
        **model.metadata(),
        **(extra or {}),
    }
    save_checkpoint(payload, path)
    return Path(path)


def load_recognizer(path: str | Path, device: str = "cpu") -> RecognizerNet:
    """Load a `model.pt` written by `save_recognizer`; the model is in eval mode on `device`.

    The returned model carries the file's dict (without weights) as ``model.info``.

    Raises:
        EffOCRError: if the file is missing or is not a recognizer checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise EffOCRError(f"{path}: recognizer model not found")
    return recognizer_from_checkpoint(load_checkpoint(path, "recognizer model"), path, device)


def recognizer_from_checkpoint(ckpt: Any, path: str | Path, device: str = "cpu") -> RecognizerNet:
    """The model of a checkpoint dict already read from `path` (see `load_recognizer`)."""
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "recognizer" or "model" not in ckpt:
        raise EffOCRError(f"{path}: not a recognizer model.pt (missing kind='recognizer'/model)")
    model = RecognizerNet(
        ckpt["encoder"],
        ckpt["input_size"],
        mean=tuple(ckpt["mean"]),
        std=tuple(ckpt["std"]),
        encoder_args=ckpt.get("encoder_args"),
    )
    model.load_state_dict(ckpt["model"])
    model.info = {k: v for k, v in ckpt.items() if k != "model"}
    return model.to(device).eval()


def export_onnx(model_pt: str | Path, out_path: str | Path, opset: int) -> Path:
    """Export a recognizer `model.pt` to ONNX (input ``images``, output ``embeddings``).

    The batch axis is dynamic; the output is already L2-normalised. Written atomically.
    """
    return export_model_onnx(load_recognizer(model_pt, device="cpu"), out_path, opset)


def export_model_onnx(model: RecognizerNet, out_path: str | Path, opset: int) -> Path:
    """`export_onnx` of a loaded model (on the CPU, in eval mode), its kernels cropped to the
    fixed input size (`effocr.onnx_kernels`: the last stage's 3x3 convolutions on 1x1 maps)."""
    from effocr.onnx_kernels import crop_conv_kernels_file

    size = model.input_size
    dummy = torch.zeros(2, 3, size, size)
    with atomic_path(out_path) as tmp:
        torch.onnx.export(
            model,
            (dummy,),
            str(tmp),
            input_names=["images"],
            output_names=["embeddings"],
            dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
            opset_version=int(opset),
            dynamo=False,
        )
        crop_conv_kernels_file(tmp)
    return Path(out_path)
