"""Pages: synthetic pages, the line detector (training, ONNX parity), reading order, line cuts,
`--layout auto`, and bundles with and without a line detector."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import export_sections
from PIL import Image, ImageDraw
from schema_defaults import at_images

from effocr.config import config_sections
from effocr.pages import PAGE_MIN_SIDE, cut_line, is_page, reading_order
from effocr.utils import EffOCRError

PAGE_KW = {"dpi": (60, 72), "max_skew": 1.5, "vertical_fraction": 0.0, "degrade": True}


def _font() -> list[Path]:
    from effocr.synth.fonts import matplotlib_font_dir

    return [matplotlib_font_dir() / "DejaVuSans.ttf"]


@pytest.fixture(scope="module")
def tiny_pages(tmp_path_factory) -> Path:
    """Four small English pages (60-72 dpi), skewed and degraded."""
    from effocr.synth.pages import synth_pages

    out = tmp_path_factory.mktemp("pages") / "pages.json"
    return synth_pages(out, 4, "en", _font(), seed=3, **PAGE_KW)


# ---------------------------------------------------------------------------
# Synthetic pages
# ---------------------------------------------------------------------------


def test_synth_pages_deterministic(tmp_path, tiny_pages):
    from effocr.synth.pages import synth_pages

    again = synth_pages(tmp_path / "a" / "pages.json", 4, "en", _font(), seed=3, **PAGE_KW)
    assert again.read_bytes() == tiny_pages.read_bytes()
    for name in ("page_000000.png", "page_000003.png"):
        assert (again.parent / "images" / name).read_bytes() == (
            tiny_pages.parent / "images" / name
        ).read_bytes()
    other = synth_pages(tmp_path / "b" / "pages.json", 1, "en", _font(), seed=4, **PAGE_KW)
    assert (
        json.loads(other.read_text())["annotations"]
        != json.loads(tiny_pages.read_text())["annotations"][
            : len(json.loads(other.read_text())["annotations"])
        ]
    )


def test_synth_page_boxes_hold_the_ink_and_span_the_type_height(tmp_path):
    """Without skew or noise every line box touches ink at both ends, holds its line's ink,
    and a horizontal box spans its font's ascender to descender whatever letters it holds:
    the body lines of a page (one font, one size) have one box height."""
    from effocr.synth.lines import INK_THRESHOLD
    from effocr.synth.pages import synth_pages

    out = synth_pages(
        tmp_path / "pages.json",
        2,
        "en",
        _font(),
        seed=5,
        dpi=(72, 90),
        vertical_fraction=0.0,
        max_skew=2.0,
        degrade=False,
    )
    coco = json.loads(out.read_text())
    assert {a["kind"] for a in coco["annotations"]} >= {"body"}
    for im in coco["images"]:
        page = np.asarray(Image.open(out.parent / "images" / im["file_name"]))
        lines = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        assert len(lines) >= 10
        assert [a["order"] for a in lines] == list(range(len(lines)))
        for a in lines:
            x, y, w, h = a["bbox"]
            x0, y0, x1, y1 = round(x), round(y), round(x + w), round(y + h)
            # Ink as the boxes count it (alpha from INK_THRESHOLD): faint edges of small type.
            ink = page[y0:y1, x0:x1] <= 255 - INK_THRESHOLD
            assert a["text"].strip()
            assert ink[:, :2].any() and ink[:, -2:].any(), a
            assert ink.any(axis=1).sum() >= 0.5 * (y1 - y0), a
            # Nothing of the line outside its box: the rows just above and below are paper
            # over the line's length (lines never touch at 1.2+ leading).
            assert not (page[max(0, y0 - 1), x0:x1] < 128).all()
        heights = np.array([a["bbox"][3] for a in lines if a["kind"] == "body"])
        assert np.mean(np.abs(heights - np.median(heights)) <= 1.0) >= 0.9, heights


def test_synth_page_number_box_has_the_height_of_a_text_line():
    """A line of digits (no ascenders or descenders) gets the box height a line with both
    gets in the same type; along the line the box stays tight on the ink."""
    import random

    from effocr.synth.lines import INK_THRESHOLD, _GlyphCache
    from effocr.synth.pages import _Canvas

    font = str(_font()[0])
    canvas = _Canvas(600, 240, _GlyphCache())
    rng = random.Random(0)
    canvas.text(font, 40, "529", 20, 70, False, "page_number", rng, 580)
    canvas.text(font, 40, "bdfhklpqy", 20, 190, False, "body", rng, 580)
    number, letters = canvas.lines
    assert number.kind == "page_number" and number.text == "529"
    h_number = number.bbox[3] - number.bbox[1]
    h_letters = letters.bbox[3] - letters.bbox[1]
    assert abs(h_number - h_letters) <= 1
    ys, xs = np.nonzero(canvas.alpha[:130] >= INK_THRESHOLD / 255)
    x0, y0, x1, y1 = number.bbox
    assert abs(xs.min() - x0) <= 1 and abs(xs.max() + 1 - x1) <= 1
    assert y0 <= ys.min() and ys.max() + 1 <= y1
    assert y1 - (ys.max() + 1) >= 0.15 * 40  # room for descenders below the digits


def test_synth_pages_have_marginal_notes_and_folios(tmp_path):
    """The composition gives the detector the rare kinds of line: marginal notes a small gap
    beside a body line (same baseline, smaller type) and page numbers at the head or the
    foot of the page."""
    from effocr.synth.pages import synth_pages

    out = synth_pages(
        tmp_path / "pages.json", 12, "en", _font(), seed=1, **{**PAGE_KW, "degrade": False}
    )
    coco = json.loads(out.read_text())
    dpi = {im["id"]: im["dpi"] for im in coco["images"]}
    notes = [a for a in coco["annotations"] if a["kind"] == "marginal"]
    assert len({a["image_id"] for a in notes}) >= 2
    for note in notes:
        body = [
            a
            for a in coco["annotations"]
            if a["image_id"] == note["image_id"] and a["kind"] == "body"
        ]
        beside = [a for a in body if abs(_bottom(a) - _bottom(note)) < 0.3 * note["bbox"][3]]
        assert beside, note
        gap = note["bbox"][0] - max(a["bbox"][0] + a["bbox"][2] for a in beside)
        assert 0.08 * dpi[note["image_id"]] <= gap, note
        assert note["bbox"][3] < max(a["bbox"][3] for a in beside)
    places = set()
    for im in coco["images"]:
        lines = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        body_top = min(a["bbox"][1] for a in lines if a["kind"] == "body")
        for a in lines:
            if a["kind"] == "page_number":
                places.add("head" if a["bbox"][1] < body_top else "foot")
                assert a["text"].isdigit()
    assert places == {"head", "foot"}


def _bottom(a: dict) -> float:
    return a["bbox"][1] + a["bbox"][3]


def test_synth_vertical_japanese_page(tmp_path, needs_ipa_fonts):
    from conftest import IPA_FONTS

    from effocr.synth.pages import synth_pages

    out = synth_pages(
        tmp_path / "pages.json",
        1,
        "jp",
        [IPA_FONTS[0]],
        seed=1,
        dpi=(72, 80),
        vertical_fraction=1.0,
        max_skew=2.0,
        degrade=False,
    )
    coco = json.loads(out.read_text())
    body = [a for a in coco["annotations"] if a["kind"] == "body"]
    assert body and all(a["vertical"] for a in body)
    # Columns right to left: the body lines' x decreases with the reading order.
    xs = [a["bbox"][0] for a in body]
    assert xs[0] > xs[-1]
    assert all(a["bbox"][3] > a["bbox"][2] for a in body if len(a["text"]) > 3)


# ---------------------------------------------------------------------------
# Reading order, cuts, layout decisions
# ---------------------------------------------------------------------------


def test_reading_order_columns_heading_footnote():
    boxes = {
        "heading": (100, 20, 900, 60),
        "l1a": (100, 100, 480, 120),
        "l1b": (100, 130, 470, 150),
        "l1c": (100, 160, 300, 180),  # a short paragraph end
        "l2a": (520, 100, 900, 120),
        "l2b": (520, 130, 900, 150),
        "note": (920, 130, 990, 145),  # marginal note beside column 2
        "foot": (100, 400, 800, 415),
    }
    names = list(boxes)
    shuffled = [names[i] for i in (5, 0, 7, 3, 1, 6, 2, 4)]
    regions = reading_order([boxes[n] for n in shuffled], [False] * len(shuffled), 1000)
    order = [shuffled[i] for r in regions for i in r]
    assert order == ["heading", "l1a", "l1b", "l1c", "l2a", "l2b", "note", "foot"]
    assert [[shuffled[i] for i in r] for r in regions][1] == ["l1a", "l1b", "l1c"]


def test_reading_order_vertical_right_to_left_then_blocks():
    # Two blocks (top, bottom), three vertical lines each; x decreasing is reading order.
    boxes, names = [], []
    for b, (y0, y1) in enumerate(((50, 450), (500, 900))):
        for k, x in enumerate((700, 650, 600)):
            boxes.append((x, y0, x + 30, y1))
            names.append(f"b{b}l{k}")
    boxes.append((350, 950, 380, 965))  # horizontal page number at the bottom
    names.append("number")
    vertical = [True] * 6 + [False]
    perm = [3, 6, 0, 5, 1, 4, 2]
    regions = reading_order([boxes[i] for i in perm], [vertical[i] for i in perm], 800)
    order = [names[perm[i]] for r in regions for i in r]
    assert order == ["b0l0", "b0l1", "b0l2", "b1l0", "b1l1", "b1l2", "number"]


def _bar_page(angle_deg: float) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A white page with a dark tilted bar (a 'line') and a neighbour bar above it."""
    page = Image.new("L", (600, 300), 255)
    draw = ImageDraw.Draw(page)
    a = math.radians(angle_deg)
    ux, uy = math.cos(a), math.sin(a)
    nx, ny = -uy, ux

    def quad(x0, y0, length, thick):
        p0 = (x0, y0)
        p1 = (x0 + length * ux, y0 + length * uy)
        p2 = (p1[0] + thick * nx, p1[1] + thick * ny)
        p3 = (x0 + thick * nx, y0 + thick * ny)
        return [p0, p1, p2, p3]

    line = quad(50, 150, 500, 20)
    draw.polygon(line, fill=0)
    draw.polygon(quad(50, 110, 500, 20), fill=0)  # neighbour, 20 px above
    return np.asarray(page), line


def test_cut_line_deskews_masks_and_maps_back():
    page, poly = _bar_page(4.0)
    cut = cut_line(page, poly, False, margin=0.25, max_tilt=0.3, paper=255)
    assert cut.turned
    dark_rows = np.nonzero((cut.image < 128).mean(axis=1) > 0.5)[0]
    # Straight: the bar fills whole rows, and they are about its thickness (20 px).
    assert 17 <= len(dark_rows) <= 22
    assert dark_rows.max() - dark_rows.min() + 1 == len(dark_rows)
    # The neighbour bar is gone: no dark pixels outside the bar's rows (margin is paper).
    outside = np.ones(cut.image.shape[0], bool)
    outside[dark_rows.min() - 1 : dark_rows.max() + 2] = False
    assert (cut.image[outside] < 128).mean() < 0.01
    # The cut's box of the bar maps back onto the page polygon's box.
    cols = np.nonzero((cut.image < 128).mean(axis=0) > 0.5)[0]
    box = cut.to_page([cols.min(), dark_rows.min(), cols.max() + 1, dark_rows.max() + 1])
    xs, ys = [p[0] for p in poly], [p[1] for p in poly]
    assert np.allclose(box, [min(xs), min(ys), max(xs), max(ys)], atol=3.0)


def test_cut_line_straight_line_is_a_plain_crop_with_polygon_mask():
    page = np.full((200, 300), 255, np.uint8)
    page[90:110, 40:260] = 0
    page[60:80, 40:260] = 0  # neighbour
    cut = cut_line(
        page,
        [(40, 90), (260, 90), (260, 110), (40, 110)],
        False,
        margin=0.25,
        max_tilt=0.3,
        paper=200,
    )
    assert not cut.turned
    assert cut.image.shape == (30, 230)  # 5 px margin all round
    assert (cut.image[5:25, 5:225] == 0).all()
    assert cut.to_page([5, 5, 225, 25]) == [40.0, 90.0, 260.0, 110.0]
    # A non-rectangular polygon (a PAGE-XML outline) masks what lies outside it.
    tri = cut_line(
        page, [(40, 90), (260, 90), (40, 110)], False, margin=0.0, max_tilt=0.3, paper=200
    )
    assert tri.image[-1, -1] == 200 and tri.image[0, 0] == 0


def test_cut_line_shrinks_tall_lines_and_keeps_vertical_ones_tall():
    page = np.full((400, 300), 255, np.uint8)
    page[20:380, 100:160] = 0
    cut = cut_line(
        page,
        [(160, 20), (160, 380), (100, 380), (100, 20)],
        True,
        margin=0.25,
        max_tilt=0.3,
        max_height=40,
    )
    assert cut.image.shape[1] == 40 and cut.image.shape[0] > 4 * cut.image.shape[1]
    x0, y0, x1, y1 = cut.to_page([0, 0, cut.image.shape[1], cut.image.shape[0]])
    assert abs(x0 - 85) <= 1 and abs(x1 - 175) <= 1 and abs(y0 - 5) <= 1 and abs(y1 - 395) <= 1


@pytest.mark.parametrize(
    ("h", "w", "page"),
    [
        (60, 1800, False),  # a horizontal line
        (900, 60, False),  # a vertical line
        (PAGE_MIN_SIDE - 1, 700, False),  # short side below the rule
        (2000, 1400, True),  # a page scan
        (400, 1500, True),  # a wide page strip, 3.75:1
        (400, 1700, False),  # too long for a page
    ],
)
def test_layout_auto_rule(h, w, page):
    assert is_page(h, w) is page


# ---------------------------------------------------------------------------
# The line detector: training, export, parity, bundles
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_detector(tiny_pages, tmp_path_factory) -> Path:
    """A line detector trained for two tiny epochs (seconds): not accurate, but real."""
    from effocr.config import load_config
    from effocr.linedet.train import train_line_detector

    config = load_config(
        None,
        {
            "seed": 1,
            "line_detector": {
                "input_height": 192,
                "crop_size": 96,
                "crops_per_page": 2,
                "batch_size": 4,
                "epochs": 2,
                "device": "cpu",
                "arch": {"widths": [8, 8, 16, 16, 16], "fpn_channels": 8},
            },
        },
    )
    out = tmp_path_factory.mktemp("linedet")
    sections = config_sections(config).pick("line_detector", "run")
    metrics = train_line_detector(tiny_pages, tiny_pages, out, **sections, threads=1)
    assert set(metrics) >= {"precision", "recall", "f1"}
    return out / "model.pt"


def test_line_detector_training_outputs(tiny_detector):
    import csv

    from effocr.linedet.model import load_model

    rows = list(csv.DictReader((tiny_detector.parent / "metrics.csv").open()))
    assert [r["epoch"] for r in rows][-2:] == ["1", "2"]
    assert all(math.isfinite(float(r["loss"])) for r in rows if r["loss"])
    model, meta = load_model(tiny_detector)
    assert meta["input_height"] == 192 and meta["vertical"] is False


def test_line_detector_onnx_parity(tiny_detector, tiny_pages, tmp_path):
    from effocr.config import load_config
    from effocr.export import line_detector_parity

    tol = load_config(None)["export"]
    rep = line_detector_parity(tiny_detector, tmp_path / "ld.onnx", tiny_pages, tol)
    assert rep["problems"] == []
    assert rep["max_abs"] <= tol["line_detector_max_abs"]
    assert rep["lines_matched"] == rep["lines"]


def test_decode_lines_recovers_a_tilted_line():
    """The decoder's geometry: a drawn core and exact distances give back the line's box."""
    from effocr.linedet import postprocess as lp
    from effocr.linedet.model import line_targets

    quad = np.array([[10, 20], [90, 24], [90, 30], [10, 26]], float)  # grid cells, tilted
    target, pos = line_targets([quad], [False], (60, 100))
    logits = np.where(target[[0, 3]] > 0, 10.0, -10.0)
    out = target.copy()
    out[[0, 3]] = logits
    lines = lp.decode_lines(out, scale=0.5, image_size=(240, 400), vertical=False)
    assert len(lines) == 1
    expect = quad * 4  # cell -> page: stride 2 / scale 0.5
    assert np.allclose(lines[0].bbox, [*expect.min(0), *expect.max(0)], atol=4.0)
    assert abs(lines[0].angle - math.degrees(math.atan(4 / 80))) < 0.5


@pytest.fixture(scope="module")
def page_bundle(tiny_bundle, tiny_detector, tiny_pages, tmp_path_factory) -> Path:
    from effocr.export import add_line_detector

    out = tmp_path_factory.mktemp("page_bundle") / "bundle"
    add_line_detector(
        tiny_bundle,
        out,
        tiny_detector,
        tiny_pages,
        **config_sections({}).pick("export", "line_detector"),
    )
    return out


def test_page_bundle_reads_pages(page_bundle, tiny_pages):
    from effocr import document
    from effocr.bundle import Manifest
    from effocr.infer import Engine

    manifest = Manifest.read(page_bundle)
    assert manifest.format_version == 2 and manifest.line_detector["file"] == "line_detector.onnx"
    page_path = tiny_pages.parent / "images" / "page_000000.png"
    with Engine(page_bundle) as engine:
        page = engine.read_page(page_path)
    assert isinstance(page, document.Page) and page.error is None
    w, h = Image.open(page_path).size
    assert (page.width, page.height) == (w, h)
    for line in page.lines():
        x0, y0, x1, y1 = line.bbox
        assert -1 <= x0 < x1 <= w + 1 and -1 <= y0 < y1 <= h + 1
        for g in line.glyphs:  # glyphs come back in page pixels, near their line
            assert x0 - 0.5 * (y1 - y0) - 2 <= g.bbox[0] and g.bbox[2] <= x1 + (y1 - y0) + 2


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "effocr.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_infer_layout_auto_mixed_folder(page_bundle, tiny_pages, tiny_coco, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(tiny_pages.parent / "images" / "page_000001.png", folder / "a_page.png")
    coco_json, image_dir = tiny_coco
    shutil.copy(image_dir / "line_000001.png", folder / "b_line.png")
    out = tmp_path / "out"
    proc = _cli("infer", str(folder), "-m", str(page_bundle), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    page_recs = [r for r in records if r["image"].endswith("a_page.png")]
    line_recs = [r for r in records if r["image"].endswith("b_line.png")]
    assert len(line_recs) == 1 and "polygon" not in line_recs[0] and "chars" in line_recs[0]
    assert page_recs and all(r["layout"] == "page" for r in page_recs)
    if page_recs[0]["line"] is not None:
        assert [r["line"] for r in page_recs] == list(range(len(page_recs)))
        assert all(len(r["polygon"]) == 4 and len(r["bbox"]) == 4 for r in page_recs)
    assert sorted(p.name for p in (out / "text").iterdir()) == ["a_page.txt", "b_line.txt"]


def test_old_bundle_reads_lines_and_refuses_pages(tiny_bundle, tiny_pages, tiny_coco, tmp_path):
    from effocr.infer import Engine

    page_path = tiny_pages.parent / "images" / "page_000000.png"
    with Engine(tiny_bundle) as engine:
        with pytest.raises(EffOCRError, match="no line detector"):
            engine.read_page(page_path)
    coco_json, image_dir = tiny_coco
    line = image_dir / "line_000002.png"
    proc = _cli("infer", str(line), "-m", str(tiny_bundle))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["text"] is not None
    proc = _cli("infer", str(line), str(page_path), "-m", str(tiny_bundle))
    assert proc.returncode == 1
    recs = [json.loads(x) for x in proc.stdout.splitlines()]
    assert recs[0]["text"] is not None
    assert recs[1]["text"] is None and "no line detector" in recs[1]["error"]
    proc = _cli("infer", str(line), "-m", str(tiny_bundle), "--layout", "page")
    assert proc.returncode != 0 and "no line detector" in proc.stderr


def test_decode_lines_vertical_line_starts_top_right():
    from effocr.linedet import postprocess as lp
    from effocr.linedet.model import line_targets

    quad = np.array([[40, 5], [46, 5], [46, 55], [40, 55]], float)  # a column, grid cells
    target, _ = line_targets([quad], [True], (60, 100))
    out = target.copy()
    out[[0, 3]] = np.where(target[[0, 3]] > 0, 10.0, -10.0)
    assert lp.decode_lines(out, 0.5, (240, 400), vertical=False) == []
    (line,) = lp.decode_lines(out, 0.5, (240, 400), vertical=True)
    assert line.vertical
    assert np.allclose(line.bbox, [160, 20, 184, 220], atol=4.0)
    (x0, y0), (x1, y1) = line.polygon[0], line.polygon[1]
    assert x1 > 175  # the right edge
    assert x0 > 175 and y0 < 25 and y1 > 215  # top right, then down the right edge


def test_pages_in_worker_processes_match_one_process(page_bundle, tiny_pages):
    from effocr.infer import Engine

    paths = [tiny_pages.parent / "images" / f"page_{i:06d}.png" for i in range(4)]
    with Engine(page_bundle, workers=1) as engine:
        one = [r.records() for r in engine.iter_pages(paths)]
    with Engine(page_bundle, workers=2, parallel="process") as engine:
        two = [r.records() for r in engine.iter_pages(paths)]
        assert engine.page_runner._pool is not None  # the pages went to the workers
    assert two == one


def test_export_bundle_with_the_line_detector(
    tiny_bundle, tiny_coco_factory, tiny_detector, tiny_pages, tmp_path
):
    """export_bundle (rule export_bundle) writes line_detector.onnx, its section and parity."""
    from effocr.bundle import Manifest
    from effocr.export import export_bundle

    root = tiny_bundle.parent  # conftest.build_bundle's models and index live beside it
    coco_json, image_dir = tiny_coco_factory(8, "en", 5, degrade=False, max_chars=14)
    out = tmp_path / "bundle"
    report = export_bundle(
        root / "recognizer" / "model.pt",
        root / "index",
        root / "localizer" / "model.pt",
        coco_json,
        out,
        **export_sections(
            at_images(None, image_dir),
            export={"quantize": "none"},
            line_detector={"line_margin": 0.3},
        ),
        line_detector_pt=tiny_detector,
        line_detector_pages=tiny_pages,
    )
    assert report["line_detector"]["problems"] == []
    manifest = Manifest.read(out)
    assert manifest.format_version == 2
    assert manifest.line_detector["line_margin"] == 0.3
    assert manifest.line_detector["meta"]["input_height"] == 192
    assert "line_detector.onnx" in manifest.files
    assert json.loads((out / "parity.json").read_text())["line_detector"]["lines_matched"] >= 0


def test_read_page_shrinks_cut_lines_to_the_cut_height(page_bundle, tiny_pages):
    """Detected lines are cut as ground-truth lines (evaluate-pages) and PAGE/ALTO lines are:
    no thicker than the bundle's `cut_height` when they reach the line pipeline."""
    from effocr.pages import PagePipeline

    pages = PagePipeline.from_bundle(page_bundle, layout="page")
    pages.cut_height = 12  # below these pages' line heights, so every cut is shrunk
    # The two-epoch detector is unsure of everything: a low threshold still finds lines.
    pages.detector.meta = {**pages.detector.meta, "score_threshold": 0.05}
    seen: list[tuple[int, ...]] = []
    run = pages.lines.run

    def recording_run(images, first_index=0):
        seen.extend(img.shape for img in images)
        return run(images, first_index)

    pages.lines.run = recording_run
    found = 0
    for path in sorted((tiny_pages.parent / "images").glob("page_*.png")):
        res = pages.read(str(path))
        assert res.error is None
        found += len(res.lines)
    assert found and len(seen) == found
    assert all(min(shape[:2]) <= 12 for shape in seen), seen
    assert any(max(shape[:2]) > 24 for shape in seen)  # shrunk, not cut away


def _text_page(vertical: bool = False) -> np.ndarray:
    """A grey page (paper 230, noise) with one text-like line: letters with a dense body
    (rows 100-130), ascender stems above (90-100), descender stems below (130-140) and dots
    over some letters; `vertical`: the same turned into a column (columns 100-130 dense)."""
    rng = np.random.default_rng(0)
    page = rng.normal(230, 4, (600, 600)).clip(0, 255)
    for k, x in enumerate(range(40, 560, 13)):
        page[100:130, x : x + 8] = 30
        if k % 3 == 0:
            page[90:100, x : x + 2] = 30
        if k % 4 == 1:
            page[130:140, x + 6 : x + 8] = 30
        if k % 5 == 2:
            page[93:96, x + 3 : x + 6] = 30  # an i's dot, 4 rows above its letter
    page = page.astype(np.uint8)
    return np.ascontiguousarray(page.T) if vertical else page


def _box(y0: float, y1: float, vertical: bool = False) -> list[tuple[float, float]]:
    """A line box running x 38-560 and y0-y1 across (as `DetectedLine.polygon`)."""
    if vertical:  # start at the top right, run down the right edge
        return [(y1, 38), (y1, 560), (y0, 560), (y0, 38)]
    return [(38, y0), (560, y0), (560, y1), (38, y1)]


def _cut(page, poly, vertical=False):
    return cut_line(page, poly, vertical, margin=0.25, max_tilt=0.3, paper=230, max_height=48)


def _extent(cut, vertical=False) -> tuple[float, float]:
    """The cut's extent across the line in page pixels."""
    x0, y0, x1, y1 = cut.to_page([0, 0, cut.image.shape[1], cut.image.shape[0]])
    return (x0, x1) if vertical else (y0, y1)


@pytest.mark.parametrize("vertical", [False, True])
def test_cut_line_trims_to_the_ink_whatever_the_box_height(vertical):
    """A box 20 % too high gives the cut of the true box: the ink (rows, or columns of a
    vertical line, 90-140) plus a quarter of its 50 px on each side, at the same scale. A box
    20 % too low keeps only the ink inside it (outside the polygon is paper, so that a
    neighbour's ascenders stay out) and is trimmed to that."""
    page = _text_page(vertical)
    axis = 1 if vertical else 0
    true = _cut(page, _box(90, 140, vertical), vertical)
    lo, hi = _extent(true, vertical)
    assert abs(lo - 77.5) <= 1.0 and abs(hi - 152.5) <= 1.0
    assert true.image.shape[axis] == 48  # 76 px across, shrunk to the cut height
    for y0, y1 in ((85, 145), (80, 140)):  # 60 px high: centred, and shifted by 10 px
        cut = _cut(page, _box(y0, y1, vertical), vertical)
        assert cut.image.shape[axis] == 48
        assert np.allclose(_extent(cut, vertical), (lo, hi), atol=1.0)
        # The same scale (page pixels per cut pixel), so the glyphs come out the same size;
        # untrimmed, the 60-px box's cut would be 90 px across, shrunk 48/90 and not 48/76.
        assert np.hypot(*cut.ex) == pytest.approx(np.hypot(*true.ex), rel=0.02)
        # Along the line only the margin differs (a quarter of the box height).
        assert abs(cut.image.shape[1 - axis] - true.image.shape[1 - axis]) <= 8
    short = _cut(page, _box(95, 135, vertical), vertical)  # 40 px: the ink's body and dots
    # Ink in rows 95-135 (the polygon's fill holds its last row): 41 rows, 10.25 px margins.
    assert np.allclose(_extent(short, vertical), (84.75, 146.25), atol=1.0)
    assert short.image.shape[axis] == 48


def test_cut_line_trim_ignores_a_far_speck():
    page = _text_page()
    page[66:70, 300:304] = 30  # inside the box, 20 rows above the ascenders
    ink = page[60:150] < 128
    assert np.nonzero(ink.any(axis=1))[0].min() + 60 == 66  # min/max trim would take it
    cut = _cut(page, _box(62, 145))
    lo, hi = _extent(cut)
    assert abs(lo - 77.5) <= 1.0 and abs(hi - 152.5) <= 1.0


def test_cut_line_blank_cut_keeps_its_box():
    rng = np.random.default_rng(1)
    page = rng.normal(230, 4, (300, 600)).clip(0, 255).astype(np.uint8)
    for speck in (False, True):
        if speck:
            page[110:113, 300:303] = 30  # a speck alone on empty paper is no line
        cut = _cut(page, _box(90, 130))
        lo, hi = _extent(cut)
        assert abs(lo - 80) <= 1.0 and abs(hi - 140) <= 1.0  # box and 10 px margins


def _box_line(x0: float, y0: float, x1: float, y1: float):
    from effocr.linedet.postprocess import DetectedLine

    return DetectedLine([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], 0.9, False, 0.0)


def test_dark_masses_are_not_lines():
    """A scan's dark border (or a picture, a black rule) found as a line is dropped; lines of
    print, bold ones in boxes tight to their ink included, stay."""
    from PIL import ImageFont

    from effocr.pages import drop_dark_masses
    from effocr.synth.fonts import matplotlib_font_dir

    page = Image.new("L", (900, 700), 225)  # grey paper, as scanned
    draw = ImageDraw.Draw(page)
    bold = ImageFont.truetype(str(matplotlib_font_dir() / "DejaVuSans-Bold.ttf"), 40)
    plain = ImageFont.truetype(str(matplotlib_font_dir() / "DejaVuSans.ttf"), 32)
    lines = []
    for y, text, font in ((80, "Bold heading MWM", bold), (180, "a line of plain print", plain)):
        draw.text((60, y), text, font=font, fill=20)
        lines.append(_box_line(*draw.textbbox((60, y), text, font=font)))
    draw.rectangle((0, 640, 899, 699), fill=35)  # the scan's border, paper edge ragged
    for x in range(0, 900, 30):
        draw.rectangle((x, 628, x + 14, 640), fill=35)
    border = _box_line(0, 626, 899, 699)
    picture = _box_line(600, 300, 860, 520)
    draw.rectangle((600, 300, 860, 520), fill=60)
    draw.ellipse((650, 340, 800, 480), fill=200)
    page = np.asarray(page)
    kept = drop_dark_masses(page, [*lines, border, picture])
    assert kept == lines
    # Colour pages alike.
    assert drop_dark_masses(np.stack([page] * 3, axis=2), [*lines, border]) == lines
    # A page without ink and paper apart (blank, or all one grey) keeps what was found.
    flat = np.full((700, 900), 128, np.uint8)
    assert drop_dark_masses(flat, [border]) == [border]


def _column_page(note_gap: float, rule: bool = False):
    """A page: a column of five lines that end together, a sixth line joined by the detector to
    a marginal note `note_gap` line thicknesses beyond the column's edge (a rule in the gap
    when `rule`), and a ragged paragraph whose line has a word space as wide. Returns the page
    and the detected lines (boxes), the joined one and the ragged one."""
    from PIL import ImageFont

    from effocr.synth.fonts import matplotlib_font_dir

    font = ImageFont.truetype(str(matplotlib_font_dir() / "DejaVuSerif.ttf"), 30)
    page = Image.new("L", (1300, 900), 235)
    draw = ImageDraw.Draw(page)
    lines, body_end, thick = [], 0, 40
    for i in range(6):
        y = 60 + 48 * i
        draw.text((60, y), "the same words in every line", font=font, fill=25, anchor="la")
        body_end = draw.textbbox((60, y), "the same words in every line", font=font, anchor="la")[2]
        lines.append((60, y - 4, body_end, y - 4 + thick))
    note_x = body_end + round(note_gap * thick)
    y = lines[3][1] + 4
    draw.text((note_x, y), "a note", font=font, fill=25, anchor="la")
    if rule:
        mid = (body_end + note_x) // 2
        draw.rectangle((mid, lines[0][1], mid + 2, lines[-1][3]), fill=25)
    note_end = draw.textbbox((note_x, y), "a note", font=font, anchor="la")[2]
    joined = (60, lines[3][1], note_end, lines[3][3])
    ragged_y = 500
    gap = " " * 9  # about as wide as the note's gap
    draw.text((60, ragged_y), f"short{gap}words", font=font, fill=25, anchor="la")
    ragged_end = draw.textbbox((60, ragged_y), f"short{gap}words", font=font, anchor="la")[2]
    ragged = (60, ragged_y - 4, ragged_end, ragged_y - 4 + thick)
    # A paragraph's last line below it, ending where the wide space starts: one line is no edge.
    draw.text((60, ragged_y + 48), "short", font=font, fill=25, anchor="la")
    below_end = draw.textbbox((60, ragged_y + 48), "short", font=font, anchor="la")[2]
    below = (60, ragged_y + 44, below_end, ragged_y + 44 + thick)
    boxes = [*lines[:3], joined, *lines[4:], ragged, below]
    return np.asarray(page), [_box_line(*b) for b in boxes], body_end, note_x


@pytest.mark.parametrize("rule", [False, True])
def test_lines_joined_across_a_column_edge_are_split(rule):
    """A line the detector ran on into a marginal note (or across a gutter with a rule) is cut
    at the column's edge; a word space as wide in a ragged paragraph is not a column edge."""
    from effocr.pages import split_at_gaps

    page, found, body_end, note_x = _column_page(1.5, rule)
    out = split_at_gaps(page, found)
    assert len(out) == len(found) + 1
    assert out[:3] == found[:3] and out[5:] == found[4:]  # the others are the same objects
    body, note = out[3].bbox, out[4].bbox
    thick = found[3].thickness
    assert body[0] == pytest.approx(60) and note[2] == pytest.approx(found[3].bbox[2])
    # Each piece ends a quarter thickness into the gap, beside its own ink.
    assert body_end < body[2] <= body_end + 0.25 * thick + 2
    assert note_x - 0.25 * thick - 2 <= note[0] < note_x
    assert body[1] == found[3].bbox[1] and note[3] == found[3].bbox[3]
    # Vertical lines (a page turned a quarter clockwise) are cut alike.
    from effocr.linedet.postprocess import DetectedLine

    h = page.shape[0]
    turned = [
        DetectedLine([(h - 1 - y, x) for x, y in ln.polygon], ln.score, True, 0.0) for ln in found
    ]
    out_v = split_at_gaps(np.ascontiguousarray(np.rot90(page, -1)), turned)
    assert len(out_v) == len(out)
    assert out_v[3].bbox[3] == pytest.approx(body[2], abs=1.5)
    assert out_v[4].bbox[1] == pytest.approx(note[0], abs=1.5)


def test_narrow_gaps_and_blank_pages_are_not_split():
    from effocr.pages import split_at_gaps

    page, found, _, _ = _column_page(0.5)
    assert split_at_gaps(page, found) == found
    flat = np.full_like(page, 128)
    page_far, found_far, _, _ = _column_page(1.5)
    assert split_at_gaps(flat, found_far) == found_far
    assert split_at_gaps(page_far, []) == []
