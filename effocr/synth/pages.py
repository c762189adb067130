"""Synthetic page scans with true line boxes, composed from the synthetic line drawer.

A page is laid out like a printed book or paper page: one to three columns of body text, a
heading, a running page number, marginal notes in a wide outer margin, footnotes in smaller
type under a rule, and distractors that are not text (pictures, rules). The whole page is
then skewed, blurred, noised and either binarised or left grey, at a resolution drawn from a
range of dots per inch. Vertical Japanese pages set their lines as columns read right to left.

Every text line is drawn glyph by glyph (`effocr.synth.lines._layout`, the same glyph cache as
the synthetic lines), so its box is the union of its glyphs' ink boxes (a horizontal line's
reaching from its font's ascender to its descender, `REFERENCE_LETTERS`, whatever letters it
holds) and its polygon is that box turned with the page. The targets go into a COCO JSON: one image per page, one annotation
of category `line` per text line with its `bbox`, `segmentation` (the polygon), `text`,
`vertical`, `kind` (body, heading, page_number, marginal, footnote) and `order` (the reading
order). The same arguments give byte-identical JSON and images.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from effocr.config import (
    FontsSection,
    LineDetectorSection,
    RenderSection,
    RunSection,
    SynthSection,
)
from effocr.profiles import get_profile
from effocr.synth.charsets import token_symbols
from effocr.synth.fonts import usable_chars
from effocr.synth.lines import (
    _english_line,
    _GlyphCache,
    _japanese_line,
    _layout,
    default_line_fonts,
    line_charset,
    line_fonts_from_config,
)
from effocr.synth.text import read_text_source, shipped_text_path
from effocr.utils import EffOCRError, atomic_path, write_json

LOG = logging.getLogger(__name__)

LINE_CATEGORY = {"id": 1, "name": "line", "supercategory": "text"}
KINDS = ("page_number", "heading", "body", "marginal", "footnote")
# Letters whose ink spans a font's ascender to descender: they size horizontal line boxes.
REFERENCE_LETTERS = "bdfhklgjpqy"


@dataclass
class PageLine:
    """One text line of a synthetic page: its text, box and polygon in page pixels."""

    text: str
    bbox: tuple[float, float, float, float]
    polygon: list[tuple[float, float]]
    vertical: bool
    kind: str


@dataclass
class SynthPage:
    """A drawn page (H x W uint8 grey) and its lines in reading order."""

    image: np.ndarray
    lines: list[PageLine] = field(default_factory=list)
    dpi: float = 300.0
    angle: float = 0.0
    binarised: bool = False


class _TextSource:
    """Line texts for one language, restricted to what a font draws."""

    def __init__(self, language: str, text_source, charset, fonts: list[Path]) -> None:
        self.profile = get_profile(language)
        text = read_text_source(text_source or shipped_text_path(language))
        allowed = set(charset) if charset is not None else None
        symbols = token_symbols(language)
        if allowed is not None:
            symbols = [c for c in symbols if c in allowed] or [
                c for c in charset if not c.isspace()
            ]
            text = "".join(c for c in text if c == " " or c in allowed).strip()
            if not text:
                raise EffOCRError("synth_pages: no character of the text source is in the charset")
        self.allowed = allowed
        self.symbols = symbols
        candidates = sorted(set(text) | set(symbols))
        self.drawable = {str(f): usable_chars(f, candidates) for f in fonts}
        if self.profile.spaces:
            self.words = [w for w in text.split(" ") if w]
        else:
            self.text = text.replace(" ", "")

    def line(self, rng: random.Random, font: str, max_chars: int) -> str:
        max_chars = max(2, max_chars)
        if self.profile.spaces:
            raw = _english_line(rng, self.words, max_chars, self.symbols, self.allowed)
        else:
            raw = _japanese_line(rng, self.text, max_chars, self.symbols)
        return "".join(c for c in raw if c == " " or c in self.drawable[font])


class _Canvas:
    """The page's ink coverage (float32, 0..1) and the text lines drawn on it."""

    def __init__(self, width: int, height: int, glyphs: _GlyphCache) -> None:
        self.alpha = np.zeros((height, width), np.float32)
        self.glyphs = glyphs
        self.lines: list[PageLine] = []
        self.reference: dict[str, set[str]] = {}  # font -> the REFERENCE_LETTERS it draws

    def text(
        self,
        font: str,
        size: int,
        text: str,
        x: float,
        y: float,
        vertical: bool,
        kind: str,
        rng: random.Random,
        limit: float,
        align: float = 0.0,
    ) -> float | None:
        """Draw `text` with its start at (x, y) (the baseline's left end; a column's top
        centre when vertical), cut where it would pass `limit` (x, or y when vertical);
        `align` places it in the free room up to `limit` (0 left, 0.5 centred, 1 right).
        Returns the length drawn."""
        kept, placed = _layout(self.glyphs, font, size, text, vertical, rng)
        if not placed:
            return None
        # Cut at the glyph that crosses the limit, so a line never leaves its column.
        axis = 1 if vertical else 0
        n = len(placed)
        room = limit - (y if vertical else x)
        while n and (placed[n - 1][axis] + _extent(placed[n - 1][2], vertical)) > room:
            n -= 1
        if n < 1:
            return None
        placed = placed[:n]
        if align:
            free = room - (placed[-1][axis] + _extent(placed[-1][2], vertical))
            if vertical:
                y += free * align
            else:
                x += free * align
        # The text of the kept glyphs: spaces between them as laid out.
        text_out, count = [], 0
        for c in kept:
            if c == " ":
                text_out.append(c)
                continue
            if count == n:
                break
            text_out.append(c)
            count += 1
        text_out_s = "".join(text_out).strip()
        h, w = self.alpha.shape
        x0 = y0 = math.inf
        x1 = y1 = -math.inf
        for px, py, g in placed:
            gx, gy = int(round(x)) + px + g.dx, int(round(y)) + py + g.dy
            a = g.alpha.astype(np.float32) / 255.0
            sy0, sx0 = max(0, gy), max(0, gx)
            sy1, sx1 = min(h, gy + a.shape[0]), min(w, gx + a.shape[1])
            if sy1 <= sy0 or sx1 <= sx0:
                continue
            region = self.alpha[sy0:sy1, sx0:sx1]
            np.maximum(region, a[sy0 - gy : sy1 - gy, sx0 - gx : sx1 - gx], out=region)
            bx0, by0, bx1, by1 = g.box
            x0, y0 = min(x0, gx - g.dx + bx0), min(y0, gy - g.dy + by0)
            x1, y1 = max(x1, gx - g.dx + bx1), max(y1, gy - g.dy + by1)
        if not math.isfinite(x0) or not text_out_s:
            return None
        if not vertical:
            # A line's height is its font's, not its letters': "529" or "ACT" gets the box a
            # line with ascenders and descenders gets, as the detector (which sees the type
            # size, not which letters are missing) regresses it, and as the line cuts the
            # recognizer learnt from (sized by the font) are.
            if font not in self.reference:
                self.reference[font] = usable_chars(Path(font), list(REFERENCE_LETTERS))
            ref = [self.glyphs.get(font, size, c, False) for c in self.reference[font]]
            tops = [g.box[1] for g in ref if g is not None and g.box is not None]
            bottoms = [g.box[3] for g in ref if g is not None and g.box is not None]
            if tops:
                y0 = min(y0, round(y) + min(tops))
                y1 = max(y1, round(y) + max(bottoms))
        box = (max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1))
        poly = [(box[0], box[1]), (box[2], box[1]), (box[2], box[3]), (box[0], box[3])]
        self.lines.append(PageLine(text_out_s, box, poly, vertical, kind))
        return (box[3] - box[1]) if vertical else (box[2] - box[0])


def _extent(g, vertical: bool) -> int:
    if g.box is None:
        return 0
    return g.box[3] if vertical else g.box[2]


def _picture(alpha: np.ndarray, box: tuple[int, int, int, int], nprng: np.random.Generator) -> None:
    """A halftone-like picture (a distractor: ink that is not text) into `box`."""
    x0, y0, x1, y1 = box
    if x1 - x0 < 4 or y1 - y0 < 4:
        return
    h, w = y1 - y0, x1 - x0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    f1, f2 = nprng.uniform(0.005, 0.05, 2)
    shade = 0.5 + 0.25 * np.sin(xx * f1 * 6.28 + nprng.uniform(0, 6)) * np.cos(yy * f2 * 6.28)
    shade += nprng.normal(0, 0.15, (h, w)).astype(np.float32)
    pic = np.clip(shade, 0, 1)
    border = max(1, int(min(h, w) * 0.01))
    pic[:border], pic[-border:], pic[:, :border], pic[:, -border:] = 1, 1, 1, 1
    np.maximum(alpha[y0:y1, x0:x1], pic, out=alpha[y0:y1, x0:x1])


def _rule(alpha: np.ndarray, x0: float, y0: float, x1: float, y1: float, width: int) -> None:
    im = Image.fromarray(np.zeros(alpha.shape, np.uint8))
    ImageDraw.Draw(im).line([(x0, y0), (x1, y1)], fill=255, width=max(1, width))
    np.maximum(alpha, np.asarray(im, np.float32) / 255.0, out=alpha)


def _horizontal_page(
    canvas: _Canvas,
    src: _TextSource,
    fonts: list[str],
    rng: random.Random,
    nprng: np.random.Generator,
    ppt: float,
    width: int,
    height: int,
) -> None:
    """Lay out a page of horizontal lines (body columns top to bottom, left to right)."""
    font = rng.choice(fonts)
    body = max(8, round(rng.uniform(9.0, 12.0) * ppt))
    small = max(7, round(body * rng.uniform(0.7, 0.8)))
    lead = rng.uniform(1.2, 1.5)
    margin_l = round(rng.uniform(0.45, 0.8) * 72 * ppt)
    margin_r = round(rng.uniform(0.45, 0.8) * 72 * ppt)
    # Marginal notes, page numbers and headings are a few lines a page at most; they come
    # often so the detector sees enough of them (notes set close beside a body line, short
    # number-only lines, large type with wide word gaps).
    marginalia = rng.random() < 0.5
    if marginalia:  # a wide outer margin carries the notes
        margin_r = round(1.4 * 72 * ppt)
    top = round(rng.uniform(0.4, 0.7) * 72 * ppt)
    bottom = height - round(rng.uniform(0.5, 0.8) * 72 * ppt)
    text_w = width - margin_l - margin_r
    n_cols = rng.choice([1, 1, 2, 2, 3]) if text_w > 60 * body else rng.choice([1, 1, 2])
    gutter = round(rng.uniform(1.2, 2.5) * body)
    col_w = (text_w - gutter * (n_cols - 1)) / n_cols
    if col_w < 8 * body:
        n_cols, col_w = 1, float(text_w)
    y = float(top)
    # Running head: the page number (and sometimes a title) above the text.
    folio_below = rng.random() < 0.25  # the page number at the foot of the page instead
    folio_y = float(bottom)
    if folio_below:
        bottom -= round(body * lead * 2)
    if not folio_below and rng.random() < 0.85:
        number = str(rng.randint(1, 999))
        title = rng.random() < 0.6
        align = rng.choice([0.0, 1.0]) if title else rng.choice([0.0, 0.5, 1.0])
        canvas.text(
            font,
            body,
            number,
            margin_l,
            y + body,
            False,
            "page_number",
            rng,
            margin_l + text_w,
            align,
        )
        if title:  # a running title, centred between the page number's places
            words = src.line(rng, font, int(text_w / (body * 0.6) * 0.4)).upper()
            words = "".join(c for c in words if c == " " or c in src.drawable[font])
            tx0, tx1 = margin_l + 0.15 * text_w, margin_l + 0.85 * text_w
            canvas.text(font, small, words, tx0, y + body, False, "heading", rng, tx1, 0.5)
        y += body * lead * 2
        if rng.random() < 0.5:
            _rule(canvas.alpha, margin_l, y - body * 0.6, margin_l + text_w, y - body * 0.6, 1)
    if rng.random() < 0.7:
        big = round(body * rng.uniform(1.4, 2.0))
        for _ in range(rng.choice([1, 1, 2])):
            head = src.line(rng, font, int(text_w / (big * 0.6) * 0.7))
            canvas.text(
                font, big, head, margin_l, y + big, False, "heading", rng, margin_l + text_w, 0.5
            )
            y += big * lead
        y += body * 0.8
    # Footnotes at the bottom in smaller type, under a short rule.
    n_foot = rng.choice([0, 0, 1, 2, 3])
    foot_top = bottom - n_foot * small * lead
    body_bottom = foot_top - (body * 1.5 if n_foot else 0)
    # A picture in one column sometimes.
    pic_col = rng.randrange(n_cols) if rng.random() < 0.35 else None
    for c in range(n_cols):
        cx = margin_l + c * (col_w + gutter)
        yy = y
        if pic_col == c:
            ph = round(rng.uniform(0.15, 0.35) * (body_bottom - y))
            pw = round(col_w * rng.uniform(0.6, 1.0))
            px0 = round(cx + (col_w - pw) / 2)
            _picture(canvas.alpha, (px0, round(yy), px0 + pw, round(yy + ph)), nprng)
            yy += ph + body * lead
        while yy + body * lead <= body_bottom:
            # Paragraph ends are short lines; the rest fill the column.
            full = rng.random() > 0.15
            n_chars = int(col_w / (body * 0.45)) + 4
            text = src.line(rng, font, n_chars if full else max(4, n_chars // 3))
            if full:
                text = text + " " + src.line(rng, font, n_chars)
            canvas.text(font, body, text, cx, yy + body, False, "body", rng, cx + col_w)
            if marginalia and c == n_cols - 1 and rng.random() < 0.2:
                note = src.line(rng, font, int(1.1 * 72 * ppt / (small * 0.5)))
                mx = width - margin_r + round(rng.uniform(0.1, 0.25) * 72 * ppt)
                canvas.text(font, small, note, mx, yy + body, False, "marginal", rng, width - 4)
            yy += body * lead
        if c < n_cols - 1 and rng.random() < 0.4:
            gx = cx + col_w + gutter / 2
            _rule(canvas.alpha, gx, y, gx, body_bottom - body, 1)
    if n_foot:
        _rule(
            canvas.alpha, margin_l, foot_top - small, margin_l + text_w * 0.3, foot_top - small, 1
        )
        yy = foot_top
        for _ in range(n_foot):
            text = src.line(rng, font, int(text_w / (small * 0.45)) + 4)
            canvas.text(
                font, small, text, margin_l, yy + small, False, "footnote", rng, margin_l + text_w
            )
            yy += small * lead
    if folio_below:
        number = str(rng.randint(1, 999))
        align = rng.choice([0.0, 0.5, 0.5, 1.0])
        canvas.text(
            font,
            body,
            number,
            margin_l,
            folio_y,
            False,
            "page_number",
            rng,
            margin_l + text_w,
            align,
        )


def _vertical_page(
    canvas: _Canvas,
    src: _TextSource,
    fonts: list[str],
    rng: random.Random,
    ppt: float,
    width: int,
    height: int,
) -> None:
    """Lay out a page of vertical lines: blocks top to bottom, columns right to left."""
    font = rng.choice(fonts)
    body = max(8, round(rng.uniform(9.0, 12.0) * ppt))
    lead = rng.uniform(1.3, 1.7)
    margin = round(rng.uniform(0.45, 0.7) * 72 * ppt)
    top, bottom = margin, height - margin
    n_blocks = rng.choice([1, 1, 2])
    gap = round(body * 2)
    block_h = (bottom - top - gap * (n_blocks - 1)) / n_blocks
    x_right = width - margin
    if rng.random() < 0.6:  # a heading: one larger column at the right
        big = round(body * rng.uniform(1.4, 1.8))
        cx = x_right - big / 2
        head = src.line(rng, font, int(block_h / big * 0.6))
        canvas.text(font, big, head, cx, top, True, "heading", rng, top + block_h)
        x_right -= big * lead + body
    for b in range(n_blocks):
        by = top + b * (block_h + gap)
        x = x_right - body / 2
        while x - body / 2 >= margin:
            full = rng.random() > 0.15
            n_chars = int(block_h / (body * 1.05))
            text = src.line(rng, font, n_chars if full else max(3, n_chars // 3))
            if full:
                text = text + src.line(rng, font, n_chars)
            canvas.text(font, body, text, x, by, True, "body", rng, by + block_h)
            x -= body * lead
        if b < n_blocks - 1 and rng.random() < 0.5:
            ry = by + block_h + gap / 2
            _rule(canvas.alpha, margin, ry, width - margin, ry, 1)
    if rng.random() < 0.7:  # page number: horizontal, at the bottom
        number = str(rng.randint(1, 999))
        latin = [f for f in fonts if all(c in src.drawable[f] for c in number)]
        if latin:
            canvas.text(
                rng.choice(latin),
                body,
                number,
                margin,
                height - margin / 2,
                False,
                "page_number",
                rng,
                width - margin,
                0.5,
            )


def _turn(lines: list[PageLine], angle: float, cx: float, cy: float, w: int, h: int) -> None:
    """Turn the lines' polygons like `Image.rotate(angle, center=(cx, cy))` turns the page."""
    a = math.radians(angle)
    cos, sin = math.cos(a), math.sin(a)
    for line in lines:
        pts = []
        for x, y in line.polygon:
            dx, dy = x - cx, y - cy
            pts.append((cx + dx * cos + dy * sin, cy - dx * sin + dy * cos))
        line.polygon = [(round(x, 2), round(y, 2)) for x, y in pts]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        line.bbox = (
            round(max(0.0, min(xs)), 2),
            round(max(0.0, min(ys)), 2),
            round(min(float(w), max(xs)), 2),
            round(min(float(h), max(ys)), 2),
        )


def draw_page(
    index: int,
    seed: int,
    src: _TextSource,
    fonts: list[str],
    glyphs: _GlyphCache,
    *,
    dpi: Sequence[float],
    vertical_fraction: float,
    max_skew: float,
    degrade: bool,
) -> SynthPage:
    """Draw page `index` of a run seeded `seed` (the same arguments, the same page)."""
    rng = random.Random(f"effocr-synth-page:{seed}:{index}")
    nprng = np.random.default_rng([seed, index, 7])
    page_dpi = rng.uniform(float(min(dpi)), float(max(dpi)))
    ppt = page_dpi / 72.0
    vertical = src.profile.allows_vertical and rng.random() < vertical_fraction
    # Octavo to quarto: 4.5 to 8 inches wide, taller than wide.
    w_in = rng.uniform(4.5, 8.0)
    width = round(w_in * page_dpi)
    height = round(w_in * rng.uniform(1.3, 1.5) * page_dpi)
    canvas = _Canvas(width, height, glyphs)
    if vertical:
        _vertical_page(canvas, src, fonts, rng, ppt, width, height)
    else:
        _horizontal_page(canvas, src, fonts, rng, nprng, ppt, width, height)
    lines = canvas.lines
    paper = rng.randint(200, 250) if degrade else 255
    ink = rng.randint(0, 70) if degrade else 0
    angle = rng.uniform(-max_skew, max_skew) if degrade and max_skew > 0 else 0.0
    alpha_img = Image.fromarray(np.clip(np.rint(canvas.alpha * 255), 0, 255).astype(np.uint8))
    if angle:
        alpha_img = alpha_img.rotate(
            angle, resample=Image.Resampling.BILINEAR, center=(width / 2, height / 2)
        )
        _turn(lines, angle, width / 2, height / 2, width, height)
    binarised = False
    if degrade:
        if rng.random() < 0.4:
            alpha_img = alpha_img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8) * ppt / 4))
    a = np.asarray(alpha_img, np.float32) / 255.0
    img = paper - (paper - ink) * a
    if degrade:
        # Uneven paper: a slow gradient, then grain.
        grad = np.linspace(0, rng.uniform(-20, 20), width, dtype=np.float32)[None, :]
        img = img + grad * (1 - a)
        img = img + nprng.normal(0.0, rng.uniform(2.0, 10.0), img.shape).astype(np.float32)
        if rng.random() < 0.4:
            binarised = True
            img = np.where(img >= (paper + ink) / 2, 255.0, 0.0)
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    keep = [ln for ln in lines if ln.bbox[2] - ln.bbox[0] >= 1 and ln.bbox[3] - ln.bbox[1] >= 1]
    return SynthPage(out, keep, page_dpi, angle, binarised)


def synth_pages(
    out_json: str | os.PathLike,
    n_pages: int,
    language: str,
    font_paths: Sequence[str | os.PathLike] | None = None,
    *,
    seed: int,
    dpi: Sequence[float],
    vertical_fraction: float,
    max_skew: float,
    degrade: bool,
    text_source: str | os.PathLike | None = None,
    charset: Sequence[str] | None = None,
    first_index: int = 0,
) -> Path:
    """Generate `n_pages` synthetic pages and their COCO JSON of line targets.

    Images (PNG, grey) go to `images/` beside `out_json`, replaced as a whole. Pages are
    numbered from `first_index`, so a held-out test set is the same call with another
    `first_index` (or seed). See the module docstring for the annotations.

    Args:
        out_json: Where the COCO JSON is written.
        n_pages: Number of pages.
        language: Profile name (`en`, `jp`).
        font_paths: Fonts; None uses `default_line_fonts(language)`.
        seed: Seed of every random choice.
        dpi: Inclusive range of resolutions (dots per inch) pages are drawn at.
        vertical_fraction: Fraction of vertical pages (profiles with vertical text only).
        max_skew: Largest page rotation in degrees (either way).
        degrade: Skew, blur, noise, uneven paper and binarisation.
        text_source: UTF-8 text to draw lines from; None uses the shipped text.
        charset: If given, lines contain only these characters.
        first_index: Number of the first page (page i is drawn from `seed` and i).
    """
    if n_pages < 1:
        raise EffOCRError(f"synth_pages: n_pages must be >= 1, got {n_pages}")
    if min(dpi) < 50 or len(dpi) != 2:
        raise EffOCRError(f"synth_pages: dpi must be a range of two values >= 50, got {list(dpi)}")
    fonts = [Path(p) for p in font_paths] if font_paths else default_line_fonts(language)
    for f in fonts:
        if not f.is_file():
            raise EffOCRError(f"{f}: font file not found")
    src = _TextSource(language, text_source, charset, fonts)
    font_names = [str(f) for f in fonts]
    glyphs = _GlyphCache()
    out_json = Path(out_json)
    images, annotations = [], []
    with atomic_path(out_json.parent / "images", is_dir=True) as img_dir:
        img_dir.mkdir(parents=True, exist_ok=True)
        for k in range(n_pages):
            i = first_index + k
            page = draw_page(
                i,
                seed,
                src,
                font_names,
                glyphs,
                dpi=dpi,
                vertical_fraction=vertical_fraction,
                max_skew=max_skew,
                degrade=degrade,
            )
            image_id = k + 1
            file_name = f"page_{i:06d}.png"
            Image.fromarray(page.image, mode="L").save(img_dir / file_name, format="PNG")
            images.append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "width": int(page.image.shape[1]),
                    "height": int(page.image.shape[0]),
                    "dpi": round(page.dpi, 1),
                    "skew": round(page.angle, 3),
                    "binarised": page.binarised,
                }
            )
            for order, line in enumerate(page.lines):
                x0, y0, x1, y1 = line.bbox
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": LINE_CATEGORY["id"],
                        "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
                        "area": round((x1 - x0) * (y1 - y0), 2),
                        "iscrowd": 0,
                        "segmentation": [[v for p in line.polygon for v in p]],
                        "text": line.text,
                        "vertical": line.vertical,
                        "kind": line.kind,
                        "order": order,
                    }
                )
        coco = {
            "info": {
                "description": f"EffOCR synthetic {language} pages",
                "generator": "effocr.synth.pages.synth_pages",
                "seed": seed,
                "first_index": first_index,
                "fonts": [f.stem for f in fonts],
                "dpi": [float(min(dpi)), float(max(dpi))],
                "vertical_fraction": vertical_fraction,
                "max_skew": max_skew,
                "degrade": degrade,
            },
            "images": images,
            "annotations": annotations,
            "categories": [LINE_CATEGORY],
        }
    write_json(out_json, coco, indent=None)
    LOG.info("wrote %d pages (%d lines) to %s", len(images), len(annotations), out_json)
    return out_json


def synth_pages_from_config(
    out_json: str | os.PathLike,
    n_pages: int,
    first_index: int,
    *,
    line_detector: LineDetectorSection,
    synth: SynthSection,
    fonts: FontsSection,
    render: RenderSection,
    run: RunSection,
) -> Path:
    """`synth_pages` with the config sections `line_detector` (`dpi`, `vertical_fraction`,
    `max_skew`, `degrade`), `synth` (`text_source`, `line_fonts`), `fonts` and `render` (the
    line fonts and charset, as `synth_lines_from_config`) and `run`."""
    charset = line_charset(render=render, synth=synth, run=run)
    return synth_pages(
        out_json,
        n_pages,
        language=run.language,
        font_paths=line_fonts_from_config(charset, fonts=fonts, synth=synth, run=run),
        seed=run.seed,
        dpi=list(line_detector.dpi),
        vertical_fraction=line_detector.vertical_fraction,
        max_skew=line_detector.max_skew,
        degrade=line_detector.degrade,
        text_source=synth.text_source,
        charset=charset,
        first_index=first_index,
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr synth-pages`."""
    parser.add_argument(
        "--config", help="workflow config (YAML); its line_detector section gives the defaults"
    )
    parser.add_argument("--out", required=True, help="output COCO JSON (images/ beside it)")
    parser.add_argument("--n-pages", type=int, required=True)
    parser.add_argument("--first-index", type=int, default=0, help="number of the first page")


def run(args: argparse.Namespace) -> int:
    """Run `effocr synth-pages`."""
    from effocr.config import config_sections, load_config

    sections = config_sections(load_config(args.config))
    print(
        synth_pages_from_config(
            args.out,
            args.n_pages,
            args.first_index,
            **sections.pick("line_detector", "synth", "fonts", "render", "run"),
        )
    )
    return 0
