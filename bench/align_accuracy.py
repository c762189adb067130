"""Benchmark: character boxes from transcriptions (`effocr.align`) where the truth is known.

* ``synthetic``: fresh synthetic lines (`effocr.synth.lines.synth_lines_from_config` with the
  demo config and a seed the bundle never saw), their char and word boxes stripped, aligned
  with the bundle; each character's aligned box is compared with its true one. Reported: the
  fraction of characters with IoU >= 0.5, over the accepted lines (what becomes training
  data) and over all lines (the alignment before the confidence threshold), and the fraction
  of lines accepted.
* ``uw3`` (when `--uw3` exists): real scanned lines with `.gt.txt` transcriptions only (no
  boxes to compare with): the fraction of lines accepted.

Usage:
    .venv/bin/python bench/align_accuracy.py                    # demo bundle, 100 lines, seed 4242
    .venv/bin/python bench/align_accuracy.py --bundle results/bundle --lines 200 --seed 7
Writes bench/results/align_accuracy.json (figures, settings, CPU) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import (  # bench/common.py (this script's folder is on sys.path)
    SHARED_DATA,
    cpu_info,
    cpu_line,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
IOU_BOUND = 0.5


def strip_boxes(coco: dict) -> dict:
    """The same lines with their text only (what a transcription-only dataset has)."""
    return {**coco, "annotations": []}


def gt_dir_coco(folder: Path) -> dict:
    """A raw COCO of a `.gt.txt` line folder (text only), `file_name`s relative to `folder`."""
    from effocr.evaluate import load_gt_dir
    from effocr.imageio import decode_image

    images = []
    for i, line in enumerate(load_gt_dir(folder), start=1):
        h, w = decode_image(line.image).shape[:2]
        images.append(
            {
                "id": i,
                "file_name": str(Path(line.image).relative_to(folder)),
                "width": int(w),
                "height": int(h),
                "text": line.reference,
            }
        )
    cats = [{"id": 1, "name": "char"}, {"id": 2, "name": "word"}]
    return {"images": images, "annotations": [], "categories": cats}


def char_ious(truth: dict, lines: list) -> tuple[list[float], list[float]]:
    """IoU of each character's aligned and true box: (all aligned lines, accepted lines)."""
    import numpy as np

    from effocr.config import section_defaults
    from effocr.data.coco import index_coco, line_chars
    from effocr.localizer.postprocess import box_iou

    dataset = section_defaults("dataset")
    index = index_coco(truth, dataset["char_category"], dataset["word_category"])
    every, accepted = [], []
    for line in lines:
        res = line.alignment
        if res is None:
            continue
        true = [ann["bbox"] for _, ann in line_chars(index, index.images[line.image["id"]])]
        got = res.char_boxes
        for (x, y, w, h), box in zip(true, got, strict=True):
            iou = 0.0
            if box is not None:
                iou = float(box_iou(np.array([[x, y, x + w, y + h]]), np.array([box]))[0, 0])
            every.append(iou)
            if line.report.status == "accepted":
                accepted.append(iou)
    return every, accepted


def frac(values: list[float]) -> float | None:
    return sum(v >= IOU_BOUND for v in values) / len(values) if values else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / "results" / "bundle")
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    ap.add_argument("--lines", type=int, default=100)
    ap.add_argument("--seed", type=int, default=4242, help="synthetic lines' seed (not the demo's)")
    ap.add_argument("--uw3", type=Path, default=SHARED_DATA / "uw3-50lines")
    ap.add_argument("--min-confidence", type=float, default=None)
    ap.add_argument("--output", type=Path, default=RESULTS / "align_accuracy.json")
    args = ap.parse_args()

    from effocr.align import Aligner, AlignSettings, align_lines, report_summary
    from effocr.config import config_sections, load_config
    from effocr.data.coco import load_coco
    from effocr.synth.lines import synth_lines_from_config

    overrides: dict = {"seed": args.seed, "synth": {"n_lines": args.lines}, "align": {}}
    if args.min_confidence is not None:
        overrides["align"]["min_confidence"] = args.min_confidence
    config = load_config(args.config, overrides)
    sections = config_sections(config)
    settings = AlignSettings.from_config(sections.align)
    aligner = Aligner.from_bundle(args.bundle, settings)
    out: dict = {"bundle": str(args.bundle), "settings": settings.__dict__, "cpu": cpu_info()}
    with tempfile.TemporaryDirectory() as tmp:
        json_path = synth_lines_from_config(
            Path(tmp) / "lines.json", **sections.pick("synth", "fonts", "render", "run")
        )
        truth = load_coco(json_path)
        t0 = time.perf_counter()
        lines = align_lines(aligner, strip_boxes(truth), json_path.parent / "images")
        seconds = time.perf_counter() - t0
        # The same images with the next line's text: what a wrong transcription scores.
        swapped = strip_boxes(truth)
        texts = [im["text"] for im in truth["images"]]
        swapped["images"] = [
            {**im, "text": texts[(i + 1) % len(texts)]} for i, im in enumerate(truth["images"])
        ]
        wrong = report_summary(align_lines(aligner, swapped, json_path.parent / "images"), settings)
    every, accepted = char_ious(truth, lines)
    summary = report_summary(lines, settings)
    out["synthetic"] = {
        "lines": len(lines),
        "seed": args.seed,
        "accepted_fraction": summary["accepted_fraction"],
        "chars_all_lines": len(every),
        "iou_ge_0.5_all_lines": frac(every),
        "chars_accepted_lines": len(accepted),
        "iou_ge_0.5_accepted_lines": frac(accepted),
        "mean_iou_accepted": sum(accepted) / len(accepted) if accepted else None,
        "seconds": round(seconds, 2),
        "wrong_text_accepted_fraction": wrong["accepted_fraction"],
        "confidences": sorted(r["confidence"] for r in summary["lines_report"]),
        "wrong_text_confidences": sorted(
            r["confidence"] for r in wrong["lines_report"] if r["confidence"] is not None
        ),
        "rejected": [
            {"file_name": r["file_name"], "reason": r["reason"]}
            for r in summary["lines_report"]
            if r["status"] == "rejected"
        ],
    }
    if args.uw3.is_dir():
        coco = gt_dir_coco(args.uw3)
        t0 = time.perf_counter()
        uw3_lines = align_lines(aligner, coco, args.uw3)
        uw3 = report_summary(uw3_lines, settings)
        out["uw3"] = {
            "lines": uw3["lines"],
            "accepted_fraction": uw3["accepted_fraction"],
            "seconds": round(time.perf_counter() - t0, 2),
            "confidences": sorted(
                r["confidence"] for r in uw3["lines_report"] if r["confidence"] is not None
            ),
            "rejected": [
                {"file_name": r["file_name"], "reason": r["reason"]}
                for r in uw3["lines_report"]
                if r["status"] == "rejected"
            ],
        }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    print(cpu_line(out["cpu"]))
    s = out["synthetic"]
    print(
        f"{'set':<10} {'lines':>6} {'accepted':>9} {'IoU>=0.5 acc.':>14} {'IoU>=0.5 all':>13} "
        f"{'wrong text accepted':>20}"
    )

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    print(
        f"{'synthetic':<10} {s['lines']:>6} {pct(s['accepted_fraction']):>9} "
        f"{pct(s['iou_ge_0.5_accepted_lines']):>14} {pct(s['iou_ge_0.5_all_lines']):>13} "
        f"{pct(s['wrong_text_accepted_fraction']):>20}"
    )
    if "uw3" in out:
        u = out["uw3"]
        print(
            f"{'uw3':<10} {u['lines']:>6} {pct(u['accepted_fraction']):>9} {'-':>14} {'-':>13} {'-':>20}"
        )
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
