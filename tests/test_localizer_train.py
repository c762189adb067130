"""Localizer training, resuming, evaluation metrics and ONNX export parity (real torch, real
pycocotools, real ONNX Runtime) on tiny synthetic lines."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from schema_defaults import at_images

from effocr.cli import main
from effocr.config import config_sections, load_config
from effocr.data.coco import load_coco, save_coco
from effocr.localizer.backends import available_backends, create_localizer
from effocr.localizer.evaluate import evaluate_detections, evaluate_localizer, prf_at_iou
from effocr.localizer.export import export_onnx, localizer_meta
from effocr.localizer.model import TorchLocalizer, load_localizer, model_meta, prepare_line
from effocr.localizer.postprocess import Detections, config_thresholds
from effocr.localizer.runtime import LocalizerSession
from effocr.localizer.train import LineSet, evaluate, train_localizer
from effocr.profiles import get_profile
from effocr.utils import EffOCRError, seed_everything

NAMES = {"char": "char", "word": "word"}


def _config(**localizer) -> dict:
    return load_config(None, {"seed": 7, "localizer": {"batch_size": 4, **localizer}})


def _rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _tall_l() -> np.ndarray:
    """An English line of one glyph, `l`, 20 px wide and 60 px tall."""
    from PIL import ImageDraw, ImageFont

    im = Image.new("RGB", (20, 60), "white")
    ImageDraw.Draw(im).text(
        (10, 30), "l", fill="black", font=ImageFont.load_default(size=48), anchor="mm"
    )
    return np.asarray(im)


def test_tall_english_line_keeps_its_orientation():
    # An untrained model with every cell a detection: only the geometry is checked.
    torch.manual_seed(0)
    model = create_localizer("default", classes=["char", "word"], input_height=32)
    img = _tall_l()
    for language, vertical in (("en", False), ("jp", True)):
        meta = model_meta(
            model, {"score_threshold": 0.0}, allows_vertical=get_profile(language).allows_vertical
        )
        assert meta["vertical"] is vertical
        loc = TorchLocalizer(model, meta)
        seen = []
        raw = loc.raw
        loc.raw = lambda prepared, raw=raw, seen=seen: seen.append(prepared) or raw(prepared)
        det = loc.detect(img)  # the profile's setting, from the meta
        assert seen[0].transposed is vertical and det.vertical is vertical
        # network input: 32 px high; the line's height (English) or its width (jp) scaled to it
        assert seen[0].array.shape[1:] == ((32, 96) if vertical else (32, 32))
        assert len(det.chars) > 0
        crops = det.crop_boxes(0)
        if vertical:  # full line width, rows of the glyph
            assert (crops[:, 0] == 0).all() and (crops[:, 2] == 20).all()
        else:  # full line height, columns of the glyph, as the recognizer was trained
            assert (crops[:, 1] == 0).all() and (crops[:, 3] == 60).all()
        # An explicit choice overrides the meta.
        assert loc.detect(img, allows_vertical=not vertical).vertical is not vertical


@pytest.fixture(scope="module")
def lines(tiny_coco_factory):
    """16 clean English lines, some vertical-free; (json, image_dir)."""
    return tiny_coco_factory(16, "en", 5, degrade=False, max_chars=24, font_sizes=(24, 30))


@pytest.fixture(scope="module")
def trained(lines, tiny_coco_factory, tmp_path_factory):
    """Trained on `lines`, validated on six held-out lines (one image folder holds both)."""
    torch.set_num_threads(1)
    heldout = tiny_coco_factory(6, "en", 50, degrade=False, max_chars=24, font_sizes=(24, 30))
    data = tmp_path_factory.mktemp("loc_data")
    splits = {}
    for name, (json_path, image_dir) in (("train", lines), ("val", heldout)):
        shutil.copytree(image_dir, data / "images" / name)
        coco = load_coco(json_path)
        for im in coco["images"]:
            im["file_name"] = f"{name}/{im['file_name']}"
        splits[name] = data / f"{name}.json"
        save_coco(coco, splits[name])
    out = tmp_path_factory.mktemp("loc")
    config = _config(epochs=14, lr=0.004)
    best = train_localizer(
        splits["train"],
        splits["val"],
        out,
        **config_sections(at_images(config, data / "images")).pick("localizer", "dataset", "run"),
        threads=1,
    )
    # Epoch 0: the weights training starts from (the same seed, the same constructor), scored
    # on the same held-out lines by the same evaluation.
    seed_everything(config["seed"])
    lc = config["localizer"]
    model = create_localizer(
        lc["backend"], classes=["char", "word"], input_height=lc["input_height"], arch=lc["arch"]
    )
    untrained = evaluate(
        model,
        LineSet(splits["val"], data / "images", ["char", "word"], NAMES, False),
        model_meta(model, {**config_thresholds(lc), "spaces": True}, allows_vertical=False),
        "cpu",
        NAMES,
    )
    return {
        "out": out,
        "best": best,
        "untrained": untrained,
        "json": splits["val"],
        "image_dir": data / "images",
    }


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
    best, untrained = trained["best"], trained["untrained"]
    # Scored on lines it never saw: the untrained detector finds next to nothing, the trained
    # one most characters and words.
    assert untrained["char"]["f1"] < 0.3 and untrained["word"]["f1"] < 0.3, untrained
    assert best["char"]["f1"] > 0.5, best["char"]
    assert best["word"]["f1"] > 0.3, best["word"]
    assert best["coco"]["AP50"] > 0.4
    assert best["char"]["f1"] > untrained["char"]["f1"] + 0.3


@pytest.mark.slow
def test_evaluate_localizer_rule_function(trained, tmp_path):
    metrics = evaluate_localizer(
        trained["out"] / "model.pt",
        trained["json"],
        trained["image_dir"],
        tmp_path / "eval.json",
        char_category="char",
        word_category="word",
        thresholds={"score_threshold": 0.3},
        input_height=32,
    )
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["char"]["f1"] == pytest.approx(metrics["char"]["f1"])
    assert metrics["char"]["f1"] == pytest.approx(trained["best"]["char"]["f1"])
    assert set(saved["coco"]) >= {"AP", "AP50", "AP75", "AP_char", "AP_word"}


@pytest.mark.slow
def test_onnx_export_parity(trained, tmp_path):
    from effocr.export import localizer_parity

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
    imgs.append(np.ascontiguousarray(imgs[0].transpose(1, 0, 2)))  # taller than wide
    # English: no vertical lines unless told (True checks the transposing path too).
    assert meta["vertical"] is False and session.meta["vertical"] is False
    export_cfg = load_config(None, {})["export"]
    for img in imgs:
        for vertical in (None, True):
            # None: the model's meta, False for English.
            prepared = prepare_line(img, meta["input_height"], allows_vertical=bool(vertical))
            ref = torch_loc.raw(prepared)
            got = session.raw(img, allows_vertical=vertical)[0]
            assert got.shape == ref.shape
            assert np.abs(got - ref).max() < 1e-3
            a, b = (
                torch_loc.detect(img, allows_vertical=vertical),
                session.detect(img, allows_vertical=vertical),
            )
            assert a.vertical == b.vertical == (vertical is True and img.shape[0] > img.shape[1])
            # The export check's matching: a box only one side finds must score within its
            # borderline margin of the threshold (float rounding may put it either side).
            m = localizer_parity(
                torch_loc,
                session,
                [img],
                threshold=meta["score_threshold"],
                margin=export_cfg["score_max_abs"],
                box_tol=0.05,
                allows_vertical=vertical,
            )
            for kind in ("chars", "words"):
                assert m[kind]["unmatched"] == 0 and m[kind]["box_max_abs"] < 0.05, m
            if len(a.chars) == len(b.chars) == m["chars"]["matched"]:
                assert a.spaces.tolist() == b.spaces.tolist()


def _best_epoch(rows: list[dict]) -> int:
    """The epoch train_localizer keeps: highest mean F1, ties to COCO AP, then the earliest."""
    scores = [(float(r["val_mean_f1"]), float(r["val_AP"])) for r in rows]
    return scores.index(max(scores)) + 1


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_resume_after_interruption(lines, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    coco_json, image_dir = lines
    config = _config(epochs=3)
    full, part = tmp_path / "full", tmp_path / "part"
    train_localizer(
        coco_json,
        coco_json,
        full,
        **config_sections(at_images(config, image_dir)).pick("localizer", "dataset", "run"),
        threads=1,
    )
    train_localizer(
        coco_json,
        coco_json,
        part,
        **config_sections(at_images(config, image_dir)).pick("localizer", "dataset", "run"),
        threads=1,
        max_epochs_this_run=1,
    )
    assert len(_rows(part / "metrics.csv")) == 1
    assert torch.load(part / "checkpoint.pt", weights_only=False)["epoch"] == 1
    # Snakemake deletes the declared outputs of an interrupted job, not the checkpoint.
    outputs = ("model.pt", "metrics.csv", "curve.png", "config.yaml")
    for name in outputs:
        (part / name).unlink()
    train_localizer(
        coco_json,
        coco_json,
        part,
        **config_sections(at_images(config, image_dir)).pick("localizer", "dataset", "run"),
        threads=1,
    )
    for name in outputs:
        assert (part / name).is_file(), name
    a, b = _rows(full / "metrics.csv"), _rows(part / "metrics.csv")
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in a] == [
        {k: v for k, v in r.items() if k not in drop} for r in b
    ]
    ckpt = torch.load(part / "checkpoint.pt", weights_only=False)
    model = torch.load(part / "model.pt", weights_only=False)
    best = _best_epoch(b)
    assert model["epoch"] == ckpt["best"]["epoch"] == best
    assert _same_state(model["model"], ckpt["best"]["state"])
    # the same weights as the uninterrupted run's best epoch
    assert _same_state(model["model"], torch.load(full / "model.pt", weights_only=False)["model"])
    if best != 3:
        assert not _same_state(model["model"], ckpt["model"])  # not the last epoch's weights

    # Killed after the last epoch's checkpoint: the rerun writes the outputs, trains nothing.
    for name in outputs:
        (part / name).unlink()

    def no_training(*args, **kwargs):
        raise AssertionError("the checkpoint covers every epoch: nothing to train")

    monkeypatch.setattr("effocr.localizer.train.train_one_epoch", no_training)
    returned = train_localizer(
        coco_json,
        coco_json,
        part,
        **config_sections(at_images(config, image_dir)).pick("localizer", "dataset", "run"),
        threads=1,
    )
    monkeypatch.undo()
    for name in outputs:
        assert (part / name).is_file(), name
    assert _rows(part / "metrics.csv") == b
    again = torch.load(part / "model.pt", weights_only=False)
    assert again["epoch"] == best and _same_state(again["model"], model["model"])
    assert returned["mean_f1"] == pytest.approx(float(b[best - 1]["val_mean_f1"]), abs=1e-6)

    # a different config does not resume from that checkpoint
    train_localizer(
        coco_json,
        coco_json,
        part,
        **config_sections(at_images(_config(epochs=1, lr=0.001), image_dir)).pick(
            "localizer", "dataset", "run"
        ),
        threads=1,
    )
    assert len(_rows(part / "metrics.csv")) == 1


def test_evaluate_localizer_cli_options(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(
        "effocr.localizer.evaluate.evaluate_localizer", lambda *a, **kw: calls.append((a, kw))
    )
    base = ["evaluate-localizer", "--model", "m.onnx", "--coco", "c.json"]
    base += ["--image-dir", "img", "--out", str(tmp_path / "e.json")]
    assert main(base) == 0
    assert calls[-1][1]["thresholds"] is None and calls[-1][1]["input_height"] == 32
    extra = ["--layout", "yolov8", "--input-height", "48", "--score-threshold", "0.4"]
    assert main([*base, *extra, "--nms-iou", "0.6"]) == 0
    args, kw = calls[-1]
    assert args == ("m.onnx", "c.json", "img", str(tmp_path / "e.json"))
    assert kw["layout"] == "yolov8" and kw["input_height"] == 48
    assert kw["thresholds"] == {"score_threshold": 0.4, "nms_iou": 0.6}
    assert main([*base, "--nms-iou", "0.3"]) == 0
    assert calls[-1][1]["thresholds"] == {"nms_iou": 0.3}


@pytest.mark.slow
def test_evaluate_localizer_cli_thresholds(trained, tmp_path):
    base = ["evaluate-localizer", "--model", str(trained["out"] / "model.pt")]
    base += ["--coco", str(trained["json"]), "--image-dir", str(trained["image_dir"])]
    assert main([*base, "--out", str(tmp_path / "a.json"), "--score-threshold", "0.3"]) == 0
    assert main([*base, "--out", str(tmp_path / "b.json"), "--score-threshold", "0.999"]) == 0
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    assert a["char"]["f1"] == pytest.approx(trained["best"]["char"]["f1"])
    assert b["char"]["n_pred"] < a["char"]["n_pred"]


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


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes, computed here rather than by the code under test."""
    lo, hi = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


@pytest.mark.slow
@pytest.mark.usefixtures("needs_ipa_fonts")
def test_japanese_vertical_char_only(jp_models, tmp_path):
    # The localizer `train_localizer` made for language jp (conftest's session `jp_models`,
    # half of its 16 lines vertical), read back on those lines through ONNX Runtime.
    coco_json, image_dir = jp_models["lines"]
    meta = localizer_meta(jp_models["localizer"])
    assert meta["classes"] == ["char"] and meta["spaces"] is False and meta["vertical"] is True
    session = LocalizerSession(export_onnx(jp_models["localizer"], tmp_path / "loc.onnx", 17))
    coco = load_coco(coco_json)
    vertical = [im for im in coco["images"] if im["height"] > im["width"]]
    assert len(vertical) >= 3, "the fixture should contain vertical lines"
    found = total = 0
    for image in vertical:
        img = np.asarray(Image.open(image_dir / image["file_name"]).convert("RGB"))
        det = session.detect(img)
        assert det.vertical and len(det.words) == 0 and not det.spaces.any()
        h, w = img.shape[:2]
        assert len(det.chars) > 0, image["text"]
        assert (det.chars[:, 2] <= w).all() and (det.chars[:, 3] <= h).all()
        assert (np.diff((det.chars[:, 1] + det.chars[:, 3]) / 2) >= 0).all()  # top to bottom
        # Ground-truth boxes are in reading order, so the detections that match them must come
        # out in the same order.
        gt = np.array(
            [a["bbox"] for a in coco["annotations"] if a["image_id"] == image["id"]], float
        )
        gt[:, 2:] += gt[:, :2]
        iou = _iou(gt, det.chars)
        hit = iou.max(1) >= 0.5
        match = iou.argmax(1)[hit]
        assert (np.diff(match) > 0).all(), (image["text"], match)
        found, total = found + hit.sum(), total + len(gt)
        # Each crop is the full line width and covers its character's rows.
        crops = det.crop_boxes(0)
        assert len(crops) == len(det.chars)
        assert (crops[:, 0] == 0).all() and (crops[:, 2] == w).all()
        assert (crops[:, 1] <= np.floor(det.chars[:, 1]).clip(0)).all()
        assert (crops[:, 3] >= np.ceil(det.chars[:, 3]).clip(max=h)).all()
    # A localizer trained on these lines finds nearly all of their characters (all 47 of the
    # 9 vertical lines here).
    assert found >= 0.9 * total, (found, total)


def test_checkpoint_of_other_code_is_not_resumed(tmp_path):
    """Snakemake reruns train_localizer when any module in its code closure changes (not only
    effocr/localizer: effocr.data.coco, utils, config, profiles ...). Each such edit must change
    the checkpoint's hash too, or the rerun would resume the finished run and ship the old
    model. Checked on a copy of the package, each module edited alone."""
    from code_edits import assert_checkpoint_hash_follows_code

    assert_checkpoint_hash_follows_code(
        tmp_path,
        "effocr.localizer.train",
        "split.json",
        "config_hash('split.json', 'split.json', **sections.pick('localizer', 'dataset', 'run'))",
        {"effocr.data.coco", "effocr.utils", "effocr.config", "effocr.profiles"},
    )
