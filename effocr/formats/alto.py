"""ALTO reader (v2 to v4): ground truth -> `SourcePage`.

`TextBlock`s (also inside `ComposedBlock`s) in file order, their `TextLine`s (box, or
`Shape/Polygon`), `String`s as words (their `Glyph`s as characters where present), `SP` and
`HYP`. ALTO positions are in its `MeasurementUnit`: `pixel` as is; `mm10` (1/10 mm) and
`inch1200` (1/1200 inch) are converted to pixels with the page image's resolution, which
comes from the `dpi` argument (`--dpi`, `dataset.import.dpi`) when given, else from the
image file's own resolution tag (PNG pHYs, TIFF/JPEG resolution); without either the file is
refused, naming both ways to give it.
"""

from __future__ import annotations

import os
from pathlib import Path

from lxml import etree
from PIL import Image

from effocr.document import Glyph, Page, Region, Word, box_polygon, polygon_box
from effocr.formats.source import SourceLine, SourcePage, resolve_image
from effocr.formats.xml import child, children, descendants, local_name, namespace, parse_xml
from effocr.utils import EffOCRError

ALTO_NS_PREFIXES = ("http://www.loc.gov/standards/alto/", "http://schema.ccs-gmbh.com/ALTO")
# Units per inch of each MeasurementUnit (pixel: none, positions are pixels already).
UNITS_PER_INCH = {"mm10": 254.0, "inch1200": 1200.0}


def image_dpi(path: Path) -> float | None:
    """The horizontal resolution the image file records, or None (absent or implausible)."""
    with Image.open(path) as im:
        dpi = im.info.get("dpi")
    if not dpi:
        return None
    try:
        value = float(dpi[0])
    except (TypeError, ValueError, IndexError):
        return None
    # Some writers store 1 or 72 "dpi" meaning nothing; 72 is a real screen value though, so
    # only values no scanner produces are treated as missing.
    # PNG stores pixels per metre: 300 dpi comes back as 299.9994.
    return round(value, 2) if value >= 50 else None


def _box(elem: etree._Element, scale: float) -> tuple[float, float, float, float]:
    x, y = float(elem.get("HPOS")), float(elem.get("VPOS"))
    w, h = float(elem.get("WIDTH")), float(elem.get("HEIGHT"))
    return (x * scale, y * scale, (x + w) * scale, (y + h) * scale)


def _polygon(elem: etree._Element, scale: float) -> list[tuple[float, float]] | None:
    shape = child(elem, "Shape")
    poly = child(shape, "Polygon") if shape is not None else None
    if poly is None or not poly.get("POINTS"):
        return None
    # ALTO 4 says "x1,y1 x2,y2"; older files write "x1 y1 x2 y2": both are read.
    values = [float(v) for v in poly.get("POINTS").replace(",", " ").split()]
    if len(values) < 6 or len(values) % 2:
        raise ValueError(f"Shape/Polygon POINTS {poly.get('POINTS')!r}: need at least 3 x y pairs")
    return [(values[i] * scale, values[i + 1] * scale) for i in range(0, len(values), 2)]


def _conf(elem: etree._Element, name: str) -> float | None:
    try:
        return float(elem.get(name)) if elem.get(name) is not None else None
    except ValueError:
        return None


def _read_line(sp: SourcePage, tl: etree._Element, scale: float) -> SourceLine | None:
    line_id = tl.get("ID") or f"TextLine[{tl.sourceline}]"
    try:
        polygon = _polygon(tl, scale) or box_polygon(_box(tl, scale))
        parts: list[str] = []
        words: list[Word] = []
        glyphs: list[Glyph] = []
        for el in tl:
            if not isinstance(el.tag, str):
                continue
            kind = local_name(el)
            if kind == "String":
                content = el.get("CONTENT") or ""
                wglyphs = [
                    Glyph(_box(g, scale), g.get("CONTENT") or "", _conf(g, "GC"))
                    for g in children(el, "Glyph")
                ]
                words.append(Word(_box(el, scale), content, wglyphs, _conf(el, "WC")))
                glyphs += wglyphs
                if parts and parts[-1] != " ":
                    parts.append(" ")  # Strings are words even where a producer omits SP
                parts.append(content)
            elif kind == "SP" and parts and parts[-1] != " ":
                parts.append(" ")
            elif kind == "HYP":
                parts.append(el.get("CONTENT") or "-")
    except (TypeError, ValueError) as exc:
        sp.skip(line_id, f"bad position attribute: {exc}")
        return None
    return SourceLine(
        id=line_id, polygon=polygon, text="".join(parts).strip(), words=words, glyphs=glyphs
    )


def read_alto(
    path: str | os.PathLike,
    *,
    dpi: float | None = None,
    image_dir: str | os.PathLike | None = None,
) -> SourcePage:
    """Read one ALTO file, positions converted to page pixels.

    Args:
        path: The ALTO file.
        dpi: The page image's resolution (pixels per inch) for `mm10`/`inch1200` files; None
            reads it from the image file.
        image_dir: Last folder searched for the image named in `sourceImageInformation`.

    Raises:
        EffOCRError: not (well-formed, safe) ALTO; an unknown MeasurementUnit; a unit that
            needs a resolution nobody gave.
    """
    path = Path(path)
    root = parse_xml(path)
    if local_name(root) != "alto" or not namespace(root).startswith(ALTO_NS_PREFIXES):
        raise EffOCRError(
            f"{path}: not ALTO (root element {{{namespace(root)}}}{local_name(root)}, "
            "expected alto in a http://www.loc.gov/standards/alto/... namespace)"
        )
    unit_el = descendants(root, "MeasurementUnit")
    unit = (unit_el[0].text or "").strip() if unit_el else "pixel"  # ALTO 2: optional, pixel
    if unit != "pixel" and unit not in UNITS_PER_INCH:
        raise EffOCRError(f"{path}: MeasurementUnit {unit!r} unknown (pixel, mm10 or inch1200)")
    names = descendants(root, "fileName")
    name = (names[0].text or "").strip() if names else ""
    if not name:
        raise EffOCRError(f"{path}: no sourceImageInformation/fileName naming the page image")
    pages = descendants(root, "Page")
    if not pages:
        raise EffOCRError(f"{path}: no Layout/Page element")
    sp = SourcePage(source=path, page=Page(image=name, width=0, height=0), image=None)
    try:
        sp.image = resolve_image(name, path, image_dir=image_dir)
    except EffOCRError as exc:
        sp.page.error = str(exc)
        sp.skip(pages[0].get("ID") or "Page", str(exc))
        return sp
    with Image.open(sp.image) as im:
        sp.page.width, sp.page.height = im.size
    scale = 1.0
    if unit in UNITS_PER_INCH:
        source = "the dpi setting"
        if dpi is None:
            dpi, source = image_dpi(sp.image), f"the resolution recorded in {sp.image}"
        if dpi is None:
            raise EffOCRError(
                f"{path}: MeasurementUnit {unit} needs the image's resolution to convert to "
                f"pixels, and {sp.image} records none: give it (effocr import alto --dpi N, or "
                "dataset.import.dpi)"
            )
        scale = dpi / UNITS_PER_INCH[unit]
        sp.units = f"{unit} at {dpi:g} dpi ({source})"
    for block in (b for page in pages for b in descendants(page, "TextBlock")):
        rid = block.get("ID") or f"TextBlock[{block.sourceline}]"
        region = Region(id=rid, polygon=[])
        for tl in children(block, "TextLine"):
            line = _read_line(sp, tl, scale)
            if line is not None:
                region.lines.append(line)
        try:
            region.polygon = _polygon(block, scale) or box_polygon(_box(block, scale))
        except (TypeError, ValueError):
            if region.lines:
                region.polygon = box_polygon(
                    polygon_box([p for ln in region.lines for p in ln.polygon])
                )
        sp.page.regions.append(region)
    return sp


def alto_files(path: str | os.PathLike) -> list[Path]:
    """The ALTO files of a file or a folder (``*.xml``, searched recursively)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.xml"))
        if not files:
            raise EffOCRError(f"{path}: no .xml files in this folder")
        return files
    if not path.is_file():
        raise EffOCRError(f"{path}: no such file or folder")
    return [path]
