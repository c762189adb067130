"""A bundle's int8 recognizer with and without VNNI/AVX-512 kernels: parity and speed.

ONNX Runtime has no switch to leave out its VNNI or AVX-512 kernels (MLAS dispatches by CPUID
once). So the same measurement runs twice on real glyph crops (those the bundle's own localizer
cuts from a directory of line images, e.g. UW3): in this process (the CPU as it is) and in a
child under bench/avx2_only.c, which masks the AVX-512, VNNI and AMX CPUID bits, so MLAS runs
its AVX2 u8 x s8 kernels (`vpmaddubsw`, int16 saturation) at native speed. Each run gives the
export check's int8 figures against the PyTorch recognizer (`recognizer.pt`): min and mean
cosine, top-1 agreement of the nearest reference glyph, with the bundle's tolerances
(`parity.json`), and ms per crop (single thread, batches of 64, best of `--repeats`).

    python bench/int8_avx2_parity.py --bundle results/bundle --gt-dir ../shared/data/uw3-50lines

Writes bench/results/int8_avx2_parity.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    SHARED_DATA,
    avx2_only_active,
    avx2_only_env,
    cpu_info,
    cpu_line,
)


def glyph_batch(bundle: Path, gt_dir: Path) -> np.ndarray:
    """The normalised (N, 3, S, S) glyph squares of every line image in `gt_dir`."""
    from infer_throughput import load_gt_dir

    from effocr.imageio import decode_image
    from effocr.pipeline import LineResult, Pipeline, stack_squares

    pipe = Pipeline.from_bundle(bundle, lm=False)
    squares = []
    for path, _ in load_gt_dir(gt_dir):
        res = LineResult(image=path)
        line = pipe.prepare(decode_image(path, keep_grey=True), res)
        if line is not None and len(line.squares):
            squares.append(line.squares)
    return pipe.recognizer.normalize(stack_squares(squares))


def measure(bundle: Path, batch: np.ndarray, repeats: int) -> dict:
    """Parity against PyTorch and ms per crop of the bundle's ONNX recognizer, here."""
    from effocr.export import recognizer_parity
    from effocr.onnx_session import make_session
    from effocr.recognizer.model import load_recognizer
    from effocr.recognizer.reference import ReferenceIndex

    meta_rec = json.loads((bundle / "parity.json").read_text(encoding="utf-8"))
    model = load_recognizer(bundle / "recognizer.pt")
    onnx = bundle / "recognizer.onnx"
    out = recognizer_parity(model, onnx, batch, index=ReferenceIndex.load(bundle).index)
    tol = meta_rec["tolerances"]
    out["passed"] = bool(
        out["min_cosine"] >= tol["quantized_min_cosine"]
        and out["top1_agreement"] >= tol["quantized_top1_agreement"]
    )
    sess = make_session(onnx, ["CPUExecutionProvider"], 1)
    name = sess.get_inputs()[0].name
    chunks = [batch[i : i + 64] for i in range(0, len(batch), 64)]
    sess.run(None, {name: chunks[0]})
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        embs = np.concatenate([sess.run(None, {name: c})[0] for c in chunks])
        best = min(best, time.perf_counter() - start)
    out["ms_per_crop"] = best / len(batch) * 1000
    out["avx2_only"] = avx2_only_active()
    out["cpu"] = cpu_info()
    out["embeddings"] = embs
    return out


def child(args: argparse.Namespace) -> int:
    res = measure(args.bundle, np.load(args.child), args.repeats)
    np.save(args.child_out.with_suffix(".npy"), res.pop("embeddings"))
    args.child_out.write_text(json.dumps(res), encoding="utf-8")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=HERE.parent / "results" / "bundle")
    ap.add_argument(
        "--gt-dir",
        type=Path,
        default=SHARED_DATA / "uw3-50lines",
        help="line images with .gt.txt files (default: ../shared/data/uw3-50lines)",
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--out", type=Path, default=HERE / "results" / "int8_avx2_parity.json", help="JSON"
    )
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as a worker
    batch = glyph_batch(args.bundle, args.gt_dir)
    runs = {"native": measure(args.bundle, batch, args.repeats)}
    with tempfile.TemporaryDirectory(prefix="effocr-int8-") as tmp:
        np.save(Path(tmp) / "batch.npy", batch)
        cmd = [sys.executable, __file__, "--bundle", str(args.bundle), "--gt-dir", str(args.gt_dir)]
        cmd += ["--repeats", str(args.repeats), "--child", str(Path(tmp) / "batch.npy")]
        cmd += ["--child-out", str(Path(tmp) / "avx2.json")]
        subprocess.run(cmd, check=True, env=avx2_only_env())
        runs["avx2_only"] = json.loads((Path(tmp) / "avx2.json").read_text(encoding="utf-8"))
        runs["avx2_only"]["embeddings"] = np.load(Path(tmp) / "avx2.npy")
    if not runs["avx2_only"]["avx2_only"]:
        print("the CPUID mask did not take effect in the child", file=sys.stderr)
        return 1
    a, b = runs["native"].pop("embeddings"), runs["avx2_only"].pop("embeddings")
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    payload = {
        "bundle": str(args.bundle),
        "crops": int(len(batch)),
        "runs": runs,
        "native_vs_avx2_min_cosine": float(cos.min()),
        "native_vs_avx2_max_abs": float(np.abs(a - b).max()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(cpu_line(runs["native"]["cpu"]))
    print(f"{len(batch)} glyph crops of {args.gt_dir}, int8 recognizer against PyTorch float32")
    print(f"{'kernels':>10} | {'min cos':>8} | {'mean cos':>8} | {'top-1':>6} | pass | ms/crop")
    for name, r in runs.items():
        print(
            f"{name:>10} | {r['min_cosine']:8.4f} | {r['mean_cosine']:8.4f} | "
            f"{r['top1_agreement']:6.3f} | {'yes' if r['passed'] else 'NO':>4} | "
            f"{r['ms_per_crop']:.4f}"
        )
    print(f"native vs AVX2-only embeddings: min cosine {payload['native_vs_avx2_min_cosine']:.5f}")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
