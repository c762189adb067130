"""What the ground-truth readers (PAGE-XML, ALTO, line folders) hand to the importer.

A reader turns one source file into a `SourcePage`: the `effocr.document.Page` it describes,
the page image it found on disk, and the problems of elements it had to leave out (the rest
of the file goes on). Lines are `SourceLine`s, a `document.Line` plus what cutting the line
image needs: the rotation that makes it upright and a line image of its own where the
source has one (PAGE `AlternativeImage`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from effocr.document import Line, Page
from effocr.utils import EffOCRError

# `reason` of a skipped element: no ground truth there, or something wrong with it.
UNTRANSCRIBED = "untranscribed"
INVALID = "invalid"


@dataclass
class SourceLine(Line):
    """A `document.Line` read from ground truth.

    `orientation`: degrees to rotate the line clockwise to read it upright (PAGE's
    `@orientation`, 0 when the source gives none). `image`: a line image of its own (PAGE
    `AlternativeImage` of the line) whose top-left pixel is the top-left corner of the bounding
    box of `polygon`, or None to cut the line from the page image.
    """

    orientation: float = 0.0
    image: Path | None = None


@dataclass
class SourcePage:
    """One page read from a ground-truth file.

    `source`: the file read (XML, or the ``.gt.txt`` of a line folder); `image`: the page image
    resolved on disk (None when it could not be found: then `page.error` says why and the page
    has no regions); `skipped`: ``{file, id, problem}`` for each element left out.
    """

    source: Path
    page: Page
    image: Path | None
    skipped: list[dict] = field(default_factory=list)
    # How positions became pixels where the source has other units (ALTO mm10: the dpi used
    # and where it came from), for the import report.
    units: str | None = None
    # Elements kept with less than the source had (e.g. boxes dropped), for the import report.
    notes: list[dict] = field(default_factory=list)

    def note(self, element_id: str, problem: str) -> None:
        """Record that element `element_id` was kept, but not whole, and why."""
        self.notes.append({"file": str(self.source), "id": element_id, "problem": problem})

    def skip(self, element_id: str, problem: str, *, untranscribed: bool = False) -> None:
        """Record that element `element_id` of this file was left out, and why.

        `untranscribed`: the element has no ground truth at all (not an error of the file:
        PAGE files often hold lines nobody transcribed).
        """
        self.skipped.append(
            {
                "file": str(self.source),
                "id": element_id,
                "problem": problem,
                "reason": UNTRANSCRIBED if untranscribed else INVALID,
            }
        )


def _candidates(name: str, xml: Path, workspace: Path | None, image_dir: Path | None) -> list[Path]:
    # Producers mean different bases: kraken and Transkribus write the image name relative to
    # the XML's folder; OCR-D writes it relative to the workspace (the folder of mets.xml),
    # with the PAGE file one folder down (OCR-D-GT-SEG-LINE/x.xml -> OCR-D-IMG/x.png).
    path = Path(name)
    if path.is_absolute():
        out = [path]
    else:
        out = [xml.parent / path]
        bases = [workspace] if workspace is not None else []
        bases += [p for p in xml.parent.parents if (p / "mets.xml").is_file()]
        bases.append(xml.parent.parent)
        for base in bases:
            if base is not None and base / path not in out:
                out.append(base / path)
    if image_dir is not None:
        out += [image_dir / path.name] if path.is_absolute() else [image_dir / path]
        if image_dir / path.name not in out:
            out.append(image_dir / path.name)
    return out


def resolve_image(
    name: str,
    xml: str | os.PathLike,
    *,
    workspace: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
) -> Path:
    """The file an image reference of `xml` means, on disk.

    Tried in order: relative to the XML's folder; relative to the workspace (`workspace`, the
    folder of a `mets.xml` above the XML, and the folder above the XML's); then `image_dir`
    (the path as given, then its file name alone). A ``file://`` URL is a local path.

    Raises:
        EffOCRError: naming `xml`, the reference and every path tried, when none exists (or
            the reference is a remote URL).
    """
    xml = Path(xml)
    url = urlparse(name)
    if url.scheme == "file":
        name = unquote(url.path)
    elif url.scheme and len(url.scheme) > 1:  # a one-letter scheme is a Windows drive
        raise EffOCRError(f"{xml}: image {name!r} is a remote URL; download it and use --image-dir")
    tried = _candidates(
        name,
        xml,
        Path(workspace) if workspace is not None else None,
        Path(image_dir) if image_dir is not None else None,
    )
    for path in tried:
        if path.is_file():
            return path
    raise EffOCRError(
        f"{xml}: image {name!r} not found; tried {', '.join(str(p) for p in tried)}"
        + ("" if image_dir is not None else " (--image-dir adds a folder to search)")
    )


def parse_points(text: str) -> list[tuple[float, float]]:
    """PAGE's ``"x1,y1 x2,y2 ..."`` as a list of points.

    Raises:
        ValueError: for anything else (the caller names the element).
    """
    points = []
    for pair in text.split():
        x, sep, y = pair.partition(",")
        if not sep:
            raise ValueError(f"point {pair!r} is not x,y")
        fx, fy = float(x), float(y)
        if fx != fx or fy != fy or abs(fx) == float("inf") or abs(fy) == float("inf"):
            raise ValueError(f"point {pair!r} is not finite")
        points.append((fx, fy))
    return points
