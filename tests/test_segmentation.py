"""`effocr infer --segmentation` and `Engine.read_segmented`: lines from PAGE-XML / ALTO.

Pages are composed from the tiny bundle's own synthetic line images pasted at known places on
white paper; the PAGE 2019 and ALTO 4 files (written by hand, as kraken and eScriptorium
write them: polygons, no transcription) give those lines, in an order that is not top to
bottom, so the file's reading order shows in the output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from page_formats_check import assert_valid
from PIL import Image

from effocr.bundle import Manifest
from effocr.cli import main as cli_main
from effocr.formats.page import read_page
from effocr.infer import Engine
from effocr.pages import LineCut, turn_cut
from effocr.utils import EffOCRError

PAGE2019 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
ALTO4 = "http://www.loc.gov/standards/alto/ns-v4#"
# Where the line images go on the page (top-left corners), and the page size.
PLACES = [(20, 30), (40, 150), (20, 270)]
PAGE_SIZE = (700, 400)


def compose(tiny_models: dict, path: Path) -> list[tuple[int, int, int, int]]:
    """A page of the first three training lines; their boxes (x0, y0, x1, y1)."""
    coco = json.loads(Path(tiny_models["coco"]).read_text(encoding="utf-8"))
    page = Image.new("L", PAGE_SIZE, 255)
    boxes = []
    for im, (x, y) in zip(coco["images"][:3], PLACES, strict=True):
        line = Image.open(Path(tiny_models["images"]) / im["file_name"]).convert("L")
        line = line.crop((0, 0, min(line.width, PAGE_SIZE[0] - 60), line.height))
        page.paste(line, (x, y))
        boxes.append((x, y, x + line.width, y + line.height))
    path.parent.mkdir(parents=True, exist_ok=True)
    page.save(path)
    return boxes


def tight(box) -> tuple[int, int, int, int]:
    """The line's box less its synthetic white border: the outline a segmenter draws round the
    ink. Cut with the default margin (a quarter of its height) it gives back about the whole
    line image, as the tiny localizer was trained on."""
    x0, y0, x1, y1 = box
    d = round((y1 - y0) / 6)
    return (x0 + d, y0 + d, x1 - d, y1 - d)


def pts(box) -> str:
    x0, y0, x1, y1 = box
    return f"{x0},{y0} {x1},{y0} {x1},{y1} {x0},{y1}"


def page_xml(image: str, boxes) -> str:
    # ReadingOrder: region r_b (the two lower lines, bottom one first) before r_a.
    a, b, c = (tight(box) for box in boxes)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<PcGts xmlns="{PAGE2019}">
  <Metadata><Creator>kraken</Creator><Created>2024-01-01T00:00:00</Created>
    <LastChange>2024-01-01T00:00:00</LastChange></Metadata>
  <Page imageFilename="{image}" imageWidth="{PAGE_SIZE[0]}" imageHeight="{PAGE_SIZE[1]}">
    <ReadingOrder><OrderedGroup id="ro">
      <RegionRefIndexed index="0" regionRef="r_b"/><RegionRefIndexed index="1" regionRef="r_a"/>
    </OrderedGroup></ReadingOrder>
    <TextRegion id="r_a"><Coords points="{pts(a)}"/>
      <TextLine id="line_top"><Coords points="{pts(a)}"/></TextLine>
    </TextRegion>
    <TextRegion id="r_b"><Coords points="{pts((b[0], b[1], c[2], c[3]))}"/>
      <TextLine id="line_bottom"><Coords points="{pts(c)}"/></TextLine>
      <TextLine id="line_middle"><Coords points="{pts(b)}"/></TextLine>
    </TextRegion>
  </Page>
</PcGts>
"""


def alto_xml(image: str, boxes) -> str:
    def tl(ident, box):
        x0, y0, x1, y1 = tight(box)
        return (
            f'<TextLine ID="{ident}" HPOS="{x0}" VPOS="{y0}" WIDTH="{x1 - x0}" HEIGHT="{y1 - y0}"/>'
        )

    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alto xmlns="{ALTO4}">
  <Description><MeasurementUnit>pixel</MeasurementUnit>
    <sourceImageInformation><fileName>{image}</fileName></sourceImageInformation></Description>
  <Layout><Page ID="p1" WIDTH="{PAGE_SIZE[0]}" HEIGHT="{PAGE_SIZE[1]}" PHYSICAL_IMG_NR="1">
    <PrintSpace><TextBlock ID="tb1" HPOS="0" VPOS="0" WIDTH="700" HEIGHT="400">
      {tl("alto_mid", boxes[1])}
      {tl("alto_top", boxes[0])}
    </TextBlock></PrintSpace>
  </Page></Layout>
</alto>
"""


@pytest.fixture
def seg(tiny_models, tmp_path) -> dict:
    folder = tmp_path / "seg"
    boxes = compose(tiny_models, tmp_path / "seg" / "scan1.png")
    compose(tiny_models, tmp_path / "seg" / "scan2.png")
    (folder / "a_page.xml").write_text(page_xml("scan1.png", boxes), encoding="utf-8")
    (folder / "b_alto.xml").write_text(alto_xml("scan2.png", boxes), encoding="utf-8")
    return {"dir": folder, "boxes": boxes}


def inside(box, outer, slack: float) -> bool:
    return (
        box[0] >= outer[0] - slack
        and box[1] >= outer[1] - slack
        and box[2] <= outer[2] + slack
        and box[3] <= outer[3] + slack
    )


def test_read_segmented_page_keeps_order_ids_and_page_pixels(tiny_bundle, seg):
    assert not Manifest.read(tiny_bundle).line_detector  # no detection is needed
    boxes = seg["boxes"]
    with Engine(tiny_bundle) as engine:
        page = engine.read_segmented(seg["dir"] / "a_page.xml")
        res = next(engine.iter_segmented([seg["dir"] / "a_page.xml"]))
    assert page.error is None and (page.width, page.height) == PAGE_SIZE
    assert [r.id for r in page.regions] == ["r_b", "r_a"]
    lines = list(page.lines())
    assert [ln.id for ln in lines] == ["line_bottom", "line_middle", "line_top"]
    for ln, box in zip(lines, (boxes[2], boxes[1], boxes[0]), strict=True):
        assert ln.polygon[0] == pytest.approx(tight(box)[:2])
        assert ln.glyphs, f"{ln.id}: nothing read"
        for g in ln.glyphs:  # page pixels: inside the line's place on the page
            assert inside(g.bbox, box, 3), (ln.id, g.bbox, box)
    assert [r["id"] for r in res.records()] == ["line_bottom", "line_middle", "line_top"]
    assert all(r["segmentation"].endswith("a_page.xml") for r in res.records())


def test_read_segmented_alto(tiny_bundle, seg):
    with Engine(tiny_bundle) as engine:
        page = engine.read_segmented(seg["dir"] / "b_alto.xml")
    assert [r.id for r in page.regions] == ["tb1"]
    lines = list(page.lines())
    assert [ln.id for ln in lines] == ["alto_mid", "alto_top"]
    for ln, box in zip(lines, (seg["boxes"][1], seg["boxes"][0]), strict=True):
        assert ln.glyphs
        for g in ln.glyphs:
            assert inside(g.bbox, box, 3), (ln.id, g.bbox, box)


def test_read_segmented_missing_image_raises(tiny_bundle, seg, tmp_path):
    xml = tmp_path / "lost.xml"
    xml.write_text(page_xml("nowhere.png", seg["boxes"]), encoding="utf-8")
    with Engine(tiny_bundle) as engine, pytest.raises(EffOCRError, match="nowhere.png"):
        engine.read_segmented(xml)


def test_infer_segmentation_cli(tiny_bundle, seg, tmp_path):
    folder = seg["dir"]
    (folder / "c_missing.xml").write_text(page_xml("gone.png", seg["boxes"]), encoding="utf-8")
    (folder / "d_broken.xml").write_text("<PcGts><Page>", encoding="utf-8")
    out = tmp_path / "out"
    rc = cli_main(
        [
            "infer",
            "--segmentation",
            str(folder),
            "-m",
            str(tiny_bundle),
            "-o",
            str(out),
            "--format",
            "jsonl,page,alto,txt",
        ]
    )
    assert rc == 1  # two bad files, recorded; the good ones are read
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    by_file: dict[str, list[dict]] = {}
    for r in records:
        by_file.setdefault(Path(r["segmentation"]).name, []).append(r)
    assert [r["id"] for r in by_file["a_page.xml"]] == ["line_bottom", "line_middle", "line_top"]
    assert [r["id"] for r in by_file["b_alto.xml"]] == ["alto_mid", "alto_top"]
    assert "gone.png" in by_file["c_missing.xml"][0]["error"]
    assert by_file["d_broken.xml"][0]["error"] and by_file["d_broken.xml"][0]["text"] is None
    # PAGE output: valid, the input's ids, and read back by the importer's reader.
    data = (out / "page" / "scan1.xml").read_bytes()
    assert_valid(data, "page")
    assert_valid((out / "alto" / "scan2.xml").read_bytes(), "alto")
    back = read_page(out / "page" / "scan1.xml", alternative_images=True, transcribed_only=False)
    assert back.page.error is None
    assert [r.id for r in back.page.regions] == ["r_b", "r_a"]
    assert [ln.id for ln in back.page.lines()] == ["line_bottom", "line_middle", "line_top"]
    assert [ln.text for ln in back.page.lines()] == [r["text"] for r in by_file["a_page.xml"]]
    expect = (seg["boxes"][2], seg["boxes"][1], seg["boxes"][0])
    for ln, box in zip(back.page.lines(), expect, strict=True):
        assert ln.polygon[0] == pytest.approx(tight(box)[:2], abs=1)
    assert (out / "text" / "scan1.txt").is_file()
    # The inputs are left as they were.
    assert (folder / "d_broken.xml").read_text() == "<PcGts><Page>"


def test_infer_segmentation_image_folder_input(tiny_bundle, seg, tmp_path, capsys):
    """INPUT with --segmentation: one folder searched for the page images, nothing else."""
    rc = cli_main(
        ["infer", str(seg["dir"] / "scan1.png"), "--segmentation", str(seg["dir"]),
         "-m", str(tiny_bundle)]
    )  # fmt: skip
    assert rc != 0 and "one folder" in capsys.readouterr().err
    assert cli_main(["infer", "-m", str(tiny_bundle)]) != 0
    assert "at least one INPUT (or --segmentation)" in capsys.readouterr().err
    xml_only = tmp_path / "xml_only"
    xml_only.mkdir()
    (xml_only / "p.xml").write_text((seg["dir"] / "a_page.xml").read_text(), encoding="utf-8")
    capsys.readouterr()
    rc = cli_main(
        ["infer", str(seg["dir"]), "--segmentation", str(xml_only), "-m", str(tiny_bundle)]
    )
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rc == 0 and [r["id"] for r in records] == ["line_bottom", "line_middle", "line_top"]


@pytest.mark.parametrize("orientation", [90, 180, 270, -90])
def test_turn_cut_keeps_the_page_mapping(orientation):
    image = np.arange(6 * 10, dtype=np.uint8).reshape(6, 10)
    cut = LineCut(image, (100.0, 50.0), (1.0, 0.0), (0.0, 1.0), False)
    turned = turn_cut(cut, orientation)
    h, w = turned.image.shape
    assert (h, w) == ((10, 6) if orientation % 180 else (6, 10))
    assert turned.to_page([0, 0, w, h]) == pytest.approx([100, 50, 110, 56])
    # One pixel: where it lands in the turned cut maps back to where it was on the page.
    y, x = np.argwhere(turned.image == image[1, 2])[0]
    assert turned.to_page([x, y, x + 1, y + 1]) == pytest.approx([102, 51, 103, 52])
