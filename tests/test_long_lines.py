"""Long lines: the per-line detection cap grows with the line, and what it still cuts is said.

A fixed cap of 300 boxes silently cut a 7,660 px line to 212 of its ~380 characters. The
end-to-end tests build a line of about 16,000 px from the tiny synthetic lines (real ONNX
Runtime and FAISS through the session's `tiny_bundle`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from effocr.infer import Engine
from effocr.localizer import postprocess as pp

THRESHOLDS = {k: v for k, v in pp.DEFAULT_THRESHOLDS.items() if k != "spaces"}


def _row_of_boxes(n: int, height: float = 40.0, pitch: float = 20.0) -> np.ndarray:
    x0 = np.arange(n, dtype=np.float32) * pitch
    return np.stack([x0, np.zeros(n), x0 + pitch * 0.8, np.full(n, height)], axis=1)


def test_cap_grows_with_the_line_and_counts_what_it_cuts():
    n = 1000  # a 20,000 x 40 px line, one glyph every half line height
    boxes = _row_of_boxes(n)
    scores = np.linspace(0.9, 0.5, n)
    labels = np.zeros(n, int)
    det = pp.postprocess(boxes, scores, labels, ["char"], image_size=(40, 20000), **THRESHOLDS)
    assert len(det.chars) == n and det.dropped == 0
    cut = pp.postprocess(
        boxes,
        scores,
        labels,
        ["char"],
        image_size=(40, 20000),
        **{**THRESHOLDS, "detections_per_height": 0.5},
    )
    assert len(cut.chars) == 300 and cut.dropped == n - 300
    # A vertical line is measured along its height.
    cap = pp.detection_cap((20000, 40), True, 300, 8.0)
    assert cap == 4000 == pp.detection_cap((40, 20000), False, 300, 8.0)
    assert pp.detection_cap((40, 400), False, 300, 8.0) == 300


@pytest.fixture(scope="module")
def long_line(tiny_coco_factory, tmp_path_factory) -> Path:
    """About 16,000 x 53 px: the eight tiny training lines, twelve times over."""
    coco_json, image_dir = tiny_coco_factory(8, "en", 5, degrade=False, max_chars=14)
    coco = json.loads(coco_json.read_text(encoding="utf-8"))
    parts = [
        np.asarray(Image.open(image_dir / im["file_name"]).convert("L")) for im in coco["images"]
    ]
    height = max(p.shape[0] for p in parts)
    padded = []
    for p in parts:
        canvas = np.full((height, p.shape[1]), 255, np.uint8)
        canvas[: p.shape[0]] = p
        padded.append(canvas)
    path = tmp_path_factory.mktemp("long") / "long_line.png"
    Image.fromarray(np.concatenate(padded * 12, axis=1)).save(path)
    return path


def _bundle_with(bundle: Path, out: Path, **thresholds) -> Path:
    shutil.copytree(bundle, out)
    meta = yaml.safe_load((out / "model.yaml").read_text(encoding="utf-8"))
    meta["localizer"]["meta"].update(thresholds)
    (out / "model.yaml").write_text(yaml.safe_dump(meta), encoding="utf-8")
    return out


def test_long_line_keeps_every_detection(tiny_bundle, long_line, tmp_path):
    uncapped = _bundle_with(tiny_bundle, tmp_path / "uncapped", max_detections=10**6)
    with Engine(uncapped, device="cpu") as engine:
        everything = engine.infer([str(long_line)])[0]
    with Engine(tiny_bundle, device="cpu") as engine:
        default = engine.infer([str(long_line)])[0]
    assert everything.ok and default.ok
    # More than the old fixed cap of 300, and the default settings keep all of them.
    assert len(everything.chars) + len(everything.words) > 300
    assert len(default.chars) == len(everything.chars)
    assert len(default.words) == len(everything.words)
    assert default.text == everything.text
    assert default.dropped == 0 and "dropped_detections" not in default.to_dict()


def test_what_the_cap_still_cuts_is_recorded_and_warned(tiny_bundle, long_line, tmp_path, capsys):
    from effocr.cli import main

    tight = _bundle_with(tiny_bundle, tmp_path / "tight", detections_per_height=1.0)
    out = tmp_path / "out"
    rc = main(["infer", "--model", str(tight), "--output", str(out), str(long_line)])
    err = capsys.readouterr().err
    assert rc == 0  # the line was read, incompletely: a warning, not a failure
    (record,) = [json.loads(ln) for ln in (out / "predictions.jsonl").read_text().splitlines()]
    with Image.open(long_line) as im:
        cap = pp.detection_cap((im.height, im.width), False, 300, 1.0)
    kept = len(record["chars"]) + len(record["words"])
    assert kept == cap and record["dropped_detections"] > 0
    assert "1 line(s) lost detections" in err
    assert "long_line.png" in err and "detection(s) beyond the line's cap" in err
