"""`effocr import`: PAGE-XML, ALTO and line folders -> the raw COCO format, and bad input.

The fixtures are written by hand after what the tools write: kraken (PAGE 2019, polygons and
baselines), Transkribus (PAGE 2013, several TextEquiv, Word/Glyph, ReadingOrder), an OCR-D
workspace (mets.xml, OCR-D-IMG/, OCR-D-GT-SEG-LINE/, AlternativeImage) and ALTO 2 / 4 in mm10.
Images are tiny and generated, with known pixel values, so masks and crops can be checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from schema_defaults import CATEGORIES

from effocr.cli import main as cli_main
from effocr.config import load_config
from effocr.data.validate import validate_coco
from effocr.formats.alto import read_alto
from effocr.formats.page import read_page
from effocr.formats.xml import parse_xml
from effocr.importer import ImportOptions, import_dataset
from effocr.utils import EffOCRError

PAGE2019 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
PAGE2013 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15"


def options(**changes) -> ImportOptions:
    section = dict(load_config(None)["dataset"]["import"])
    section.update(changes)
    return ImportOptions.from_config(section)


def gray_page(path: Path, size=(400, 200), value=100, dpi=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    kw = {"dpi": (dpi, dpi)} if dpi else {}
    Image.new("L", size, value).save(path, **kw)


def load_out(out: Path) -> tuple[dict, dict]:
    coco = json.loads((out / "lines.json").read_text(encoding="utf-8"))
    report = json.loads((out / "import_report.json").read_text(encoding="utf-8"))
    return coco, report


def pixels(out: Path, image: dict) -> np.ndarray:
    return np.asarray(Image.open(out / "images" / image["file_name"]).convert("L"))


def boxes(coco: dict, image_id: int, cat: int) -> list[float]:
    """The [x, y, w, h] boxes of an image and category, flattened (for pytest.approx)."""
    return [
        v
        for a in coco["annotations"]
        if a["image_id"] == image_id and a["category_id"] == cat
        for v in a["bbox"]
    ]


def flat(rows: list[list[float]]) -> list[float]:
    return [v for row in rows for v in row]


# ---------------------------------------------------------------------------
# kraken: PAGE 2019, polygons and baselines, one TextEquiv, no words
# ---------------------------------------------------------------------------

KRAKEN = f"""<?xml version="1.0" encoding="UTF-8"?>
<PcGts xmlns="{PAGE2019}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <Metadata><Creator>kraken 4.3.13</Creator><Created>2024-01-01T00:00:00</Created>
    <LastChange>2024-01-01T00:00:00</LastChange></Metadata>
  <Page imageFilename="scan.png" imageWidth="400" imageHeight="200">
    <TextRegion id="r_1" type="paragraph">
      <Coords points="5,5 395,5 395,195 5,195"/>
      <TextLine id="l_1">
        <Coords points="10,10 200,10 200,48 10,30"/>
        <Baseline points="10,28 200,44"/>
        <TextEquiv><Unicode>Hello kraken</Unicode></TextEquiv>
      </TextLine>
      <TextLine id="l_2">
        <Coords points="10,60 390,60 390,100 10,100"/>
        <Baseline points="10,90 390,90"/>
        <TextEquiv><Unicode> </Unicode></TextEquiv>
      </TextLine>
      <TextLine id="l_3">
        <Coords points="300,150 430,150 430,190 300,190"/>
        <Baseline points="300,180 430,180"/>
        <TextEquiv><Unicode>clipped</Unicode></TextEquiv>
      </TextLine>
      <TextLine id="l_4">
        <Coords points="500,10 600,10 600,40 500,40"/>
        <TextEquiv><Unicode>off the page</Unicode></TextEquiv>
      </TextLine>
    </TextRegion>
  </Page>
</PcGts>
"""


def test_kraken_page(tmp_path):
    src = tmp_path / "kraken"
    gray_page(src / "scan.png")
    (src / "scan.xml").write_text(KRAKEN, encoding="utf-8")
    before = (src / "scan.png").read_bytes()
    out = tmp_path / "out"
    import_dataset("page", [src], out, options(margin=0))
    coco, report = load_out(out)
    assert [img["text"] for img in coco["images"]] == ["Hello kraken", "clipped"]
    first = coco["images"][0]
    # Crop: the polygon's box (10..200 x 10..48, pixel-inclusive) without margin.
    assert (first["width"], first["height"]) == (191, 39)
    px = pixels(out, first)
    assert px[10, 90] == 100  # inside the polygon: the page's pixels
    assert px[35, 5] == 255  # below the slanted lower edge: masked white
    assert coco["annotations"] == []  # a transcription only
    # Partly outside: clipped to the page; wholly outside: left out, with file and id.
    assert coco["images"][1]["width"] == 400 - 300
    assert [c["id"] for c in report["clipped"]] == ["l_3"]
    problems = {s["id"]: s["problem"] for s in report["skipped"]}
    assert problems["l_2"] == "empty transcription"
    assert "outside the 400x200 page image" in problems["l_4"]
    assert all(s["file"] == str(src / "scan.xml") for s in report["skipped"])
    assert (src / "scan.png").read_bytes() == before
    line = read_page(src / "scan.xml", alternative_images=True).page.regions[0].lines[0]
    assert line.baseline == [(10.0, 28.0), (200.0, 44.0)]


def test_margin_keeps_pixels_around_the_polygon(tmp_path):
    src = tmp_path / "kraken"
    gray_page(src / "scan.png")
    (src / "scan.xml").write_text(KRAKEN, encoding="utf-8")
    import_dataset("page", [src / "scan.xml"], tmp_path / "out", options(margin=3))
    coco, _ = load_out(tmp_path / "out")
    first = coco["images"][0]
    assert (first["width"], first["height"]) == (197, 45)
    px = pixels(tmp_path / "out", first)
    assert px[0, 1] == 100  # 3 px above the top edge: inside the margin
    assert px[44, 4] == 255  # far below the slanted edge: still masked


# ---------------------------------------------------------------------------
# Transkribus: PAGE 2013, ReadingOrder, several TextEquiv, Word and Glyph
# ---------------------------------------------------------------------------

GLYPHS = {"H": (102, 104, 110, 126), "i": (112, 104, 115, 126)}
GLYPHS2 = {"a": (125, 110, 133, 126), "b": (135, 104, 143, 126)}


def _glyph_xml(gid, ch, b):
    x0, y0, x1, y1 = b
    return (
        f'<Glyph id="{gid}"><Coords points="{x0},{y0} {x1},{y0} {x1},{y1} {x0},{y1}"/>'
        f"<TextEquiv><Unicode>{ch}</Unicode></TextEquiv></Glyph>"
    )


def _word_xml(wid, glyphs):
    xs = [v for b in glyphs.values() for v in (b[0], b[2])]
    ys = [v for b in glyphs.values() for v in (b[1], b[3])]
    inner = "".join(_glyph_xml(f"{wid}_g{i}", c, b) for i, (c, b) in enumerate(glyphs.items()))
    text = "".join(glyphs)
    return (
        f'<Word id="{wid}"><Coords points="{min(xs)},{min(ys)} {max(xs)},{min(ys)} '
        f'{max(xs)},{max(ys)} {min(xs)},{max(ys)}"/>{inner}'
        f"<TextEquiv><Unicode>{text}</Unicode></TextEquiv></Word>"
    )


TRANSKRIBUS = f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<PcGts xmlns="{PAGE2013}">
  <Metadata><Creator>prov=READ-COOP:name=PyXRIF:version=2.3;</Creator>
    <Created>2023-05-01T10:00:00.000+02:00</Created>
    <LastChange>2023-05-02T10:00:00.000+02:00</LastChange>
    <TranskribusMetadata docId="1" pageId="2" pageNr="1"/></Metadata>
  <Page imageFilename="0001_scan.jpg" imageWidth="400" imageHeight="200">
    <ReadingOrder>
      <OrderedGroup id="ro_1" caption="Regions reading order">
        <RegionRefIndexed index="1" regionRef="r1"/>
        <RegionRefIndexed index="0" regionRef="r2"/>
      </OrderedGroup>
    </ReadingOrder>
    <TextRegion id="r1" custom="readingOrder {{index:1;}}">
      <Coords points="10,10 390,10 390,60 10,60"/>
      <TextLine id="tl_1" custom="readingOrder {{index:0;}}">
        <Coords points="20,20 120,20 120,50 20,50"/>
        <Baseline points="20,45 120,45"/>
        <TextEquiv><Unicode>First</Unicode></TextEquiv>
      </TextLine>
    </TextRegion>
    <TextRegion id="r2" custom="readingOrder {{index:0;}}">
      <Coords points="90,90 300,90 300,140 90,140"/>
      <TextLine id="tl_2" custom="readingOrder {{index:0;}}">
        <Coords points="100,100 200,100 200,130 100,130"/>
        <Baseline points="100,126 200,126"/>
        {_word_xml("w1", GLYPHS)}
        {_word_xml("w2", GLYPHS2)}
        <TextEquiv index="2" conf="0.61"><Unicode>Hl ab</Unicode></TextEquiv>
        <TextEquiv index="1"><Unicode>Hi ab</Unicode></TextEquiv>
      </TextLine>
      <TextEquiv><Unicode>Hi ab</Unicode></TextEquiv>
    </TextRegion>
  </Page>
</PcGts>
"""


@pytest.fixture
def transkribus(tmp_path) -> Path:
    src = tmp_path / "transkribus"
    src.mkdir()
    Image.new("RGB", (400, 200), (100, 100, 100)).save(src / "0001_scan.jpg", quality=100)
    (src / "0001_scan.xml").write_text(TRANSKRIBUS, encoding="utf-8")
    return src


def test_transkribus_page_2013(tmp_path, transkribus):
    out = tmp_path / "out"
    import_dataset("page", [transkribus], out, options())
    coco, report = load_out(out)
    # ReadingOrder puts r2 first although it comes second in the file.
    assert [img["text"] for img in coco["images"]] == ["Hi ab", "First"]
    assert report["lines_with_char_boxes"] == 1 and report["char_boxes"] == 4
    # Crop origin: the line's box (100, 100) minus the 2-pixel margin.
    expected = [
        [b[0] - 98, b[1] - 98, b[2] - b[0], b[3] - b[1]] for b in (GLYPHS | GLYPHS2).values()
    ]
    assert boxes(coco, 1, 1) == pytest.approx(flat(expected))
    assert [a["text"] for a in coco["annotations"] if a["category_id"] == 1] == list("Hiab")
    assert boxes(coco, 1, 2) == pytest.approx([4, 6, 13, 22, 27, 6, 18, 22])
    problems, _ = validate_coco(out / "lines.json", out / "images", **CATEGORIES)
    assert len(problems) == 1 and "1 of 2 line(s) have a transcription but no char" in str(
        problems[0]
    )


def test_text_index_picks_the_variant(tmp_path, transkribus):
    import_dataset("page", [transkribus], tmp_path / "out", options(text_index=2))
    coco, report = load_out(tmp_path / "out")
    assert [img["text"] for img in coco["images"]] == ["Hl ab"]
    # tl_1 has no TextEquiv with index 2: left out as untranscribed, not as an error.
    assert [(s["id"], s["reason"]) for s in report["skipped"]] == [("tl_1", "untranscribed")]


def test_without_chars_skip_leaves_text_only_lines_out(tmp_path, transkribus):
    import_dataset("page", [transkribus], tmp_path / "out", options(without_chars="skip"))
    coco, report = load_out(tmp_path / "out")
    assert [img["text"] for img in coco["images"]] == ["Hi ab"]
    problems, _ = validate_coco(
        tmp_path / "out" / "lines.json", tmp_path / "out" / "images", **CATEGORIES
    )
    assert problems == []


def test_glyph_count_mismatch_drops_char_boxes_only(tmp_path, transkribus):
    xml = transkribus / "0001_scan.xml"
    xml.write_text(TRANSKRIBUS.replace("<Unicode>Hi ab</Unicode>", "<Unicode>Hi abc</Unicode>"))
    import_dataset("page", [transkribus], tmp_path / "out", options())
    coco, report = load_out(tmp_path / "out")
    assert coco["images"][0]["text"] == "Hi abc"
    assert boxes(coco, 1, 1) == [] and len(boxes(coco, 1, 2)) == 8
    assert "4 Glyph boxes for 5 non-space characters" in report["notes"][0]["problem"]


# ---------------------------------------------------------------------------
# Orientation: rotated lines are turned upright, vertical lines stay vertical
# ---------------------------------------------------------------------------

ROTATED = f"""<?xml version="1.0" encoding="UTF-8"?>
<PcGts xmlns="{PAGE2019}">
  <Metadata><Creator>test</Creator><Created>2024-01-01T00:00:00</Created>
    <LastChange>2024-01-01T00:00:00</LastChange></Metadata>
  <Page imageFilename="p.png" imageWidth="200" imageHeight="200">
    <TextRegion id="r1" orientation="90"><Coords points="15,15 55,15 55,125 15,125"/>
      <TextLine id="rot"><Coords points="20,20 50,20 50,120 20,120"/>
        <Word id="w"><Coords points="22,22 48,22 48,40 22,40"/>
          <Glyph id="g"><Coords points="22,22 48,22 48,40 22,40"/>
            <TextEquiv><Unicode>A</Unicode></TextEquiv></Glyph>
          <TextEquiv><Unicode>A</Unicode></TextEquiv></Word>
        <TextEquiv><Unicode>A</Unicode></TextEquiv></TextLine>
    </TextRegion>
    <TextRegion id="r2" readingDirection="top-to-bottom">
      <Coords points="115,15 155,15 155,165 115,165"/>
      <TextLine id="vert"><Coords points="120,20 150,20 150,160 120,160"/>
        <TextEquiv><Unicode>縦書き</Unicode></TextEquiv></TextLine>
    </TextRegion>
  </Page>
</PcGts>
"""


def test_orientation_and_vertical_lines(tmp_path):
    gray_page(tmp_path / "src" / "p.png", (200, 200))
    (tmp_path / "src" / "p.xml").write_text(ROTATED, encoding="utf-8")
    import_dataset("page", [tmp_path / "src"], tmp_path / "out", options())
    coco, _ = load_out(tmp_path / "out")
    rot, vert = coco["images"]
    # 35 x 105 before the turn (20..50 x 20..120, margin 2), clockwise by 90 degrees after it:
    # the glyph at the top of the tall crop ends at the right of the wide one.
    assert (rot["width"], rot["height"]) == (105, 35)
    assert boxes(coco, rot["id"], 1) == pytest.approx([83, 4, 18, 26])
    assert vert["height"] > vert["width"]


# ---------------------------------------------------------------------------
# OCR-D workspace: mets.xml, file groups, AlternativeImage
# ---------------------------------------------------------------------------

METS = """<?xml version="1.0" encoding="UTF-8"?>
<mets:mets xmlns:mets="http://www.loc.gov/METS/" xmlns:xlink="http://www.w3.org/1999/xlink">
  <mets:fileSec>
    <mets:fileGrp USE="OCR-D-IMG">
      <mets:file ID="OCR-D-IMG_0001" MIMETYPE="image/png">
        <mets:FLocat LOCTYPE="OTHER" OTHERLOCTYPE="FILE" xlink:href="OCR-D-IMG/OCR-D-IMG_0001.png"/>
      </mets:file>
    </mets:fileGrp>
    <mets:fileGrp USE="OCR-D-GT-SEG-LINE">
      <mets:file ID="OCR-D-GT-SEG-LINE_0001" MIMETYPE="application/vnd.prima.page+xml">
        <mets:FLocat LOCTYPE="OTHER" OTHERLOCTYPE="FILE"
          xlink:href="OCR-D-GT-SEG-LINE/OCR-D-GT-SEG-LINE_0001.xml"/>
      </mets:file>
    </mets:fileGrp>
  </mets:fileSec>
</mets:mets>
"""

OCRD_PAGE = f"""<?xml version="1.0" encoding="UTF-8"?>
<pc:PcGts xmlns:pc="{PAGE2019}">
  <pc:Metadata><pc:Creator>OCR-D</pc:Creator><pc:Created>2024-01-01T00:00:00</pc:Created>
    <pc:LastChange>2024-01-01T00:00:00</pc:LastChange></pc:Metadata>
  <pc:Page imageFilename="OCR-D-IMG/OCR-D-IMG_0001.png" imageWidth="300" imageHeight="100">
    <pc:AlternativeImage filename="OCR-D-BIN/OCR-D-BIN_0001.png" comments="binarized"/>
    <pc:TextRegion id="region0001">
      <pc:Coords points="0,0 299,0 299,99 0,99"/>
      <pc:TextLine id="region0001_line0001">
        <pc:AlternativeImage filename="OCR-D-BIN-LINE/line0001.png" comments="binarized,clipped"/>
        <pc:Coords points="10,10 109,10 109,39 10,39"/>
        <pc:TextEquiv index="1"><pc:Unicode>own image</pc:Unicode></pc:TextEquiv>
      </pc:TextLine>
      <pc:TextLine id="region0001_line0002">
        <pc:Coords points="10,50 209,50 209,89 10,89"/>
        <pc:TextEquiv index="1"><pc:Unicode>binarised page</pc:Unicode></pc:TextEquiv>
      </pc:TextLine>
    </pc:TextRegion>
  </pc:Page>
</pc:PcGts>
"""


@pytest.fixture
def ocrd(tmp_path) -> Path:
    ws = tmp_path / "workspace"
    gray_page(ws / "OCR-D-IMG" / "OCR-D-IMG_0001.png", (300, 100), 100)
    gray_page(ws / "OCR-D-BIN" / "OCR-D-BIN_0001.png", (300, 100), 0)
    gray_page(ws / "OCR-D-BIN-LINE" / "line0001.png", (100, 30), 50)
    (ws / "mets.xml").write_text(METS, encoding="utf-8")
    (ws / "OCR-D-GT-SEG-LINE").mkdir()
    (ws / "OCR-D-GT-SEG-LINE" / "OCR-D-GT-SEG-LINE_0001.xml").write_text(OCRD_PAGE)
    return ws


def test_ocrd_workspace(tmp_path, ocrd):
    out = tmp_path / "out"
    import_dataset("page", [ocrd / "mets.xml"], out, options(file_grp="OCR-D-GT-SEG-LINE"))
    coco, _ = load_out(out)
    own, page_line = coco["images"]
    assert (own["width"], own["height"]) == (100, 30)
    assert set(np.unique(pixels(out, own))) <= {50, 255}  # the line's own image
    assert 0 in set(np.unique(pixels(out, page_line)))  # cut from the binarised page
    # Without METS and with AlternativeImages off: the workspace above the PAGE file still
    # resolves OCR-D-IMG/..., and the original page is cut.
    out2 = tmp_path / "out2"
    xml = ocrd / "OCR-D-GT-SEG-LINE"
    import_dataset("page", [xml], out2, options(alternative_images=False))
    coco2, _ = load_out(out2)
    assert set(np.unique(pixels(out2, coco2["images"][0]))) <= {100, 255}


def test_mets_errors(tmp_path, ocrd):
    with pytest.raises(EffOCRError, match="needs --file-grp"):
        import_dataset("page", [ocrd / "mets.xml"], tmp_path / "o", options())
    with pytest.raises(EffOCRError, match="no fileGrp USE='GT'.*OCR-D-GT-SEG-LINE"):
        import_dataset("page", [ocrd], tmp_path / "o", options(file_grp="GT"))


def test_missing_image_names_the_paths_tried(tmp_path, ocrd):
    (ocrd / "OCR-D-IMG" / "OCR-D-IMG_0001.png").unlink()
    xml = ocrd / "OCR-D-GT-SEG-LINE" / "OCR-D-GT-SEG-LINE_0001.xml"
    sp = read_page(xml, alternative_images=False, image_dir=tmp_path / "imgs")
    assert sp.image is None and sp.page.regions == []
    assert "OCR-D-IMG/OCR-D-IMG_0001.png' not found; tried" in sp.page.error
    for tried in (
        xml.parent / "OCR-D-IMG" / "OCR-D-IMG_0001.png",
        ocrd / "OCR-D-IMG" / "OCR-D-IMG_0001.png",
        tmp_path / "imgs" / "OCR-D-IMG" / "OCR-D-IMG_0001.png",
        tmp_path / "imgs" / "OCR-D-IMG_0001.png",
    ):
        assert str(tried) in sp.page.error
    # --image-dir finds it.
    gray_page(tmp_path / "imgs" / "OCR-D-IMG_0001.png", (300, 100))
    sp = read_page(xml, alternative_images=False, image_dir=tmp_path / "imgs")
    assert sp.image == tmp_path / "imgs" / "OCR-D-IMG_0001.png"


# ---------------------------------------------------------------------------
# ALTO 2 and 4 in mm10
# ---------------------------------------------------------------------------

ALTO2 = """<?xml version="1.0" encoding="UTF-8"?>
<alto xmlns="http://www.loc.gov/standards/alto/ns-v2#">
  <Description><MeasurementUnit>mm10</MeasurementUnit>
    <sourceImageInformation><fileName>scan.png</fileName></sourceImageInformation>
  </Description>
  <Layout><Page ID="P1" PHYSICAL_IMG_NR="1" HEIGHT="677" WIDTH="1016">
    <PrintSpace HPOS="0" VPOS="0" WIDTH="1016" HEIGHT="677">
      <TextBlock ID="TB1" HPOS="254" VPOS="254" WIDTH="508" HEIGHT="127">
        <TextLine ID="TL1" HPOS="254" VPOS="254" WIDTH="508" HEIGHT="127">
          <String ID="S1" CONTENT="Hello" HPOS="254" VPOS="254" WIDTH="200" HEIGHT="127" WC="0.9"/>
          <SP WIDTH="20" HPOS="454" VPOS="254"/>
          <String ID="S2" CONTENT="world" HPOS="474" VPOS="254" WIDTH="200" HEIGHT="127"/>
          <HYP CONTENT="-"/>
        </TextLine>
      </TextBlock>
    </PrintSpace>
  </Page></Layout>
</alto>
"""

ALTO4 = """<?xml version="1.0" encoding="UTF-8"?>
<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#"
      xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <Description><MeasurementUnit>mm10</MeasurementUnit>
    <sourceImageInformation><fileName>scan4.png</fileName></sourceImageInformation>
  </Description>
  <Layout><Page ID="P1" PHYSICAL_IMG_NR="1" HEIGHT="200" WIDTH="400">
    <PrintSpace>
      <ComposedBlock ID="CB1">
      <TextBlock ID="TB1" HPOS="10" VPOS="10" WIDTH="200" HEIGHT="40">
        <TextLine ID="TL1" HPOS="20" VPOS="20" WIDTH="100" HEIGHT="30">
          <String ID="S1" CONTENT="Ab" HPOS="22" VPOS="22" WIDTH="20" HEIGHT="26">
            <Glyph ID="G1" CONTENT="A" HPOS="22" VPOS="22" WIDTH="9" HEIGHT="26"/>
            <Glyph ID="G2" CONTENT="b" HPOS="33" VPOS="22" WIDTH="9" HEIGHT="26"/>
          </String>
          <SP/>
          <String ID="S2" CONTENT="c" HPOS="50" VPOS="28" WIDTH="8" HEIGHT="20">
            <Glyph ID="G3" CONTENT="c" HPOS="50" VPOS="28" WIDTH="8" HEIGHT="20" GC="0.8"/>
          </String>
        </TextLine>
      </TextBlock>
      </ComposedBlock>
    </PrintSpace>
  </Page></Layout>
</alto>
"""


def test_alto2_mm10_with_the_images_dpi(tmp_path):
    src = tmp_path / "alto2"
    gray_page(src / "scan.png", (1200, 800), dpi=300)
    (src / "scan.xml").write_text(ALTO2, encoding="utf-8")
    out = tmp_path / "out"
    import_dataset("alto", [src], out, options())
    coco, report = load_out(out)
    (img,) = coco["images"]
    assert img["text"] == "Hello world-"
    # 254 mm10 = 1 inch = 300 px: the line is 300..900 x 300..450, plus the 2-pixel margin.
    assert (img["width"], img["height"]) == (605, 155)
    words = boxes(coco, 1, 2)
    w = 200 * 300 / 254
    assert words == pytest.approx(
        flat([[2, 2, w, 150], [2 + 220 * 300 / 254, 2, w, 150]]), abs=0.01
    )
    assert "mm10 at 300 dpi" in report["units"][str(src / "scan.xml")]


@pytest.mark.parametrize(("unit", "dpi"), [("mm10", 254), ("inch1200", 1200)])
def test_alto4_glyphs_with_given_dpi(tmp_path, unit, dpi):
    src = tmp_path / "alto4"
    gray_page(src / "scan4.png", (400, 200), dpi=72)  # the given dpi wins over the file's
    (src / "scan4.xml").write_text(ALTO4.replace("mm10", unit), encoding="utf-8")
    # One unit is one pixel at these resolutions, so the expected boxes read off the file.
    import_dataset("alto", [src / "scan4.xml"], tmp_path / "out", options(dpi=dpi))
    coco, _ = load_out(tmp_path / "out")
    (img,) = coco["images"]
    assert img["text"] == "Ab c"
    assert boxes(coco, 1, 1) == pytest.approx(
        flat([[4, 4, 9, 26], [15, 4, 9, 26], [32, 10, 8, 20]])
    )
    assert [a["text"] for a in coco["annotations"] if a["category_id"] == 1] == list("Abc")
    assert (
        validate_coco(tmp_path / "out" / "lines.json", tmp_path / "out" / "images", **CATEGORIES)[0]
        == []
    )


def test_alto_mm10_without_dpi_is_refused(tmp_path):
    src = tmp_path / "alto4"
    gray_page(src / "scan4.png", (400, 200))
    (src / "scan4.xml").write_text(ALTO4, encoding="utf-8")
    with pytest.raises(EffOCRError, match=r"scan4.xml: MeasurementUnit mm10 needs.*--dpi"):
        read_alto(src / "scan4.xml")
    with pytest.raises(EffOCRError, match="nothing to import.*records none"):
        import_dataset("alto", [src], tmp_path / "out", options())
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------
# Line folders
# ---------------------------------------------------------------------------


def test_line_folder(tmp_path):
    src = tmp_path / "gt"
    gray_page(src / "a.bin.png", (60, 20))
    (src / "a.gt.txt").write_text("alpha\n", encoding="utf-8")
    gray_page(src / "sub" / "b.tif", (50, 20))
    (src / "sub" / "b.gt.txt").write_text("beta", encoding="utf-8")
    (src / "empty.gt.txt").write_text("\n", encoding="utf-8")
    gray_page(src / "empty.png", (30, 20))
    (src / "orphan.gt.txt").write_text("no image", encoding="utf-8")
    (src / "latin1.gt.txt").write_bytes(b"caf\xe9")
    gray_page(src / "latin1.png", (30, 20))
    out = tmp_path / "out"
    import_dataset("lines", [src], out, options())
    coco, report = load_out(out)
    assert [(i["text"], i["width"], i["height"]) for i in coco["images"]] == [
        ("alpha", 60, 20),
        ("beta", 50, 20),
    ]
    assert (pixels(out, coco["images"][0]) == 100).all()  # the whole image, unmasked
    problems = {s["id"]: s["problem"] for s in report["skipped"]}
    assert problems["empty"] == "empty transcription"
    assert problems["orphan"].startswith("no line image beside it")
    assert "not UTF-8" in problems["latin1"]


# ---------------------------------------------------------------------------
# Bad input: malformed XML, XXE, billion laughs, outputs, the command line
# ---------------------------------------------------------------------------

XXE = f"""<?xml version="1.0"?>
<!DOCTYPE PcGts [<!ENTITY secret SYSTEM "file://{{secret}}">]>
<PcGts xmlns="{PAGE2019}"><Page imageFilename="scan.png" imageWidth="400" imageHeight="200">
<TextRegion id="r"><TextLine id="l"><Coords points="10,10 200,10 200,48 10,48"/>
<TextEquiv><Unicode>&secret;</Unicode></TextEquiv></TextLine></TextRegion></Page></PcGts>
"""

LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE alto [
 <!ENTITY a "lollollollollollollollollollol">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
 <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
 <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
 <!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;">
 <!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">
 <!ENTITY i "&h;&h;&h;&h;&h;&h;&h;&h;&h;&h;">
]>
<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#"><Layout><Page>
<TextBlock><TextLine ID="L" HPOS="0" VPOS="0" WIDTH="9" HEIGHT="9">
<String CONTENT="&i;" HPOS="0" VPOS="0" WIDTH="9" HEIGHT="9"/></TextLine></TextBlock>
</Page></Layout></alto>
"""


def test_xxe_entity_is_not_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-42", encoding="utf-8")
    src = tmp_path / "src"
    gray_page(src / "scan.png")
    (src / "evil.xml").write_text(XXE.replace("{secret}", str(secret)), encoding="utf-8")
    (src / "good.xml").write_text(KRAKEN, encoding="utf-8")
    with pytest.raises(EffOCRError, match="evil.xml: the DOCTYPE declares entities"):
        parse_xml(src / "evil.xml")
    out = tmp_path / "out"
    import_dataset("page", [src], out, options())  # the good file goes on
    coco, report = load_out(out)
    assert len(coco["images"]) == 2
    (bad,) = [s for s in report["skipped"] if s["file"].endswith("evil.xml")]
    assert "declares entities (secret)" in bad["problem"]
    for f in out.rglob("*"):
        if f.is_file():
            assert b"TOP-SECRET" not in f.read_bytes()


def test_billion_laughs_is_refused_quickly(tmp_path):
    (tmp_path / "lol.xml").write_text(LAUGHS, encoding="utf-8")
    # libxml2 stops the expansion itself (amplification limit) before our DOCTYPE check sees
    # it; either way the file is refused, named, in well under the test's time.
    refused = r"lol.xml: (the DOCTYPE declares entities|not well-formed XML: Maximum entity)"
    with pytest.raises(EffOCRError, match=refused):
        read_alto(tmp_path / "lol.xml")
    with pytest.raises(EffOCRError, match="nothing to import.*entit"):
        import_dataset("alto", [tmp_path / "lol.xml"], tmp_path / "out", options())


@pytest.mark.parametrize("fmt", ["page", "alto"])
def test_malformed_and_foreign_xml(tmp_path, fmt):
    src = tmp_path / "src"
    src.mkdir()
    (src / "broken.xml").write_text("<PcGts><Page></PcGts>", encoding="utf-8")
    (src / "other.xml").write_text("<html><body/></html>", encoding="utf-8")
    with pytest.raises(EffOCRError) as err:
        import_dataset(fmt, [src], tmp_path / "out", options())
    msg = str(err.value)
    assert "broken.xml: not well-formed XML" in msg or "other.xml: not" in msg
    assert "nothing to import from 2 file(s)" in msg
    assert not (tmp_path / "out").exists()


def test_bad_coords_skip_the_line_not_the_file(tmp_path):
    src = tmp_path / "src"
    gray_page(src / "scan.png")
    (src / "scan.xml").write_text(KRAKEN.replace("10,60 390,60", "10,60 x,60"), encoding="utf-8")
    import_dataset("page", [src], tmp_path / "out", options())
    coco, report = load_out(tmp_path / "out")
    assert [i["text"] for i in coco["images"]] == ["Hello kraken", "clipped"]
    assert any(s["id"] == "l_2" and "bad Coords" in s["problem"] for s in report["skipped"])


def test_output_is_replaced_whole_and_never_a_foreign_folder(tmp_path, transkribus):
    out = tmp_path / "out"
    import_dataset("page", [transkribus], out, options())
    import_dataset("page", [transkribus], out, options(text_index=2))  # replaces its own
    assert len(list((out / "images").iterdir())) == 1
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(EffOCRError, match="not written by effocr"):
        import_dataset("page", [transkribus], foreign, options())
    with pytest.raises(EffOCRError, match="inside the output"):
        import_dataset("page", [out / "images"], out, options())


def test_cli(tmp_path, transkribus, capsys):
    out = tmp_path / "out"
    assert cli_main(["import", "page", str(transkribus), "--output", str(out)]) == 0
    assert "2 lines (1 with char boxes) from 1 file(s)" in capsys.readouterr().out
    rc = cli_main(["import", "page", str(transkribus), "--output", str(out), "--text-index", "2"])
    assert rc == 0
    rc = cli_main(
        ["import", "page", str(transkribus), "--output", str(out), "--text-index", "2", "--strict"]
    )
    assert rc == 0  # only an untranscribed line was left out: not a problem
    # A resized copy of the scan: every line is refused, naming both sizes.
    Image.new("RGB", (200, 100)).save(transkribus / "0001_scan.jpg")
    assert cli_main(["import", "page", str(transkribus), "--output", str(out)]) == 1
    assert "is 200x100 but the file's coordinates are for 400x200" in capsys.readouterr().err
    (transkribus / "0001_scan.jpg").unlink()
    assert cli_main(["import", "page", str(transkribus), "--output", str(out)]) == 1
    assert "0001_scan.jpg' not found; tried" in capsys.readouterr().err


ALTO_BAD = """<?xml version="1.0" encoding="UTF-8"?>
<alto xmlns="http://www.loc.gov/standards/alto/ns-v3#">
  <Description><MeasurementUnit>pixel</MeasurementUnit>
    <sourceImageInformation><fileName>scan.png</fileName></sourceImageInformation>
  </Description>
  <Layout><Page ID="P1" HEIGHT="200" WIDTH="400"><PrintSpace>
    <TextBlock ID="TB1" HPOS="0" VPOS="0" WIDTH="400" HEIGHT="200">
      <TextLine ID="good" HPOS="10" VPOS="10" WIDTH="100" HEIGHT="30">
        <String CONTENT="good" HPOS="10" VPOS="10" WIDTH="100" HEIGHT="30"/></TextLine>
      <TextLine ID="off" HPOS="500" VPOS="10" WIDTH="100" HEIGHT="30">
        <String CONTENT="off" HPOS="500" VPOS="10" WIDTH="100" HEIGHT="30"/></TextLine>
      <TextLine ID="empty" HPOS="10" VPOS="50" WIDTH="100" HEIGHT="30"/>
      <TextLine ID="nopos" VPOS="90" WIDTH="100" HEIGHT="30">
        <String CONTENT="x" HPOS="10" VPOS="90" WIDTH="10" HEIGHT="30"/></TextLine>
    </TextBlock>
  </PrintSpace></Page></Layout>
</alto>
"""


def test_alto_bad_lines_files_and_images(tmp_path):
    src = tmp_path / "alto"
    gray_page(src / "scan.png")
    (src / "a.xml").write_text(ALTO_BAD, encoding="utf-8")
    (src / "b_missing.xml").write_text(ALTO_BAD.replace("scan.png", "gone.png"))
    xxe = ALTO_BAD.replace(
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<?xml version="1.0"?><!DOCTYPE alto [<!ENTITY s SYSTEM "file:///etc/hostname">]>',
    ).replace('CONTENT="good"', 'CONTENT="&s;"')
    (src / "c_xxe.xml").write_text(xxe, encoding="utf-8")
    out = tmp_path / "out"
    import_dataset("alto", [src], out, options())
    coco, report = load_out(out)
    assert [i["text"] for i in coco["images"]] == ["good"]
    problems = {(Path(s["file"]).name, s["id"]): s["problem"] for s in report["skipped"]}
    assert "outside the 400x200 page image" in problems[("a.xml", "off")]
    assert problems[("a.xml", "empty")] == "empty transcription"
    assert "bad position attribute" in problems[("a.xml", "nopos")]
    assert "image 'gone.png' not found; tried" in problems[("b_missing.xml", "P1")]
    # In an attribute, an external entity is not even well-formed (libxml2 says so first).
    assert "external entity 's'" in problems[("c_xxe.xml", "")]


@pytest.mark.parametrize("fmt", ["page", "alto"])
def test_undecodable_page_image_is_one_file_left_out(tmp_path, fmt):
    src = tmp_path / "src"
    gray_page(src / "scan.png")
    (src / "broken.png").write_bytes(b"")
    xml = KRAKEN if fmt == "page" else ALTO_BAD
    (src / "a.xml").write_text(xml, encoding="utf-8")
    (src / "b.xml").write_text(xml.replace("scan.png", "broken.png"), encoding="utf-8")
    import_dataset(fmt, [src], tmp_path / "out", options())
    coco, report = load_out(tmp_path / "out")
    assert coco["images"] and all(i["source"]["file"].endswith("a.xml") for i in coco["images"])
    (bad,) = [s for s in report["skipped"] if s["file"].endswith("b.xml")]
    assert "broken.png" in bad["problem"] and bad["id"] == ""


# ---------------------------------------------------------------------------
# Against the official schemas, and against EffOCR's own writers
# ---------------------------------------------------------------------------


def test_fixtures_are_valid_page_2019_and_alto_4():
    """The hand-written 2019 fixtures are what a conforming tool writes (ALTO 4 too)."""
    from page_formats_check import assert_valid

    for xml in (KRAKEN, ROTATED, OCRD_PAGE):
        assert_valid(xml.encode(), "page")
    assert_valid(ALTO4.encode(), "alto")


@pytest.mark.parametrize("fmt", ["page", "alto"])
def test_reads_back_what_effocr_writes(tmp_path, fmt):
    """`effocr infer --format page|alto` output imports with the same lines, texts and boxes."""
    from effocr.document import Glyph, Line, Page, Region, Word, box_polygon
    from effocr.formats.serialize import alto_xml, page_xml

    def word(text, x0):
        glyphs = [Glyph((x0 + 10 * i, 20, x0 + 10 * i + 8, 44), c) for i, c in enumerate(text)]
        return Word((x0, 20, x0 + 10 * len(text) - 2, 44), text, glyphs)

    words = [word("Ab", 20), word("cd", 60)]
    line = Line(
        "l1",
        box_polygon((10, 15, 120, 50)),
        "Ab cd",
        words=words,
        glyphs=[g for w in words for g in w.glyphs],
    )
    page = Page("scan.png", 400, 200, [Region("r1", box_polygon((5, 5, 300, 100)), [line])])
    gray_page(tmp_path / "src" / "scan.png")
    data = page_xml(page) if fmt == "page" else alto_xml(page)
    (tmp_path / "src" / "scan.xml").write_bytes(data)
    xml = tmp_path / "src" / "scan.xml"
    sp = read_page(xml, alternative_images=True) if fmt == "page" else read_alto(xml)
    (back,) = list(sp.page.lines())
    assert back.text == "Ab cd"
    assert [g.text for g in back.glyphs] == list("Abcd")
    # The writers round boxes outward to whole pixels: within a pixel of the model's.
    for got, want in zip(back.glyphs, line.glyphs, strict=True):
        assert got.bbox == pytest.approx(want.bbox, abs=1.0)
    import_dataset(fmt, [tmp_path / "src"], tmp_path / "out", options())
    coco, _ = load_out(tmp_path / "out")
    assert len(boxes(coco, 1, 1)) == 4 * 4
