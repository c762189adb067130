"""Export both models to an ONNX bundle and check it against PyTorch (`effocr export-bundle`).

The bundle (docs/architecture.md) is one directory: `localizer.onnx`, `recognizer.onnx`,
`ref.index`, `ref_labels.txt`, `model.yaml` (everything inference needs) and `parity.json`
(this check's figures). It is written atomically: when ONNX Runtime disagrees with PyTorch on
real test-split lines beyond the tolerances of config `export`, no bundle is left behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from effocr import artifacts
from effocr.bundle import PARITY, Manifest
from effocr.config import (
    CropsSection,
    DatasetSection,
    ExportSection,
    InferSection,
    LineDetectorSection,
    LMSection,
    LocalizerSection,
)
from effocr.utils import (
    EffOCRError,
    atomic_path,
    load_checkpoint,
    open_rgb,
    read_json,
    save_checkpoint,
    sha256_file,
    sha256_json,
    write_json,
)

LOG = logging.getLogger(__name__)

INDEX_FILES = (artifacts.INDEX, artifacts.INDEX_LABELS)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def check_onnx(path: str | os.PathLike) -> None:
    """Run `onnx.checker` (full check, with shape inference) on a model file."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx raises ValidationError and others
        raise EffOCRError(f"{path}: ONNX checker failed: {exc}") from exc


def _load_checkpoint(path: str | os.PathLike, kind: str) -> dict:
    ckpt = load_checkpoint(path, f"{kind} model")
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise EffOCRError(f"{path}: not an EffOCR {kind} model.pt (no `model` state dict)")
    return ckpt


def load_parity_lines(
    test_json: str | os.PathLike, image_dir: str | os.PathLike, n: int
) -> list[tuple[dict, np.ndarray]]:
    """The first `n` test-split lines (by image id) with their decoded RGB images."""
    from effocr.data.coco import load_coco
    from effocr.imageio import decode_image

    coco = load_coco(test_json)
    images = sorted(coco["images"], key=lambda im: im["id"])[:n]
    if not images:
        raise EffOCRError(f"{test_json}: the test split has no images for the parity check")
    out = []
    for im in images:
        path = Path(image_dir) / im["file_name"]
        try:
            out.append((im, decode_image(path)))
        except EffOCRError as exc:
            raise EffOCRError(f"{test_json}: image {im['id']} ({path}): {exc}") from exc
    return out


def glyph_crops(
    test_json: str | os.PathLike,
    lines: list[tuple[dict, np.ndarray]],
    *,
    full_height: bool,
    padding: int,
    char_category: str,
    word_category: str,
    allows_vertical: bool | None = None,
) -> list[np.ndarray]:
    """Real glyph crops of the annotated char boxes of `lines`, cut as at inference.

    `allows_vertical`: whether vertical lines occur (the profile's), as in `data.coco.is_vertical`.
    """
    from effocr.data.coco import index_coco, is_vertical, line_chars, load_coco
    from effocr.data.crops import crop_box

    index = index_coco(load_coco(test_json), char_category, word_category)
    crops = []
    for im, img in lines:
        h, w = img.shape[:2]
        for _char, ann in line_chars(index, im, allows_vertical):
            try:
                x0, y0, x1, y1 = crop_box(
                    ann["bbox"], w, h, is_vertical(im, allows_vertical), full_height, padding
                )
            except ValueError:
                continue  # an empty box says nothing about parity
            crops.append(img[y0:y1, x0:x1])
    if not crops:
        raise EffOCRError(f"{test_json}: no char boxes in the parity lines")
    return crops


# ---------------------------------------------------------------------------
# Parity
# ---------------------------------------------------------------------------


def recognizer_parity(
    model: Any,
    onnx_path: str | os.PathLike,
    batch: np.ndarray,
    *,
    threads: int = 1,
    index: Any = None,
) -> dict:
    """Compare ONNX Runtime and PyTorch embeddings of preprocessed crops (N, 3, S, S).

    With `index` (a FAISS index of the reference embeddings) the report also gives
    `top1_agreement`: the share of crops whose nearest reference row is the same for both.
    """
    import torch

    from effocr.onnx_session import make_session

    model.eval()
    with torch.inference_mode():
        ref = np.concatenate(
            [
                model(torch.from_numpy(batch[i : i + 64])).float().numpy()
                for i in range(0, len(batch), 64)
            ]
        )
    sess = make_session(onnx_path, ["CPUExecutionProvider"], threads)
    name_in, name_out = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    # Odd batch sizes on purpose: the batch axis must be dynamic.
    got = np.concatenate(
        [sess.run([name_out], {name_in: batch[i : i + 37]})[0] for i in range(0, len(batch), 37)]
    )
    if got.shape != ref.shape:
        return {
            "passed": False,
            "reason": f"shape {got.shape} != PyTorch {ref.shape}",
            "n_crops": len(batch),
        }
    diff = np.abs(got - ref)
    cos = (got * ref).sum(1) / np.maximum(
        np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1), 1e-12
    )
    out = {
        "n_crops": int(len(batch)),
        "dim": int(ref.shape[1]),
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
    }
    if index is not None:
        import faiss

        def nearest(embs: np.ndarray) -> np.ndarray:
            embs = np.ascontiguousarray(embs, dtype=np.float32)
            faiss.normalize_L2(embs)
            return index.search(embs, 1)[1][:, 0]

        out["top1_agreement"] = float(np.mean(nearest(got) == nearest(ref)))
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes (N,4) x (M,4)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match_boxes(
    ref_boxes: np.ndarray,
    ref_scores: np.ndarray,
    got_boxes: np.ndarray,
    got_scores: np.ndarray,
    *,
    threshold: float,
    margin: float,
    box_tol: float = 0.5,
) -> dict:
    """Greedily match two detection sets, highest reference score first.

    Two boxes match when their IoU is >= 0.5 or every coordinate is within `box_tol` pixels
    (the latter also pairs degenerate, zero-area boxes); the closest candidate wins. A box left
    unmatched is "borderline" (tolerated) when its score lies within `margin` of the score
    threshold: an output that close to the cut-off may fall either side of it.
    """
    ref_boxes = np.asarray(ref_boxes, dtype=np.float64).reshape(-1, 4)
    got_boxes = np.asarray(got_boxes, dtype=np.float64).reshape(-1, 4)
    ref_scores = np.asarray(ref_scores, dtype=np.float64).reshape(-1)
    got_scores = np.asarray(got_scores, dtype=np.float64).reshape(-1)
    iou = _iou(ref_boxes, got_boxes)
    dist = (
        np.abs(ref_boxes[:, None, :] - got_boxes[None, :, :]).max(axis=2)
        if len(ref_boxes) and len(got_boxes)
        else np.zeros((len(ref_boxes), len(got_boxes)))
    )
    close = (iou >= 0.5) | (dist <= box_tol)
    used = np.zeros(len(got_boxes), dtype=bool)
    box_diffs, score_diffs = [], []
    unmatched_ref = []
    for i in np.argsort(-ref_scores, kind="stable"):
        cand = np.where(~used & close[i])[0]
        if len(cand) == 0:
            unmatched_ref.append(float(ref_scores[i]))
            continue
        j = cand[np.argmin(dist[i, cand])]
        used[j] = True
        box_diffs.append(float(dist[i, j]))
        score_diffs.append(float(abs(ref_scores[i] - got_scores[j])))
    unmatched_got = [float(s) for s in got_scores[~used]]
    unmatched = unmatched_ref + unmatched_got
    hard = [s for s in unmatched if abs(s - threshold) > margin]
    return {
        "n_ref": int(len(ref_boxes)),
        "n_onnx": int(len(got_boxes)),
        "matched": len(box_diffs),
        "unmatched_borderline": len(unmatched) - len(hard),
        "unmatched": len(hard),
        "box_max_abs": max(box_diffs, default=0.0),
        "score_max_abs": max(score_diffs, default=0.0),
        # The typical difference beside the worst: a quantized model moves a rare box or score
        # far while the rest stay put, and the max alone cannot tell that from a general drift.
        "box_mean_abs": float(np.mean(box_diffs)) if box_diffs else 0.0,
        "score_mean_abs": float(np.mean(score_diffs)) if score_diffs else 0.0,
    }


def _det_arrays(det: Any, kind: str) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.asarray(getattr(det, kind), dtype=np.float64).reshape(-1, 4)
    scores = getattr(det, f"{kind[:-1]}_scores", None)
    scores = (
        np.ones(len(boxes)) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    )
    return boxes, scores


def localizer_parity(
    model: Any,
    session: Any,
    images: list[np.ndarray],
    *,
    threshold: float,
    margin: float,
    box_tol: float = 0.5,
    allows_vertical: bool | None = None,
) -> dict:
    """Compare PyTorch and ONNX Runtime detections (chars and words) on line images.

    `allows_vertical` (whether vertical lines occur, the profile's) goes to both, as `Engine` does.
    """
    totals: dict[str, dict] = {}
    for img in images:
        ref = model.detect(img, allows_vertical=allows_vertical)
        got = session.detect(img, allows_vertical=allows_vertical)
        for kind in ("chars", "words"):
            if not hasattr(ref, kind):
                continue
            m = match_boxes(
                *_det_arrays(ref, kind),
                *_det_arrays(got, kind),
                threshold=threshold,
                margin=margin,
                box_tol=box_tol,
            )
            t = totals.setdefault(kind, dict.fromkeys(m, 0))
            for key, value in m.items():
                if key.endswith("max_abs"):
                    t[key] = max(t[key], value)
                elif key.endswith("mean_abs"):  # weighted by matches, divided below
                    t[key] += value * m["matched"]
                else:
                    t[key] += value
    for t in totals.values():
        for key in [k for k in t if k.endswith("mean_abs")]:
            t[key] = t[key] / t["matched"] if t["matched"] else 0.0
    return {"n_lines": len(images), **totals}


def evaluate_quantized_parity(rec: dict, tol: dict) -> list[str]:
    """Problems of the int8 recognizer against PyTorch (its own, looser tolerances)."""
    if "reason" in rec:
        return [f"int8 recognizer: {rec['reason']}"]
    problems = []
    if rec["min_cosine"] < tol["quantized_min_cosine"]:
        problems.append(
            f"int8 recognizer: min cosine {rec['min_cosine']:.4f}"
            f" < export.quantized_min_cosine {tol['quantized_min_cosine']}"
        )
    if rec.get("top1_agreement", 1.0) < tol["quantized_top1_agreement"]:
        problems.append(
            f"int8 recognizer: nearest reference class agrees with PyTorch on "
            f"{rec['top1_agreement']:.4f} of crops < export.quantized_top1_agreement "
            f"{tol['quantized_top1_agreement']}"
        )
    return problems


def evaluate_parity(rec: dict, loc: dict, tol: dict) -> list[str]:
    """Problems (empty when the bundle passes) of parity figures against the tolerances."""
    problems = []
    if "reason" in rec:
        problems.append(f"recognizer: {rec['reason']}")
    else:
        if rec["max_abs"] > tol["embedding_max_abs"]:
            problems.append(
                f"recognizer: max |ONNX - PyTorch| {rec['max_abs']:.3g}"
                f" > export.embedding_max_abs {tol['embedding_max_abs']}"
            )
        if rec["min_cosine"] < tol["embedding_min_cosine"]:
            problems.append(
                f"recognizer: min cosine {rec['min_cosine']:.6f} < export.embedding_min_cosine {tol['embedding_min_cosine']}"
            )
    for kind in ("chars", "words"):
        m = loc.get(kind)
        if not m:
            continue
        if m["unmatched"]:
            problems.append(
                f"localizer {kind}: {m['unmatched']} box(es) found by only one of ONNX ({m['n_onnx']}) "
                f"and PyTorch ({m['n_ref']})"
            )
        if m["box_max_abs"] > tol["box_max_abs"]:
            problems.append(
                f"localizer {kind}: box difference {m['box_max_abs']:.3g} px > export.box_max_abs {tol['box_max_abs']}"
            )
        if m["score_max_abs"] > tol["score_max_abs"]:
            problems.append(
                f"localizer {kind}: score difference {m['score_max_abs']:.3g} > export.score_max_abs {tol['score_max_abs']}"
            )
    return problems


# ---------------------------------------------------------------------------
# Bundle
# ---------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """Versions of the software that wrote (and should read) the bundle."""
    import faiss
    import onnx
    import onnxruntime
    import torch

    import effocr

    found = {
        "effocr": effocr.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "faiss": getattr(faiss, "__version__", "unknown"),
    }
    # torch's version is a str subclass that YAML's safe dumper refuses.
    return {k: str(v) for k, v in found.items()}


@dataclass
class _Sources:
    """The trained models and what the bundle needs from them, each checkpoint read once."""

    rec_model: Any  # RecognizerNet
    train_cfg: dict  # the recognizer's training config
    profile: Any  # effocr.profiles.Profile
    crops_cfg: dict
    loc_model: Any  # TorchLocalizer; None for an ONNX localizer made elsewhere
    loc_meta: dict
    loc_config: dict  # hashed into model.yaml's config_sha256

    @property
    def external(self) -> bool:
        return self.loc_model is None


def _load_sources(
    recognizer_pt: str | os.PathLike,
    localizer_pt: str | os.PathLike,
    localizer_layout: str | None,
    localizer_input_height: int,
    localizer_thresholds: dict | None,
    crops_cfg: dict,
) -> _Sources:
    from effocr.localizer.model import TorchLocalizer, check_checkpoint, model_from_checkpoint
    from effocr.localizer.onnx_layouts import external_meta
    from effocr.profiles import get_profile
    from effocr.recognizer.model import recognizer_from_checkpoint

    rec_ckpt = _load_checkpoint(recognizer_pt, "recognizer")
    rec_model = recognizer_from_checkpoint(rec_ckpt, recognizer_pt)
    train_cfg = rec_ckpt.get("config") or {}
    if "language" not in train_cfg:
        raise EffOCRError(
            f"{recognizer_pt}: its config names no language (not a trained model.pt?)"
        )
    profile = get_profile(train_cfg["language"])
    if Path(localizer_pt).suffix.lower() == ".onnx":
        loc_meta = external_meta(
            localizer_layout, localizer_input_height, **(localizer_thresholds or {})
        )
        if not profile.spaces:
            loc_meta["classes"] = ["char"]
        loc_config = {"onnx_model_sha256": sha256_file(localizer_pt)}
        return _Sources(rec_model, train_cfg, profile, crops_cfg, None, loc_meta, loc_config)
    loc_ckpt = _load_checkpoint(localizer_pt, "localizer")
    check_checkpoint(loc_ckpt, localizer_pt)
    # A JSON round trip: model.yaml gets plain lists and dicts whatever the checkpoint held.
    loc_meta = json.loads(json.dumps(loc_ckpt["meta"]))
    loc_model = TorchLocalizer(*model_from_checkpoint(loc_ckpt))
    return _Sources(
        rec_model, train_cfg, profile, crops_cfg, loc_model, loc_meta, loc_ckpt.get("config") or {}
    )


def _check_inputs(
    index_dir: Path,
    localizer_pt: str | os.PathLike,
    localizer_layout: str | None,
    given_onnx: tuple[str | os.PathLike | None, ...],
) -> None:
    for given in given_onnx:
        if given and not Path(given).is_file():
            raise EffOCRError(f"{given}: ONNX model not found (config export.*_onnx)")
    for name in INDEX_FILES:
        if not (index_dir / name).is_file():
            raise EffOCRError(f"{index_dir}: reference index incomplete, missing {name}")
    if Path(localizer_pt).suffix.lower() == ".onnx":
        if localizer_layout in (None, "effocr"):
            raise EffOCRError(
                f"{localizer_pt}: an ONNX localizer made elsewhere needs its output layout "
                "(config localizer.onnx_layout)"
            )
        if not Path(localizer_pt).is_file():
            raise EffOCRError(
                f"{localizer_pt}: ONNX localizer not found (config localizer.onnx_model)"
            )


def _write_onnx(
    tmp: Path,
    src: _Sources,
    localizer_pt: str | os.PathLike,
    localizer_layout: str | None,
    recognizer_onnx: str | os.PathLike | None,
    localizer_onnx: str | os.PathLike | None,
    opset: int,
) -> tuple[Path, Path]:
    """Both ONNX models in the temporary bundle `tmp`, exported or copied, and checked."""
    from effocr.localizer.export import export_model_onnx as export_localizer
    from effocr.recognizer.model import export_model_onnx as export_recognizer

    rec_onnx, loc_onnx = tmp / "recognizer.onnx", tmp / "localizer.onnx"
    LOG.info("exporting the recognizer (opset %d)", opset)
    if recognizer_onnx:
        shutil.copyfile(recognizer_onnx, rec_onnx)
    else:
        export_recognizer(src.rec_model, rec_onnx, opset)
    if src.external:
        LOG.info("using the ONNX localizer %s (layout %s)", localizer_pt, localizer_layout)
        shutil.copyfile(localizer_pt, loc_onnx)
    elif localizer_onnx:
        shutil.copyfile(localizer_onnx, loc_onnx)
    else:
        LOG.info("exporting the localizer (opset %d)", opset)
        export_localizer(src.loc_model.model, src.loc_model.meta, loc_onnx, opset)
    check_onnx(rec_onnx)
    check_onnx(loc_onnx)
    return rec_onnx, loc_onnx


def _check_localizer(
    src: _Sources,
    loc_onnx: Path,
    images: list[np.ndarray],
    tol: dict,
    threads: int,
    localizer_pt: str | os.PathLike,
    localizer_layout: str | None,
) -> tuple[dict, list[str]]:
    """Localizer parity figures, and the problems only an external localizer can have."""
    from effocr.localizer.runtime import LocalizerSession

    session = LocalizerSession(loc_onnx, src.loc_meta, threads=threads)
    allows_vertical = src.profile.allows_vertical
    if not src.external:
        loc = localizer_parity(
            src.loc_model,
            session,
            images,
            threshold=float(src.loc_meta.get("score_threshold", 0.0)),
            margin=float(tol["score_max_abs"]),
            box_tol=float(tol["box_max_abs"]),
            allows_vertical=allows_vertical,
        )
        return loc, []
    # No PyTorch source to compare with: check that it loads and finds characters.
    n_chars = [len(session.detect(img, allows_vertical=allows_vertical).chars) for img in images]
    loc = {"n_lines": len(images), "external": True, "layout": localizer_layout}
    loc["chars_found"] = int(sum(n_chars))
    if loc["chars_found"]:
        return loc, []
    return loc, [
        f"localizer {localizer_pt}: no character found on the {len(images)} parity lines "
        f"(wrong localizer.onnx_layout {localizer_layout!r} or thresholds?)"
    ]


def _quantize(
    tmp: Path,
    src: _Sources,
    rec_onnx: Path,
    batch: np.ndarray,
    calibration: np.ndarray,
    ref_index: Any,
    tol: dict,
    threads: int,
) -> dict:
    """Quantize the checked float recognizer; ship the int8 model only if it passes its check."""
    from effocr.quantize import quantize_recognizer

    int8_onnx = tmp / "recognizer.int8.onnx"
    quantize_recognizer(rec_onnx, int8_onnx, calibration)
    check_onnx(int8_onnx)
    quantized = recognizer_parity(src.rec_model, int8_onnx, batch, threads=threads, index=ref_index)
    quantized["calibration_crops"] = int(len(calibration))
    # A weakly trained model's embeddings lie close together, and int8 rounding can flip its
    # nearest class: the checked float model is shipped instead.
    return _ship_int8(quantized, evaluate_quantized_parity(quantized, tol), int8_onnx, rec_onnx)


def _ship_int8(report: dict, problems: list[str], int8_onnx: Path, float_onnx: Path) -> dict:
    """Replace `float_onnx` (already checked) by `int8_onnx` when the int8 model has no
    `problems`, else drop it; `report` gets `problems` and `used`.

    The parity check ran on this CPU's kernels only: weights that can saturate the int16 sums
    of CPUs without VNNI would pass here and fail there, so they are a problem too.
    """
    from effocr.quantize import int16_unsafe_weights

    unsafe = int16_unsafe_weights(int8_onnx)
    if unsafe:
        problems.append(
            f"{len(unsafe)} int8 weight tensor(s) can saturate CPUs without VNNI: {unsafe[:3]}"
        )
    report["problems"] = problems
    report["used"] = not problems
    if problems:
        LOG.warning(
            "int8 %s rejected, the bundle keeps float32: %s",
            float_onnx.stem,
            "; ".join(problems),
        )
        int8_onnx.unlink()
    else:
        os.replace(int8_onnx, float_onnx)
    return report


def _quantization(int8_report: dict | None) -> str:
    """A model's `quantization` in model.yaml: what its int8 check decided."""
    return "int8" if int8_report and int8_report["used"] else "none"


def box_agreement(parity: dict) -> float:
    """The worst class's share of boxes found by both detectors (F1 at IoU 0.5: matched boxes
    over the mean count), from `localizer_parity` figures; 1.0 when neither found any."""
    shares = [
        2 * t["matched"] / (t["n_ref"] + t["n_onnx"]) if t["n_ref"] + t["n_onnx"] else 1.0
        for kind, t in parity.items()
        if kind in ("chars", "words")
    ]
    return min(shares, default=1.0)


def _quantize_localizer(
    tmp: Path,
    src: _Sources,
    loc_onnx: Path,
    images: list,
    calibration: list,
    tol: dict,
    threads: int,
) -> dict:
    """Quantize the checked float localizer; ship the int8 model only if its boxes agree with
    PyTorch's on the parity lines (`export.quantized_box_agreement`)."""
    from effocr.localizer.prepare import prepare_line
    from effocr.localizer.runtime import LocalizerSession
    from effocr.quantize import quantize_localizer

    meta, allows_vertical = src.loc_meta, src.profile.allows_vertical
    inputs = [
        prepare_line(img, meta["input_height"], meta["pad_multiple"], allows_vertical).array[None]
        for img in calibration
    ]
    int8_onnx = tmp / "localizer.int8.onnx"
    quantize_localizer(loc_onnx, int8_onnx, inputs)
    check_onnx(int8_onnx)
    session = LocalizerSession(int8_onnx, meta, threads=threads)
    # Margin 0: every box found by one detector only counts against the agreement.
    quantized = localizer_parity(
        src.loc_model,
        session,
        images,
        threshold=float(meta.get("score_threshold", 0.0)),
        margin=0.0,
        allows_vertical=allows_vertical,
    )
    quantized["box_agreement"] = box_agreement(quantized)
    quantized["calibration_lines"] = len(inputs)
    problems = []
    if quantized["box_agreement"] < tol["quantized_box_agreement"]:
        problems.append(
            f"int8 localizer: {quantized['box_agreement']:.4f} of boxes agree with PyTorch "
            f"< export.quantized_box_agreement {tol['quantized_box_agreement']}"
        )
    return _ship_int8(quantized, problems, int8_onnx, loc_onnx)


def _index_section(index: Any) -> dict:
    """The manifest's `index` for a `ReferenceIndex`: its files, its count, and its
    prototypes' count and weight if it has them."""
    section = {
        "file": artifacts.INDEX,
        "labels": artifacts.INDEX_LABELS,
        "metric": "inner_product",
        "count": len(index),
    }
    if index.prototypes is not None:
        section["prototypes"] = {
            "file": artifacts.INDEX_PROTOTYPES,
            "count": len(index.prototypes),
            "weight": index.prototypes.weight,
        }
    return section


def _manifest(
    src: _Sources,
    index: Any,
    quantized: dict | None,
    tol: dict,
    infer: dict,
    localizer_int8: dict | None = None,
):
    """The bundle's `Manifest` for the `ReferenceIndex` it ships (checksums are added by
    `Manifest.write`)."""
    rec_model, profile = src.rec_model, src.profile
    return Manifest(
        language=src.train_cfg["language"],
        profile={
            "name": profile.name,
            "vertical": profile.allows_vertical,
            "spaces": profile.spaces,
            "render_mode": profile.render_mode,
            "tesseract_lang": profile.tesseract_lang,
        },
        recognizer={
            "file": "recognizer.onnx",
            "input_size": int(rec_model.input_size),
            "input_layout": "NCHW float32 RGB, effocr.recognizer.transforms.preprocess",
            "mean": [float(v) for v in rec_model.mean],
            "std": [float(v) for v in rec_model.std],
            "encoder": rec_model.encoder_name,
            "encoder_args": rec_model.encoder_args,
            "embedding_dim": int(rec_model.dim),
            "quantization": _quantization(quantized),
        },
        localizer={
            "file": "localizer.onnx",
            "meta": src.loc_meta,
            "quantization": _quantization(localizer_int8),
        },
        index=_index_section(index),
        crops={"full_height": True, "padding": int(src.crops_cfg["padding"])},
        infer={
            "batch_size": int(infer["batch_size"]),
            "workers": int(infer["workers"]),
            "geometry": bool(infer["geometry"]),
        },
        output={
            "layout": artifacts.PREDICTIONS,
            "bbox": "xyxy, pixels of the input line image",
            "fields": ["image", "text", "chars", "words", "error"],
        },
        opset=int(tol["opset"]),
        versions=versions(),
        config_sha256={
            "recognizer": sha256_json(src.train_cfg),
            "localizer": sha256_json(src.loc_config),
        },
    )


LINE_DETECTOR_FILE = "line_detector.onnx"


def line_detector_parity(
    model_pt: str | os.PathLike,
    onnx_path: Path,
    pages_json: str | os.PathLike | None,
    tol: dict,
    threads: int = 1,
) -> dict:
    """Export the line detector to `onnx_path` and compare ONNX Runtime with PyTorch on the
    first `parity_pages` pages of `pages_json`: raw outputs (max abs difference) and the
    decoded lines (every PyTorch line matched by an ONNX one at IoU >= 0.9)."""
    import torch

    from effocr.linedet import postprocess as lp
    from effocr.linedet.model import export_onnx, load_model
    from effocr.linedet.postprocess import decode_meta, prepare_page
    from effocr.onnx_session import make_session

    if pages_json is None:
        raise EffOCRError("exporting the line detector needs test pages for its parity check")
    _, meta = export_onnx(model_pt, onnx_path, int(tol["opset"]))
    check_onnx(onnx_path)
    model, _ = load_model(model_pt)
    coco = read_json(pages_json)
    images = coco.get("images", [])[: int(tol["parity_pages"])]
    if not images:
        raise EffOCRError(f"{pages_json}: no pages for the line detector's parity check")
    session = make_session(onnx_path, None, threads, what="ONNX line detector")
    max_abs, lines_torch, lines_matched, problems = 0.0, 0, 0, []
    for im in images:
        path = Path(pages_json).parent / "images" / im["file_name"]
        page = np.asarray(open_rgb(path).convert("L"))
        prepared = prepare_page(page, meta)
        with torch.no_grad():
            ref = model(torch.from_numpy(prepared.array[None]))[0].numpy()
        got = session.run(None, {session.get_inputs()[0].name: prepared.array[None]})[0][0]
        max_abs = max(max_abs, float(np.abs(ref - got).max()))
        a = [ln.bbox for ln in decode_meta(ref, prepared, meta)]
        b = [ln.bbox for ln in decode_meta(got, prepared, meta)]
        lines_torch += len(a)
        lines_matched += len(lp.match_lines(np.asarray(a), np.asarray(b), 0.9))
    if max_abs > float(tol["line_detector_max_abs"]):
        problems.append(
            f"line detector: max abs difference {max_abs:.2e} > {tol['line_detector_max_abs']}"
        )
    if lines_matched < lines_torch:
        problems.append(
            f"line detector: {lines_torch - lines_matched} of {lines_torch} PyTorch lines have "
            "no ONNX line at IoU 0.9"
        )
    return {
        "pages": [im["file_name"] for im in images],
        "max_abs": max_abs,
        "lines": lines_torch,
        "lines_matched": lines_matched,
        "problems": problems,
        "meta": meta,
    }


def line_detector_section(parity: dict, line_detector: LineDetectorSection) -> dict:
    """model.yaml's `line_detector` section from the parity report (its `meta` moves here)
    and the config section `line_detector` (`line_margin`, `max_line_tilt`, `cut_height`)."""
    return {
        "file": LINE_DETECTOR_FILE,
        "meta": parity.pop("meta"),
        "line_margin": float(line_detector.line_margin),
        "max_line_tilt": float(line_detector.max_line_tilt),
        "cut_height": int(line_detector.cut_height),
    }


def add_line_detector(
    bundle_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    model_pt: str | os.PathLike,
    pages_json: str | os.PathLike,
    *,
    export: ExportSection,
    line_detector: LineDetectorSection,
    threads: int = 1,
) -> dict:
    """A copy of bundle `bundle_dir` (any supported format) at `out_dir` with the line
    detector `model_pt` added (exported, parity-checked on `pages_json` with the tolerances of
    the config section `export`, format version 2), so a bundle trained before line detection
    existed reads pages. Returns the parity.
    """
    from effocr.bundle import FORMAT_VERSION

    tol = export.as_dict()
    manifest = Manifest.read(bundle_dir)
    with atomic_path(out_dir, is_dir=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        for name in [*manifest.file_names(), "index.json", PARITY]:
            if (Path(bundle_dir) / name).is_file() and name != LINE_DETECTOR_FILE:
                shutil.copyfile(Path(bundle_dir) / name, tmp / name)
        linedet = line_detector_parity(model_pt, tmp / LINE_DETECTOR_FILE, pages_json, tol, threads)
        if linedet["problems"]:
            raise EffOCRError(
                "ONNX line detector disagrees with PyTorch; no bundle written:\n  "
                + "\n  ".join(linedet["problems"])
            )
        manifest.line_detector = line_detector_section(linedet, line_detector)
        manifest.format_version = FORMAT_VERSION
        manifest.write(tmp)
        parity = read_json(tmp / PARITY) if (tmp / PARITY).is_file() else {}
        parity["line_detector"] = linedet
        write_json(tmp / PARITY, parity)
    return linedet


def _write_weights(bundle: Path, src: _Sources) -> dict[str, str]:
    """The models' PyTorch weights in the bundle, so that it can be the base of a fine-tune
    (config `init_from`): the state dict and what rebuilds the model, without the training
    config (which names the exporter's files). Returns `Manifest.weights`."""
    from effocr.warm_start import BUNDLE_FILES

    def state(model: Any) -> dict:
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    weights = {"recognizer": BUNDLE_FILES["recognizer"]}
    save_checkpoint(
        {"kind": "recognizer", "model": state(src.rec_model), **src.rec_model.metadata()},
        bundle / weights["recognizer"],
    )
    if not src.external:
        weights["localizer"] = BUNDLE_FILES["localizer"]
        meta = src.loc_meta
        save_checkpoint(
            {
                "kind": "localizer",
                "model": state(src.loc_model.model),
                "meta": meta,
                "classes": list(meta["classes"]),
            },
            bundle / weights["localizer"],
        )
    return weights


PARITY_TOLERANCES = (
    "embedding_max_abs",
    "embedding_min_cosine",
    "box_max_abs",
    "score_max_abs",
    "quantized_min_cosine",
    "quantized_top1_agreement",
    "quantized_box_agreement",
)


def export_bundle(
    recognizer_pt: str | os.PathLike,
    index_dir: str | os.PathLike,
    localizer_pt: str | os.PathLike,
    test_json: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    export: ExportSection,
    infer: InferSection,
    localizer: LocalizerSection,
    crops: CropsSection,
    dataset: DatasetSection,
    recognizer_onnx: str | os.PathLike | None = None,
    localizer_onnx: str | os.PathLike | None = None,
    calibration_json: str | os.PathLike | None = None,
    threads: int = 1,
    lm_json: str | os.PathLike | None = None,
    lm: LMSection,
    line_detector_pt: str | os.PathLike | None = None,
    line_detector_pages: str | os.PathLike | None = None,
    line_detector: LineDetectorSection,
) -> dict:
    """Export both models, check them against PyTorch on test-split lines, write the bundle.

    With `line_detector_pt` (and `line_detector_pages`, a COCO JSON of synthetic test pages
    with `images/` beside it), the line detector is exported too (`line_detector.onnx`,
    section `line_detector` of model.yaml, with the config section `line_detector`'s
    `line_margin`, `max_line_tilt` and `cut_height`) and checked against PyTorch on the first `export.parity_pages` pages.

    Args:
        recognizer_pt: The hard-negative recognizer `model.pt`.
        index_dir: Reference index directory (`ref.index`, `ref_labels.txt`).
        localizer_pt: The localizer `model.pt`, or an ONNX localizer exported elsewhere
            (config `localizer.onnx_model`, with `localizer.onnx_layout`): that one is copied into
            the bundle as it is and only checked to load and detect on the parity lines.
        test_json: Test-split COCO JSON; its first `export.parity_lines` lines are the check.
        out_dir: The bundle directory (replaced atomically on success only).
        export: Config section `export` (opset, tolerances, quantize).
        infer: Config section `infer`, written into model.yaml as inference defaults.
        localizer: Config section `localizer`: `onnx_layout`, `input_height` and the thresholds
            of an external ONNX localizer.
        crops: Config section `crops` (`padding`: the glyph crops of the check, calibration
            and inference).
        dataset: Config section `dataset` (`image_dir`: the folder the splits' `file_name`s
            are relative to; `char_category`, `word_category`: their char boxes).
        recognizer_onnx: Use this ONNX recognizer (e.g. one optimised elsewhere) instead of
            exporting; it must still match `recognizer_pt`. Default: `export.recognizer_onnx`.
        localizer_onnx: Same for the localizer (`export.localizer_onnx`).
        calibration_json: COCO JSON (the validation split) whose glyph crops calibrate the int8
            recognizer (`export.quantize: int8`); without it the parity lines are used.
        threads: CPU threads for the check.
        lm_json: A character language model (`effocr.lm`, rule `train_lm`) to ship as
            `lm.json`; None: the bundle has none.
        lm: Config section `lm` (enabled, weight, k, beam, margin: written into model.yaml
            with `lm_json`).
        line_detector: Config section `line_detector` (read with `line_detector_pt`).

    Returns:
        The parity report (also written as `parity.json`).

    Raises:
        EffOCRError: bad inputs, an ONNX checker failure, or a parity failure (no bundle left).
    """
    import torch

    from effocr.localizer.postprocess import config_thresholds
    from effocr.recognizer.reference import ReferenceIndex
    from effocr.recognizer.transforms import preprocess

    tol = export.as_dict()
    infer_defaults = infer.as_dict()
    localizer_layout = localizer.onnx_layout
    recognizer_onnx = recognizer_onnx or export.recognizer_onnx
    localizer_onnx = localizer_onnx or export.localizer_onnx
    index_dir = Path(index_dir)
    _check_inputs(index_dir, localizer_pt, localizer_layout, (recognizer_onnx, localizer_onnx))
    src = _load_sources(
        recognizer_pt,
        localizer_pt,
        localizer_layout,
        localizer.input_height,
        config_thresholds(localizer.as_dict()),
        crops.as_dict(),
    )
    rec_model = src.rec_model
    torch.set_num_threads(max(1, threads))

    def crop_batch(split_json: str | os.PathLike, split_lines: list) -> np.ndarray:
        crops = glyph_crops(
            split_json,
            split_lines,
            full_height=True,
            padding=int(src.crops_cfg["padding"]),
            char_category=dataset.char_category,
            word_category=dataset.word_category,
            allows_vertical=src.profile.allows_vertical,
        )
        size = int(rec_model.input_size)
        return np.stack([preprocess(c, size, rec_model.mean, rec_model.std) for c in crops])

    image_dir = dataset.image_dir
    with atomic_path(out_dir, is_dir=True) as tmp:
        rec_onnx, loc_onnx = _write_onnx(
            tmp,
            src,
            localizer_pt,
            localizer_layout,
            recognizer_onnx,
            localizer_onnx,
            int(tol["opset"]),
        )
        lines = load_parity_lines(test_json, image_dir, int(tol["parity_lines"]))
        batch = crop_batch(test_json, lines)
        # The index as inference reads it (prototypes included): top-1 agreement is of labels.
        ref_index = ReferenceIndex.load(index_dir)
        rec = recognizer_parity(rec_model, rec_onnx, batch, threads=threads, index=ref_index)
        images = [img for _, img in lines]
        loc, loc_problems = _check_localizer(
            src, loc_onnx, images, tol, threads, localizer_pt, localizer_layout
        )
        problems = evaluate_parity(rec, loc, tol) + loc_problems
        linedet = None
        if line_detector_pt is not None:
            linedet = line_detector_parity(
                line_detector_pt, tmp / LINE_DETECTOR_FILE, line_detector_pages, tol, threads
            )
            problems += linedet["problems"]
        quantized = localizer_int8 = None
        if not problems and tol["quantize"] == "int8":
            if calibration_json:
                calib_lines = load_parity_lines(
                    calibration_json, image_dir, int(tol["calibration_lines"])
                )
                calibration = crop_batch(calibration_json, calib_lines)
            else:
                LOG.warning("no calibration split given: calibrating int8 on the parity lines")
                calib_lines, calibration = lines, batch
            quantized = _quantize(tmp, src, rec_onnx, batch, calibration, ref_index, tol, threads)
            if not src.external:  # an external localizer is shipped as it was given
                localizer_int8 = _quantize_localizer(
                    tmp, src, loc_onnx, images, [img for _, img in calib_lines], tol, threads
                )
        report = {
            "passed": not problems,
            "problems": problems,
            "tolerances": {k: tol[k] for k in PARITY_TOLERANCES},
            "lines": [im["file_name"] for im, _ in lines],
            "recognizer": rec,
            "recognizer_int8": quantized,
            "localizer": loc,
            "localizer_int8": localizer_int8,
            "line_detector": linedet,
        }
        LOG.info("parity: %s", report)
        if problems:
            msg = "ONNX export disagrees with PyTorch on the test split; no bundle written:\n  "
            msg += "\n  ".join(problems)
            LOG.error("%s", msg)
            raise EffOCRError(msg)
        for name in (*INDEX_FILES, artifacts.INDEX_META, artifacts.INDEX_PROTOTYPES):
            if (index_dir / name).is_file():
                shutil.copyfile(index_dir / name, tmp / name)
        manifest = _manifest(src, ref_index, quantized, tol, infer_defaults, localizer_int8)
        if lm_json is not None:
            from effocr.lm import LM_FILE, CharLM, lm_section

            model = CharLM.load(lm_json)  # a broken file fails the export, not the first infer
            shutil.copyfile(lm_json, tmp / LM_FILE)
            manifest.lm = lm_section(lm, model.order)
        if linedet is not None:
            manifest.line_detector = line_detector_section(linedet, line_detector)
        manifest.weights = _write_weights(tmp, src)
        manifest.write(tmp)
        if calibration_json and tol["confidence_lines"] > 0:
            from effocr.confidence import calibrate_bundle

            # Read by the finished bundle, as `effocr infer` will read: the confidences it
            # calibrates are those of the shipped (possibly int8) models and LM.
            spec = {"name": "calibration", "path": str(calibration_json), "type": "coco"}
            spec["image_dir"] = str(image_dir)
            with tempfile.TemporaryDirectory() as work:
                report["confidence"] = calibrate_bundle(
                    tmp, manifest, spec, int(tol["confidence_lines"]), work
                )
            manifest.write(tmp)
        write_json(tmp / PARITY, report)
    LOG.info("bundle written to %s", out_dir)
    return report


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr export-bundle`."""
    parser.add_argument(
        "--recognizer", required=True, help="recognizer model.pt (hard-negative pass)"
    )
    parser.add_argument("--index", required=True, help="reference index directory")
    parser.add_argument(
        "--localizer",
        required=True,
        help="localizer model.pt, or an ONNX localizer made elsewhere (with --localizer-layout)",
    )
    parser.add_argument(
        "--localizer-layout", default=None, help="output layout of an external ONNX localizer"
    )
    parser.add_argument(
        "--calibration-split",
        default=None,
        help="COCO JSON (validation split) whose glyph crops calibrate the int8 recognizer",
    )
    parser.add_argument("--test-split", required=True, help="test-split COCO JSON (parity lines)")
    parser.add_argument(
        "--image-dir", required=True, help="folder the split's file_names are relative to"
    )
    parser.add_argument("--output", "-o", required=True, help="bundle directory to write")
    parser.add_argument(
        "--lm-model",
        default=None,
        help="character language model (lm.json from `effocr train-lm`) to ship in the bundle",
    )
    parser.add_argument("--config", default=None, help="config YAML (sections export, infer, lm)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")


def run(args: argparse.Namespace) -> int:
    """Run `effocr export-bundle`."""
    from effocr.config import config_sections, load_config

    overrides: dict = {"dataset": {"image_dir": args.image_dir}}
    if args.localizer_layout:
        overrides["localizer"] = {"onnx_layout": args.localizer_layout}
    sections = config_sections(load_config(args.config, overrides))
    report = export_bundle(
        args.recognizer,
        args.index,
        args.localizer,
        args.test_split,
        args.output,
        **sections.pick("export", "infer", "localizer", "crops", "dataset", "lm", "line_detector"),
        calibration_json=args.calibration_split,
        threads=args.threads,
        lm_json=args.lm_model,
    )
    rec = report["recognizer"]
    print(
        f"bundle {args.output}: recognizer max |diff| {rec['max_abs']:.2e}, min cosine "
        f"{rec['min_cosine']:.6f} on {rec['n_crops']} crops; localizer checked on "
        f"{report['localizer']['n_lines']} lines"
    )
    return 0
