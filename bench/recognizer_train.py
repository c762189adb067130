"""Benchmark: recognizer training on the demo dataset (pass 1 + mining + pass 2 + index).

Measures wall time of both passes, validation precision@1 per pass, training throughput, and
precision@1 of the real glyph crops cut from the validation lines against the final
reference index (the issue's targets: passes <= 5 min on the 2-core CPU, pass-2 p@1 >= pass-1,
>= 0.98 on validation crops). With `--encoders`, it also compares candidate encoders
(throughput and pass-1 p@1) to justify the default.

The demo dataset is built with the workflow's own functions (synth_lines -> split -> crops,
render_glyphs -> build_recognizer_dataset), unless `--manifest`/`--renders` point at the
workflow's outputs (`results/recognizer_dataset/manifest.csv`, `results/renders/manifest.csv`).

Usage:
    .venv/bin/python bench/recognizer_train.py --threads 2
    .venv/bin/python bench/recognizer_train.py --threads 2 --encoders mobilenetv3_small_050 \
        mobilenetv3_small_100 resnet10t --only-pass1
Writes bench/results/recognizer_train.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import cpu_info, cpu_line  # bench/common.py (this script's folder is on sys.path)

from effocr.config import config_sections, load_config
from effocr.recognizer.dataset import read_manifest
from effocr.recognizer.hard_negatives import mine_hard_negatives, read_hard_negatives
from effocr.recognizer.index import build_reference_index, embed_paths
from effocr.recognizer.model import load_recognizer
from effocr.recognizer.train import train_recognizer
from effocr.utils import setup_logging

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LOG = logging.getLogger("bench.recognizer_train")


def build_demo_dataset(work: Path, config: dict, workers: int = 1) -> tuple[Path, Path]:
    """The demo's recognizer dataset, made with the workflow's functions; returns manifests."""
    from effocr.data.coco_tools import split_coco_file
    from effocr.data.crops import crop_glyphs
    from effocr.data.recognizer_dataset import build_recognizer_dataset
    from effocr.synth.lines import synth_lines
    from effocr.synth.render import render_glyphs_from_config

    dataset = work / "recognizer_dataset" / "manifest.csv"
    renders = work / "renders" / "manifest.csv"
    if dataset.exists() and renders.exists():
        return dataset, renders
    s = config["synth"]
    lines = work / "lines" / "lines.json"
    synth_lines(
        lines,
        s["n_lines"],
        language=config["language"],
        seed=config["seed"],
        font_sizes=s["font_sizes"],
        max_chars=s["max_chars"],
        degrade=s["degrade"],
        vertical_fraction=s["vertical_fraction"],
        style=s["style"],
    )
    splits = {name: work / "splits" / f"{name}.json" for name in ("train", "val", "test")}
    split_coco_file(lines, splits, **config_sections(config).pick("split", "run"))
    crop_glyphs(
        splits,
        lines.parent / "images",
        work / "crops" / "glyphs",
        work / "crops" / "manifest.csv",
        **config_sections(config).crops.as_dict(),
        seed=config["seed"],
        char_category=config["dataset"]["char_category"],
        word_category=config["dataset"]["word_category"],
    )
    render_glyphs_from_config(
        work / "renders" / "glyphs",
        renders,
        **config_sections(config).pick("render", "fonts", "run"),
        text_source=config["synth"]["text_source"]
        if config["render"]["charset_from_text"]
        else None,
        workers=workers,
    )
    build_recognizer_dataset(renders, work / "crops" / "manifest.csv", dataset)
    return dataset, renders


def val_crop_precision(model_pt: Path, index_dir: Path, manifest: Path) -> dict:
    """Precision@1 of the real validation crops against a saved reference index."""
    from effocr.recognizer.index import ReferenceIndex

    index = ReferenceIndex.load(index_dir)
    model = load_recognizer(model_pt)
    val = [r for r in read_manifest(manifest) if r.source == "real" and r.split == "val"]
    embs = embed_paths(model, [r.path for r in val], batch_size=256)
    _, rows = index.search(embs, 1)
    pred = [index.labels[r] for r in rows[:, 0]]
    ok = np.array([p == r.label for p, r in zip(pred, val, strict=True)])
    errors: dict[str, int] = {}
    for p, r, good in zip(pred, val, ok, strict=True):
        if not good:
            key = f"{r.label!r}->{p!r}"
            errors[key] = errors.get(key, 0) + 1
    top = sorted(errors.items(), key=lambda kv: -kv[1])[:10]
    return {"val_crops": len(val), "val_crop_p1": float(ok.mean()), "top_confusions": top}


def run_pipeline(
    work: Path, manifest: Path, renders: Path, config: dict, threads: int, pass1_only: bool
) -> dict:
    """Pass 1, mining, pass 2 and the index, timed; returns the figures."""
    out: dict = {}
    t0 = time.perf_counter()
    s1 = train_recognizer(
        manifest,
        work / "pass1",
        **config_sections(config).pick("recognizer", "fonts", "run"),
        threads=threads,
    )
    out["pass1_s"] = round(time.perf_counter() - t0, 1)
    out["pass1_best_val_p1"] = s1["best_val_p1"]
    out["pass1_zero_shot_val_p1"] = s1["zero_shot_val_p1"]
    out["pass1_images_per_s"] = round(s1["images_per_s"], 1)
    out["validation"] = s1["validation"]
    if pass1_only:
        t = time.perf_counter()
        build_reference_index(
            work / "pass1" / "model.pt",
            renders,
            work / "index1",
            **config_sections(config).pick("recognizer", "fonts", "run"),
            threads=threads,
        )
        out["index_s"] = round(time.perf_counter() - t, 1)
        out.update(val_crop_precision(work / "pass1" / "model.pt", work / "index1", manifest))
        return out
    t = time.perf_counter()
    mine_hard_negatives(
        work / "pass1" / "model.pt",
        manifest,
        work / "hard_negatives.txt",
        **config_sections(config).pick("recognizer", "fonts", "run"),
        threads=threads,
    )
    out["mine_s"] = round(time.perf_counter() - t, 1)
    out["hard_negatives_sets"] = len(read_hard_negatives(work / "hard_negatives.txt"))
    t = time.perf_counter()
    init = work / "pass1" / "model.pt" if config["recognizer"]["hard_negatives_fine_tune"] else None
    s2 = train_recognizer(
        manifest,
        work / "pass2",
        **config_sections(config).pick("recognizer", "fonts", "run"),
        hard_negatives=work / "hard_negatives.txt",
        init_model=init,
        threads=threads,
    )
    out["pass2_s"] = round(time.perf_counter() - t, 1)
    out["pass2_best_val_p1"] = s2["best_val_p1"]
    out["pass2_images_per_s"] = round(s2["images_per_s"], 1)
    out["passes_total_s"] = round(out["pass1_s"] + out["mine_s"] + out["pass2_s"], 1)
    t = time.perf_counter()
    build_reference_index(
        work / "pass2" / "model.pt",
        renders,
        work / "index",
        **config_sections(config).pick("recognizer", "fonts", "run"),
        threads=threads,
    )
    out["index_s"] = round(time.perf_counter() - t, 1)
    out.update(val_crop_precision(work / "pass2" / "model.pt", work / "index", manifest))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    parser.add_argument("--manifest", help="existing recognizer dataset manifest")
    parser.add_argument("--renders", help="existing renders manifest")
    parser.add_argument("--work", default=str(RESULTS / "recognizer_work"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--encoders", nargs="+", help="compare these encoders (default: config's)")
    parser.add_argument("--sizes", nargs="+", type=int, help="input sizes to compare")
    parser.add_argument("--only-pass1", action="store_true", help="first pass (+ index) only")
    parser.add_argument("--set", nargs="*", default=[], help="recognizer overrides KEY=JSON")
    parser.add_argument("--fresh", action="store_true", help="delete earlier training outputs")
    args = parser.parse_args(argv)
    setup_logging()
    torch.set_num_threads(args.threads)

    overrides = {"recognizer": {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}}
    config = load_config(args.config, overrides)
    work = Path(args.work)
    if args.manifest:
        manifest, renders = Path(args.manifest), Path(args.renders or args.manifest)
    else:
        manifest, renders = build_demo_dataset(work / "data", config, workers=args.threads)

    encoders = args.encoders or [config["recognizer"]["encoder"]]
    sizes = args.sizes or [config["recognizer"]["input_size"]]
    runs = []
    for enc in encoders:
        for size in sizes:
            cfg = load_config(
                args.config,
                {"recognizer": {**overrides["recognizer"], "encoder": enc, "input_size": size}},
            )
            run_dir = work / f"{enc}_{size}"
            if args.fresh and run_dir.exists():
                shutil.rmtree(run_dir)
            t = time.perf_counter()
            figures = run_pipeline(run_dir, manifest, renders, cfg, args.threads, args.only_pass1)
            figures.update(
                {"encoder": enc, "input_size": size, "wall_s": round(time.perf_counter() - t, 1)}
            )
            runs.append(figures)
            LOG.info("%s", json.dumps(figures))

    load = None
    try:
        import os

        load = os.getloadavg()
    except OSError:
        pass
    result = {
        "benchmark": "recognizer_train",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "threads": args.threads,
        "machine": {
            "cpu_count": __import__("os").cpu_count(),
            "platform": platform.platform(),
            "loadavg_end": load,
        },
        "cpu": cpu_info(),
        "torch": torch.__version__,
        "config": {
            k: config["recognizer"][k]
            for k in (
                "batch_size",
                "m",
                "epochs",
                "hard_negatives_epochs",
                "lr",
                "hard_negatives_ratio",
            )
        },
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "recognizer_train.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    cols = [
        ("encoder", "encoder"),
        ("input_size", "px"),
        ("pass1_images_per_s", "img/s"),
        ("pass1_zero_shot_val_p1", "p@1 untrained"),
        ("pass1_best_val_p1", "p@1 pass1"),
        ("pass2_best_val_p1", "p@1 pass2"),
        ("val_crop_p1", "val crops p@1 (index)"),
        ("pass1_s", "pass1 s"),
        ("pass2_s", "pass2 s"),
        ("passes_total_s", "total s"),
    ]
    print(cpu_line(result["cpu"]))
    print(" | ".join(h for _, h in cols))
    for r in runs:
        print(
            " | ".join(
                f"{r[k]:.4f}"
                if isinstance(r.get(k), float) and k.endswith("p1")
                else str(r.get(k, "-"))
                for k, _ in cols
            )
        )
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
