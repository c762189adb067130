"""What every bench/ script records about the machine it ran on.

Speed figures (and int8 accuracy, whose kernels differ by instruction set) mean little without
the CPU they came from, so each script puts `cpu_info()` in its JSON and `cpu_line()` above its
table.
"""

from __future__ import annotations

import os
import platform

# /proc/cpuinfo flags that decide which ONNX Runtime / PyTorch kernels run.
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_info() -> dict:
    """CPU model, core count and the kernel-relevant flags.

    `flags` comes from /proc/cpuinfo (the host's even under qemu-user); `cpuid` is what this
    process itself detects (numpy's CPUID probe), which differs under an emulated CPU.
    """
    model, flags, ids = platform.processor() or platform.machine(), set(), {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine()):
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
                elif key.strip() in ("cpu family", "model") and key.strip() not in ids:
                    ids[key.strip()] = value.strip()
    except OSError:
        pass
    info = {
        "model": model,
        # A VM's model name can be generic ("Intel(R) Xeon(R) Processor"); family/model is not.
        "family_model": f"{ids.get('cpu family', '?')}/{ids.get('model', '?')}",
        "machine": platform.machine(),
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "flags": {name: name in flags for name in FLAGS},
    }
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as feats
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as feats
        except ImportError:
            feats = None
    if feats is not None:
        info["cpuid"] = {
            "avx2": bool(feats.get("AVX2")),
            "avx512f": bool(feats.get("AVX512F")),
            "avx512_vnni": bool(feats.get("AVX512VNNI") or feats.get("AVX512_CLX")),
        }
    return info


def cpu_line(info: dict | None = None) -> str:
    """One line for a printed table: the model and which of `FLAGS` it has."""
    info = info or cpu_info()
    have = [k for k, v in info["flags"].items() if v] or ["none of " + "/".join(FLAGS)]
    return (
        f"CPU: {info['model']} (family/model {info['family_model']}, {info['cores']} cores; "
        f"{' '.join(have)})"
    )
