"""The one XML parse of the page formats: lxml, no external entities, no network, no bombs.

Ground truth comes from other people's tools and the web, so a file is untrusted: an external
entity (``<!ENTITY x SYSTEM "file:///etc/passwd">``) must not read a file or fetch a URL, and
nested internal entities (billion laughs) must not expand. PAGE, ALTO and METS files never
declare entities, so a document whose DTD declares any is refused outright (as defusedxml
does), before any of its text is used; the parser itself resolves nothing, loads no DTD and
reads nothing from the network, and libxml2's size limits stay on (`huge_tree=False`).
"""

from __future__ import annotations

import os
from pathlib import Path

from lxml import etree

from effocr.utils import EffOCRError


def _parser() -> etree.XMLParser:
    # A fresh parser per call: lxml parsers are not thread-safe and keep an error log.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def parse_xml(path: str | os.PathLike) -> etree._Element:
    """Parse an XML file safely and return its root element.

    Raises:
        EffOCRError: naming the file: it cannot be read, is not well-formed XML (with libxml2's
            line and message), or declares entities.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EffOCRError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return parse_xml_bytes(data, str(path))


def parse_xml_bytes(data: bytes, name: str) -> etree._Element:
    """`parse_xml` for bytes already read; `name` is the file named in errors."""
    try:
        tree = etree.ElementTree(etree.fromstring(data, _parser()))
    except etree.XMLSyntaxError as exc:
        raise EffOCRError(f"{name}: not well-formed XML: {exc}") from exc
    dtd = tree.docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        names = ", ".join(sorted(e.name for e in dtd.iterentities()))
        raise EffOCRError(
            f"{name}: the DOCTYPE declares entities ({names}); refused: entity declarations "
            "can read local files or expand without bound, and PAGE/ALTO/METS never need them"
        )
    root = tree.getroot()
    for node in root.iter(etree.Entity):
        # An entity used but declared nowhere (an external DTD that is not loaded).
        raise EffOCRError(f"{name}: line {node.sourceline}: undeclared entity {node.text}")
    return root


def local_name(elem: etree._Element) -> str:
    """The tag without its namespace (``{ns}TextLine`` -> ``TextLine``)."""
    return etree.QName(elem).localname


def namespace(elem: etree._Element) -> str:
    """The namespace URI of the element's tag ('' when none)."""
    return etree.QName(elem).namespace or ""


def children(elem: etree._Element, name: str) -> list[etree._Element]:
    """Direct child elements called `name` (any namespace)."""
    return [c for c in elem if isinstance(c.tag, str) and local_name(c) == name]


def child(elem: etree._Element, name: str) -> etree._Element | None:
    """The first direct child element called `name`, or None."""
    found = children(elem, name)
    return found[0] if found else None


def descendants(elem: etree._Element, name: str) -> list[etree._Element]:
    """Descendant elements called `name` (any namespace), in document order."""
    return [e for e in elem.iter() if isinstance(e.tag, str) and local_name(e) == name]
