"""Page-level evaluation of a bundle on annotated pages (`effocr evaluate-pages`).

For each page of a COCO JSON of `line` annotations (`effocr.synth.pages`, images in
`images/` beside it) the bundle's page stage runs as `effocr infer` does (ONNX line
detector, reading order, cuts, line pipeline). Reported:

* line detection: precision, recall and F1 at IoU 0.5 of the detected line boxes;
* page-level CER: every true line scored against the text of the detected line matched to
  it (a missed line scores as empty, so its characters count as deletions), pooled;
* line-level CER of the same true lines cut from the ground-truth polygons (`PagePipeline.cut`, the
  same margin, tilt and height rules) and read by the same line pipeline: the difference is
  what finding the lines costs;
* seconds per stage, pages/s and lines/s, and the share of line detection in the page time.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np

from effocr.data.coco import load_coco
from effocr.linedet import postprocess as lp
from effocr.metrics import cer
from effocr.utils import EffOCRError, write_json

LOG = logging.getLogger(__name__)


def evaluate_pages(
    bundle_dir: str | os.PathLike,
    pages_json: str | os.PathLike,
    out_json: str | os.PathLike | None = None,
    *,
    max_pages: int | None = None,
    iou: float = 0.5,
) -> dict:
    """Evaluate `bundle_dir` on the pages of `pages_json` (module docstring); one core."""
    from effocr.imageio import decode_image
    from effocr.infer import Engine
    from effocr.pages import paper_level

    coco = load_coco(pages_json)
    image_dir = Path(pages_json).parent / "images"
    by_image: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    images = coco["images"][:max_pages] if max_pages else coco["images"]
    if not images:
        raise EffOCRError(f"{pages_json}: no pages")
    refs, page_hyps, line_hyps = [], [], []
    matched_refs, matched_page, matched_line = [], [], []
    tp = n_pred = n_gt = 0
    page_seconds = 0.0
    n_lines_read = 0
    with Engine(bundle_dir, workers=1, parallel="thread") as engine:
        pages = engine.pages
        if pages.detector is None:
            raise EffOCRError(f"{bundle_dir}: the bundle has no line detector")
        for im in images:
            path = image_dir / im["file_name"]
            anns = [a for a in by_image.get(im["id"], []) if a.get("text")]
            gt_boxes = [
                [
                    a["bbox"][0],
                    a["bbox"][1],
                    a["bbox"][0] + a["bbox"][2],
                    a["bbox"][1] + a["bbox"][3],
                ]
                for a in anns
            ]
            t0 = time.perf_counter()
            res = pages.read(str(path), layout="page")
            page_seconds += time.perf_counter() - t0
            if res.error:
                raise EffOCRError(f"{path}: {res.error}")
            pred_boxes = [
                list(lp.DetectedLine(ln.polygon, 0, ln.vertical, 0).bbox) for ln in res.lines
            ]
            pairs = lp.match_lines(np.asarray(pred_boxes), np.asarray(gt_boxes), iou)
            tp, n_pred, n_gt = tp + len(pairs), n_pred + len(pred_boxes), n_gt + len(gt_boxes)
            n_lines_read += len(res.lines)
            matched = {g: p for p, g in pairs}
            # The same true lines, cut from the ground truth and read by the same pipeline.
            page = decode_image(str(path), keep_grey=True)
            paper = paper_level(page)
            cuts = []
            for a in anns:
                seg = a["segmentation"][0]
                poly = list(zip(seg[::2], seg[1::2], strict=True))
                if a.get("vertical"):
                    poly = [poly[1], poly[2], poly[3], poly[0]]  # start at the top right
                cuts.append(pages.cut(page, poly, bool(a.get("vertical")), paper).image)
            line_res = pages.lines.run(cuts) if cuts else []
            for g, a in enumerate(anns):
                refs.append(a["text"])
                p = matched.get(g)
                page_hyps.append(res.lines[p].result.text if p is not None else "")
                line_hyps.append(line_res[g].text if line_res[g].ok else "")
                if p is not None:
                    matched_refs.append(refs[-1])
                    matched_page.append(page_hyps[-1])
                    matched_line.append(line_hyps[-1])
            # A false detection's text counts as insertions (an empty reference).
            for p, ln in enumerate(res.lines):
                if p not in matched.values() and ln.result.text:
                    refs.append("")
                    page_hyps.append(ln.result.text)
                    line_hyps.append("")
        timings = dict(engine.timings)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gt if n_gt else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    true_refs = [r for r in refs if r]
    page_cer = cer(refs, page_hyps)
    line_cer = cer(refs, line_hyps)
    detect = timings.get("line_detection", 0.0)
    report = {
        "bundle": str(bundle_dir),
        "pages_json": str(pages_json),
        "pages": len(images),
        "true_lines": len(true_refs),
        "detection": {
            "iou": iou,
            "tp": tp,
            "pred": n_pred,
            "gt": n_gt,
            "precision": precision,
            "recall": recall,
            "f1": f1,
        },
        "page_cer": page_cer,
        "line_cer_ground_truth_cuts": line_cer,
        "cer_difference_points": 100 * (page_cer - line_cer),
        # The found lines only: what cutting by the detected polygon (not the true one) costs.
        "matched_lines": {
            "lines": len(matched_refs),
            "page_cer": cer(matched_refs, matched_page) if matched_refs else None,
            "line_cer_ground_truth_cuts": cer(matched_refs, matched_line) if matched_refs else None,
        },
        "speed": {
            "page_seconds": page_seconds,
            "pages_per_s": len(images) / page_seconds if page_seconds else 0.0,
            "lines_per_s": n_lines_read / page_seconds if page_seconds else 0.0,
            "line_detection_share": detect / page_seconds if page_seconds else 0.0,
            "stage_seconds": {k: round(v, 4) for k, v in timings.items()},
            "note": "stage_seconds include the ground-truth cuts' line pipeline runs; "
            "page_seconds and the share cover the page runs only",
        },
    }
    if out_json is not None:
        write_json(out_json, report)
    return report


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr evaluate-pages`."""
    parser.add_argument("--model", "-m", required=True, help="bundle directory")
    parser.add_argument(
        "--pages", required=True, help="COCO JSON of annotated pages (images/ beside it)"
    )
    parser.add_argument("--out", default=None, help="write the metrics JSON here")
    parser.add_argument("--max-pages", type=int, default=None)


def run(args: argparse.Namespace) -> int:
    """Entry point of `effocr evaluate-pages`."""
    import json

    report = evaluate_pages(args.model, args.pages, args.out, max_pages=args.max_pages)
    print(json.dumps(report, indent=2))
    return 0
