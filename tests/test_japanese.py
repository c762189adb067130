"""Japanese end to end on tiny models: renders -> recognizer -> index -> localizer -> bundle -> Engine.

The session's `jp_models` (conftest, built by tests/jp_models.py) render a handful of classes
(kana, two kanji and, when an installed font draws one, a non-BMP kanji) in the installed
Japanese fonts, train a tiny recognizer on those renders (`train_recognizer`, the settings of
test_recognizer_train), build the reference index, train a tiny localizer on synthetic
horizontal and vertical lines and export the bundle. The tests then run `effocr.infer.Engine` on unseen vertical and horizontal lines.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import missing_dependency
from jp_models import NON_BMP_CANDIDATES

from effocr.utils import codepoints_to_label, label_to_codepoints

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def jp(jp_models) -> dict:
    """Fonts, classes, synthetic lines, tiny trained models and the exported bundle: conftest's
    `jp_models` (tests/jp_models.py), trained once per session."""
    return jp_models


def _line(jp, orientation: str) -> tuple:
    coco_json, image_dir = jp["fresh"][orientation]
    image = json.loads(coco_json.read_text(encoding="utf-8"))["images"][0]
    return image_dir / image["file_name"], image


def test_bundle_is_japanese(jp):
    meta = yaml.safe_load((jp["bundle"] / "model.yaml").read_text(encoding="utf-8"))
    assert meta["language"] == "jp"
    assert meta["profile"]["name"] == "jp" and meta["profile"]["spaces"] is False
    assert meta["profile"]["vertical"] is True and meta["profile"]["render_mode"] == "centered"
    assert meta["localizer"]["meta"]["classes"] == ["char"]
    # Labels are stored as code points, one class per line, and read back as the characters.
    codes = (jp["bundle"] / "ref_labels.txt").read_text(encoding="utf-8").split()
    assert all(c.startswith("U+") for c in codes)
    assert sorted(codepoints_to_label(c) for c in codes) == sorted(jp["classes"])


def test_engine_on_vertical_and_horizontal_lines(jp):
    from effocr.infer import Engine

    engine = Engine(jp["bundle"])
    paths = {o: _line(jp, o) for o in ("vertical", "horizontal")}
    results = engine.infer([paths["vertical"][0], paths["horizontal"][0]])
    for (path, image), res in zip(paths.values(), results, strict=True):
        assert res.ok, res.error
        assert (res.width, res.height) == (image["width"], image["height"])
        assert " " not in image["text"]
        assert len(res.chars) >= 2, f"the tiny localizer found {len(res.chars)} chars in {path}"
        # No spaces in Japanese output: the text is the characters, joined.
        assert " " not in res.text and res.text == "".join(c.char for c in res.chars)
        for c in res.chars:
            assert c.codepoints == label_to_codepoints(c.char)
            assert codepoints_to_label(c.codepoints) == c.char
        # The JSON record keeps the characters (non-BMP ones too) as they are.
        record = json.loads(json.dumps(res.to_dict(), ensure_ascii=False))
        assert record["text"] == res.text
        assert [c["char"] for c in record["chars"]] == [c.char for c in res.chars]
        assert all(codepoints_to_label(c["codepoints"]) == c["char"] for c in record["chars"])
    vert, horiz = (np.array([c.bbox for c in r.chars]) for r in results)
    v_image, h_image = paths["vertical"][1], paths["horizontal"][1]
    assert v_image["height"] > v_image["width"] and h_image["width"] > h_image["height"]
    # Reading order: top to bottom for the vertical line, left to right for the horizontal one.
    assert (np.diff((vert[:, 1] + vert[:, 3]) / 2) > 0).all()
    assert (np.diff((horiz[:, 0] + horiz[:, 2]) / 2) > 0).all()
    # The characters stack along the vertical line, not across it.
    assert np.ptp((vert[:, 1] + vert[:, 3]) / 2) > np.ptp((vert[:, 0] + vert[:, 2]) / 2)


# The tiny models' CER on the unseen lines: 0.15 vertical, 0.07 horizontal (with 4 recognizer
# epochs, not 8, 0.4 vertical); the vertical reading order reversed gives 0.75 or more.
JP_CER_BOUND = 0.4


def test_unseen_lines_are_read(jp):
    from effocr.infer import Engine
    from effocr.metrics import cer

    for orientation in ("vertical", "horizontal"):
        coco_json, image_dir = jp["fresh"][orientation]
        images = json.loads(coco_json.read_text(encoding="utf-8"))["images"]
        with Engine(jp["bundle"]) as engine:
            results = engine.infer([image_dir / im["file_name"] for im in images])
        refs, hyps = [im["text"] for im in images], [r.text for r in results]
        assert cer(refs, hyps) < JP_CER_BOUND, (orientation, refs, hyps)


def test_effocr_evaluate_on_vertical_lines(jp, tmp_path):
    from effocr.cli import main

    coco_json, image_dir = jp["fresh"]["vertical"]
    spec = f"vertical={coco_json}:coco:{image_dir}"
    args = ["evaluate", "--model", str(jp["bundle"]), "--set", spec]
    assert main([*args, "--output", str(tmp_path), "--no-tesseract"]) == 0
    m = json.loads((tmp_path / "vertical" / "metrics.json").read_text(encoding="utf-8"))
    assert m["effocr"]["lines"] == 4
    assert m["effocr"]["cer"] < JP_CER_BOUND, m["effocr"]


def test_non_bmp_label_round_trip(jp):
    from PIL import Image

    from effocr.infer import Engine
    from effocr.recognizer.dataset import read_manifest
    from effocr.recognizer.transforms import preprocess

    ch = jp["non_bmp"]
    if ch is None:
        missing_dependency(
            "no installed Japanese font draws a non-BMP kanji "
            f"({', '.join(label_to_codepoints(c) for c in NON_BMP_CANDIDATES)}); "
            "the IPA fonts of `make sysdeps` do"
        )
    code = label_to_codepoints(ch)
    assert len(ch) == 1 and "_" not in code  # one code point, not a surrogate pair
    engine = Engine(jp["bundle"])
    assert ch in engine.chars and engine.labels[engine.chars.index(ch)] == code
    # The reference render of the character is found as itself through ONNX and FAISS.
    render = next(
        r
        for r in read_manifest(jp["renders"])
        if r.codepoints == code and r.origin == jp["reference"]
    )
    with Image.open(render.path) as im:
        img = np.asarray(im.convert("RGB"))
    batch = preprocess(img, engine.input_size, engine.mean, engine.std)[None]
    _, rows = engine.index.search(engine.embed(batch), 1)
    assert engine.chars[rows[0, 0]] == ch and engine.labels[rows[0, 0]] == code
