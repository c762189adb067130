"""bench/avx2_only.c: a process under it sees no AVX-512/VNNI by CPUID and still runs ORT int8.

The speed and parity figures of an AVX2-only CPU (bench/infer_throughput.py --avx2-only,
bench/int8_avx2_parity.py) rest on it. Needs gcc and a CPU with CPUID faulting; skipped
elsewhere (a property of the machine, not a missing package).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import unmasked_env

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import json
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
try:
    from numpy._core._multiarray_umath import __cpu_features__ as feats
except ImportError:
    from numpy.core._multiarray_umath import __cpu_features__ as feats
w = numpy_helper.from_array(np.arange(-8, 8, dtype=np.int8).reshape(4, 4), "w")
graph = helper.make_graph(
    [helper.make_node("MatMulInteger", ["x", "w"], ["y"])],
    "g",
    [helper.make_tensor_value_info("x", TensorProto.UINT8, [None, 4])],
    [helper.make_tensor_value_info("y", TensorProto.INT32, [None, 4])],
    [w],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
x = np.full((2, 4), 255, np.uint8)
y = sess.run(None, {"x": x})[0]
print(json.dumps({
    "avx2": bool(feats["AVX2"]),
    "avx512f": bool(feats["AVX512F"]),
    "vnni": bool(feats.get("AVX512VNNI")),
    "ok": bool((y == x.astype(np.int32) @ np.arange(-8, 8).reshape(4, 4)).all()),
}))
"""


def test_avx2_only_mask_hides_avx512_and_vnni(tmp_path):
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        flags = f.read().split()
    if "cpuid_fault" not in flags or "avx2" not in flags or shutil.which("gcc") is None:
        pytest.skip("needs gcc and an x86-64 CPU with AVX2 and CPUID faulting")
    lib = tmp_path / "avx2_only.so"
    src = REPO / "bench" / "avx2_only.c"
    # gcc handles SIGSEGV itself: it cannot run under a mask the suite may run under.
    subprocess.run(
        ["gcc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, env=unmasked_env()
    )
    env = {"LD_PRELOAD": str(lib), "AVX2_ONLY_REQUIRED": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"avx2": True, "avx512f": False, "vnni": False, "ok": True}
