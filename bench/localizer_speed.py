"""Localizer candidates: ONNX Runtime ms per ~1000x40 line on ONE thread, and test F1.

Each candidate is the default backend with architecture overrides and an input height. The
timing exports an (untrained, same-cost) model to ONNX and times `LocalizerSession` on a
synthetic 1000 x 40 line: the network alone and the whole `detect` (resize, network, decode,
NMS, spaces). With ``--data DIR`` (a directory holding train.json, val.json, test.json and
images/, e.g. results/data/splits + the dataset image dir via --image-dir) every candidate is
also trained with the config defaults (`--epochs`) and its char/word F1 at IoU 0.5 on the test
split is reported.

Usage:
    python bench/localizer_speed.py                       # timing only
    python bench/localizer_speed.py --splits results/data/splits \
        --image-dir data/synthetic/en/images --only default
Writes bench/results/localizer_speed.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from common import cpu_info, cpu_line  # noqa: E402  (bench/common.py)

from effocr.config import config_sections  # noqa: E402
from effocr.localizer.model import DEFAULT_ARCH, LineDetector, model_meta  # noqa: E402
from effocr.localizer.runtime import LocalizerSession  # noqa: E402

# name -> (arch overrides of DEFAULT_ARCH, input height); the ones tried while choosing.
CANDIDATES = {
    "default": ({}, 32),
    "a32": ({"widths": [16, 24, 48, 96, 128], "fpn_channels": 32}, 32),
    "lean32": (
        {"widths": [16, 24, 48, 96, 128], "fpn_channels": 24, "depths": [0, 0, 1, 1, 1]},
        32,
    ),
    "old40": ({"widths": [16, 24, 48, 96, 128], "fpn_channels": 24}, 40),
    "a48": ({"widths": [16, 24, 48, 96, 128], "fpn_channels": 32}, 48),
}


def _evaluation_config(config: dict) -> dict:
    """`evaluate_localizer`'s config arguments from `config` (the schema's defaults filled)."""
    sections = config_sections(config)
    return {
        "char_category": sections.dataset.char_category,
        "word_category": sections.dataset.word_category,
        "input_height": sections.localizer.input_height,
    }


def time_candidate(arch: dict, height: int, runs: int = 50) -> dict:
    """Median ms of the network and of the whole detect on a 1000 x 40 line, 1 ORT thread.

    The minimum is reported too: on a shared machine it is the figure least disturbed by others.
    """
    torch.manual_seed(0)
    model = LineDetector(["char", "word"], height, arch).eval()
    line = np.full((40, 1000, 3), 255, np.uint8)
    rng = np.random.default_rng(0)
    for x in range(10, 980, 14):  # some ink so the post-processing has something to do
        line[10:30, x : x + 8] = rng.integers(0, 80)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "loc.onnx"
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, height, 256),),
            str(path),
            input_names=["image"],
            output_names=["raw"],
            dynamic_axes={"image": {3: "width"}, "raw": {1: "rows"}},
            opset_version=17,
            dynamo=False,
        )
        session = LocalizerSession(path, model_meta(model), threads=1)
        x, _, _ = session._prepare(line)
        feed = {session.input_name: x}
        for _ in range(5):
            session.session.run(None, feed)
            session.detect(line)
        net, full = [], []
        for _ in range(runs):
            t = time.perf_counter()
            session.session.run(None, feed)
            net.append(time.perf_counter() - t)
            t = time.perf_counter()
            session.detect(line)
            full.append(time.perf_counter() - t)
    macs = _macs(model, height, x.shape[3])
    return {
        "net_ms": 1000 * float(np.median(net)),
        "net_min_ms": 1000 * float(np.min(net)),
        "detect_ms": 1000 * float(np.median(full)),
        "input": list(x.shape),
        "params": sum(p.numel() for p in model.parameters()),
        "mmacs": macs,
    }


def _macs(model: torch.nn.Module, height: int, width: int) -> float:
    """Multiply-accumulates of the convolutions (millions) for one input."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
        total += k * out.numel()

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, height, width))
    for h in handles:
        h.remove()
    return total / 1e6


def train_candidate(
    arch: dict, height: int, splits: Path, image_dir: Path, epochs: int | None
) -> dict:
    """Train with the config defaults and evaluate on the test split."""
    from effocr.config import load_config
    from effocr.localizer.evaluate import evaluate_localizer
    from effocr.localizer.train import train_localizer

    over = {"arch": arch or None, "input_height": height}
    if epochs:
        over["epochs"] = epochs
    config = load_config(None, {"localizer": over, "dataset": {"image_dir": str(image_dir)}})
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        train_localizer(
            splits / "train.json",
            splits / "val.json",
            tmp,
            **config_sections(config).pick("localizer", "dataset", "run"),
            threads=2,
        )
        seconds = time.perf_counter() - t
        m = evaluate_localizer(
            Path(tmp) / "model.pt",
            splits / "test.json",
            image_dir,
            Path(tmp) / "e.json",
            **_evaluation_config(config),
        )
    return {
        "train_s": seconds,
        "char_f1": m["char"]["f1"],
        "word_f1": m.get("word", {}).get("f1"),
        "AP50": m["coco"]["AP50"],
        "AP": m["coco"]["AP"],
    }


def eval_trained(model_pt: str, splits: Path, image_dir: Path) -> dict:
    """Test-split F1 of a trained candidate (its training time read from its metrics.csv)."""
    import csv

    from effocr.localizer.evaluate import evaluate_localizer

    with tempfile.TemporaryDirectory() as tmp:
        m = evaluate_localizer(
            model_pt,
            splits / "test.json",
            image_dir,
            Path(tmp) / "e.json",
            **_evaluation_config({}),
        )
    with open(Path(model_pt).with_name("metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        "train_s": sum(float(r["seconds"]) for r in rows),
        "epochs": len(rows),
        "char_f1": m["char"]["f1"],
        "word_f1": m.get("word", {}).get("f1"),
        "AP50": m["coco"]["AP50"],
        "AP": m["coco"]["AP"],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=Path, default=None, help="dir with train/val/test.json")
    parser.add_argument("--image-dir", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--only", nargs="*", default=None, help="candidate names")
    parser.add_argument(
        "--models",
        nargs="*",
        default=[],
        help="NAME=model.pt: evaluate an already trained candidate on --splits/test.json",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    trained = dict(m.split("=", 1) for m in args.models)
    names = args.only or list(CANDIDATES)
    rows = []
    for name in names:
        arch, height = CANDIDATES[name]
        row = {"name": name, "arch": {**DEFAULT_ARCH, **arch}, "input_height": height}
        row.update(time_candidate(arch, height))
        if name in trained:
            row.update(eval_trained(trained[name], args.splits, args.image_dir))
        elif args.splits and not trained:
            row.update(train_candidate(arch, height, args.splits, args.image_dir, args.epochs))
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "arch"}), flush=True)
    out = HERE / "results" / "localizer_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    cpu = cpu_info()
    out.write_text(json.dumps({"cpu": cpu, "candidates": rows}, indent=2) + "\n")
    print(f"\n{cpu_line(cpu)}")
    print(
        f"{'candidate':<12} {'H':>3} {'MMACs':>7} {'net ms':>7} {'min ms':>7} {'detect ms':>9} {'char F1':>8} {'word F1':>8} {'train s':>8}"
    )
    for r in rows:

        def f(key: str, fmt: str, row: dict = r) -> str:
            return format(row[key], fmt) if row.get(key) is not None else "-"

        print(
            f"{r['name']:<12} {r['input_height']:>3} {r['mmacs']:>7.0f} {r['net_ms']:>7.2f} "
            f"{r['net_min_ms']:>7.2f} {r['detect_ms']:>9.2f} {f('char_f1', '.4f'):>8} "
            f"{f('word_f1', '.4f'):>8} {f('train_s', '.0f'):>8}"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
