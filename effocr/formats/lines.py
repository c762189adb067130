"""Line folders: ``NAME.png`` (or ``NAME.bin.png``, ``.nrm.png``, ``.tif``...) + ``NAME.gt.txt``.

The OCR-D / Calamari / kraken / tesstrain convention for line ground truth. Each pair becomes a
one-line `SourcePage` whose line is the whole image (no boxes: a transcription only).
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from effocr.document import Page, Region, box_polygon
from effocr.formats.source import SourceLine, SourcePage
from effocr.suffixes import IMAGE_SUFFIXES
from effocr.utils import EffOCRError

GT_SUFFIX = ".gt.txt"
# Image suffixes tried, in order, for NAME.gt.txt (binarised first, as in OCR-D/kraken sets),
# then every suffix `effocr infer` reads.
GT_IMAGE_SUFFIXES = (".bin.png", ".nrm.png", *IMAGE_SUFFIXES)
NO_IMAGE = "no line image beside it"


def gt_files(folder: str | os.PathLike) -> list[Path]:
    """The ``*.gt.txt`` files under `folder` (recursively, sorted).

    Raises:
        EffOCRError: `folder` is not a folder or holds no transcription.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EffOCRError(f"{folder}: not a folder of line images with .gt.txt files")
    gts = sorted(folder.rglob(f"*{GT_SUFFIX}"))
    if not gts:
        raise EffOCRError(f"{folder}: no *{GT_SUFFIX} transcriptions found")
    return gts


def gt_image(gt: Path) -> Path | None:
    """The line image of a ``NAME.gt.txt``: the first ``NAME<suffix>`` that exists."""
    stem = gt.name[: -len(GT_SUFFIX)]
    for suffix in GT_IMAGE_SUFFIXES:
        candidate = gt.with_name(stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def read_gt_text(gt: Path) -> str:
    """The transcription of a ``.gt.txt``: one line; a trailing newline is file convention.

    Raises:
        EffOCRError: the file is not UTF-8.
    """
    try:
        text = gt.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EffOCRError(f"{gt}: not UTF-8 text ({exc})") from exc
    return text.rstrip("\r\n")


def read_line_pair(gt: str | os.PathLike, line_id: str | None = None) -> SourcePage:
    """One ``NAME.gt.txt`` and its image as a one-line page.

    A missing or unreadable image is recorded in `skipped` (no regions); an undecodable
    transcription too.
    """
    gt = Path(gt)
    line_id = line_id or gt.name[: -len(GT_SUFFIX)]
    image = gt_image(gt)
    sp = SourcePage(source=gt, page=Page(image="", width=0, height=0), image=image)
    if image is None:
        sp.page.error = f"{NO_IMAGE} (tried {', '.join(GT_IMAGE_SUFFIXES)})"
        sp.skip(line_id, sp.page.error)
        return sp
    sp.page.image = str(image)
    try:
        text = read_gt_text(gt)
        with Image.open(image) as im:
            sp.page.width, sp.page.height = im.size
    except (EffOCRError, OSError, Image.DecompressionBombError) as exc:
        sp.page.error = str(exc)
        sp.skip(line_id, str(exc))
        return sp
    polygon = box_polygon((0.0, 0.0, float(sp.page.width), float(sp.page.height)))
    line = SourceLine(id=line_id, polygon=polygon, text=text)
    sp.page.regions.append(Region(id=line_id, polygon=polygon, lines=[line]))
    return sp


def read_line_folder(folder: str | os.PathLike) -> list[SourcePage]:
    """Every ``.gt.txt`` pair under `folder`; ids are paths relative to it, without suffix."""
    folder = Path(folder)
    return [
        read_line_pair(gt, str(gt.relative_to(folder))[: -len(GT_SUFFIX)])
        for gt in gt_files(folder)
    ]
