"""A given segmentation: line polygons from PAGE-XML or ALTO files, for `effocr infer
--segmentation` and `Engine.read_segmented`.

The files are read by the ground-truth readers (`effocr.formats.page`, `effocr.formats.alto`),
lines without a transcription kept (a segmentation usually has none). Which reader is told
by the root element. The page image is the one the file names, found as the importer finds
it (`effocr.formats.source.resolve_image`, `image_dir` searched last).
"""

from __future__ import annotations

import os
from pathlib import Path

from effocr.formats.alto import ALTO_NS_PREFIXES, read_alto
from effocr.formats.page import PAGE_NS_PREFIX, page_files, read_page
from effocr.formats.source import SourcePage
from effocr.formats.xml import local_name, namespace, parse_xml
from effocr.utils import EffOCRError


def segmentation_files(path: str | os.PathLike) -> list[Path]:
    """The XML files of a file or a folder (searched recursively, `mets.xml` left out): the
    same search as the PAGE reader's, ALTO files included."""
    return page_files(path)


def read_segmentation(
    path: str | os.PathLike, *, image_dir: str | os.PathLike | None = None
) -> SourcePage:
    """One PAGE-XML or ALTO file -> `SourcePage` (its lines in the file's reading order).

    A page image that cannot be found is `page.error` (as the readers report it).

    Raises:
        EffOCRError: the file is neither PAGE-XML nor ALTO, or not usable as such.
    """
    path = Path(path)
    root = parse_xml(path)
    ns, name = namespace(root), local_name(root)
    if name == "PcGts" and ns.startswith(PAGE_NS_PREFIX):
        # A segmentation is read as the importer reads PAGE by default: the AlternativeImage
        # (e.g. a binarised or deskewed page) a line or region names, when it has one.
        return read_page(path, image_dir=image_dir, alternative_images=True, transcribed_only=False)
    if name == "alto" and ns.startswith(ALTO_NS_PREFIXES):
        return read_alto(path, image_dir=image_dir)
    raise EffOCRError(
        f"{path}: neither PAGE-XML nor ALTO (root element {{{ns}}}{name}); "
        "--segmentation reads PAGE-XML (PcGts) and ALTO (alto) files"
    )
