"""Benchmark: reference index, hard-negative mining and training steps at ~20,000 classes.

Exercises the workflow's real code paths at N classes (default 20,000), each phase in its own
subprocess so that its wall time and peak RSS (`ru_maxrss` of that process; DataLoader workers
are reported separately) are measured on their own:

* ``data``  (setup, not the subject): N distinct labels, CJK Unified Ideographs from U+4E00 and
  the last `--ext-b` from CJK Ext B (U+20000.., non-BMP, so the round trip of 4+-byte labels
  through manifest, ref_labels.txt and hard_negatives.txt is covered at scale). Each class gets
  `--per-class` glyph PNGs: `effocr.synth.render.render_glyph` in the IPA fonts
  (/usr/share/fonts/opentype/ipafont-*, `centered` mode as the jp profile) where the font's
  cmap covers the character, random strokes otherwise. A renders manifest in the format of
  docs/architecture.md ("Manifests") and an untrained default recognizer `model.pt`
  (`save_recognizer`, encoder/input size from config/schema.yaml) are written beside them.
* ``build`` (A): `effocr.recognizer.index.build_reference_index` on that manifest.
* ``mine``  (B): `effocr.recognizer.hard_negatives.mine_hard_negatives` with k = `--k` (one render
  per class as the query, since the manifest has no real crops).
* ``train`` (C): the pieces `train_recognizer` runs at N classes, as it runs them:
  `split_records`, `GlyphDataset`, `MPerClassSampler` construction and one epoch's index list,
  the `Validator` (construction and one precision@1, which compares every validation glyph
  with every class), then `--steps` optimizer steps of SupConLoss/AdamW on the batches the
  sampler yields through a DataLoader (`train_recognizer` has no step limit, and a full
  epoch is hundreds of steps on a 2-core CPU).

Usage:
    .venv/bin/python bench/index_scale.py                      # 20,000 classes, 2 threads
    .venv/bin/python bench/index_scale.py --classes 2000 --keep /tmp/idx2k
    .venv/bin/python bench/index_scale.py --phase build --workdir DIR   # one phase (internal)
Writes bench/results/index_scale.json (per phase: seconds, process wall seconds, peak RSS MB,
details) and prints a table. Glyphs go to a temporary directory (removed unless `--keep`).
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import cpu_info, cpu_line  # bench/common.py (this script's folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
FONT_DIR = Path("/usr/share/fonts/opentype")
FONTS = (FONT_DIR / "ipafont-mincho" / "ipam.ttf", FONT_DIR / "ipafont-gothic" / "ipag.ttf")
PHASES = ("data", "build", "mine", "train")
BMP_FIRST, BMP_LAST, EXT_B_FIRST, EXT_B_LAST = 0x4E00, 0x9FFF, 0x20000, 0x2A6DF
GLYPH_SIZE = 64  # render.size default in config/schema.yaml


def peak_rss_mb() -> float:
    """Peak RSS of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def children_peak_rss_mb() -> float:
    """Largest peak RSS of a terminated child (DataLoader workers, render processes)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def class_labels(n: int, ext_b: int) -> list[str]:
    """N distinct CJK characters: U+4E00.. then (the last `ext_b`, or the overflow) Ext B."""
    n_bmp = min(max(0, n - ext_b), BMP_LAST - BMP_FIRST + 1)
    n_ext = n - n_bmp
    if n_ext > EXT_B_LAST - EXT_B_FIRST + 1:
        raise SystemExit(f"--classes {n}: not enough CJK code points")
    return [chr(BMP_FIRST + i) for i in range(n_bmp)] + [chr(EXT_B_FIRST + i) for i in range(n_ext)]


def bench_config(args: argparse.Namespace) -> dict:
    """The validated default config of the jp profile (schema defaults for the recognizer)."""
    from effocr.config import load_config

    overrides: dict = {"language": "jp", "recognizer": {"hard_negatives_k": args.k}}
    if args.device:
        overrides["recognizer"]["device"] = args.device
    return load_config(None, overrides)


# ---------------------------------------------------------------------------
# Phase "data": glyph PNGs, renders manifest, untrained model.pt
# ---------------------------------------------------------------------------


def _strokes(seed: int, size: int = GLYPH_SIZE):
    """A glyph-like image: 3-9 dark strokes on white (RGB)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    m = size // 8
    for _ in range(int(rng.integers(3, 10))):
        x0, y0, x1, y1 = (int(v) for v in rng.integers(m, size - m, size=4))
        if rng.random() < 0.5:  # mostly horizontal/vertical, like CJK strokes
            y1 = y0 if rng.random() < 0.5 else y1
            x1 = x0 if y1 != y0 else x1
        draw.line((x0, y0, x1, y1), fill=(0, 0, 0), width=int(rng.integers(2, 6)))
    return im


def _write_glyphs(task: tuple[list[tuple[int, str]], str, int, int]) -> list[dict[str, str]]:
    """Render (or draw) the glyphs of a chunk of classes; returns manifest rows."""
    from effocr.config import section_defaults
    from effocr.synth.fonts import font_chars
    from effocr.synth.render import render_glyph
    from effocr.utils import EffOCRError, label_to_codepoints

    chunk, out_dir, per_class, seed = task
    fonts = FONTS[:per_class]
    padding = section_defaults("render")["padding"]
    covered = [font_chars(f) if f.exists() else set() for f in fonts]
    rows = []
    for i, label in chunk:
        code = label_to_codepoints(label)
        (Path(out_dir) / code).mkdir(parents=True, exist_ok=True)
        for j, font in enumerate(fonts):
            rel = f"glyphs/{code}/{font.stem}.png"
            kind = "font"
            im = None
            if label in covered[j]:
                try:
                    im = render_glyph(font, label, GLYPH_SIZE, "centered", padding)
                except EffOCRError:
                    im = None
            if im is None:
                im, kind = _strokes(seed * 1_000_003 + i * 7 + j), "strokes"
            im.save(Path(out_dir) / code / f"{font.stem}.png", format="PNG")
            # origin = font stem: stroke stand-ins count as renders of that font, so the
            # reference font (ipam, from the jp profile) covers every class.
            rows.append(
                {
                    "path": rel,
                    "codepoints": code,
                    "source": "render",
                    "origin": font.stem,
                    "split": "train",
                    "_kind": kind,
                }
            )
    return rows


def phase_data(args: argparse.Namespace, work: Path) -> dict:
    import torch

    from effocr.recognizer.model import RecognizerNet, config_encoder_args, save_recognizer
    from effocr.utils import seed_everything

    labels = class_labels(args.classes, args.ext_b)
    glyph_dir = work / "glyphs"
    glyph_dir.mkdir(parents=True, exist_ok=True)
    indexed = list(enumerate(labels))
    n_chunks = max(1, args.threads) * 8
    chunks = [indexed[c::n_chunks] for c in range(n_chunks)]
    tasks = [(c, str(glyph_dir), args.per_class, args.seed) for c in chunks if c]
    t = time.perf_counter()
    if args.threads > 1:
        with ProcessPoolExecutor(max_workers=args.threads) as pool:
            parts = list(pool.map(_write_glyphs, tasks))
    else:
        parts = [_write_glyphs(task) for task in tasks]
    rows = sorted((r for part in parts for r in part), key=lambda r: (r["codepoints"], r["path"]))
    manifest = work / "manifest.csv"
    with open(manifest, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "codepoints", "source", "origin", "split"])
        writer.writeheader()
        writer.writerows({k: v for k, v in r.items() if not k.startswith("_")} for r in rows)
    glyph_s = time.perf_counter() - t

    config = bench_config(args)
    rcfg = config["recognizer"]
    seed_everything(args.seed)
    torch.set_num_threads(args.threads)
    model = RecognizerNet(
        rcfg["encoder"],
        int(rcfg["input_size"]),
        encoder_args=config_encoder_args(rcfg["encoder_args"], config["language"]),
    )
    save_recognizer(model, work / "model.pt", config, extra={"pass": "untrained (bench)"})
    return {
        "glyphs": len(rows),
        "font_renders": sum(r["_kind"] == "font" for r in rows),
        "stroke_stand_ins": sum(r["_kind"] == "strokes" for r in rows),
        "non_bmp_classes": sum(ord(lb[0]) > 0xFFFF for lb in labels),
        "glyph_s": round(glyph_s, 2),
        "glyph_bytes": sum(p.stat().st_size for p in glyph_dir.rglob("*.png")),
        "encoder": model.encoder_name,
        "input_size": model.input_size,
        "dim": model.dim,
        "model_pt_bytes": (work / "model.pt").stat().st_size,
    }


# ---------------------------------------------------------------------------
# Phases A/B: build_reference_index, mine_hard_negatives
# ---------------------------------------------------------------------------


def phase_build(args: argparse.Namespace, work: Path) -> dict:
    from effocr.config import config_sections
    from effocr.recognizer.index import build_reference_index, read_labels

    config = bench_config(args)
    out = work / "index"
    t = time.perf_counter()
    index = build_reference_index(
        work / "model.pt",
        work / "manifest.csv",
        out,
        **config_sections(config).pick("recognizer", "fonts", "run"),
        threads=args.threads,
        batch_size=args.batch_size,
    )
    seconds = time.perf_counter() - t
    labels = read_labels(out / "ref_labels.txt")
    return {
        "seconds": round(seconds, 2),
        "index_count": len(index),
        "index_dim": index.dim,
        "index_bytes": (out / "ref.index").stat().st_size,
        "labels_round_trip": labels == index.labels,
        "non_bmp_labels": sum(ord(lb[0]) > 0xFFFF for lb in labels),
    }


def phase_mine(args: argparse.Namespace, work: Path) -> dict:
    from effocr.config import config_sections
    from effocr.recognizer.hard_negatives import mine_hard_negatives, read_hard_negatives

    config = bench_config(args)
    out = work / "hard_negatives.txt"
    t = time.perf_counter()
    mine_hard_negatives(
        work / "model.pt",
        work / "manifest.csv",
        out,
        **config_sections(config).pick("recognizer", "fonts", "run"),
        threads=args.threads,
        batch_size=args.batch_size,
    )
    seconds = time.perf_counter() - t
    sets = read_hard_negatives(out)
    return {
        "seconds": round(seconds, 2),
        "k": args.k,
        "hard_negatives_sets": len(sets),
        "set_sizes": sorted({len(s) for s in sets}),
        "hard_negatives_bytes": out.stat().st_size,
    }


# ---------------------------------------------------------------------------
# Phase C: sampler, validator and a few training steps at N classes
# ---------------------------------------------------------------------------


def phase_train(args: argparse.Namespace, work: Path) -> dict:
    import numpy as np

    from effocr.config import config_sections
    from effocr.profiles import get_profile
    from effocr.recognizer.dataset import (
        GlyphDataset,
        read_manifest,
        reference_groups,
        resolve_reference_fonts,
    )
    from effocr.recognizer.index import _loader_workers
    from effocr.recognizer.model import RecognizerNet, config_encoder_args
    from effocr.recognizer.samplers import MPerClassSampler
    from effocr.recognizer.train import (
        Validator,
        batch_loader,
        create_optimization,
        split_records,
    )
    from effocr.recognizer.transforms import render_augment
    from effocr.utils import optimizer_step, seed_everything, select_device, set_threads

    config = bench_config(args)
    rcfg = config["recognizer"]
    profile = get_profile(config["language"])
    seed = int(config.get("seed", 0))
    m, batch_size, size = int(rcfg["m"]), int(rcfg["batch_size"]), int(rcfg["input_size"])
    num_passes = int(rcfg.get("num_passes") or profile.num_passes)
    set_threads(args.threads)
    device = select_device(rcfg.get("device", "auto"))
    workers = _loader_workers(args.threads, device)
    res: dict = {"device": device, "workers": workers, "m": m, "batch_size": batch_size}

    t = time.perf_counter()
    records = read_manifest(work / "manifest.csv")
    renders = [r for r in records if r.source == "render"]
    stems = resolve_reference_fonts(
        (r.origin for r in renders), config["fonts"].get("reference"), profile.reference_fonts
    )
    train_records, val_records, val_desc = split_records(records, stems, seed)
    classes = sorted({r.codepoints for r in train_records})
    class_to_idx = {c: i for i, c in enumerate(classes)}
    seed_everything(seed)
    model = RecognizerNet(
        rcfg["encoder"],
        size,
        rcfg.get("init_checkpoint"),
        encoder_args=config_encoder_args(rcfg["encoder_args"], config["language"]),
    ).to(device)
    augment = render_augment(profile.augment, size, rcfg.get("augment"), model.mean, model.std)
    dataset = GlyphDataset(train_records, class_to_idx, size, augment, model.mean, model.std)
    res["dataset_s"] = round(time.perf_counter() - t, 2)
    res["classes"] = len(classes)
    res["train_glyphs"] = len(dataset)
    res["dataset_cached"] = dataset._cache is not None

    t = time.perf_counter()
    sampler = MPerClassSampler(dataset.labels, m, batch_size, num_passes=num_passes, seed=seed)
    res["sampler_init_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    sampler.set_epoch(1)
    epoch = list(iter(sampler))
    res["sampler_epoch_s"] = round(time.perf_counter() - t, 3)
    res["steps_per_epoch"] = len(epoch)
    res["epoch_items"] = sum(len(b) for b in epoch)
    visits = np.bincount(
        [int(dataset.labels[i]) for b in epoch for i, _ in b], minlength=len(classes)
    )
    res["epoch_items_per_class"] = sorted({int(v) for v in visits})
    del epoch, visits

    t = time.perf_counter()
    train_renders = [r for r in train_records if r.source == "render"]
    validator = Validator(
        reference_groups(train_renders, stems), val_records, size, model.mean, model.std
    )
    res["validator_init_s"] = round(time.perf_counter() - t, 2)
    res["validation"] = val_desc
    t = time.perf_counter()
    res["val_p1_untrained"] = round(validator.precision_at_1(model, device), 5)
    res["validate_s"] = round(time.perf_counter() - t, 2)
    res["rss_after_validate_mb"] = round(peak_rss_mb(), 1)
    del validator
    gc.collect()

    recognizer = config_sections(config).recognizer
    loss_fn, optimizer, scheduler = create_optimization(
        model, recognizer, max(1, int(rcfg["epochs"]) * len(sampler)), lr=recognizer.lr
    )
    loader = batch_loader(dataset, sampler, workers, device)
    seed_everything(seed + 1)
    sampler.set_epoch(1)
    model.train()
    losses, n_images, step_times = [], 0, []
    t = time.perf_counter()
    it = iter(loader)
    for _ in range(args.steps):
        t_step = time.perf_counter()
        try:
            images, labels = next(it)
        except StopIteration:
            break
        emb = model(images.to(device))
        loss = loss_fn(emb.float(), labels.to(device))
        optimizer_step(loss, optimizer, None)
        scheduler.step()
        losses.append(float(loss.detach()))
        n_images += len(images)
        step_times.append(time.perf_counter() - t_step)
    train_s = time.perf_counter() - t
    del it, loader
    gc.collect()
    res.update(
        {
            "steps": len(losses),
            "train_steps_s": round(train_s, 2),
            "first_step_s": round(step_times[0], 2) if step_times else None,
            "step_s_median": round(float(np.median(step_times[1:] or step_times)), 3),
            "images_per_s": round(n_images / max(1e-9, train_s), 1),
            "loss_first": round(losses[0], 4) if losses else None,
            "loss_last": round(losses[-1], 4) if losses else None,
            "est_epoch_min": round(
                len(sampler) * float(np.median(step_times[1:] or step_times)) / 60, 1
            ),
        }
    )
    return res


PHASE_FUNCS = {"data": phase_data, "build": phase_build, "mine": phase_mine, "train": phase_train}


def run_phase(args: argparse.Namespace) -> int:
    """Child process: run one phase, write its result JSON to the work directory."""
    import logging

    from effocr.utils import setup_logging

    setup_logging(level=logging.INFO)
    # The imports every phase pays (a CUDA build of torch alone maps ~700 MB), measured apart
    # from the phase's own growth.
    import faiss  # noqa: F401
    import timm  # noqa: F401
    import torch

    import effocr.recognizer.hard_negatives  # noqa: F401
    import effocr.recognizer.train  # noqa: F401

    torch.set_num_threads(args.threads)
    imports_mb = peak_rss_mb()
    work = Path(args.workdir)
    t = time.perf_counter()
    res = PHASE_FUNCS[args.phase](args, work)
    res.setdefault("seconds", round(time.perf_counter() - t, 2))
    res["peak_rss_mb"] = round(peak_rss_mb(), 1)
    res["rss_after_imports_mb"] = round(imports_mb, 1)
    res["phase_growth_mb"] = round(res["peak_rss_mb"] - imports_mb, 1)
    res["children_peak_rss_mb"] = round(children_peak_rss_mb(), 1)
    (work / f"phase_{args.phase}.json").write_text(json.dumps(res, indent=2) + "\n", "utf-8")
    return 0


# ---------------------------------------------------------------------------
# Parent: run the phases, collect, write JSON, print the table
# ---------------------------------------------------------------------------


def child_argv(args: argparse.Namespace, phase: str, work: Path) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--workdir", str(work)]
    for opt in ("classes", "ext_b", "per_class", "k", "batch_size", "threads", "steps", "seed"):
        argv += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    if args.device:
        argv += ["--device", args.device]
    return argv


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--classes", type=int, default=20000)
    p.add_argument("--ext-b", type=int, default=1000, help="classes from CJK Ext B (non-BMP)")
    p.add_argument("--per-class", type=int, default=2, choices=(1, 2), help="glyphs per class")
    p.add_argument("--k", type=int, default=8, help="hard-negative set size")
    p.add_argument("--batch-size", type=int, default=256, help="embedding batch (index, mining)")
    p.add_argument("--steps", type=int, default=20, help="training steps in phase train")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="recognizer.device (default: config's auto)")
    p.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    p.add_argument("--keep", default=None, help="work directory to keep (reused if complete)")
    p.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase:
        return run_phase(args)

    if args.keep:
        work = Path(args.keep)
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="effocr-index-scale-"))
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(args.threads)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    phases: dict[str, dict] = {}
    try:
        for phase in args.phases:
            if phase == "data" and args.keep and (work / "phase_data.json").exists():
                prev = json.loads((work / "phase_data.json").read_text("utf-8"))
                if prev.get("glyphs") == args.classes * args.per_class:
                    phases[phase] = {**prev, "reused": True}
                    print(f"[{phase}] reusing {work}", flush=True)
                    continue
            print(f"[{phase}] running ...", flush=True)
            t = time.perf_counter()
            proc = subprocess.run(child_argv(args, phase, work), env=env, cwd=ROOT)
            wall = time.perf_counter() - t
            if proc.returncode:
                print(f"[{phase}] failed with exit code {proc.returncode}", file=sys.stderr)
                return proc.returncode
            res = json.loads((work / f"phase_{phase}.json").read_text("utf-8"))
            res["process_wall_s"] = round(wall, 2)
            phases[phase] = res
            print(f"[{phase}] {res['seconds']} s, peak {res['peak_rss_mb']} MB", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    build, mine, data = phases.get("build", {}), phases.get("mine", {}), phases.get("data", {})
    res = {
        "benchmark": "index_scale",
        "command": " ".join([".venv/bin/python", "bench/index_scale.py", *sys.argv[1:]]),
        "classes": args.classes,
        "glyphs_per_class": args.per_class,
        "non_bmp_classes": data.get("non_bmp_classes"),
        "encoder": data.get("encoder"),
        "input_size": data.get("input_size"),
        "threads": args.threads,
        "cpu": cpu_info(),
        "cpus_visible": os.cpu_count(),
        "index_count": build.get("index_count"),
        "index_dim": build.get("index_dim"),
        "hard_negatives_sets": mine.get("hard_negatives_sets"),
        "hard_negatives_k": args.k,
        "phases": phases,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "index_scale.json"
    out.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    names = {
        "data": "data (glyphs+model.pt)",
        "build": "A build_reference_index",
        "mine": f"B mine_hard_negatives k={args.k}",
        "train": f"C train ({args.steps} steps)",
    }
    print(f"\n{cpu_line(res['cpu'])}")
    print(f"{args.classes} classes, {args.per_class} glyphs/class, {args.threads} threads")
    print(
        f"{'phase':34s} {'seconds':>8s} {'proc wall':>9s} {'peak MB':>8s} {'imports MB':>10s} "
        f"{'growth MB':>9s} {'workers MB':>10s}"
    )
    for name, r in phases.items():
        print(
            f"{names[name]:34s} {r['seconds']:8.2f} {r.get('process_wall_s', '(reused)'):>9} "
            f"{r['peak_rss_mb']:8.1f} {r.get('rss_after_imports_mb', 0):10.1f} "
            f"{r.get('phase_growth_mb', 0):9.1f} {r['children_peak_rss_mb']:10.1f}"
        )
    print(
        "peak MB: ru_maxrss of the phase's process; imports MB: its peak after importing torch, "
        "timm, faiss, effocr; workers MB: largest ru_maxrss of its children (forked DataLoader "
        "workers / render processes; pages shared with the parent are counted)"
    )
    if build:
        print(
            f"index: {build['index_count']} x {build['index_dim']}, hard-negative sets: {res['hard_negatives_sets']}"
        )
    if "train" in phases:
        t = phases["train"]
        print(
            f"train: dataset {t['dataset_s']} s, sampler init {t['sampler_init_s']} s, epoch "
            f"list {t['sampler_epoch_s']} s ({t['steps_per_epoch']} steps), validator "
            f"{t['validator_init_s']} s + p@1 {t['validate_s']} s, {t['steps']} steps "
            f"{t['train_steps_s']} s ({t['images_per_s']} img/s, ~{t['est_epoch_min']} min/epoch)"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
