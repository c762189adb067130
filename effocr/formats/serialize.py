"""Writers: an `effocr.document.Page` as PAGE-XML 2019, ALTO 4.4, hOCR 1.2 or plain text.

Each writer takes a `Page` (from a line image, `effocr.formats.results.page_from_result`, or
from the page pipeline) and returns the file's bytes (UTF-8); `PAGE_FORMATS` names them for
`effocr infer --format` (folder and suffix of each). Coordinates are written as integer page
pixels: boxes rounded outward (a glyph stays inside its rounded box), polygon points to the
nearest pixel, all clipped to the image. Confidences are the model's, in [0, 1] (hOCR: 0-100).

Vertical lines (Japanese, read top to bottom, lines right to left):
- PAGE: ``readingDirection="top-to-bottom"`` on the line (and the region, with
  ``textLineOrder="right-to-left"`` when all its lines are vertical).
- ALTO: ``BASEDIRECTION="ttb"`` on the TextLine (and the TextBlock when all its lines are);
  the SP between Strings spans the vertical gap.
- hOCR: ``textangle 270`` on the ocr_line (the text runs down the page: 90 degrees clockwise,
  which is how text-layer tools lay it out) and ``writing-mode: vertical-rl`` in its style (the
  glyphs themselves are upright, for browsers).
Glyphs whose text is more than one character (a multi-code-point label) are written in PAGE and
hOCR; ALTO's Glyph holds exactly one character, so such a String gets no Glyph elements.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree

from effocr import __version__
from effocr.document import Box, Line, Page, Point, Region, Word, box_polygon
from effocr.imageio import display_name

PAGE_NS = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
ALTO_NS = "http://www.loc.gov/standards/alto/ns-v4#"
XHTML_NS = "http://www.w3.org/1999/xhtml"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
SOFTWARE = "EffOCR"

# The hOCR elements and properties these files can hold (the spec's `ocr-capabilities`).
HOCR_CAPABILITIES = (
    "ocr_page",
    "ocr_carea",
    "ocr_par",
    "ocr_line",
    "ocrx_word",
    "ocrx_cinfo",
    "ocrp_wconf",
)

# PAGE's TextRegion @type values; any other `Region.kind` is written as "other".
PAGE_REGION_TYPES = frozenset(
    "paragraph heading caption header footer page-number drop-capital credit floating "
    "signature-mark catch-word marginalia footnote footnote-continued endnote TOC-entry "
    "list-label other".split()
)

# XML 1.0 has no way to write these (controls, surrogates, U+FFFE/U+FFFF).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NCNAME = re.compile(r"^[^\W\d][\w.\-]*$")


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


def xml_text(text: str) -> str:
    """`text` with the characters XML cannot hold replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", text)


def _image_name(page: Page) -> str:
    # A file name that is not UTF-8 (surrogate escapes) is written as its \xNN form.
    return xml_text(display_name(page.image))


def int_box(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """`box` rounded outward to whole pixels and clipped to the image."""
    x0, y0, x1, y1 = box
    return (
        min(max(math.floor(x0), 0), width),
        min(max(math.floor(y0), 0), height),
        min(max(math.ceil(x1), 0), width),
        min(max(math.ceil(y1), 0), height),
    )


def int_points(points: Sequence[Point], width: int, height: int) -> list[tuple[int, int]]:
    """Polygon or polyline points rounded to the nearest pixel and clipped to the image."""
    return [(min(max(round(x), 0), width), min(max(round(y), 0), height)) for x, y in points]


def _conf(value: float) -> str:
    return f"{min(max(float(value), 0.0), 1.0):.4f}"


class _Ids:
    """XML ids unique within a document: the model's id when it is a valid one, else made up."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, wanted: str, fallback: str) -> str:
        name = wanted if wanted and _NCNAME.match(wanted) and wanted not in self.used else fallback
        base, n = name, 1
        while name in self.used:
            n += 1
            name = f"{base}_{n}"
        self.used.add(name)
        return name


def _region_vertical(region: Region) -> bool:
    return bool(region.lines) and all(line.vertical for line in region.lines)


def _line_words(line: Line) -> list[Word]:
    """The words to write: the line's, or (text without words) one word spanning the line."""
    if line.words or not line.text:
        return line.words
    return [Word(bbox=line.bbox, text=line.text, confidence=line.confidence)]


def _tostring(root: etree._Element, doctype: str | None = None) -> bytes:
    return etree.tostring(
        root, xml_declaration=True, encoding="UTF-8", pretty_print=True, doctype=doctype
    )


# ---------------------------------------------------------------------------
# PAGE-XML 2019
# ---------------------------------------------------------------------------


def _page_el(parent: etree._Element, tag: str, **attrib: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{PAGE_NS}}}{tag}", attrib)


def _page_points(points: Sequence[tuple[int, int]]) -> str:
    # The schema wants at least two points; a one-point outline is a degenerate box.
    if len(points) == 1:
        points = [points[0], points[0]]
    return " ".join(f"{x},{y}" for x, y in points)


def _page_coords(parent: etree._Element, polygon: Sequence[Point], page: Page) -> None:
    _page_el(parent, "Coords", points=_page_points(int_points(polygon, page.width, page.height)))


def _page_box_coords(parent: etree._Element, box: Box, page: Page) -> None:
    x0, y0, x1, y1 = int_box(box, page.width, page.height)
    _page_el(parent, "Coords", points=_page_points(box_polygon((x0, y0, x1, y1))))


def _page_text(parent: etree._Element, text: str, confidence: float | None) -> None:
    equiv = _page_el(parent, "TextEquiv")
    if confidence is not None:
        equiv.set("conf", _conf(confidence))
    _page_el(equiv, "Unicode").text = xml_text(text)


def page_xml(page: Page, *, created: datetime | None = None) -> bytes:
    """`page` as a PAGE-XML 2019 document (PcGts), regions in reading order.

    The reading order is written twice, as PAGE readers expect: the regions' order in the file
    and a ReadingOrder (OrderedGroup of RegionRefIndexed). Lines, words and glyphs carry their
    TextEquiv with ``conf``; a line's Baseline is written where the page knows it.
    """
    stamp = (created or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S")
    root = etree.Element(f"{{{PAGE_NS}}}PcGts", nsmap={None: PAGE_NS, "xsi": XSI_NS})
    root.set(f"{{{XSI_NS}}}schemaLocation", f"{PAGE_NS} {PAGE_NS}/pagecontent.xsd")
    meta = _page_el(root, "Metadata")
    _page_el(meta, "Creator").text = f"{SOFTWARE} {__version__}"
    _page_el(meta, "Created").text = stamp
    _page_el(meta, "LastChange").text = stamp
    pg = _page_el(
        root,
        "Page",
        imageFilename=_image_name(page),
        imageWidth=str(int(page.width)),
        imageHeight=str(int(page.height)),
    )
    ids = _Ids()
    region_ids = [ids(r.id, f"region_{i}") for i, r in enumerate(page.regions, 1)]
    if page.regions:
        group = _page_el(_page_el(pg, "ReadingOrder"), "OrderedGroup", id=ids("", "ro_1"))
        for i, rid in enumerate(region_ids):
            _page_el(group, "RegionRefIndexed", index=str(i), regionRef=rid)
    for region, rid in zip(page.regions, region_ids, strict=True):
        vertical = _region_vertical(region)
        reg = _page_el(
            pg,
            "TextRegion",
            id=rid,
            type=region.kind if region.kind in PAGE_REGION_TYPES else "other",
            readingDirection="top-to-bottom" if vertical else "left-to-right",
            textLineOrder="right-to-left" if vertical else "top-to-bottom",
        )
        _page_coords(reg, region.polygon, page)
        for n, line in enumerate(region.lines, 1):
            _page_line(reg, line, ids(line.id, f"{rid}_line_{n}"), page)
        if region.lines:
            _page_text(reg, "\n".join(ln.text for ln in region.lines), None)
    return _tostring(root)


def _page_line(parent: etree._Element, line: Line, lid: str, page: Page) -> None:
    el = _page_el(
        parent,
        "TextLine",
        id=lid,
        readingDirection="top-to-bottom" if line.vertical else "left-to-right",
    )
    _page_coords(el, line.polygon, page)
    if len(line.baseline) >= 2:
        points = int_points(line.baseline, page.width, page.height)
        _page_el(el, "Baseline", points=_page_points(points))
    for w, word in enumerate(_line_words(line), 1):
        wel = _page_el(el, "Word", id=f"{lid}_w{w}")
        _page_box_coords(wel, word.bbox, page)
        for g, glyph in enumerate(word.glyphs, 1):
            gel = _page_el(wel, "Glyph", id=f"{lid}_w{w}_g{g}")
            _page_box_coords(gel, glyph.bbox, page)
            _page_text(gel, glyph.text, glyph.confidence)
        _page_text(wel, word.text, word.confidence)
    _page_text(el, line.text, line.confidence)


# ---------------------------------------------------------------------------
# ALTO 4.4
# ---------------------------------------------------------------------------


def _alto_el(parent: etree._Element, tag: str, **attrib: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{ALTO_NS}}}{tag}", attrib)


def _alto_geometry(el: etree._Element, box: Box, page: Page) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = int_box(box, page.width, page.height)
    el.set("HPOS", str(x0))
    el.set("VPOS", str(y0))
    el.set("WIDTH", str(x1 - x0))
    el.set("HEIGHT", str(y1 - y0))
    return x0, y0, x1, y1


def alto_xml(page: Page) -> bytes:
    """`page` as an ALTO 4.4 document: pixel units, one TextBlock per region in reading order.

    Each word is a String with ``WC`` (and its Glyphs with ``GC``), words separated by SP; the
    file order is the reading order.
    """
    root = etree.Element(f"{{{ALTO_NS}}}alto", nsmap={None: ALTO_NS, "xsi": XSI_NS})
    root.set("SCHEMAVERSION", "4.4")
    root.set(
        f"{{{XSI_NS}}}schemaLocation",
        f"{ALTO_NS} http://www.loc.gov/standards/alto/v4/alto-4-4.xsd",
    )
    desc = _alto_el(root, "Description")
    _alto_el(desc, "MeasurementUnit").text = "pixel"
    source = _alto_el(desc, "sourceImageInformation")
    _alto_el(source, "fileName").text = _image_name(page)
    proc = _alto_el(desc, "Processing", ID="processing_1")
    _alto_el(proc, "processingCategory").text = "contentGeneration"
    software = _alto_el(proc, "processingSoftware")
    _alto_el(software, "softwareName").text = SOFTWARE
    _alto_el(software, "softwareVersion").text = __version__
    layout = _alto_el(root, "Layout")
    pg = _alto_el(
        layout,
        "Page",
        ID="page_1",
        PHYSICAL_IMG_NR="1",
        WIDTH=str(int(page.width)),
        HEIGHT=str(int(page.height)),
        PROCESSING="processing_1",
    )
    space = _alto_el(pg, "PrintSpace")
    _alto_geometry(space, (0, 0, page.width, page.height), page)
    ids = _Ids()
    for r, region in enumerate(page.regions, 1):
        block = _alto_el(space, "TextBlock", ID=ids(region.id, f"block_{r}"))
        _alto_geometry(block, region.bbox, page)
        if _region_vertical(region):
            block.set("BASEDIRECTION", "ttb")
        for n, line in enumerate(region.lines, 1):
            _alto_line(block, line, ids(line.id, f"{block.get('ID')}_line_{n}"), page)
    return _tostring(root)


def _alto_line(block: etree._Element, line: Line, lid: str, page: Page) -> None:
    el = _alto_el(block, "TextLine", ID=lid)
    _alto_geometry(el, line.bbox, page)
    if len(line.baseline) >= 2:
        points = int_points(line.baseline, page.width, page.height)
        el.set("BASELINE", " ".join(f"{x},{y}" for x, y in points))
    if line.vertical:
        el.set("BASEDIRECTION", "ttb")
    words = _line_words(line)
    if not words:
        # A TextLine needs a String; an empty one keeps the line (nothing was read there).
        _alto_geometry(_alto_el(el, "String", ID=f"{lid}_s1", CONTENT=""), line.bbox, page)
        return
    previous: tuple[int, int, int, int] | None = None
    for w, word in enumerate(words, 1):
        string = _alto_el(el, "String", ID=f"{lid}_s{w}", CONTENT=xml_text(word.text))
        box = int_box(word.bbox, page.width, page.height)
        if previous is not None:
            _alto_space(string, previous, box, line.vertical)
        _alto_geometry(string, word.bbox, page)
        if word.confidence is not None:
            string.set("WC", _conf(word.confidence))
        # ALTO's Glyph is one character; a multi-code-point glyph leaves the String without.
        if word.glyphs and all(len(xml_text(g.text)) == 1 for g in word.glyphs):
            for glyph in word.glyphs:
                gel = _alto_el(string, "Glyph", CONTENT=xml_text(glyph.text))
                if glyph.confidence is not None:
                    gel.set("GC", _conf(glyph.confidence))
                _alto_geometry(gel, glyph.bbox, page)
        previous = box


def _alto_space(
    string: etree._Element,
    before: tuple[int, int, int, int],
    after: tuple[int, int, int, int],
    vertical: bool,
) -> None:
    """An SP between two Strings, spanning the gap along the reading direction."""
    sp = etree.Element(f"{{{ALTO_NS}}}SP")
    if vertical:
        x0, x1 = min(before[0], after[0]), max(before[2], after[2])
        y0 = before[3]
        y1 = max(after[1], y0)
    else:
        y0, y1 = min(before[1], after[1]), max(before[3], after[3])
        x0 = before[2]
        x1 = max(after[0], x0)
    sp.set("HPOS", str(x0))
    sp.set("VPOS", str(y0))
    sp.set("WIDTH", str(x1 - x0))
    sp.set("HEIGHT", str(y1 - y0))
    string.addprevious(sp)


# ---------------------------------------------------------------------------
# hOCR 1.2
# ---------------------------------------------------------------------------


def _html_el(parent: etree._Element, tag: str, cls: str, ident: str, title: str):
    return etree.SubElement(
        parent, f"{{{XHTML_NS}}}{tag}", {"class": cls, "id": ident, "title": title}
    )


def _bbox(box: Box, page: Page) -> str:
    return "bbox {} {} {} {}".format(*int_box(box, page.width, page.height))


def _hocr_conf(value: float) -> str:
    return f"{100.0 * min(max(float(value), 0.0), 1.0):.2f}"


def _hocr_baseline(line: Line, page: Page) -> str | None:
    """The line's baseline as hOCR's ``slope offset`` from the bbox's bottom-left corner."""
    if line.vertical or len(line.baseline) < 2:
        return None
    (xa, ya), (xb, yb) = line.baseline[0], line.baseline[-1]
    if xb == xa:
        return None
    slope = (yb - ya) / (xb - xa)
    x0, _, _, y1 = int_box(line.bbox, page.width, page.height)
    offset = ya + slope * (x0 - xa) - y1
    return f"baseline {slope:.4f} {offset:.0f}"


def hocr(page: Page) -> bytes:
    """`page` as an hOCR 1.2 document (XHTML): ocr_page > ocr_carea > ocr_par > ocr_line >
    ocrx_word (``x_wconf``) > ocrx_cinfo (one per glyph: ``x_bboxes``, ``x_confs``).

    Elements are in reading order; words are separated by a space, so an element's text is its
    transcription.
    """
    html = etree.Element(f"{{{XHTML_NS}}}html", nsmap={None: XHTML_NS})
    head = etree.SubElement(html, f"{{{XHTML_NS}}}head")
    etree.SubElement(head, f"{{{XHTML_NS}}}title").text = xml_text(display_name(page.image))
    for name, content in (
        ("ocr-system", f"{SOFTWARE} {__version__}"),
        ("ocr-capabilities", " ".join(HOCR_CAPABILITIES)),
        ("ocr-number-of-pages", "1"),
    ):
        etree.SubElement(head, f"{{{XHTML_NS}}}meta", name=name, content=content)
    etree.SubElement(
        head,
        f"{{{XHTML_NS}}}meta",
        {"http-equiv": "Content-Type", "content": "text/html; charset=utf-8"},
    )
    body = etree.SubElement(html, f"{{{XHTML_NS}}}body")
    image = _image_name(page).replace("\\", "\\\\").replace('"', '\\"')
    pg = _html_el(
        body,
        "div",
        "ocr_page",
        "page_1",
        f'image "{image}"; {_bbox((0, 0, page.width, page.height), page)}',
    )
    n_line = n_word = n_glyph = 0
    for r, region in enumerate(page.regions, 1):
        area = _html_el(pg, "div", "ocr_carea", f"block_1_{r}", _bbox(region.bbox, page))
        par = _html_el(area, "p", "ocr_par", f"par_1_{r}", _bbox(region.bbox, page))
        for line in region.lines:
            n_line += 1
            title = [_bbox(line.bbox, page)]
            baseline = _hocr_baseline(line, page)
            if baseline:
                title.append(baseline)
            if line.vertical:
                title.append("textangle 270")
            span = _html_el(par, "span", "ocr_line", f"line_1_{n_line}", "; ".join(title))
            if line.vertical:
                span.set("style", "writing-mode: vertical-rl")
            previous = None
            for word in _line_words(line):
                n_word += 1
                title = [_bbox(word.bbox, page)]
                if word.confidence is not None:
                    title.append(f"x_wconf {_hocr_conf(word.confidence)}")
                if previous is not None:
                    previous.tail = " "
                wel = _html_el(span, "span", "ocrx_word", f"word_1_{n_word}", "; ".join(title))
                if not word.glyphs:
                    wel.text = xml_text(word.text)
                for glyph in word.glyphs:
                    text = xml_text(glyph.text)
                    if not text:
                        continue
                    n_glyph += 1
                    # One box and one confidence per code point, as x_bboxes and x_confs say.
                    box = " ".join(map(str, int_box(glyph.bbox, page.width, page.height)))
                    title = ["x_bboxes " + " ".join([box] * len(text))]
                    if glyph.confidence is not None:
                        conf = _hocr_conf(glyph.confidence)
                        title.append("x_confs " + " ".join([conf] * len(text)))
                    gel = _html_el(
                        wel, "span", "ocrx_cinfo", f"cinfo_1_{n_glyph}", "; ".join(title)
                    )
                    gel.text = text
                previous = wel
            span.tail = "\n"
    return _tostring(html, doctype="<!DOCTYPE html>")


# ---------------------------------------------------------------------------
# Plain text and the format table
# ---------------------------------------------------------------------------


def plain_text(page: Page) -> bytes:
    """The page's text (`Page.text`: lines, a blank line between regions) and a newline."""
    return (page.text + "\n").encode("utf-8")


@dataclass(frozen=True)
class PageFormat:
    """One `--format` of `effocr infer` written per image: OUT/<folder>/<stem><suffix>."""

    name: str
    folder: str
    suffix: str
    write: Callable[[Page], bytes]


PAGE_FORMATS: dict[str, PageFormat] = {
    f.name: f
    for f in (
        PageFormat("txt", "text", ".txt", plain_text),
        PageFormat("page", "page", ".xml", page_xml),
        PageFormat("alto", "alto", ".xml", alto_xml),
        PageFormat("hocr", "hocr", ".hocr", hocr),
    )
}

__all__ = [
    "HOCR_CAPABILITIES",
    "PAGE_FORMATS",
    "PageFormat",
    "alto_xml",
    "hocr",
    "int_box",
    "int_points",
    "page_xml",
    "plain_text",
    "xml_text",
]
