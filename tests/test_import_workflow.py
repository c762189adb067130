"""`dataset.format: page` in the workflow: import_dataset is the first rule and feeds training.

PAGE-XML with Glyph boxes (as Transkribus exports it: Word > Glyph with coords and text) is
made from synthetic lines whose character boxes are known, pasted onto pages. A real Snakemake
run imports it and goes on to the recognizer dataset, whose real crops carry the page's
characters; the whole DAG is planned behind the import. Lines with text only stop at
check_coco with the message saying why.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
import yaml
from PIL import Image
from schema_defaults import CATEGORIES, synth_line_knobs
from snakemake_forks import run
from test_incremental import (
    CONFIG,
    FONT,
    SNAKEMAKE,
    _env,
    _render_gt_line,
    copy_workflow,
    planned,
    snakemake,
)

from effocr.data.coco import index_coco, line_chars, line_words

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PAGE_NS = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
LINES_PER_PAGE = 5


def _pts(x0, y0, x1, y1) -> str:
    return f"{x0:.0f},{y0:.0f} {x1:.0f},{y0:.0f} {x1:.0f},{y1:.0f} {x0:.0f},{y1:.0f}"


def coco_to_page(coco_json: Path, out_dir: Path, glyphs: bool = True) -> int:
    """Paste the COCO's line images onto pages and write one PAGE-XML per page.

    With `glyphs`, each line has Word and Glyph elements at the known character boxes.
    Returns the number of lines written.
    """
    coco = json.loads(coco_json.read_text(encoding="utf-8"))
    index = index_coco(coco, **CATEGORIES)
    out_dir.mkdir(parents=True)
    images = coco["images"]
    for p in range(0, len(images), LINES_PER_PAGE):
        group = images[p : p + LINES_PER_PAGE]
        width = max(img["width"] for img in group) + 40
        height = sum(img["height"] + 10 for img in group) + 30
        page = Image.new("RGB", (width, height), "white")
        xml_lines, y = [], 20
        for img in group:
            with Image.open(coco_json.parent / "images" / img["file_name"]) as im:
                page.paste(im.convert("RGB"), (20, y))
            dx, dy = 20, y
            words_xml = ""
            if glyphs:
                chars = line_chars(index, img)
                for w, word in enumerate(line_words(index, img)):
                    wx, wy, ww, wh = word["bbox"]
                    inside = [
                        (c, a)
                        for c, a in chars
                        if wx - 1 <= a["bbox"][0] + a["bbox"][2] / 2 <= wx + ww + 1
                    ]
                    g_xml = "".join(
                        f'<Glyph id="g{img["id"]}_{w}_{k}"><Coords points="'
                        + _pts(
                            a["bbox"][0] + dx,
                            a["bbox"][1] + dy,
                            a["bbox"][0] + a["bbox"][2] + dx,
                            a["bbox"][1] + a["bbox"][3] + dy,
                        )
                        + f'"/><TextEquiv><Unicode>{escape(c)}</Unicode></TextEquiv></Glyph>'
                        for k, (c, a) in enumerate(inside)
                    )
                    text = escape("".join(c for c, _ in inside))
                    words_xml += (
                        f'<Word id="w{img["id"]}_{w}"><Coords points="'
                        + _pts(wx + dx, wy + dy, wx + ww + dx, wy + wh + dy)
                        + f'"/>{g_xml}<TextEquiv><Unicode>{text}</Unicode></TextEquiv></Word>'
                    )
            box = _pts(dx, dy, dx + img["width"] - 1, dy + img["height"] - 1)
            xml_lines.append(
                f'<TextLine id="l{img["id"]}"><Coords points="{box}"/>'
                f'<Baseline points="{dx},{dy + img["height"] - 4} '
                f'{dx + img["width"]},{dy + img["height"] - 4}"/>{words_xml}'
                f'<TextEquiv index="1"><Unicode>{escape(img["text"])}</Unicode></TextEquiv>'
                "</TextLine>"
            )
            y += img["height"] + 10
        name = f"page{p // LINES_PER_PAGE:03d}"
        page.save(out_dir / f"{name}.png")
        (out_dir / f"{name}.xml").write_text(
            f'<?xml version="1.0" encoding="UTF-8"?>\n<PcGts xmlns="{PAGE_NS}">'
            "<Metadata><Creator>Transkribus</Creator><Created>2024-01-01T00:00:00</Created>"
            "<LastChange>2024-01-01T00:00:00</LastChange></Metadata>"
            f'<Page imageFilename="{name}.png" imageWidth="{width}" imageHeight="{height}">'
            f'<TextRegion id="r1"><Coords points="{_pts(0, 0, width - 1, height - 1)}"/>'
            + "".join(xml_lines)
            + "</TextRegion></Page></PcGts>\n",
            encoding="utf-8",
        )
    return len(images)


def write_config(wf: Path, name: str, dataset: dict) -> Path:
    cfg = json.loads(json.dumps(CONFIG))
    cfg["dataset"] = dataset
    path = wf / "config" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    from effocr.synth.lines import synth_lines

    wf = tmp_path_factory.mktemp("import_wf") / "wf"
    copy_workflow(wf)
    coco = wf / "synth" / "lines.json"
    synth_lines(
        coco,
        12,
        "en",
        font_paths=[FONT],
        seed=7,
        **synth_line_knobs(font_sizes=(24, 28), max_chars=14, degrade=False),
    )
    n = coco_to_page(coco, wf / "gt_page")
    coco_to_page(coco, wf / "gt_text_only", glyphs=False)
    extra = wf / "extra_set"  # the evaluation set CONFIG names, for the planned DAG
    extra.mkdir()
    _render_gt_line("Imported", extra / "l0.png")
    (extra / "l0.gt.txt").write_text("Imported\n", encoding="utf-8")
    return wf, n


def test_page_with_glyphs_imports_and_trains(workflow):
    wf, n_lines = workflow
    config = write_config(wf, "page", {"format": "page", "path": "gt_page"})
    target = "results/recognizer_dataset/manifest.csv"
    snakemake(wf, config, "--printshellcmds", target, timeout=900)
    res = wf / "results"
    coco = json.loads((res / "data" / "imported" / "lines.json").read_text(encoding="utf-8"))
    report = json.loads((res / "data" / "imported" / "import_report.json").read_text())
    assert len(coco["images"]) == n_lines == report["lines_with_char_boxes"]
    assert report["skipped"] == [] and report["notes"] == []
    with open(res / "recognizer_dataset" / "manifest.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    real = [r for r in rows if r["source"] == "real"]
    n_chars = sum(1 for img in coco["images"] for c in img["text"] if not c.isspace())
    assert len(real) == n_chars
    # The real crops come from the imported line images (file names carry the page's stem).
    assert {r["origin"].split("_")[1] for r in real} <= {"page000", "page001", "page002"}
    assert (res / "logs" / "import_dataset.log").is_file()
    assert (res / "benchmarks" / "import_dataset.tsv").is_file()
    # Nothing changed: nothing to do; editing the PAGE reruns the import and what follows.
    jobs, out = planned(wf, config, target)
    assert jobs == {}, out[-3000:]
    xml = wf / "gt_page" / "page000.xml"
    data = xml.read_bytes()
    try:
        xml.write_bytes(data.replace(b'index="1"', b'index="1" conf="1"', 1))
        jobs, out = planned(wf, config, target)
    finally:
        xml.write_bytes(data)
    assert {"import_dataset", "check_coco", "split_coco", "crop_glyphs"} <= set(jobs), out
    # The whole DAG stands behind the import: training, export, evaluation, report.
    jobs, out = planned(wf, config)
    for rule in ("train_recognizer", "train_localizer", "export_bundle", "report"):
        assert rule in jobs, out[-3000:]


def test_text_only_lines_stop_with_a_clear_message(workflow):
    wf, n_lines = workflow
    config = write_config(wf, "text_only", {"format": "page", "path": "gt_text_only"})
    cmd = SNAKEMAKE + ["--cores", "1", "--configfile", str(config)]
    cmd += ["--config", "results_dir=results_text", "--", "results_text/data/validation.json"]
    proc = run(cmd, cwd=wf, env=_env(), timeout=600)
    assert proc.returncode != 0
    log = (wf / "results_text" / "logs" / "check_coco.log").read_text(encoding="utf-8")
    assert f"{n_lines} of {n_lines} line(s) have a transcription but no char boxes" in log


def test_dataset_path_is_required(workflow):
    wf, _ = workflow
    config = write_config(wf, "nopath", {"format": "alto"})
    cmd = SNAKEMAKE + ["--cores", "1", "--dry-run", "--configfile", str(config)]
    proc = run(cmd, cwd=wf, env=_env(), timeout=300)
    assert proc.returncode != 0
    assert "dataset.path must name the files or folders to import" in proc.stdout + proc.stderr
