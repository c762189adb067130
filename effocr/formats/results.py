"""The line pipeline's results as pages: `effocr.pipeline.LineResult` -> `effocr.document.Page`.

A line image is a page with one region holding one line that covers the image; coordinates
stay line pixels. Words follow the line's text (its spaces, from the localizer's word boxes
or, without them, from gaps), so the words joined by spaces are the line's text; a word's box
is the detected word box its first glyph lies in, grown to hold all its glyphs (the union of
its glyph boxes where no word box was detected).

Confidences:
- glyph: the cosine similarity of the glyph's embedding to its nearest reference glyph
  (`CharResult.score`), clipped to [0, 1] (a cosine at or below 0 is no likeness at all);
- word and line: the probability that the word or line is read exactly right, from the
  bundle's calibration (`effocr.confidence`: `LineResult.confidence` and `word_confidences`,
  set by the pipeline). A bundle without one (older, or fitted on too few right or wrong
  units) gives the mean of the glyphs' confidences instead: that ranks words and lines for
  review (low = look here first) but is no probability (`unit_confidences` says which).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from effocr.document import Box, Glyph, Line, Page, Region, Word, box_polygon

if TYPE_CHECKING:
    from effocr.pipeline import LineResult


def glyph_confidence(score: float) -> float:
    """A glyph's confidence in [0, 1] from its cosine similarity to the nearest reference."""
    return min(max(float(score), 0.0), 1.0)


def mean_confidence(glyphs: list[Glyph]) -> float | None:
    """The mean of the glyphs' confidences (None without glyphs)."""
    confs = [g.confidence for g in glyphs if g.confidence is not None]
    return sum(confs) / len(confs) if confs else None


def unit_confidences(
    res: LineResult, groups: list[list[int]] | None = None
) -> tuple[float | None, list[float | None], bool]:
    """The line's confidence, its words' (`word_groups` order) and whether they are
    calibrated probabilities (else the mean clipped cosines of their glyphs)."""
    groups = word_groups(res) if groups is None else groups
    calibrated = res.confidence is not None and res.word_confidences is not None
    if calibrated and len(res.word_confidences) == len(groups):
        return res.confidence, list(res.word_confidences), True
    cos = [glyph_confidence(c.score) for c in res.chars]
    words = [sum(cos[i] for i in g) / len(g) if g else None for g in groups]
    return (sum(cos) / len(cos) if cos else None), words, False


def _union(boxes: list[Box]) -> Box:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def word_groups(res: LineResult) -> list[list[int]]:
    """Indices of `res.chars` per word, as the spaces of `res.text` split them."""
    groups: list[list[int]] = []
    pos = 0
    text = res.text
    for i, ch in enumerate(res.chars):
        starts_word = not groups
        while pos < len(text) and text[pos] == " " and not ch.char.startswith(" "):
            starts_word = True
            pos += 1
        if starts_word:
            groups.append([])
        groups[-1].append(i)
        pos += len(ch.char)
    return groups


def _word_box(glyph_boxes: list[Box], detected: list[Box], vertical: bool) -> Box:
    """The detected word box holding the first glyph's centre (reading axis), grown to hold all
    the glyphs; the glyphs' union when none does."""
    a0, a1 = (1, 3) if vertical else (0, 2)
    first = glyph_boxes[0]
    centre = (first[a0] + first[a1]) / 2
    for box in detected:
        if box[a0] <= centre <= box[a1]:
            return _union([box, *glyph_boxes])
    return _union(glyph_boxes)


def line_from_result(
    res: LineResult, line_id: str, polygon: list, vertical: bool | None = None
) -> Line:
    """One line's result as a `document.Line` with outline `polygon`: its glyphs, its words
    (the text split at its spaces) and confidences, in the coordinates of `res.chars`."""
    vertical = res.vertical if vertical is None else vertical
    glyphs = [
        Glyph(
            bbox=tuple(float(v) for v in c.bbox),
            text=c.char,
            confidence=glyph_confidence(c.score),
        )
        for c in res.chars
    ]
    detected = [tuple(float(v) for v in b) for b in res.words]
    groups = word_groups(res)
    line_conf, word_confs, _ = unit_confidences(res, groups)
    words = []
    for group, conf in zip(groups, word_confs, strict=True):
        members = [glyphs[i] for i in group]
        words.append(
            Word(
                bbox=_word_box([g.bbox for g in members], detected, vertical),
                text="".join(g.text for g in members),
                glyphs=members,
                confidence=conf,
            )
        )
    return Line(
        id=line_id,
        polygon=list(polygon),
        text=res.text if res.ok else "",
        words=words,
        glyphs=glyphs,
        confidence=line_conf,
        vertical=vertical,
    )


def page_from_result(res: LineResult) -> Page:
    """One line's result as a `Page`: one region, one line covering the image.

    A failed line gives a page with `error` set and no regions.
    """
    if not res.ok:
        return Page(image=res.image, width=res.width, height=res.height, error=res.error)
    outline = box_polygon((0.0, 0.0, float(res.width), float(res.height)))
    line = line_from_result(res, "line_1", outline)
    region = Region(id="region_1", polygon=list(outline), lines=[line])
    return Page(image=res.image, width=res.width, height=res.height, regions=[region])
