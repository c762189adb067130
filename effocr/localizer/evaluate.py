"""Localizer evaluation: pycocotools COCO mAP and char/word precision/recall/F1 at IoU 0.5.

Used every epoch on the validation split during training and by the `evaluate_localizer`
rule on the test split (`effocr evaluate-localizer`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from effocr.config import DatasetSection, LocalizerSection, section_defaults
from effocr.data.coco import category_id, load_coco
from effocr.localizer.postprocess import Detections, box_iou, config_thresholds
from effocr.profiles import get_profile
from effocr.utils import EffOCRError, open_rgb, progress, write_json

LOG = logging.getLogger(__name__)

IOU = 0.5


def prf_at_iou(
    gt: list[np.ndarray], pred: list[np.ndarray], scores: list[np.ndarray], iou: float = IOU
) -> dict[str, float]:
    """Precision, recall and F1 of one class over many images (greedy one-to-one matching).

    Args:
        gt: Per image, (n, 4) ground-truth boxes ``x0, y0, x1, y1``.
        pred: Per image, (m, 4) predicted boxes.
        scores: Per image, (m,) scores (higher is matched first).
    """
    tp = n_gt = n_pred = 0
    for g, p, s in zip(gt, pred, scores, strict=True):
        n_gt += len(g)
        n_pred += len(p)
        if not len(g) or not len(p):
            continue
        ious = box_iou(np.asarray(p)[np.argsort(-np.asarray(s), kind="stable")], g)
        used = np.zeros(len(g), bool)
        for row in ious:
            row = np.where(used, -1.0, row)
            j = int(np.argmax(row))
            if row[j] >= iou:
                used[j] = True
                tp += 1
    precision = tp / n_pred if n_pred else (1.0 if not n_gt else 0.0)
    recall = tp / n_gt if n_gt else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "n_gt": n_gt,
        "n_pred": n_pred,
    }


def _xyxy(bbox: list[float]) -> list[float]:
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def evaluate_detections(
    coco: dict,
    detections: dict[int, Detections],
    classes: list[str],
    category_names: dict[str, str] | None = None,
) -> dict[str, Any]:
    """COCO mAP (pycocotools) and per-class P/R/F1 at IoU 0.5 of detections against `coco`.

    Args:
        coco: Ground-truth COCO dict (only the images in `detections` are evaluated).
        detections: Image id -> `Detections` in original pixels.
        classes: Classes of the model (``char``, optionally ``word``).
        category_names: Dataset category name per class (config `dataset.*_category`).

    Returns:
        ``{"coco": {"AP", "AP50", "AP75", "AP_char", "AP50_char", ...}, "char": {P/R/F1...},
        "word": {...}, "mean_f1", "n_images"}``.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = {"char": "char", "word": "word", **(category_names or {})}
    cat_ids = {c: category_id(coco, names[c], required=False) for c in classes}
    cat_ids = {c: i for c, i in cat_ids.items() if i is not None}
    image_ids = sorted(detections)
    wanted = set(image_ids)
    gt = {
        "images": [im for im in coco["images"] if im["id"] in wanted],
        "annotations": [
            {
                **a,
                "iscrowd": a.get("iscrowd", 0),
                "area": a.get("area", a["bbox"][2] * a["bbox"][3]),
            }
            for a in coco["annotations"]
            if a["image_id"] in wanted and a["category_id"] in cat_ids.values()
        ],
        "categories": [c for c in coco["categories"] if c["id"] in cat_ids.values()],
    }
    result: dict[str, Any] = {"n_images": len(image_ids), "iou": IOU}
    for c, cid in cat_ids.items():
        g = [
            np.array(
                [
                    _xyxy(a["bbox"])
                    for a in gt["annotations"]
                    if a["image_id"] == i and a["category_id"] == cid
                ]
            ).reshape(-1, 4)
            for i in image_ids
        ]
        p = [detections[i].chars if c == "char" else detections[i].words for i in image_ids]
        s = [
            detections[i].char_scores if c == "char" else detections[i].word_scores
            for i in image_ids
        ]
        result[c] = prf_at_iou(g, p, s)
    f1s = [result[c]["f1"] for c in cat_ids]
    result["mean_f1"] = float(np.mean(f1s)) if f1s else 0.0

    dets = []
    for i in image_ids:
        d = detections[i]
        for c, boxes, scores in (
            ("char", d.chars, d.char_scores),
            ("word", d.words, d.word_scores),
        ):
            if c not in cat_ids:
                continue
            for b, s in zip(boxes, scores, strict=True):
                x0, y0, x1, y1 = (float(v) for v in b)
                dets.append(
                    {
                        "image_id": i,
                        "category_id": cat_ids[c],
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "score": float(s),
                    }
                )
    stats: dict[str, float] = {}
    if dets and gt["annotations"]:
        with contextlib.redirect_stdout(io.StringIO()):
            cg = COCO()
            cg.dataset = gt
            cg.createIndex()
            cd = cg.loadRes(dets)
            ev = COCOeval(cg, cd, "bbox")
            ev.params.imgIds = image_ids
            ev.params.maxDets = [1, 10, 1000]  # a line has far more than 100 glyphs at times
            ev.evaluate()
            ev.accumulate()
        # COCOeval.summarize's AP assumes maxDets 100; read the precision table directly.
        allp = ev.eval["precision"][:, :, :, 0, 2]  # iou x recall x class, area all, 1000 dets

        def _mean(a: np.ndarray) -> float:
            a = a[a > -1]
            return float(a.mean()) if a.size else 0.0

        stats = {"AP": _mean(allp), "AP50": _mean(allp[0]), "AP75": _mean(allp[5])}
        cats = list(ev.params.catIds)
        for c, cid in cat_ids.items():
            k = cats.index(cid)
            prec = ev.eval["precision"][:, :, k, 0, 2]  # iou x recall, area all, maxDets 1000
            valid = prec[prec > -1]
            stats[f"AP_{c}"] = float(valid.mean()) if valid.size else 0.0
            p50 = prec[0][prec[0] > -1]
            stats[f"AP50_{c}"] = float(p50.mean()) if p50.size else 0.0
    else:
        stats = {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    result["coco"] = stats
    return result


def detect_split(
    localizer: Any,
    coco: dict,
    image_dir: str | os.PathLike,
    images: list[np.ndarray] | None = None,
    allows_vertical: bool | None = None,
) -> dict[int, Detections]:
    """Run `localizer.detect` on every image of a COCO split (images loaded unless given).

    `allows_vertical`: whether vertical lines occur (the profile's); None: the localizer's meta.
    """

    out: dict[int, Detections] = {}
    for k, im in enumerate(progress(coco["images"], desc="detect", leave=False)):
        if images is not None:
            arr = images[k]
        else:
            path = Path(image_dir) / im["file_name"]
            try:
                arr = np.asarray(open_rgb(path))
            except (FileNotFoundError, OSError) as exc:
                raise EffOCRError(f"{path}: cannot read line image {im['id']}: {exc}") from exc
        out[im["id"]] = localizer.detect(arr, allows_vertical=allows_vertical)
    return out


def evaluate_localizer(
    model_path: str | os.PathLike,
    coco_json: str | os.PathLike,
    image_dir: str | os.PathLike,
    out_json: str | os.PathLike,
    *,
    char_category: str,
    word_category: str,
    layout: str | None = None,
    threads: int = 1,
    thresholds: dict | None = None,
    input_height: int,
    allows_vertical: bool | None = None,
) -> dict[str, Any]:
    """Evaluate a localizer (`model.pt`, or an ONNX file with `layout`) on a COCO split.

    `thresholds` (score_threshold, nms_iou, max_detections, gap_factor) override the model's;
    `input_height` is the line height given to an external ONNX model with a dynamic input;
    `allows_vertical` is whether vertical lines occur (the profile's `allows_vertical`; None: the model's
    meta, which a localizer trained by effocr has from its profile).
    Writes ``out_json`` with the metrics, the model and the split named.
    """
    from effocr.localizer.runtime import open_localizer
    from effocr.utils import set_threads

    set_threads(threads)
    localizer = open_localizer(
        model_path, layout=layout, threads=threads, thresholds=thresholds, input_height=input_height
    )
    coco = load_coco(coco_json)
    dets = detect_split(localizer, coco, image_dir, allows_vertical=allows_vertical)
    metrics = evaluate_detections(
        coco, dets, localizer.meta["classes"], {"char": char_category, "word": word_category}
    )
    metrics.update({"model": str(model_path), "split": str(coco_json)})
    write_json(out_json, metrics)
    LOG.info(
        "%s: char F1 %.4f, word F1 %s, COCO AP %.4f AP50 %.4f",
        coco_json,
        metrics.get("char", {}).get("f1", 0.0),
        f"{metrics['word']['f1']:.4f}" if "word" in metrics else "-",
        metrics["coco"]["AP"],
        metrics["coco"]["AP50"],
    )
    return metrics


def evaluate_localizer_from_config(
    model_path: str | os.PathLike,
    coco_json: str | os.PathLike,
    out_json: str | os.PathLike,
    *,
    localizer: LocalizerSection,
    dataset: DatasetSection,
    threads: int,
) -> dict[str, Any]:
    """`evaluate_localizer` with the config sections `localizer` (`onnx_layout`,
    `input_height` and the post-processing thresholds) and `dataset` (`image_dir`, the
    categories)."""
    return evaluate_localizer(
        model_path,
        coco_json,
        dataset.image_dir,
        out_json,
        char_category=dataset.char_category,
        word_category=dataset.word_category,
        layout=localizer.onnx_layout,
        threads=threads,
        thresholds=config_thresholds(localizer.as_dict()),
        input_height=localizer.input_height,
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr evaluate-localizer`."""
    parser.add_argument("--model", required=True, help="model.pt, or an ONNX localizer")
    parser.add_argument("--coco", required=True, help="COCO JSON of the split to evaluate")
    parser.add_argument("--image-dir", required=True, help="directory of the line images")
    parser.add_argument("--out", required=True, help="metrics JSON to write")
    parser.add_argument(
        "--layout", default=None, help="output layout of an external ONNX model (see onnx_layouts)"
    )
    parser.add_argument(
        "--input-height",
        type=int,
        default=None,
        help="line height given to an external ONNX model with a dynamic input "
        "(default: config's localizer.input_height)",
    )
    parser.add_argument(
        "--score-threshold", type=float, default=None, help="override the model's score threshold"
    )
    parser.add_argument(
        "--nms-iou", type=float, default=None, help="override the model's NMS IoU threshold"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--language",
        default=None,
        help="language profile: lines are vertical only where it has vertical lines "
        "(default: the model's own setting)",
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of `effocr evaluate-localizer`."""
    # Only the options given override the model's thresholds.
    thresholds = {
        k: v
        for k, v in (("score_threshold", args.score_threshold), ("nms_iou", args.nms_iou))
        if v is not None
    }
    dataset = section_defaults("dataset")
    evaluate_localizer(
        args.model,
        args.coco,
        args.image_dir,
        args.out,
        char_category=dataset["char_category"],
        word_category=dataset["word_category"],
        layout=args.layout,
        threads=args.threads,
        thresholds=thresholds or None,
        input_height=(
            section_defaults("localizer")["input_height"]
            if args.input_height is None
            else args.input_height
        ),
        allows_vertical=get_profile(args.language).allows_vertical if args.language else None,
    )
    return 0
