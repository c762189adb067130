"""int8 recognizer: accuracy on this CPU and on an emulated AVX2 CPU, and speed on this CPU.

ONNX Runtime's u8 x s8 kernels differ by instruction set: with VNNI (or AMX) products
accumulate in int32; with AVX2 or AVX-512 alone (`vpmaddubsw`) two products are added into a
saturating int16. A model quantized with full 8-bit weights can therefore pass its parity check
on a VNNI CPU and fail it on an AMD EPYC. This script quantizes one recognizer with each
`effocr.quantize.WEIGHT_CHOICES` entry and runs float32 and every int8 model

* natively (accuracy and ms per crop: speed figures come from here only), and
* under `qemu-x86_64 -cpu Haswell` (qemu-user, TCG: AVX2, no AVX-512, no VNNI), for accuracy
  only: the non-VNNI kernels run for real there, whatever this machine has.

Accuracy is against PyTorch on held-out crops: min/mean cosine and top-1 agreement with the
reference classes, with the pass/fail of the export check's default tolerances.

The recognizer: ``--recognizer model.pt`` with ``--coco``/``--image-dir`` (lines whose glyph
crops are calibration, reference and test), or by default the en profile's encoder trained here
for ``--steps`` steps on 160 synthetic lines (5-10 minutes on two busy cores; the emulated
column takes as long again). ``--steps 0`` (untrained) is enough for the speed column.

Usage:
    python bench/int8_cpu_paths.py [--steps 150] [--no-emulation]
Writes bench/results/int8_cpu_paths.json and prints a table. Needs qemu-user
(`apt-get install qemu-user`, `make sysdeps`) for the emulated column.

Measured (Xeon with AVX-512 VNNI and AMX, 150 steps, 256 test crops): float32 0.66 ms/crop;
int7 (shipped) 1.7-2.0 x its speed, min cosine 0.993 both here and emulated; int8 (before) 1.7-1.9
x, 0.995 here but 0.06 and top-1 0.30 emulated; uint8 0.8-1.1 x.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from common import cpu_info, cpu_line  # noqa: E402

EMULATED_CPU = "Haswell"


def embed_onnx(model: Path, crops: np.ndarray, threads: int = 1, batch: int = 64) -> np.ndarray:
    """Embeddings of `crops` by an ONNX model (numpy and onnxruntime only: runs under qemu)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate(
        [sess.run(None, {name: crops[i : i + batch]})[0] for i in range(0, len(crops), batch)]
    )


def worker(folder: Path) -> int:
    """Emulated side: embed crops.npy with every *.onnx in `folder`, write <stem>.emb.npy."""
    crops = np.load(folder / "crops.npy")
    for model in sorted(folder.glob("*.onnx")):
        np.save(folder / f"{model.stem}.emb.npy", embed_onnx(model, crops))
    (folder / "cpu.json").write_text(json.dumps(cpu_info()))
    return 0


def _crop_batch(coco_json: Path, image_dir: Path, n_lines: int, model) -> tuple:
    from effocr.config import section_defaults
    from effocr.data.coco import index_coco, line_chars, load_coco
    from effocr.export import glyph_crops, load_parity_lines
    from effocr.recognizer.transforms import preprocess

    categories = {k: section_defaults("dataset")[k] for k in ("char_category", "word_category")}
    lines = load_parity_lines(coco_json, image_dir, n_lines)
    crops = glyph_crops(
        coco_json, lines, full_height=True, padding=0, allows_vertical=False, **categories
    )
    index = index_coco(load_coco(coco_json), **categories)
    labels = [c for im, _ in lines for c, _ in line_chars(index, im, False)]
    assert len(labels) == len(crops), (len(labels), len(crops))
    x = np.stack([preprocess(c, model.input_size, model.mean, model.std) for c in crops])
    return x, labels


def _train(out: Path, steps: int, size: int) -> tuple[Path, Path, Path]:
    """The en profile's recognizer trained briefly on synthetic lines; returns (pt, json, dir)."""
    import torch
    from pytorch_metric_learning.losses import SupConLoss

    from effocr.config import load_config
    from effocr.profiles import get_profile
    from effocr.recognizer.model import RecognizerNet, save_recognizer
    from effocr.synth.lines import synth_lines

    config = load_config(None, {})
    coco = synth_lines(
        out / "lines" / "lines.json",
        160,
        language="en",
        seed=0,
        **{k: config["synth"][k] for k in ("font_sizes", "vertical_fraction", "degrade", "style")},
        max_chars=40,
    )
    torch.manual_seed(0)
    model = RecognizerNet(
        "resnet10t", size, encoder_args=get_profile("en").encoder_args
    )  # the shipped en architecture
    x, labels = _crop_batch(coco, coco.parent / "images", 10**9, model)
    classes = {c: i for i, c in enumerate(sorted(set(labels)))}
    y = torch.tensor([classes[c] for c in labels])
    x = torch.from_numpy(x)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    loss_fn = SupConLoss(temperature=0.1)
    gen = torch.Generator().manual_seed(0)
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(x), (256,), generator=gen)
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"  step {step} loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)")
    model.eval()
    return save_recognizer(model, out / "model.pt", config), coco, coco.parent / "images"


def _metrics(emb: np.ndarray, ref: np.ndarray, refs: np.ndarray) -> dict:
    cos = (emb * ref).sum(1) / np.maximum(
        np.linalg.norm(emb, axis=1) * np.linalg.norm(ref, axis=1), 1e-12
    )
    top1 = float(np.mean((emb @ refs.T).argmax(1) == (ref @ refs.T).argmax(1)))
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()), "top1": top1}


def _ms_per_crop(model: Path, crops: np.ndarray, batch: int, repeats: int) -> float:
    from effocr.infer import make_session

    sess = make_session(model, ["CPUExecutionProvider"], 1)
    name = sess.get_inputs()[0].name
    x = np.ascontiguousarray(crops[:batch])
    sess.run(None, {name: x})
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run(None, {name: x})
        best = min(best, time.perf_counter() - start)
    return 1000 * best / len(x)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recognizer", type=Path, help="model.pt (default: train one here)")
    parser.add_argument("--coco", type=Path, help="COCO JSON of lines for --recognizer")
    parser.add_argument("--image-dir", type=Path, help="images of --coco")
    parser.add_argument("--steps", type=int, default=150, help="training steps (no --recognizer)")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--lines", type=int, default=32, help="calibration lines")
    parser.add_argument("--test-crops", type=int, default=256, help="held-out crops compared")
    parser.add_argument("--batch", type=int, default=64, help="crops per run when timing")
    parser.add_argument("--no-emulation", action="store_true")
    parser.add_argument("--emulated-cpu", default=EMULATED_CPU, help="qemu -cpu model")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--out", type=Path, default=HERE / "results" / "int8_cpu_paths.json", help="JSON output"
    )
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)

    import torch

    from effocr.config import load_config
    from effocr.quantize import WEIGHT_CHOICES, int16_unsafe_weights, quantize_recognizer
    from effocr.recognizer.model import export_onnx, load_recognizer

    torch.set_num_threads(1)
    tol = load_config(None, {})["export"]
    info = cpu_info()
    print(cpu_line(info))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.recognizer:
            pt, coco, image_dir = args.recognizer, args.coco, args.image_dir
        else:
            print(f"training the en recognizer for {args.steps} steps")
            pt, coco, image_dir = _train(tmp, args.steps, args.input_size)
        model = load_recognizer(pt)
        x, labels = _crop_batch(coco, image_dir, 10**9, model)
        with torch.inference_mode():
            ref = np.concatenate(
                [model(torch.from_numpy(x[i : i + 256])).numpy() for i in range(0, len(x), 256)]
            )
        # Calibrate on the first lines' crops, test on crops from the end of the set.
        n_cal = len(_crop_batch(coco, image_dir, args.lines, model)[0])
        test = np.arange(len(x) - min(args.test_crops, len(x) - n_cal), len(x))
        chars = sorted(set(labels))
        refs = np.stack([ref[[i for i, c in enumerate(labels) if c == ch]].mean(0) for ch in chars])
        refs /= np.linalg.norm(refs, axis=1, keepdims=True)
        models = {"float32": export_onnx(pt, tmp / "float32.onnx", int(tol["opset"]))}
        for weights in WEIGHT_CHOICES:
            models[weights] = quantize_recognizer(
                models["float32"], tmp / f"{weights}.onnx", x[:n_cal], weights=weights
            )
        rows = {}
        for name, path in models.items():
            rows[name] = {
                "native": _metrics(embed_onnx(path, x[test]), ref[test], refs),
                "ms_per_crop": _ms_per_crop(path, x[test], args.batch, 20),
                "int16_unsafe_weights": len(int16_unsafe_weights(path)) if name != "float32" else 0,
            }
        emulated = None
        qemu = shutil.which("qemu-x86_64")
        if not args.no_emulation and qemu:
            folder = tmp / "emulated"
            folder.mkdir()
            np.save(folder / "crops.npy", np.ascontiguousarray(x[test]))
            for name, path in models.items():
                shutil.copy(path, folder / f"{name}.onnx")
            cmd = [
                qemu,
                "-cpu",
                args.emulated_cpu,
                sys.executable,
                __file__,
                "--worker",
                str(folder),
            ]
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            if proc.returncode:
                print(proc.stderr[-2000:], file=sys.stderr)
            else:
                emulated = {
                    "qemu_cpu": args.emulated_cpu,
                    "seconds": round(time.perf_counter() - start, 1),
                    "cpu": json.loads((folder / "cpu.json").read_text()),
                }
                for name in models:
                    emb = np.load(folder / f"{name}.emb.npy")
                    rows[name]["emulated"] = _metrics(emb, ref[test], refs)
        elif not args.no_emulation:
            print("qemu-x86_64 not found (apt-get install qemu-user): no emulated column")
    for row in rows.values():
        for where in ("native", "emulated"):
            if where in row:
                m = row[where]
                m["passes_export_check"] = (
                    m["min_cosine"] >= tol["quantized_min_cosine"]
                    and m["top1"] >= tol["quantized_top1_agreement"]
                )
    payload = {
        "cpu": info,
        "emulation": emulated,
        "recognizer": str(args.recognizer or f"en profile resnet10t, {args.steps} steps here"),
        "n_test_crops": int(len(test)),
        "n_calibration_crops": int(n_cal),
        "tolerances": {k: tol[k] for k in ("quantized_min_cosine", "quantized_top1_agreement")},
        "models": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(cpu_line(info))
    if emulated:
        print(
            f"emulated: qemu-x86_64 -cpu {emulated['qemu_cpu']} (cpuid seen there: "
            f"{emulated['cpu'].get('cpuid')}), {emulated['seconds']} s"
        )
    print(
        f"{len(test)} test crops vs PyTorch; pass = min cos >= {tol['quantized_min_cosine']} and "
        f"top-1 >= {tol['quantized_top1_agreement']}; ms/crop: 1 thread, batch {args.batch}"
    )
    head = f"{'weights':>8} | {'ms/crop':>7} | {'x fp32':>6} | {'unsafe':>6} | " + " | ".join(
        f"{w + ' min cos':>16} | {w + ' top-1':>14} | {'pass':>4}" for w in ("native", "emulated")
    )
    print(head)
    base = rows["float32"]["ms_per_crop"]
    for name, row in rows.items():
        cells = [
            f"{name:>8}",
            f"{row['ms_per_crop']:7.3f}",
            f"{base / row['ms_per_crop']:6.2f}",
            f"{row['int16_unsafe_weights']:6d}",
        ]
        for where in ("native", "emulated"):
            m = row.get(where)
            if m is None:
                cells += [f"{'-':>16}", f"{'-':>14}", f"{'-':>4}"]
            else:
                cells += [
                    f"{m['min_cosine']:16.4f}",
                    f"{m['top1']:14.3f}",
                    f"{'yes' if m['passes_export_check'] else 'NO':>4}",
                ]
        print(" | ".join(cells))
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
