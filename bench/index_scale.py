"""Benchmark: reference index build and hard-negative search at ~20,000 classes.

Random glyph-like images (white squares with random dark strokes) go through the real
encoder in batches (`embed_tensors`), then FAISS IndexFlatIP is built and every class is
queried for its k nearest (what mining does with one render per class). Reports time and
peak RSS.

Usage: .venv/bin/python bench/index_scale.py --classes 20000 --threads 2
Writes bench/results/index_scale.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from effocr.recognizer.hardneg import nearest_other_classes
from effocr.recognizer.index import ReferenceIndex, embed_tensors
from effocr.recognizer.model import RecognizerNet
from effocr.recognizer.transforms import normalize

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--classes", type=int, default=20000)
    p.add_argument("--encoder", default="resnet10t")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    model = RecognizerNet(args.encoder, args.size).eval()
    t = time.perf_counter()
    embs = []
    for start in range(0, args.classes, args.batch_size):
        n = min(args.batch_size, args.classes - start)
        imgs = np.full((n, args.size, args.size, 3), 255, np.uint8)
        for i in range(n):
            y, x = rng.integers(0, args.size - 8, size=2)
            imgs[i, y : y + rng.integers(3, 8), x : x + rng.integers(3, 8)] = 0
            imgs[i, rng.integers(0, args.size), :] = rng.integers(0, 255)
        batch = torch.from_numpy(np.stack([normalize(im) for im in imgs]))
        embs.append(embed_tensors(model, batch, args.batch_size))
    embs = np.concatenate(embs)
    embed_s = time.perf_counter() - t
    labels = [
        chr(0x4E00 + i) if 0x4E00 + i < 0xD800 else chr(0x20000 + i) for i in range(args.classes)
    ]
    t = time.perf_counter()
    index = ReferenceIndex.build(embs, labels)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    _, rows = index.search(embs, args.k + 1)
    sets = nearest_other_classes(list(range(args.classes)), rows, args.k)
    search_s = time.perf_counter() - t
    res = {
        "benchmark": "index_scale",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "classes": args.classes,
        "encoder": args.encoder,
        "input_size": args.size,
        "dim": index.dim,
        "embed_s": round(embed_s, 2),
        "embed_images_per_s": round(args.classes / embed_s, 1),
        "index_build_s": round(build_s, 3),
        "mine_search_s": round(search_s, 2),
        "sets": len(sets),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "threads": args.threads,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "index_scale.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    for k, v in res.items():
        print(f"{k:22s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
