"""The one ONNX Runtime session factory: every ONNX model of effocr runs with these options.

`make_session` is used for the recognizer and the localizer of a bundle (`effocr.pipeline`),
by `effocr.localizer.runtime.LocalizerSession` and by the export's parity check, so the two
models of one pipeline never run with different settings. `select_providers` turns a device
name (``cpu``, ``cuda``, ``cuda:N``, ``auto``) into ORT execution providers. No torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from effocr.utils import EffOCRError

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def select_providers(device: str, available: Sequence[str] | None = None) -> list[Any]:
    """ONNX Runtime execution providers for `device` (``cpu``, ``cuda``, ``cuda:N``, ``auto``).

    Args:
        device: Requested device. ``auto`` takes CUDA when ORT offers it, else the CPU.
        available: Providers ORT offers; `onnxruntime.get_available_providers()` when None.

    Returns:
        Providers in priority order (the CPU provider last, as ORT's fallback for ops the GPU
        provider lacks); a CUDA entry carries its ``device_id``.

    Raises:
        EffOCRError: CUDA was asked for but this ONNX Runtime has no CUDA provider.
    """
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    device = (device or "auto").strip().lower()
    has_cuda = CUDA_PROVIDER in available
    if device == "cpu":
        return [CPU_PROVIDER]
    if device == "auto":
        return [(CUDA_PROVIDER, {"device_id": 0}), CPU_PROVIDER] if has_cuda else [CPU_PROVIDER]
    if device == "cuda" or device.startswith("cuda:"):
        if not has_cuda:
            raise EffOCRError(
                f"device {device!r} requested but ONNX Runtime offers only {list(available)} "
                "(install onnxruntime-gpu with a matching CUDA, or use --device cpu)"
            )
        index = device.partition(":")[2] or "0"
        if not index.isdigit():
            raise EffOCRError(f"bad device {device!r}: expected cuda or cuda:N")
        return [(CUDA_PROVIDER, {"device_id": int(index)}), CPU_PROVIDER]
    raise EffOCRError(f"unknown device {device!r}: expected cpu, cuda, cuda:N or auto")


def uses_cuda(providers: Sequence[Any]) -> bool:
    """Whether a provider list (as from `select_providers`) puts CUDA first."""
    first = providers[0] if providers else CPU_PROVIDER
    return (first[0] if isinstance(first, tuple) else first) == CUDA_PROVIDER


def make_session(
    path: str | os.PathLike,
    providers: Sequence[Any] | None = None,
    intra_op_threads: int = 1,
    *,
    what: str = "ONNX model",
):
    """An ORT session with a fixed number of intra-op threads and no inter-op pool.

    Args:
        path: The ONNX file.
        providers: ORT execution providers (`select_providers`); the CPU when None.
        intra_op_threads: ORT threads per model call (1 when a worker pool parallelises).
        what: What the model is, for the error message (``ONNX localizer``...).

    Raises:
        EffOCRError: ORT cannot load the file (missing, not ONNX, unsupported operators).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(intra_op_threads))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning worker threads burn the cores the other workers need.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Denormal floats make CPU convolutions crawl; flushing them changes nothing visible.
    opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    try:
        return ort.InferenceSession(
            str(path), sess_options=opts, providers=list(providers or [CPU_PROVIDER])
        )
    except Exception as exc:  # ORT raises its own exception types for bad models
        raise EffOCRError(f"{path}: cannot load {what}: {exc}") from exc
