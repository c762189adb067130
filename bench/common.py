"""What every bench/ script records about the machine it ran on.

Speed figures (and int8 accuracy, whose kernels differ by instruction set) mean little without
the CPU they came from, so each script puts `cpu_info()` in its JSON and `cpu_line()` above its
table.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# ../shared/data beside the checkout: real lines and pages for measurements (never for tests).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

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
    line = (
        f"CPU: {info['model']} (family/model {info['family_model']}, {info['cores']} cores; "
        f"{' '.join(have)})"
    )
    seen = info.get("cpuid")
    if seen and any(seen[k] != info["flags"].get(k) for k in seen):
        line += "; this process sees by CPUID: " + (
            " ".join(k for k, v in seen.items() if v) or "none of " + "/".join(seen)
        )
    return line


# bench/avx2_only.c, built on demand: a CPUID mask that makes a process run as on an AVX2 CPU.
AVX2_ONLY_SOURCE = Path(__file__).resolve().parent / "avx2_only.c"
AVX2_ONLY_MARK = "EFFOCR_BENCH_AVX2_ONLY"


def avx2_only_active() -> bool:
    """Whether this process runs under the AVX2-only CPUID mask (and the mask took effect)."""
    info = cpu_info().get("cpuid") or {}
    return os.environ.get(AVX2_ONLY_MARK) == "1" and not info.get("avx512f", True)


def avx2_only_env() -> dict[str, str]:
    """The environment that runs a child process under bench/avx2_only.c (built now).

    Raises:
        RuntimeError: no CPUID faulting on this CPU, or no gcc.
    """
    import shutil
    import subprocess
    import tempfile

    with open("/proc/cpuinfo", encoding="utf-8") as f:
        if "cpuid_fault" not in f.read().split():
            raise RuntimeError("this CPU has no CPUID faulting (cpuid_fault): cannot mask it")
    if shutil.which("gcc") is None:
        raise RuntimeError("gcc is needed to build bench/avx2_only.c")
    lib = Path(tempfile.mkdtemp(prefix="effocr-avx2-")) / "avx2_only.so"
    subprocess.run(
        ["gcc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(AVX2_ONLY_SOURCE)], check=True
    )
    preload = " ".join(p for p in (str(lib), os.environ.get("LD_PRELOAD", "")) if p)
    return {**os.environ, "LD_PRELOAD": preload, "AVX2_ONLY_REQUIRED": "1", AVX2_ONLY_MARK: "1"}


def reexec_avx2_only() -> int:
    """Run this script again under bench/avx2_only.c (LD_PRELOAD); returns only on failure."""
    import sys

    try:
        env = avx2_only_env()
    except RuntimeError as exc:
        print(f"--avx2-only: {exc}", file=sys.stderr)
        return 2
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
    return 2  # not reached
