"""Page formats out: PAGE-XML, ALTO, hOCR and text from `effocr.document.Page`s.

Every XML output is validated against the official XSD (tests/data/schemas) with lxml; hOCR is
checked against the hOCR 1.2 specification (`page_formats_check.hocr_problems`). Texts,
coordinates, confidences and reading order are read back with lxml. The command-line runs use
the session's `tiny_bundle` (real ONNX Runtime and FAISS).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from page_formats_check import assert_valid, hocr_problems, hocr_properties, parse

from effocr.cli import main
from effocr.document import Glyph, Line, Page, Region, Word, box_polygon
from effocr.formats.results import glyph_confidence, page_from_result
from effocr.formats.serialize import alto_xml, hocr, int_box, page_xml, plain_text
from effocr.imageio import parse_formats
from effocr.pipeline import CharResult, LineResult
from effocr.utils import EffOCRError

PC = "{http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15}"
AL = "{http://www.loc.gov/standards/alto/ns-v4#}"
XH = "{http://www.w3.org/1999/xhtml}"


def _glyphs(x: float, text: str, conf: float) -> list[Glyph]:
    return [
        Glyph((x + 10 * i + 0.4, 12.6, x + 10 * i + 8.5, 30.2), c, conf) for i, c in enumerate(text)
    ]


def _word(x: float, text: str, conf: float) -> Word:
    glyphs = _glyphs(x, text, conf)
    return Word((x, 12.0, x + 10 * len(text), 31.0), text, glyphs, conf)


def _two_region_page() -> Page:
    """A page with a horizontal region of two lines (special characters, a baseline) and a
    vertical region of one line, in that reading order."""
    w1, w2 = _word(10, "a<b", 0.9), _word(50, "&c", 0.4)
    line1 = Line(
        "l1",
        box_polygon((5, 10, 200, 32)),
        "a<b &c",
        baseline=[(5, 28), (200, 30)],
        words=[w1, w2],
        glyphs=w1.glyphs + w2.glyphs,
        confidence=0.65,
    )
    w3 = _word(10, "ok", 0.75)
    w3.bbox = (10, 40, 30, 60)
    w3.glyphs = [Glyph((10, 40, 19, 60), "o", 0.7), Glyph((20, 40, 30, 60), "k", 0.8)]
    line2 = Line("l2", box_polygon((5, 38, 200, 62)), "ok", words=[w3], confidence=0.75)
    vglyphs = [Glyph((300, 20 + 25 * i, 322, 43 + 25 * i), c, 0.5) for i, c in enumerate("日本")]
    vline = Line(
        "v1",
        box_polygon((298, 15, 325, 95)),
        "日本",
        words=[Word((298, 18, 324, 70), "日本", vglyphs, 0.5)],
        glyphs=vglyphs,
        confidence=0.5,
        vertical=True,
    )
    return Page(
        "scans/p 1.png",
        400,
        120,
        [
            Region("r_main", box_polygon((0, 5, 210, 70)), [line1, line2]),
            Region("r_vert", box_polygon((290, 10, 330, 100)), [vline], kind="marginalia"),
        ],
    )


# -- the writers, on a page built by hand ------------------------------------------------


def test_page_xml_validates_and_round_trips():
    page = _two_region_page()
    root = assert_valid(page_xml(page), "page")
    pg = root.find(f"{PC}Page")
    assert (pg.get("imageFilename"), pg.get("imageWidth"), pg.get("imageHeight")) == (
        "scans/p 1.png",
        "400",
        "120",
    )
    regions = pg.findall(f"{PC}TextRegion")
    refs = pg.findall(f"{PC}ReadingOrder/{PC}OrderedGroup/{PC}RegionRefIndexed")
    assert [(r.get("index"), r.get("regionRef")) for r in refs] == [
        ("0", "r_main"),
        ("1", "r_vert"),
    ]
    assert [r.get("id") for r in regions] == ["r_main", "r_vert"]
    assert regions[1].get("type") == "marginalia"
    lines = [ln for r in regions for ln in r.findall(f"{PC}TextLine")]
    assert [ln.findtext(f"{PC}TextEquiv/{PC}Unicode") for ln in lines] == ["a<b &c", "ok", "日本"]
    assert [float(ln.find(f"{PC}TextEquiv").get("conf")) for ln in lines] == pytest.approx(
        [0.65, 0.75, 0.5], abs=1e-4
    )
    assert lines[0].find(f"{PC}Baseline").get("points") == "5,28 200,30"
    assert lines[1].find(f"{PC}Baseline") is None  # not known: not written
    words = lines[0].findall(f"{PC}Word")
    assert [w.findtext(f"{PC}TextEquiv/{PC}Unicode") for w in words] == ["a<b", "&c"]
    assert float(words[1].find(f"{PC}TextEquiv").get("conf")) == pytest.approx(0.4, abs=1e-4)
    glyph = words[0].find(f"{PC}Glyph")
    # (10.4, 12.6, 18.5, 30.2) rounded outward: the glyph stays inside its written box.
    assert glyph.find(f"{PC}Coords").get("points") == "10,12 19,12 19,31 10,31"
    assert float(glyph.find(f"{PC}TextEquiv").get("conf")) == pytest.approx(0.9, abs=1e-4)
    assert regions[0].get("readingDirection") == "left-to-right"
    assert (regions[1].get("readingDirection"), regions[1].get("textLineOrder")) == (
        "top-to-bottom",
        "right-to-left",
    )
    assert lines[2].get("readingDirection") == "top-to-bottom"
    assert regions[0].findtext(f"{PC}TextEquiv/{PC}Unicode") == "a<b &c\nok"


def test_alto_validates_and_round_trips():
    page = _two_region_page()
    root = assert_valid(alto_xml(page), "alto")
    assert root.findtext(f"{AL}Description/{AL}MeasurementUnit") == "pixel"
    assert root.findtext(f"{AL}Description/{AL}sourceImageInformation/{AL}fileName") == (
        "scans/p 1.png"
    )
    pg = root.find(f"{AL}Layout/{AL}Page")
    assert (pg.get("WIDTH"), pg.get("HEIGHT")) == ("400", "120")
    blocks = pg.findall(f"{AL}PrintSpace/{AL}TextBlock")
    assert [b.get("ID") for b in blocks] == ["r_main", "r_vert"]
    lines = [ln for b in blocks for ln in b.findall(f"{AL}TextLine")]
    texts = [" ".join(s.get("CONTENT") for s in ln.findall(f"{AL}String")) for ln in lines]
    assert texts == ["a<b &c", "ok", "日本"]
    first = lines[0]
    assert [(c.tag, c.get("HPOS"), c.get("WIDTH")) for c in first] == [
        (f"{AL}String", "10", "30"),
        (f"{AL}SP", "40", "10"),
        (f"{AL}String", "50", "20"),
    ]
    assert (first.get("HPOS"), first.get("VPOS"), first.get("WIDTH"), first.get("HEIGHT")) == (
        "5",
        "10",
        "195",
        "22",
    )
    assert first.get("BASELINE") == "5,28 200,30"
    strings = first.findall(f"{AL}String")
    assert [float(s.get("WC")) for s in strings] == pytest.approx([0.9, 0.4], abs=1e-4)
    glyphs = strings[0].findall(f"{AL}Glyph")
    assert [g.get("CONTENT") for g in glyphs] == ["a", "<", "b"]
    assert [float(g.get("GC")) for g in glyphs] == pytest.approx([0.9] * 3, abs=1e-4)
    assert (glyphs[1].get("HPOS"), glyphs[1].get("VPOS")) == ("20", "12")
    assert lines[2].get("BASEDIRECTION") == "ttb" and blocks[1].get("BASEDIRECTION") == "ttb"
    assert blocks[0].get("BASEDIRECTION") is None


def test_hocr_follows_the_spec_and_round_trips():
    page = _two_region_page()
    data = hocr(page)
    assert hocr_problems(data) == []
    root = parse(data)

    def by_class(cls):
        return [el for el in root.iter() if el.get("class") == cls]

    (pg,) = by_class("ocr_page")
    assert hocr_properties(pg.get("title")) == {"image": '"scans/p 1.png"', "bbox": "0 0 400 120"}
    assert len(by_class("ocr_carea")) == 2 and len(by_class("ocr_par")) == 2
    lines = by_class("ocr_line")
    assert ["".join(ln.itertext()) for ln in lines] == ["a<b &c", "ok", "日本"]
    props = [hocr_properties(ln.get("title")) for ln in lines]
    assert props[0]["bbox"] == "5 10 200 32"
    # Baseline (5, 28) -> (200, 30): slope 2/195, 4 px above the bbox's bottom (y = 32).
    slope, offset = (float(v) for v in props[0]["baseline"].split())
    assert slope == pytest.approx(2 / 195, abs=1e-4) and offset == pytest.approx(-4)
    assert "baseline" not in props[1]
    assert props[2]["textangle"] == "270" and "writing-mode: vertical-rl" in lines[2].get("style")
    words = by_class("ocrx_word")
    assert [hocr_properties(w.get("title"))["x_wconf"] for w in words[:2]] == ["90.00", "40.00"]
    cinfo = by_class("ocrx_cinfo")
    assert "".join(c.text for c in cinfo) == "a<b&cok日本"
    assert hocr_properties(cinfo[0].get("title")) == {
        "x_bboxes": "10 12 19 31",
        "x_confs": "90.00",
    }


def test_plain_text_is_the_pages_text():
    assert plain_text(_two_region_page()).decode() == "a<b &c\nok\n\n日本\n"


def test_xml_special_characters_are_escaped():
    text = "a<b>&c\"d'e]]>"
    glyphs = [Glyph((i * 5, 0, i * 5 + 4, 10), c, 0.5) for i, c in enumerate(text)]
    word = Word((0, 0, 5 * len(text), 10), text, glyphs, 0.5)
    line = Line("l", box_polygon((0, 0, 100, 10)), text, words=[word], glyphs=glyphs)
    page = Page('dir/a&b<"c>.png', 100, 10, [Region("r", box_polygon((0, 0, 100, 10)), [line])])
    for data, name in ((page_xml(page), "page"), (alto_xml(page), "alto")):
        assert b"a<b" not in data and b"&c" not in data
        assert_valid(data, name)
    pc = parse(page_xml(page))
    assert pc.findtext(f".//{PC}TextLine/{PC}TextEquiv/{PC}Unicode") == text
    assert pc.find(f"{PC}Page").get("imageFilename") == 'dir/a&b<"c>.png'
    assert parse(alto_xml(page)).find(f".//{AL}String").get("CONTENT") == text
    data = hocr(page)
    assert hocr_problems(data) == []
    line_el = next(el for el in parse(data).iter() if el.get("class") == "ocr_line")
    assert "".join(line_el.itertext()) == text


def test_characters_xml_cannot_hold_become_replacement_characters():
    glyph = Glyph((0, 0, 4, 10), "\x01", 0.5)
    line = Line(
        "l", box_polygon((0, 0, 10, 10)), "x\x01", words=[Word((0, 0, 4, 10), "x\x01", [glyph])]
    )
    page = Page("a.png", 10, 10, [Region("r", box_polygon((0, 0, 10, 10)), [line])])
    root = assert_valid(page_xml(page), "page")
    assert root.findtext(f".//{PC}TextLine/{PC}TextEquiv/{PC}Unicode") == "x\ufffd"
    assert_valid(alto_xml(page), "alto")
    assert hocr_problems(hocr(page)) == []


def test_multi_code_point_glyphs():
    # A label of two code points (e + combining acute): PAGE and hOCR keep the glyph; ALTO's
    # Glyph holds one character, so that String has none.
    glyphs = [Glyph((0, 0, 8, 10), "e\u0301", 0.8), Glyph((9, 0, 16, 10), "t", 0.6)]
    word = Word((0, 0, 16, 10), "e\u0301t", glyphs, 0.7)
    line = Line("l", box_polygon((0, 0, 20, 10)), "e\u0301t", words=[word], glyphs=glyphs)
    page = Page("a.png", 20, 10, [Region("r", box_polygon((0, 0, 20, 10)), [line])])
    root = assert_valid(page_xml(page), "page")
    assert len(root.findall(f".//{PC}Glyph")) == 2
    alto = assert_valid(alto_xml(page), "alto")
    assert alto.find(f".//{AL}String").get("CONTENT") == "e\u0301t"
    assert alto.findall(f".//{AL}Glyph") == []
    data = hocr(page)
    assert hocr_problems(data) == []
    cinfo = next(el for el in parse(data).iter() if el.get("class") == "ocrx_cinfo")
    assert hocr_properties(cinfo.get("title"))["x_bboxes"] == "0 0 8 10 0 0 8 10"


def test_empty_page_and_empty_line_are_valid():
    empty = Page("a.png", 50, 20)
    assert_valid(page_xml(empty), "page")
    assert_valid(alto_xml(empty), "alto")
    assert hocr_problems(hocr(empty)) == []
    blank = Page(
        "b.png",
        50,
        20,
        [Region("r", box_polygon((0, 0, 50, 20)), [Line("l", box_polygon((0, 0, 50, 20)))])],
    )
    assert_valid(page_xml(blank), "page")
    alto = assert_valid(alto_xml(blank), "alto")
    assert [s.get("CONTENT") for s in alto.iter(f"{AL}String")] == [""]
    assert hocr_problems(hocr(blank)) == []


def test_ids_that_are_not_xml_ids_are_replaced():
    line = Line("1 bad id", box_polygon((0, 0, 10, 10)), "a")
    page = Page(
        "a.png",
        10,
        10,
        [
            Region("dup", box_polygon((0, 0, 10, 10)), [line]),
            Region("dup", box_polygon((0, 0, 10, 10))),
        ],
    )
    root = assert_valid(page_xml(page), "page")
    assert [r.get("id") for r in root.iter(f"{PC}TextRegion")] == ["dup", "region_2"]
    assert_valid(alto_xml(page), "alto")


def test_vertical_words_are_separated_by_a_vertical_space_in_alto():
    words = [Word((5, 10, 25, 40), "日本", [], 0.5), Word((6, 52, 24, 80), "語", [], 0.5)]
    line = Line("v", box_polygon((0, 0, 30, 90)), "日本 語", words=words, vertical=True)
    page = Page("v.png", 30, 90, [Region("r", box_polygon((0, 0, 30, 90)), [line])])
    root = assert_valid(alto_xml(page), "alto")
    (sp,) = root.iter(f"{AL}SP")
    assert [sp.get(k) for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT")] == ["5", "40", "20", "12"]


def test_schemas_reject_invalid_documents():
    from page_formats_check import schema

    page = _two_region_page()
    bad_conf = page_xml(page).replace(b'conf="0.9000"', b'conf="1.5"', 1)
    assert not schema("page").validate(parse(bad_conf))
    no_unit = alto_xml(page).replace(b"<MeasurementUnit>pixel</MeasurementUnit>", b"")
    assert not schema("alto").validate(parse(no_unit))


def test_coordinates_are_clipped_to_the_image():
    assert int_box((-3.2, 1.5, 12.1, 30.0), 10, 20) == (0, 1, 10, 20)


def test_hocr_check_catches_broken_documents():
    data = hocr(_two_region_page())
    assert hocr_problems(data.replace(b'name="ocr-system"', b'name="x-system"'))
    assert hocr_problems(data.replace(b" ocrx_cinfo ocrp_wconf", b" ocrp_wconf"))
    assert hocr_problems(data.replace(b"bbox 5 10 200 32", b"bbox 5 10 900 32"))
    assert hocr_problems(data.replace(b"x_wconf 90.00", b"x_wconf 190"))


# -- LineResult -> Page -------------------------------------------------------------------


def _line_result(vertical: bool = False) -> LineResult:
    chars = [
        CharResult([2.0, 3.0, 9.5, 20.0], "U+0061", "a", 0.93),
        CharResult([10.0, 3.0, 17.0, 20.0], "U+0062", "b", 1.0000002),
        CharResult([25.0, 4.0, 31.0, 20.0], "U+0063", "c", -0.2),
        CharResult([32.0, 2.0, 38.0, 21.0], "U+003C", "<", 0.5),
    ]
    return LineResult(
        image="in/line.png",
        text="ab c<",
        chars=chars,
        # The second word's detected box misses "<": the word grows to hold it.
        words=[[1.0, 2.0, 18.0, 21.0], [24.0, 3.0, 33.0, 20.0]],
        width=40,
        height=24,
        vertical=vertical,
    )


def test_page_from_result():
    page = page_from_result(_line_result())
    assert (page.image, page.width, page.height, page.error) == ("in/line.png", 40, 24, None)
    (region,) = page.regions
    (line,) = region.lines
    assert line.bbox == region.bbox == (0, 0, 40, 24)
    assert line.text == page.text == "ab c<"
    assert [w.text for w in line.words] == ["ab", "c<"]
    assert [g.text for g in line.glyphs] == ["a", "b", "c", "<"]
    assert [g.confidence for g in line.glyphs] == pytest.approx([0.93, 1.0, 0.0, 0.5])
    assert line.words[0].bbox == (1.0, 2.0, 18.0, 21.0)
    assert line.words[1].bbox == (24.0, 2.0, 38.0, 21.0)
    assert line.words[1].confidence == pytest.approx(0.25)
    assert line.confidence == pytest.approx((0.93 + 1.0 + 0.0 + 0.5) / 4)
    assert not line.vertical
    for fn, name in ((page_xml, "page"), (alto_xml, "alto")):
        assert_valid(fn(page), name)
    assert hocr_problems(hocr(page)) == []


def test_words_without_detected_word_boxes_follow_the_text():
    res = _line_result()
    res.words = []  # spaces from gaps: the words are the glyphs' unions
    line = page_from_result(res).regions[0].lines[0]
    assert [w.text for w in line.words] == ["ab", "c<"]
    assert line.words[1].bbox == (25.0, 2.0, 38.0, 21.0)


def test_vertical_line_result():
    res = _line_result(vertical=True)
    res.text = "abc<"  # Japanese bundles write no spaces: one word
    res.words = []
    page = page_from_result(res)
    (line,) = page.regions[0].lines
    assert line.vertical and [w.text for w in line.words] == ["abc<"]
    pc = assert_valid(page_xml(page), "page")
    assert pc.find(f".//{PC}TextLine").get("readingDirection") == "top-to-bottom"
    alto = assert_valid(alto_xml(page), "alto")
    assert alto.find(f".//{AL}TextLine").get("BASEDIRECTION") == "ttb"
    data = hocr(page)
    assert hocr_problems(data) == [] and b"textangle 270" in data


def test_failed_line_is_a_page_with_its_error():
    page = page_from_result(LineResult(image="x.png", error="file not found"))
    assert page.error == "file not found" and page.regions == []


def test_glyph_confidence_is_the_clipped_cosine():
    assert [glyph_confidence(s) for s in (-0.5, 0.0, 0.42, 1.0, 1.0000001)] == [
        0.0,
        0.0,
        0.42,
        1.0,
        1.0,
    ]


# -- effocr infer --format ---------------------------------------------------------------


def test_parse_formats():
    assert parse_formats("page, ALTO,page") == ("page", "alto")
    for bad in ("xml", "", "page,,alto"):
        with pytest.raises(EffOCRError, match="unknown format"):
            parse_formats(bad)


@pytest.fixture(scope="module")
def two_folders(tiny_coco_factory, tmp_path_factory) -> Path:
    """Three line images, two with the same file name in different folders."""
    _, image_dir = tiny_coco_factory(8, "en", 5, degrade=False, max_chars=14)
    images = sorted(image_dir.glob("*.png"))
    root = tmp_path_factory.mktemp("two_folders")
    (root / "a").mkdir()
    (root / "b").mkdir()
    shutil.copy(images[0], root / "a" / "line.png")
    shutil.copy(images[1], root / "b" / "line.png")
    shutil.copy(images[2], root / "b" / "other.png")
    return root


def _infer(bundle: Path, out: Path, *inputs, extra=()) -> int:
    return main(["infer", "--model", str(bundle), "--output", str(out), *extra, *map(str, inputs)])


def test_cli_writes_every_format(tiny_bundle, two_folders, tmp_path):
    out = tmp_path / "out"
    inputs = [two_folders / "a" / "line.png", two_folders / "b" / "line.png", two_folders / "b"]
    fmt = ("--format", "page,alto,hocr,txt,jsonl")
    assert _infer(tiny_bundle, out, *inputs, extra=fmt) == 0
    records = [json.loads(ln) for ln in (out / "predictions.jsonl").read_text().splitlines()]
    # b/line.png twice (named and in its folder): every image its own stem, in input order.
    stems = ["line", "line__2", "line__3", "other"]
    assert [r["image"] for r in records] == [str(p) for p in inputs[:2]] + [
        str(two_folders / "b" / "line.png"),
        str(two_folders / "b" / "other.png"),
    ]
    for folder, suffix in (("page", ".xml"), ("alto", ".xml"), ("hocr", ".hocr"), ("text", ".txt")):
        assert sorted(p.name for p in (out / folder).iterdir()) == [s + suffix for s in stems]
    assert not (out / "errors.jsonl").exists()
    for stem, rec in zip(stems, records, strict=True):
        _check_page_xml((out / "page" / f"{stem}.xml").read_bytes(), rec, out / "page")
        alto = _check_alto((out / "alto" / f"{stem}.xml").read_bytes(), rec)
        image = alto.findtext(f"{AL}Description/{AL}sourceImageInformation/{AL}fileName")
        assert (out / "alto" / image).resolve() == Path(rec["image"]).resolve()
        data = (out / "hocr" / f"{stem}.hocr").read_bytes()
        assert hocr_problems(data) == []
        (page_el,) = [el for el in parse(data).iter() if el.get("class") == "ocr_page"]
        image = hocr_properties(page_el.get("title"))["image"].strip('"')
        assert (out / "hocr" / image).resolve() == Path(rec["image"]).resolve()
        line = next(el for el in parse(data).iter() if el.get("class") == "ocr_line")
        assert "".join(line.itertext()) == rec["text"]
        assert (out / "text" / f"{stem}.txt").read_text() == rec["text"] + "\n"


def _outward(bbox):
    return int_box(bbox, 10**9, 10**9)


def _check_page_xml(data: bytes, rec: dict, folder: Path) -> None:
    root = assert_valid(data, "page")
    pg = root.find(f"{PC}Page")
    # The image named relative to the file's folder, as kraken and Transkribus write it.
    assert (folder / pg.get("imageFilename")).resolve() == Path(rec["image"]).resolve()
    assert (int(pg.get("imageWidth")), int(pg.get("imageHeight"))) == (rec["width"], rec["height"])
    (line,) = pg.iter(f"{PC}TextLine")
    assert line.findtext(f"{PC}TextEquiv/{PC}Unicode") == rec["text"]
    glyphs = list(line.iter(f"{PC}Glyph"))
    assert [g.findtext(f"{PC}TextEquiv/{PC}Unicode") for g in glyphs] == [
        c["char"] for c in rec["chars"]
    ]
    for g, c in zip(glyphs, rec["chars"], strict=True):
        x0, y0, x1, y1 = _outward(c["bbox"])
        assert g.find(f"{PC}Coords").get("points") == f"{x0},{y0} {x1},{y0} {x1},{y1} {x0},{y1}"
        conf = float(g.find(f"{PC}TextEquiv").get("conf"))
        assert conf == pytest.approx(min(max(c["score"], 0), 1), abs=2e-4)
    words = [w.findtext(f"{PC}TextEquiv/{PC}Unicode") for w in line.iter(f"{PC}Word")]
    assert " ".join(words) == rec["text"]
    if rec["chars"]:
        # tiny_bundle has no confidence calibration: the line's confidence is the mean cosine.
        mean = sum(min(max(c["score"], 0), 1) for c in rec["chars"]) / len(rec["chars"])
        assert rec["confidence_calibrated"] is False
        assert rec["confidence"] == pytest.approx(mean, abs=1e-5)
        assert float(line.find(f"{PC}TextEquiv").get("conf")) == pytest.approx(mean, abs=2e-4)


def _check_alto(data: bytes, rec: dict):
    root = assert_valid(data, "alto")
    (line,) = root.iter(f"{AL}TextLine")
    assert " ".join(s.get("CONTENT") for s in line.iter(f"{AL}String")) == rec["text"]
    glyphs = list(line.iter(f"{AL}Glyph"))
    assert [g.get("CONTENT") for g in glyphs] == [c["char"] for c in rec["chars"]]
    for g, c in zip(glyphs, rec["chars"], strict=True):
        x0, y0, x1, y1 = _outward(c["bbox"])
        assert [int(g.get(k)) for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT")] == [
            x0,
            y0,
            x1 - x0,
            y1 - y0,
        ]
    return root


def test_cli_default_output_is_unchanged(tiny_bundle, two_folders, tmp_path):
    out = tmp_path / "out"
    assert _infer(tiny_bundle, out, two_folders / "b") == 0
    assert sorted(p.name for p in out.iterdir()) == ["predictions.jsonl", "text"]
    assert sorted(p.name for p in (out / "text").iterdir()) == ["line.txt", "other.txt"]


def test_cli_failed_image_is_recorded_and_the_rest_written(tiny_bundle, two_folders, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    rc = _infer(tiny_bundle, out, bad, two_folders / "b" / "other.png", extra=("-f", "page,alto"))
    assert rc == 1
    assert sorted(p.name for p in out.iterdir()) == [
        ".effocr-run.json",
        "alto",
        "errors.jsonl",
        "page",
    ]
    assert [p.name for p in (out / "page").iterdir()] == ["other.xml"]
    (err,) = [json.loads(ln) for ln in (out / "errors.jsonl").read_text().splitlines()]
    assert (
        err["image"] == str(bad) and err["text"] is None and "not a readable image" in err["error"]
    )
    # The next run replaces all of the previous run's outputs, formats it does not write too.
    assert _infer(tiny_bundle, out, two_folders / "b" / "other.png", extra=("-f", "hocr")) == 0
    assert sorted(p.name for p in out.iterdir()) == [".effocr-run.json", "hocr"]
    assert _infer(tiny_bundle, out, two_folders / "b" / "other.png") == 0
    assert sorted(p.name for p in out.iterdir()) == ["predictions.jsonl", "text"]


def test_cli_never_replaces_a_page_folder_no_run_wrote(tiny_bundle, two_folders, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "page").mkdir(parents=True)
    (out / "page" / "ground_truth.xml").write_text("<PcGts/>")
    assert _infer(tiny_bundle, out, two_folders / "b", extra=("-f", "page,txt")) == 1
    assert "no effocr infer run wrote it" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["page"]
    # A run that does not write page/ leaves it alone.
    assert _infer(tiny_bundle, out, two_folders / "b", extra=("-f", "alto")) == 0
    assert _infer(tiny_bundle, out, two_folders / "b") == 0
    assert sorted(p.name for p in out.iterdir()) == ["page", "predictions.jsonl", "text"]
    assert [p.name for p in (out / "page").iterdir()] == ["ground_truth.xml"]
    assert (out / "page" / "ground_truth.xml").read_text() == "<PcGts/>"


def test_cli_bad_format_is_a_clear_error(tiny_bundle, two_folders, tmp_path, capsys):
    out = tmp_path / "out"
    assert _infer(tiny_bundle, out, two_folders / "b", extra=("--format", "page,pdf")) == 1
    err = capsys.readouterr().err
    assert "unknown format 'pdf'" in err and "jsonl,txt,page,alto,hocr" in err
    assert not out.exists()
    rc = main(["infer", "--model", str(tiny_bundle), "--format", "page", str(two_folders / "b")])
    assert rc == 1 and "only jsonl can go to stdout" in capsys.readouterr().err


def test_engine_read_returns_pages(tiny_bundle, two_folders):
    from effocr.infer import Engine

    images = [str(two_folders / "b" / "other.png"), str(two_folders / "missing.png")]
    with Engine(tiny_bundle) as engine:
        results = engine.infer(images)
        pages = engine.read(images)
    assert [p.image for p in pages] == images
    assert pages[0].text == results[0].text and pages[0].error is None
    assert [g.text for g in pages[0].regions[0].lines[0].glyphs] == [
        c.char for c in results[0].chars
    ]
    assert pages[1].error == results[1].error and pages[1].regions == []
