"""Localizer training, resuming, evaluation metrics and ONNX export parity (real torch, real
pycocotools, real ONNX Runtime) on tiny synthetic lines."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from effocr.config import load_config
from effocr.data.coco import load_coco
from effocr.localizer.backends import available_backends, create_localizer
from effocr.localizer.evaluate import evaluate_detections, evaluate_localizer, prf_at_iou
from effocr.localizer.export import export_onnx, localizer_meta
from effocr.localizer.model import load_localizer, prepare_line
from effocr.localizer.postprocess import Detections
from effocr.localizer.runtime import LocalizerSession
from effocr.localizer.train import train_localizer
from effocr.utils import EffOCRError


def _config(**localizer) -> dict:
    return load_config(None, {"seed": 7, "localizer": {"batch_size": 4, **localizer}})


def _rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def lines(tiny_coco_factory):
    """16 clean English lines, some vertical-free; (json, image_dir)."""
    return tiny_coco_factory(16, "en", 5, degrade=False, max_chars=24, font_sizes=(24, 30))


@pytest.fixture(scope="module")
def trained(lines, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("loc")
    coco_json, image_dir = lines
    best = train_localizer(
        _config(epochs=14, lr=0.004), coco_json, coco_json, image_dir, out, threads=1
    )
    return {"out": out, "best": best, "json": coco_json, "image_dir": image_dir}


def test_backend_registry():
    assert available_backends() == ["default", "fcos"]
    model = create_localizer("default", classes=["char"], input_height=32)
    assert model(torch.zeros(1, 3, 32, 64)).shape == (1, 8 * 16, 6)
    with pytest.raises(EffOCRError, match="unknown localizer backend"):
        create_localizer("detectron2", classes=["char"])


@pytest.mark.slow
def test_training_learns(trained):
    out = trained["out"]
    for name in ("model.pt", "checkpoint.pt", "metrics.csv", "curve.png", "config.yaml"):
        assert (out / name).is_file(), name
    rows = _rows(out / "metrics.csv")
    assert len(rows) == 14
    first, last = float(rows[0]["loss"]), min(float(r["loss"]) for r in rows)
    assert last < 0.6 * first, (first, last)
    best = trained["best"]
    # an untrained detector scores ~0; this one must find most characters and words
    assert float(rows[0]["val_char_f1"]) < 0.3
    assert best["char"]["f1"] > 0.5, best["char"]
    assert best["word"]["f1"] > 0.3, best["word"]
    assert best["coco"]["AP50"] > 0.4


@pytest.mark.slow
def test_evaluate_localizer_rule_function(trained, tmp_path):
    metrics = evaluate_localizer(
        trained["out"] / "model.pt",
        trained["json"],
        trained["image_dir"],
        tmp_path / "eval.json",
        thresholds={"score_threshold": 0.3},
    )
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["char"]["f1"] == pytest.approx(metrics["char"]["f1"])
    assert metrics["char"]["f1"] == pytest.approx(trained["best"]["char"]["f1"])
    assert set(saved["coco"]) >= {"AP", "AP50", "AP75", "AP_char", "AP_word"}


@pytest.mark.slow
def test_onnx_export_parity(trained, tmp_path):
    model_pt = trained["out"] / "model.pt"
    onnx_path = export_onnx(model_pt, tmp_path / "localizer.onnx", 17)
    meta = localizer_meta(model_pt)
    torch_loc = load_localizer(model_pt)
    session = LocalizerSession(onnx_path)  # metadata read from the ONNX file
    assert session.meta["levels"] == meta["levels"]
    coco = load_coco(trained["json"])
    imgs = [
        np.asarray(Image.open(trained["image_dir"] / im["file_name"]).convert("RGB"))
        for im in coco["images"][:4]
    ]
    imgs.append(np.ascontiguousarray(imgs[0].transpose(1, 0, 2)))  # a vertical line
    for img in imgs:
        prepared = prepare_line(img, meta["input_height"])
        ref = torch_loc.raw(prepared)
        got = session.raw(img)[0]
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() < 1e-3
        a, b = torch_loc.detect(img), session.detect(img)
        assert len(a.chars) == len(b.chars) and len(a.words) == len(b.words)
        assert np.abs(a.chars - b.chars).max(initial=0) < 0.05
        assert a.spaces.tolist() == b.spaces.tolist()


@pytest.mark.slow
def test_resume_after_interruption(lines, tmp_path):
    torch.set_num_threads(1)
    coco_json, image_dir = lines
    config = _config(epochs=3)
    full, part = tmp_path / "full", tmp_path / "part"
    train_localizer(config, coco_json, coco_json, image_dir, full, threads=1)
    train_localizer(config, coco_json, coco_json, image_dir, part, threads=1, max_epochs_this_run=1)
    assert len(_rows(part / "metrics.csv")) == 1
    assert torch.load(part / "checkpoint.pt", weights_only=False)["epoch"] == 1
    train_localizer(config, coco_json, coco_json, image_dir, part, threads=1)
    a, b = _rows(full / "metrics.csv"), _rows(part / "metrics.csv")
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in a] == [
        {k: v for k, v in r.items() if k not in drop} for r in b
    ]
    # a different config does not resume from that checkpoint
    train_localizer(_config(epochs=1, lr=0.001), coco_json, coco_json, image_dir, part, threads=1)
    assert len(_rows(part / "metrics.csv")) == 1


def test_prf_and_coco_metrics_on_known_boxes():
    gt = [np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float), np.zeros((0, 4))]
    pred = [
        np.array([[0, 0, 10, 10], [22, 0, 32, 10], [50, 0, 60, 10]], float),
        np.array([[0, 0, 5, 5]], float),
    ]
    scores = [np.array([0.9, 0.8, 0.7]), np.array([0.5])]
    m = prf_at_iou(gt, pred, scores)
    # [22,32] vs [20,30] has IoU 8/12 >= 0.5: 2 TP of 4 predictions and 2 ground truths
    assert (m["tp"], m["n_pred"], m["n_gt"]) == (2, 4, 2)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(1.0)
    assert m["f1"] == pytest.approx(2 / 3)

    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 10, "text": "ab c"}],
        "annotations": [
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": cat,
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": 0,
            }
            for i, (cat, box) in enumerate(
                [
                    (1, [0, 0, 8, 10]),
                    (1, [9, 0, 8, 10]),
                    (1, [25, 0, 8, 10]),
                    (2, [0, 0, 17, 10]),
                    (2, [25, 0, 8, 10]),
                ]
            )
        ],
        "categories": [{"id": 1, "name": "character"}, {"id": 2, "name": "word"}],
    }
    chars = np.array([[0, 0, 8, 10], [9, 0, 17, 10], [25, 0, 33, 10]], np.float32)
    words = np.array([[0, 0, 17, 10], [25, 0, 33, 10]], np.float32)
    perfect = Detections(chars, np.ones(3, np.float32), words, np.ones(2, np.float32))
    res = evaluate_detections(coco, {1: perfect}, ["char", "word"])
    assert res["char"]["f1"] == 1.0 and res["word"]["f1"] == 1.0
    assert res["coco"]["AP"] == pytest.approx(1.0) and res["coco"]["AP_char"] == pytest.approx(1.0)
    worse = Detections(
        chars[:2],
        np.ones(2, np.float32),
        words + [[0, 0, 20, 0], [0, 0, 0, 0]],
        np.ones(2, np.float32),
    )
    res = evaluate_detections(coco, {1: worse}, ["char", "word"])
    assert res["char"]["recall"] == pytest.approx(2 / 3) and res["char"]["precision"] == 1.0
    assert res["word"]["f1"] == pytest.approx(0.5)  # [0, 37] vs [0, 17]: IoU 0.46 < 0.5
    assert res["coco"]["AP_char"] < 0.8


@pytest.mark.slow
def test_japanese_vertical_char_only(tiny_coco_factory, tmp_path):
    torch.set_num_threads(1)
    coco_json, image_dir = tiny_coco_factory(6, "jp", 1, vertical_fraction=0.5, max_chars=10)
    config = load_config(None, {"language": "jp", "localizer": {"epochs": 2, "batch_size": 3}})
    train_localizer(config, coco_json, coco_json, image_dir, tmp_path, threads=1)
    meta = localizer_meta(tmp_path / "model.pt")
    assert meta["classes"] == ["char"] and meta["spaces"] is False
    session = LocalizerSession(export_onnx(tmp_path / "model.pt", tmp_path / "loc.onnx"))
    coco = load_coco(coco_json)
    vertical = [im for im in coco["images"] if im["height"] > im["width"]]
    assert vertical, "the fixture should contain vertical lines"
    img = np.asarray(Image.open(image_dir / vertical[0]["file_name"]).convert("RGB"))
    det = session.detect(img)
    assert det.vertical and len(det.words) == 0 and not det.spaces.any()
    h, w = img.shape[:2]
    if len(det.chars):
        assert (det.chars[:, 2] <= w).all() and (det.chars[:, 3] <= h).all()
        assert (np.diff((det.chars[:, 1] + det.chars[:, 3]) / 2) >= 0).all()  # top to bottom
        crops = det.crop_boxes()
        assert (crops[:, 0] == 0).all() and (crops[:, 2] == w).all()
