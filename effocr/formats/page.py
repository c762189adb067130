"""PAGE-XML reader (PRImA 2009 to 2019 namespaces): ground truth -> `SourcePage`.

What Transkribus, eScriptorium, kraken and OCR-D write: `TextRegion`s (in `ReadingOrder`
when there is one), their `TextLine`s with `Coords` polygons, `Baseline`, `TextEquiv`, and
`Word`/`Glyph` with their own coords and text. One file, a folder of files, or the file
group of an OCR-D `mets.xml` (`read_mets`). Elements that cannot be used are recorded in
`SourcePage.skipped` (file, id, problem); only a file that is not PAGE-XML at all fails.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lxml import etree

from effocr.document import Glyph, Page, Region, Word, box_polygon, polygon_box
from effocr.formats.source import SourceLine, SourcePage, parse_points, resolve_image
from effocr.formats.xml import child, children, descendants, local_name, namespace, parse_xml
from effocr.utils import EffOCRError

LOG = logging.getLogger(__name__)

PAGE_NS_PREFIX = "http://schema.primaresearch.org/PAGE/gts/pagecontent/"
METS_NS = "http://www.loc.gov/METS/"
XLINK_NS = "http://www.w3.org/1999/xlink"
# AlternativeImage @comments naming a geometry other than the element's own (OCR-D): such an
# image cannot carry the page's coordinates, so it is not used.
GEOMETRY_CHANGES = ("cropped", "deskewed", "rotated-90", "rotated-180", "rotated-270")


def _text_equiv(elem: etree._Element, text_index: int | None) -> tuple[str | None, float | None]:
    """The chosen `TextEquiv` of `elem`: its Unicode (None when there is none) and @conf.

    `text_index` None: the one with the lowest @index (the first when none has an index), as
    PAGE ground truth puts the reference at index 1 (Transkribus: 0) with variants after it.
    """
    equivs = children(elem, "TextEquiv")
    if text_index is None:
        ranked = sorted(enumerate(equivs), key=lambda ie: (_index(ie[1]), ie[0]))
        equivs = [e for _, e in ranked[:1]]
    else:
        equivs = [e for e in equivs if _index(e) == text_index]
    for eq in equivs:
        uni = child(eq, "Unicode")
        if uni is None:
            continue
        conf = eq.get("conf")
        try:
            confidence = float(conf) if conf is not None else None
        except ValueError:
            confidence = None
        return uni.text or "", confidence
    return None, None


def _index(eq: etree._Element) -> float:
    try:
        return float(eq.get("index"))
    except (TypeError, ValueError):
        return float("inf")


def _coords(elem: etree._Element) -> list[tuple[float, float]]:
    """The element's outline: `Coords/@points` (2010+) or `Coords/Point` (2009)."""
    coords = child(elem, "Coords")
    if coords is None:
        raise ValueError("no Coords")
    if coords.get("points") is not None:
        points = parse_points(coords.get("points"))
    else:
        points = [(float(p.get("x")), float(p.get("y"))) for p in children(coords, "Point")]
    if not points:
        raise ValueError("empty Coords")
    return points


def _float_attr(elem: etree._Element | None, name: str) -> float | None:
    if elem is None or elem.get(name) is None:
        return None
    try:
        return float(elem.get(name))
    except ValueError:
        return None


def _reading_order(page: etree._Element) -> list[str]:
    """Region ids in the `ReadingOrder`'s order (nested groups flattened)."""
    order: list[str] = []

    def walk(group: etree._Element) -> None:
        members = [c for c in group if isinstance(c.tag, str) and c.get("regionRef") is not None]
        if local_name(group).startswith("OrderedGroup"):
            members.sort(key=lambda c: _float_attr(c, "index") or 0.0)
        for m in members:
            order.append(m.get("regionRef"))
            if local_name(m).endswith("Group") or local_name(m).endswith("GroupIndexed"):
                walk(m)
        for c in group:
            if isinstance(c.tag, str) and c.get("regionRef") is None and "Group" in local_name(c):
                walk(c)

    ro = child(page, "ReadingOrder")
    if ro is not None:
        for group in ro:
            if isinstance(group.tag, str):
                walk(group)
    return order


def _is_vertical(line: etree._Element, region: etree._Element) -> bool:
    direction = line.get("readingDirection") or region.get("readingDirection") or ""
    return direction in ("top-to-bottom", "bottom-to-top")


def _alternative_image(elem: etree._Element) -> etree._Element | None:
    # OCR-D appends each derived image, so the last is the most processed one.
    alts = children(elem, "AlternativeImage")
    return alts[-1] if alts else None


def _glyph(g: etree._Element, text_index: int | None) -> Glyph:
    text, conf = _text_equiv(g, text_index)
    return Glyph(bbox=polygon_box(_coords(g)), text=text or "", confidence=conf)


def _read_line(
    sp: SourcePage,
    line: etree._Element,
    region: etree._Element,
    orientation: float,
    text_index: int | None,
    resolve,
    transcribed_only: bool = True,
) -> SourceLine | None:
    line_id = line.get("id") or f"TextLine[{line.sourceline}]"
    try:
        polygon = _coords(line)
    except ValueError as exc:
        sp.skip(line_id, f"bad Coords: {exc}")
        return None
    baseline: list = []
    base = child(line, "Baseline")
    if base is not None and base.get("points"):
        try:
            baseline = parse_points(base.get("points"))
        except ValueError as exc:
            LOG.warning("%s: TextLine %s: Baseline ignored: %s", sp.source, line_id, exc)
    words, glyphs = [], []
    try:
        for w in children(line, "Word"):
            wtext, wconf = _text_equiv(w, text_index)
            wglyphs = [_glyph(g, text_index) for g in children(w, "Glyph")]
            words.append(
                Word(polygon_box(_coords(w)), wtext or "", glyphs=wglyphs, confidence=wconf)
            )
            glyphs += wglyphs
    except (ValueError, TypeError) as exc:
        # The transcription is still good ground truth; only the boxes are unusable.
        sp.note(line_id, f"bad Word/Glyph Coords ({exc}): word and char boxes left out")
        words, glyphs = [], []
    text, conf = _text_equiv(line, text_index)
    if text is None and words:
        # No line-level TextEquiv: the words are the line (as PAGE allows).
        text = " ".join(w.text for w in words)
    if text is None and not transcribed_only:
        text = ""
    if text is None:
        which = "a TextEquiv" if text_index is None else f"a TextEquiv with index {text_index}"
        sp.skip(line_id, f"no transcription ({which} with Unicode)", untranscribed=True)
        return None
    image = None
    alt = _alternative_image(line)
    if alt is not None and resolve is not None and alt.get("filename"):
        comments = alt.get("comments") or ""
        if any(c in comments for c in GEOMETRY_CHANGES):
            LOG.info(
                "%s: TextLine %s: AlternativeImage (%s) not used", sp.source, line_id, comments
            )
        else:
            try:
                image = resolve(alt.get("filename"))
            except EffOCRError as exc:
                sp.skip(line_id, f"AlternativeImage: {exc}")
                return None
    return SourceLine(
        id=line_id,
        polygon=polygon,
        text=text,
        baseline=baseline,
        words=words,
        glyphs=glyphs,
        confidence=conf,
        vertical=_is_vertical(line, region),
        orientation=orientation,
        image=image,
    )


def read_page(
    path: str | os.PathLike,
    *,
    text_index: int | None = None,
    image_dir: str | os.PathLike | None = None,
    workspace: str | os.PathLike | None = None,
    alternative_images: bool,
    transcribed_only: bool = True,
) -> SourcePage:
    """Read one PAGE-XML file.

    Args:
        path: The PAGE-XML file.
        text_index: Which `TextEquiv` is the ground truth: None for the lowest @index (or the
            first), else the one with this @index.
        image_dir: Last folder searched for the page image (see `resolve_image`).
        workspace: The folder image paths are relative to in an OCR-D workspace (the folder of
            its `mets.xml`); None looks for a `mets.xml` above the file.
        alternative_images: Use `AlternativeImage`s (page: a derived image in the page's own
            coordinates, e.g. binarised; line: the line's own image) where present.
        transcribed_only: Leave out lines without a transcription (ground truth); False
            keeps them with empty text (a segmentation to be read, `effocr infer
            --segmentation`).

    Returns:
        The page; lines that cannot be used are in `skipped`. A page whose image is missing
        comes back with `page.error` set and no regions.

    Raises:
        EffOCRError: the file is not (well-formed, safe) PAGE-XML.
    """
    path = Path(path)
    root = parse_xml(path)
    if local_name(root) != "PcGts" or not namespace(root).startswith(PAGE_NS_PREFIX):
        raise EffOCRError(
            f"{path}: not PAGE-XML (root element {{{namespace(root)}}}{local_name(root)}, "
            f"expected PcGts in a {PAGE_NS_PREFIX}... namespace)"
        )
    page_el = child(root, "Page")
    if page_el is None:
        raise EffOCRError(f"{path}: no <Page> element")
    name = page_el.get("imageFilename")
    if not name:
        raise EffOCRError(f"{path}: <Page> has no imageFilename")
    try:
        width, height = int(page_el.get("imageWidth")), int(page_el.get("imageHeight"))
    except (TypeError, ValueError) as exc:
        raise EffOCRError(f"{path}: <Page> needs integer imageWidth and imageHeight") from exc

    def resolve(ref: str) -> Path:
        return resolve_image(ref, path, workspace=workspace, image_dir=image_dir)

    page = Page(image=name, width=width, height=height)
    sp = SourcePage(source=path, page=page, image=None)
    try:
        sp.image = resolve(name)
    except EffOCRError as exc:
        page.error = str(exc)
        sp.skip(page_el.get("id") or "Page", str(exc))
        return sp
    alt = _alternative_image(page_el) if alternative_images else None
    if alt is not None and alt.get("filename"):
        comments = alt.get("comments") or ""
        if any(c in comments for c in GEOMETRY_CHANGES):
            LOG.info("%s: page AlternativeImage (%s) not used", path, comments)
        else:
            try:
                sp.image = resolve(alt.get("filename"))
            except EffOCRError as exc:
                LOG.warning("%s: page AlternativeImage not used: %s", path, exc)
    page_orientation = _float_attr(page_el, "orientation") or 0.0

    regions = descendants(page_el, "TextRegion")
    order = {rid: i for i, rid in enumerate(_reading_order(page_el))}
    regions.sort(key=lambda r: order.get(r.get("id"), len(order)))  # stable: the rest in file order
    for r_el in regions:
        rid = r_el.get("id") or f"TextRegion[{r_el.sourceline}]"
        try:
            polygon = _coords(r_el)
        except ValueError:
            polygon = []  # lines carry their own coords; a region outline is not needed
        orientation = _float_attr(r_el, "orientation")
        orientation = page_orientation if orientation is None else orientation
        region = Region(id=rid, polygon=polygon, kind=r_el.get("type") or "paragraph")
        for l_el in children(r_el, "TextLine"):
            line = _read_line(
                sp,
                l_el,
                r_el,
                orientation,
                text_index,
                resolve if alternative_images else None,
                transcribed_only,
            )
            if line is not None:
                region.lines.append(line)
        if not region.polygon and region.lines:
            region.polygon = box_polygon(
                polygon_box([p for ln in region.lines for p in ln.polygon])
            )
        page.regions.append(region)
    return sp


def read_mets(mets: str | os.PathLike, file_grp: str) -> tuple[list[Path], Path]:
    """The PAGE files of file group `file_grp` of an OCR-D `mets.xml`, and the workspace folder.

    Raises:
        EffOCRError: the METS is unsafe or malformed, the group does not exist (the groups
            there are named) or lists no local file.
    """
    mets = Path(mets)
    root = parse_xml(mets)
    groups = {g.get("USE"): g for g in descendants(root, "fileGrp")}
    if file_grp not in groups:
        raise EffOCRError(
            f"{mets}: no fileGrp USE={file_grp!r} (there: {', '.join(sorted(map(str, groups)))})"
        )
    files = []
    for f in descendants(groups[file_grp], "FLocat"):
        href = f.get(f"{{{XLINK_NS}}}href")
        if not href:
            raise EffOCRError(f"{mets}: fileGrp {file_grp}: FLocat without xlink:href")
        path = Path(href[len("file://") :] if href.startswith("file://") else href)
        files.append(path if path.is_absolute() else mets.parent / path)
    if not files:
        raise EffOCRError(f"{mets}: fileGrp {file_grp!r} lists no files")
    return files, mets.parent


def page_files(path: str | os.PathLike) -> list[Path]:
    """The PAGE-XML files of a file or a folder (searched recursively, `mets.xml` left out)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.xml") if p.name != "mets.xml")
        if not files:
            raise EffOCRError(f"{path}: no .xml files in this folder")
        return files
    if not path.is_file():
        raise EffOCRError(f"{path}: no such file or folder")
    return [path]
