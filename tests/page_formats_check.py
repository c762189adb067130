"""Checks of EffOCR's page-format outputs: XSD validation (PAGE 2019, ALTO 4.4) and hOCR 1.2.

The XSDs are the official ones, kept in tests/data/schemas (see its README); they are parsed
with lxml without network access, ALTO's XLink import resolved to the local `xlink.xsd`.

hOCR has no schema; `hocr_problems` checks what the hOCR 1.2 specification
(https://kba.github.io/hocr-spec/1.2/) requires of a document and of the elements and properties
EffOCR writes.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from lxml import etree

SCHEMAS = Path(__file__).parent / "data" / "schemas"
XLINK_URL = "http://www.loc.gov/standards/xlink/xlink.xsd"
XHTML = "{http://www.w3.org/1999/xhtml}"


class _LocalXLink(etree.Resolver):
    def resolve(self, url, pubid, context):
        if url == XLINK_URL:
            return self.resolve_filename(str(SCHEMAS / "xlink.xsd"), context)
        return None  # local files as usual; anything remote fails (no_network)


def safe_parser() -> etree.XMLParser:
    """An lxml parser that reads no DTD, expands no entity and touches no network."""
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    parser.resolvers.add(_LocalXLink())
    return parser


@functools.cache
def schema(name: str) -> etree.XMLSchema:
    """``page`` (PAGE 2019) or ``alto`` (ALTO 4.4)."""
    file = {"page": "page-2019-07-15.xsd", "alto": "alto-4-4.xsd"}[name]
    return etree.XMLSchema(etree.parse(str(SCHEMAS / file), safe_parser()))


def parse(data: bytes) -> etree._Element:
    return etree.fromstring(data, safe_parser())


def assert_valid(data: bytes, name: str) -> etree._Element:
    """Parse `data` and validate it against schema `name`; returns the root."""
    root = parse(data)
    xsd = schema(name)
    assert xsd.validate(root), f"{name} invalid: {xsd.error_log}"
    return root


# ---------------------------------------------------------------------------
# hOCR
# ---------------------------------------------------------------------------

# The parent classes an element may sit in (its nearest hOCR ancestor), per the spec's nesting.
HOCR_PARENTS = {
    "ocr_page": {None},
    "ocr_carea": {"ocr_page"},
    "ocr_par": {"ocr_carea"},
    "ocr_line": {"ocr_par", "ocr_carea"},
    "ocrx_word": {"ocr_line"},
    "ocrx_cinfo": {"ocrx_word", "ocr_line"},
}
# Properties the spec defines (general, typesetting, engine-specific) and their value syntax.
_INT = r"-?\d+"
_NUM = r"-?\d+(?:\.\d+)?"
HOCR_PROPERTIES = {
    "bbox": rf"{_INT} {_INT} {_INT} {_INT}",
    "image": r'"[^"]*"|\S+',
    "textangle": _NUM,
    "baseline": rf"{_NUM}(?: {_NUM})+",
    "ppageno": r"\d+",
    "x_wconf": _NUM,
    "x_confs": rf"{_NUM}(?: {_NUM})*",
    "x_bboxes": rf"{_INT}(?: {_INT})*",
}
# What ocrx_cinfo may hold (spec: "ocrx_cinfo should contain only x_conf, x_bboxes, and cuts").
CINFO_PROPERTIES = {"x_bboxes", "x_confs", "x_conf", "cuts"}


def hocr_properties(title: str) -> dict[str, str]:
    """A title attribute's properties ``name value...`` separated by ``;``."""
    out = {}
    for part in title.split(";"):
        part = part.strip()
        if part:
            name, _, value = part.partition(" ")
            out[name] = value.strip()
    return out


def _ocr_class(el: etree._Element) -> str | None:
    classes = (el.get("class") or "").split()
    hocr = [c for c in classes if c.startswith(("ocr_", "ocrx_"))]
    return hocr[0] if hocr else None


def _box(value: str) -> tuple[int, ...]:
    return tuple(int(v) for v in value.split())


def hocr_problems(data: bytes) -> list[str]:
    """What in an hOCR document breaks the hOCR 1.2 specification (empty: nothing)."""
    problems: list[str] = []
    root = parse(data)
    if root.tag != f"{XHTML}html":
        return [f"root is {root.tag}, not XHTML html"]
    metas = {m.get("name"): m.get("content") for m in root.iter(f"{XHTML}meta")}
    if not (metas.get("ocr-system") or "").strip():
        problems.append("required meta ocr-system missing or empty")
    if "ocr-capabilities" not in metas:
        problems.append("required meta ocr-capabilities missing")
    capabilities = set((metas.get("ocr-capabilities") or "").split())
    pages = [el for el in root.iter() if _ocr_class(el) == "ocr_page"]
    if not pages:
        problems.append("no ocr_page element (required in every hOCR document)")
    ids: set[str] = set()
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        cls = _ocr_class(el)
        if cls is None:
            continue
        where = f"{cls} {el.get('id')!r}"
        classes = (el.get("class") or "").split()
        if len(classes) != 1:
            problems.append(f"{where}: class must be a single value, got {classes}")
        if cls not in capabilities:
            problems.append(f"{where}: class not declared in ocr-capabilities")
        ident = el.get("id")
        if ident in ids:
            problems.append(f"{where}: id repeated")
        ids.add(ident)
        parent = next(
            (_ocr_class(a) for a in el.iterancestors() if _ocr_class(a) is not None), None
        )
        allowed = HOCR_PARENTS.get(cls)
        if allowed is None:
            problems.append(f"{where}: element not checked by this test")
        elif parent not in allowed:
            problems.append(
                f"{where}: inside {parent}, expected one of {sorted(map(str, allowed))}"
            )
        props = hocr_properties(el.get("title") or "")
        for name, value in props.items():
            syntax = HOCR_PROPERTIES.get(name)
            if syntax is None:
                problems.append(f"{where}: unknown property {name}")
            elif not re.fullmatch(syntax, value):
                problems.append(f"{where}: property {name} {value!r} is malformed")
        text = "".join(el.itertext())
        if cls == "ocr_page":
            if "bbox" not in props or _box(props["bbox"])[:2] != (0, 0):
                problems.append(f"{where}: a page's bbox must start at 0 0")
            if "image" not in props:
                problems.append(f"{where}: no image property")
        elif cls == "ocrx_cinfo":
            extra = set(props) - CINFO_PROPERTIES
            if extra:
                problems.append(f"{where}: properties {sorted(extra)} not allowed on ocrx_cinfo")
            if "bbox" in props:
                problems.append(f"{where}: character boxes go in x_bboxes, not bbox")
            if len(_box(props.get("x_bboxes", ""))) != 4 * len(text):
                problems.append(f"{where}: x_bboxes needs four numbers per code point")
            if "x_confs" in props and len(props["x_confs"].split()) != len(text):
                problems.append(f"{where}: x_confs needs one number per code point")
            word = hocr_properties(el.getparent().get("title") or "").get("bbox")
            boxes = _box(props.get("x_bboxes", ""))
            for i in range(0, len(boxes) - 3, 4):
                x0, y0, x1, y1 = boxes[i : i + 4]
                wx0, wy0, wx1, wy1 = _box(word) if word else (x0, y0, x1, y1)
                if not (wx0 <= x0 <= x1 <= wx1 and wy0 <= y0 <= y1 <= wy1):
                    problems.append(f"{where}: x_bboxes {boxes[i : i + 4]} outside its word")
        elif "bbox" not in props:
            problems.append(f"{where}: no bbox")
        for name in ("x_wconf", "x_confs"):
            if name in props and not all(0 <= float(v) <= 100 for v in props[name].split()):
                problems.append(f"{where}: {name} outside 0-100")
        if "x_wconf" in props and "ocrp_wconf" not in capabilities:
            problems.append(f"{where}: x_wconf used but ocrp_wconf not declared")
        if "bbox" in props:
            x0, y0, x1, y1 = _box(props["bbox"])
            if not (0 <= x0 <= x1 and 0 <= y0 <= y1):
                problems.append(f"{where}: bbox {props['bbox']} is not x0 <= x1, y0 <= y1")
            outer = next(
                (
                    hocr_properties(a.get("title") or "").get("bbox")
                    for a in el.iterancestors()
                    if _ocr_class(a) is not None
                ),
                None,
            )
            if outer is not None:
                ox0, oy0, ox1, oy1 = _box(outer)
                if not (ox0 <= x0 and oy0 <= y0 and x1 <= ox1 and y1 <= oy1):
                    problems.append(f"{where}: bbox {props['bbox']} outside its parent's {outer}")
    return problems
