"""The document model shared by the readers and writers of page formats.

A `Page` holds regions, a region holds lines, a line holds words and glyphs, in reading order.
The PAGE-XML / ALTO / line-folder importers (ground truth in) build it from files; the PAGE-XML,
ALTO and hOCR writers (OCR results out) serialise it; the page pipeline fills it from a scan.
Coordinates are page pixels (x right, y down), floats; a polygon is a list of `(x, y)` points.
No I/O and no heavy imports here, so every side can depend on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

Point = tuple[float, float]
Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def box_polygon(box: Box) -> list[Point]:
    """The four corners of `box`, clockwise from the top left."""
    x0, y0, x1, y1 = box
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def polygon_box(points: list[Point]) -> Box:
    """The axis-aligned bounding box of `points` (which must not be empty)."""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return (min(xs), min(ys), max(xs), max(ys))


@dataclass
class Glyph:
    """One character: its box on the page, its text and a confidence in [0, 1] (None: unknown)."""

    bbox: Box
    text: str
    confidence: float | None = None


@dataclass
class Word:
    """One word: its box, its text, its glyphs (may be empty where the source has none)."""

    bbox: Box
    text: str
    glyphs: list[Glyph] = field(default_factory=list)
    confidence: float | None = None


@dataclass
class Line:
    """One text line.

    `polygon` is the line's outline (a box's four corners where the source gives only a box);
    `baseline` is optional; `vertical` is True for a line read top to bottom (vertical Japanese).
    `words` and `glyphs` may be empty (a transcription only); when both exist, `glyphs` lists
    every glyph of the line in reading order, including those of the words.
    """

    id: str
    polygon: list[Point]
    text: str = ""
    baseline: list[Point] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)
    glyphs: list[Glyph] = field(default_factory=list)
    confidence: float | None = None
    vertical: bool = False

    @property
    def bbox(self) -> Box:
        """The bounding box of the line's polygon."""
        return polygon_box(self.polygon)


@dataclass
class Region:
    """A text block (column, heading, footnote ...): its outline and its lines in reading order."""

    id: str
    polygon: list[Point]
    lines: list[Line] = field(default_factory=list)
    kind: str = "paragraph"

    @property
    def bbox(self) -> Box:
        """The bounding box of the region's polygon."""
        return polygon_box(self.polygon)


@dataclass
class Page:
    """One page image and what is on it, regions in reading order.

    `image` is the path of the page image as the source names it (or as it was read);
    `error` is set, and `regions` empty, when the page could not be read.
    """

    image: str
    width: int
    height: int
    regions: list[Region] = field(default_factory=list)
    error: str | None = None

    def lines(self) -> Iterator[Line]:
        """Every line of the page in reading order."""
        for region in self.regions:
            yield from region.lines

    @property
    def text(self) -> str:
        """The page's text: one line per line, a blank line between regions."""
        return "\n\n".join("\n".join(ln.text for ln in r.lines) for r in self.regions if r.lines)
