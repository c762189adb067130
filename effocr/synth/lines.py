"""Synthetic text lines with exact character (and word) boxes, as a raw COCO JSON.

Each line is drawn one character at a time, so every character's box is the bounding box of
its own ink. Lines come from a shipped public-domain text (or any UTF-8 text), mixed with
random tokens (numbers, punctuation) so that every charset character occurs. Japanese lines
may be vertical (top to bottom, using the font's vertical glyph forms). Optional scan-like
degradations: slight skew (boxes are transformed with the image), blur, noise, binarisation.

The output follows docs/architecture.md: `images[]` with `text`, one `char` box per
non-space character in reading order, `word` boxes for languages with spaces, and the PNG
images in `images/` beside the JSON.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, features

from effocr.config import FontsSection, RenderSection, RunSection, SynthSection
from effocr.profiles import get_profile
from effocr.synth import degrade as print_look
from effocr.synth.charsets import HIRAGANA, load_charset, resolve_charset, token_symbols
from effocr.synth.fonts import (
    covering_fonts,
    default_font_dirs,
    find_fonts,
    load_font,
    section_fonts,
    usable_chars,
)
from effocr.synth.text import read_text_source, shipped_text_path
from effocr.utils import EffOCRError, atomic_path, write_json

LOG = logging.getLogger(__name__)

# Alpha (of 255) from which a pixel counts as ink for a box: anti-aliasing fringes fainter
# than this are invisible after degradation and would only loosen the box.
INK_THRESHOLD = 48

# Fonts used for synthetic lines when none are given: stems (globs) tried in this order;
# those present and covering the language's basic characters are used.
DEFAULT_LINE_FONTS = {
    "en": (
        "DejaVuSerif",
        "DejaVuSans",
        "DejaVuSansMono",
        "DejaVuSerif-Italic",
        "DejaVuSans-Bold",
        "LiberationSerif-Regular",
        "LiberationSans-Regular",
        "LiberationMono-Regular",
        "NotoSerif-Regular",
        "NotoSans-Regular",
        "NimbusRoman-Regular",
        "NimbusSans-Regular",
        "NimbusMonoPS-Regular",
        "C059-Roman",
        "P052-Roman",
        "URWBookman-Light",
    ),
    "jp": (
        "ipam",
        "ipag",
        "ipamp",
        "ipagp",
        "NotoSerifCJK*-Regular",
        "NotoSansCJK*-Regular",
        "NotoSerifJP-Regular",
        "NotoSansJP-Regular",
    ),
}

STYLES = ("basic", "print")

# `print` style lines: shares of upper-case and capitalised lines (headings, running heads,
# references), of lines whose last word is hyphenated when it does not fit, and of random tokens
# (numbers, amounts, dates, brackets) among the words of a mixed line.
PRINT_UPPER_P = 0.05
PRINT_TITLE_P = 0.05
PRINT_HYPHEN_P = 0.5
PRINT_MIXED_P = 0.35
PRINT_TOKEN_P = 0.25
# Share of `print` lines cut tight to their ink (the others keep the font's ascent-descent band).
PRINT_TIGHT_P = 0.4

CATEGORIES = [
    {"id": 1, "name": "char", "supercategory": "text"},
    {"id": 2, "name": "word", "supercategory": "text"},
]
CHAR_CAT, WORD_CAT = 1, 2


# ---------------------------------------------------------------------------
# Line text
# ---------------------------------------------------------------------------


def _random_token(rng: random.Random, symbols: Sequence[str]) -> str:
    """A number, date, amount or run of charset symbols, as found in printed documents."""
    kind = rng.randrange(8)
    n = rng.randint(0, 9999)
    if kind == 0:
        return str(n)
    if kind == 1:
        return f"{rng.randint(0, 999)}.{rng.randint(0, 99):02d}"
    if kind == 2:
        return f"${rng.randint(1, 999)}.{rng.randint(0, 99):02d}"
    if kind == 3:
        return f"{rng.randint(1, 12)}/{rng.randint(1, 28)}/{rng.randint(1700, 1999)}"
    if kind == 4:
        return rng.choice(
            ["({})", "[{}]", "{{{}}}", "<{}>", "#{}", "{}%", "No.{}", "{}:{:02d}"]
        ).format(rng.randint(1, 99), rng.randint(0, 59))
    return "".join(rng.choice(symbols) for _ in range(rng.randint(1, 5)))


def _print_token(rng: random.Random, symbols: Sequence[str]) -> str:
    """A token of technical print: citations, page ranges, sections, figures, measures."""
    kind = rng.randrange(12)
    year = rng.randint(1850, 1999)
    if kind == 0:
        return f"({year})"
    if kind == 1:
        return f"pp. {(a := rng.randint(1, 900))}-{a + rng.randint(1, 40)}"
    if kind == 2:
        return f"{rng.randint(1, 12)}.{rng.randint(1, 9)}"
    if kind == 3:
        return rng.choice(["Fig.", "Table", "Eq.", "Section", "Vol.", "No.", "Ch."]) + (
            f" {rng.randint(1, 40)}"
        )
    if kind == 4:
        return f"[{rng.randint(1, 60)}]" if rng.random() < 0.5 else f"[{rng.randint(1, 60)},"
    if kind == 5:
        return f"{rng.randint(1, 99)}.{rng.randint(0, 999)}%"
    if kind == 6:
        return f"{year};"
    return _random_token(rng, symbols)


def _hyphen_split(word: str, room: int) -> str | None:
    """The head of `word` (>= 2 letters, leaving >= 3) that fits in `room` with its hyphen.

    Breaks after a vowel followed by a consonant where it can, as print hyphenates between
    syllables; None when no such head fits.
    """
    vowels = set("aeiouyAEIOUY")
    best = None
    for i in range(2, min(len(word) - 3, room - 1) + 1):
        if not word[:i].isalpha():
            break
        if word[i - 1] in vowels and word[i] not in vowels:
            best = i
    return None if best is None else word[:best] + "-"


def _english_line(
    rng: random.Random,
    words: list[str],
    max_chars: int,
    symbols: Sequence[str],
    allowed: set[str] | None,
    style: str = "basic",
) -> str:
    target = rng.randint(min(max_chars, max(8, max_chars // 3)), max_chars)
    printed = style == "print"
    mixed = rng.random() < (PRINT_MIXED_P if printed else 0.3)
    token_p = PRINT_TOKEN_P if printed else 0.35
    i = rng.randrange(len(words))
    out: list[str] = []
    length = 0
    while True:
        word = words[i % len(words)]
        i += 1
        if mixed and rng.random() < token_p:
            word = _print_token(rng, symbols) if printed else _random_token(rng, symbols)
            if allowed is not None:
                word = "".join(c for c in word if c in allowed or (printed and c == " "))
            if not word:
                continue
        if length + len(word) + (1 if out else 0) > target:
            if not out:  # a single over-long word: cut it
                out.append(word[:target])
            elif printed and rng.random() < PRINT_HYPHEN_P:
                head = _hyphen_split(word, target - length - 1)
                if head is not None:
                    out.append(head)
            break
        out.append(word)
        length += len(word) + (1 if len(out) > 1 else 0)
    line = " ".join(out)
    if printed:
        u = rng.random()
        if u < PRINT_UPPER_P:
            line = line.upper()
        elif u < PRINT_UPPER_P + PRINT_TITLE_P:
            line = " ".join(w[:1].upper() + w[1:] for w in line.split(" "))
        if allowed is not None:
            line = "".join(c for c in line if c == " " or c in allowed)
    return line


def _japanese_line(rng: random.Random, text: str, max_chars: int, symbols: Sequence[str]) -> str:
    target = rng.randint(min(max_chars, max(4, max_chars // 3)), max_chars)
    if rng.random() < 0.15:
        # Random kana and digits, so that rarer kana occur too.
        return "".join(rng.choice(symbols) for _ in range(target))
    start = rng.randrange(len(text))
    return (text[start:] + text)[:target]


# ---------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------


@dataclass
class _Glyph:
    alpha: np.ndarray  # uint8 coverage, cropped to the drawn pixels
    dx: int  # offset of alpha's top-left from the anchor point
    dy: int
    box: tuple[int, int, int, int] | None  # ink box (x0, y0, x1, y1), relative to the anchor


class _GlyphCache:
    """Renders each (font, size, char, direction) once per run."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, str, bool], _Glyph | None] = {}
        self._raqm = features.check("raqm")

    def get(self, font_path: str, size: int, ch: str, vertical: bool) -> _Glyph | None:
        key = (font_path, size, ch, vertical)
        if key not in self._cache:
            self._cache[key] = self._render(font_path, size, ch, vertical)
        return self._cache[key]

    def layout_kwargs(self, vertical: bool) -> dict:
        if vertical and self._raqm:
            # Vertical glyph forms (rotated brackets and long vowel mark, 、。 moved top right).
            return {"direction": "ttb", "features": ["vert"], "anchor": "mt"}
        if vertical:
            return {"anchor": "mt"}
        return {"anchor": "ls"}

    def advance(self, font_path: str, size: int, ch: str, vertical: bool) -> float:
        font = load_font(font_path, size)
        kw = self.layout_kwargs(vertical)
        kw.pop("anchor")
        if vertical and not self._raqm:
            return float(size)
        return float(font.getlength(ch, **kw))

    def _render(self, font_path: str, size: int, ch: str, vertical: bool) -> _Glyph | None:
        font = load_font(font_path, size)
        kw = self.layout_kwargs(vertical)
        left, top, right, bottom = font.getbbox(ch, **kw)
        pad = 2 + size // 8  # getbbox is not always the ink extent: leave room
        w, h = right - left + 2 * pad, bottom - top + 2 * pad
        im = Image.new("L", (max(w, 1), max(h, 1)), 0)
        ImageDraw.Draw(im).text((pad - left, pad - top), ch, font=font, fill=255, **kw)
        arr = np.asarray(im)
        ys, xs = np.nonzero(arr)
        if len(xs) == 0:
            return None
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        alpha = arr[y0:y1, x0:x1].copy()
        dx, dy = int(x0 - pad + left), int(y0 - pad + top)
        ys, xs = np.nonzero(alpha >= INK_THRESHOLD)
        if len(xs) == 0:
            return None
        box = (
            dx + int(xs.min()),
            dy + int(ys.min()),
            dx + int(xs.max()) + 1,
            dy + int(ys.max()) + 1,
        )
        return _Glyph(alpha, dx, dy, box)


@dataclass
class _Line:
    image: Image.Image
    text: str
    char_boxes: list[tuple[float, float, float, float]]  # x0, y0, x1, y1 in reading order


def _layout(
    glyphs: _GlyphCache,
    font_path: str,
    size: int,
    text: str,
    vertical: bool,
    rng: random.Random,
    style: str = "basic",
) -> tuple[str, list[tuple[int, int, _Glyph]]]:
    """Pen positions of each drawn character; drops characters that draw no ink.

    `print` style: tracking from tight to letter-spaced, word spaces from justified-tight to
    loose, and a small random kerning of each glyph against the one before.
    """
    if style == "print" and not vertical:
        # Glyphs may touch but hardly overlap: overlapping pairs (rn) look like other letters (m),
        # and a localizer taught to split them splits real m's into nn.
        spacing = rng.uniform(-0.02, 0.12) * size
        space_scale = rng.uniform(0.7, 1.8)
        kerning = rng.uniform(0.0, 0.015) * size
    else:
        spacing = rng.uniform(-0.02, 0.08) * size if not vertical else rng.uniform(0.0, 0.15) * size
        space_scale = rng.uniform(0.9, 1.4)
        kerning = 0.0
    pen = 0.0
    kept: list[str] = []
    placed: list[tuple[int, int, _Glyph]] = []
    for ch in text:
        if ch == " ":
            if kept and kept[-1] != " ":
                kept.append(" ")
                pen += glyphs.advance(font_path, size, " ", vertical) * space_scale
            continue
        g = glyphs.get(font_path, size, ch, vertical)
        if g is None:
            continue
        kept.append(ch)
        placed.append((0, round(pen), g) if vertical else (round(pen), 0, g))
        pen += glyphs.advance(font_path, size, ch, vertical) + spacing
        if kerning:
            pen += rng.uniform(-kerning, kerning)
    return "".join(kept).strip(), placed


def _draw_line(
    glyphs: _GlyphCache,
    font_path: str,
    size: int,
    text: str,
    vertical: bool,
    degrade: bool,
    rng: random.Random,
    nprng: np.random.Generator,
    style: str = "basic",
) -> _Line | None:
    printed = style == "print" and not vertical
    text, placed = _layout(glyphs, font_path, size, text, vertical, rng, style)
    if not placed:
        return None
    font = load_font(font_path, size)
    ascent, descent = font.getmetrics()
    ink = np.array(
        [
            [px + g.dx, py + g.dy, px + g.dx + g.alpha.shape[1], py + g.dy + g.alpha.shape[0]]
            for px, py, g in placed
        ]
    )
    ext_x0, ext_y0 = int(ink[:, 0].min()), int(ink[:, 1].min())
    ext_x1, ext_y1 = int(ink[:, 2].max()), int(ink[:, 3].max())
    # print: line segmenters cut from just around the ink to well into the next line's space.
    thickness = round(size * (rng.uniform(1.1, 2.0) if printed else rng.uniform(1.3, 1.6)))
    if vertical:
        # Columns: anchor x=0 is the column centre; the cross extent is symmetric around it.
        half = max(-ext_x0, ext_x1)
        width = max(thickness, 2 * half + 2)
        ox = width // 2 + rng.randint(-1, 1)
        ox = min(max(ox, -ext_x0 + 1), width - ext_x1 - 1)
        margin0, margin1 = rng.randint(2, max(3, size // 2)), rng.randint(2, max(3, size // 2))
        oy = margin0 - ext_y0
        height = (ext_y1 - ext_y0) + margin0 + margin1
        height = max(height, width + 1)  # vertical lines are taller than wide
    elif printed and rng.random() < PRINT_TIGHT_P:
        # Cut to the ink, as segmenters that crop a line to its bounding box do (UW3): a line
        # without descenders ends at its baseline, one in capitals at the cap height.
        margin = [rng.randint(0, max(1, size // 10)) for _ in range(4)]
        oy = margin[0] - ext_y0
        height = (ext_y1 - ext_y0) + margin[0] + margin[1]
        ox = margin[2] - ext_x0
        width = (ext_x1 - ext_x0) + margin[2] + margin[3]
        width = max(width, height + 1)
    else:
        band0, band1 = min(-ascent, ext_y0), max(descent, ext_y1)
        height = max(thickness, band1 - band0 + 2)
        free = height - (band1 - band0)
        if printed:
            oy = round(free * rng.uniform(0.1, 0.9)) - band0
            margin0, margin1 = rng.randint(1, max(2, size)), rng.randint(1, max(2, size))
        else:
            oy = round(free * rng.uniform(0.3, 0.7)) - band0
            margin0, margin1 = rng.randint(2, max(3, size // 2)), rng.randint(2, max(3, size // 2))
        ox = margin0 - ext_x0
        width = (ext_x1 - ext_x0) + margin0 + margin1
        width = max(width, height + 1)  # horizontal lines are wider than tall

    # Slight skew, with enough margin across the reading direction that no ink leaves the image.
    angle = 0.0
    if degrade and rng.random() < 0.5:
        long_side = height if vertical else width
        max_shift = 0.08 * size
        max_angle = min(0.4, math.degrees(math.atan(max_shift / (long_side / 2))))
        angle = rng.uniform(-max_angle, max_angle)
        extra = math.ceil(long_side / 2 * math.tan(math.radians(abs(angle)))) + 1
        if vertical:
            width, ox = width + 2 * extra, ox + extra
        else:
            height, oy = height + 2 * extra, oy + extra

    alpha = np.zeros((height, width), dtype=np.uint8)
    boxes: list[tuple[float, float, float, float]] = []
    for px, py, g in placed:
        x, y = ox + px + g.dx, oy + py + g.dy
        region = alpha[y : y + g.alpha.shape[0], x : x + g.alpha.shape[1]]
        np.maximum(region, g.alpha, out=region)
        bx0, by0, bx1, by1 = g.box
        boxes.append((ox + px + bx0, oy + py + by0, ox + px + bx1, oy + py + by1))

    if printed and degrade:
        paper = 255
        image = Image.fromarray(255 - alpha, mode="L")
    else:
        paper = rng.randint(215, 255) if degrade else 255
        ink_level = rng.randint(0, 60) if degrade else 0
        img = paper - (paper - ink_level) * (alpha.astype(np.float32) / 255.0)
        image = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), mode="L")

    if angle:
        cx, cy = width / 2, height / 2
        image = image.rotate(
            angle, resample=Image.Resampling.BICUBIC, center=(cx, cy), fillcolor=paper
        )
        boxes = [_rotate_box(b, angle, cx, cy, width, height) for b in boxes]
    if printed and degrade:
        # Rotated first, so that the scan effects are not smoothed by the rotation.
        cover = 255 - np.asarray(image)
        image = Image.fromarray(print_look.degrade_print(cover, size, rng, nprng), mode="L")
    elif degrade:
        if rng.random() < 0.4:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
        arr = np.asarray(image).astype(np.float32)
        if rng.random() < 0.6:
            arr = arr + nprng.normal(0.0, rng.uniform(2.0, 10.0), arr.shape)
        if rng.random() < 0.2:
            arr = np.where(arr >= (paper + ink_level) / 2, 255.0, 0.0)
        image = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    return _Line(image.convert("RGB"), text, boxes)


def _rotate_box(
    box: tuple[float, float, float, float],
    angle: float,
    cx: float,
    cy: float,
    width: int,
    height: int,
) -> tuple[float, float, float, float]:
    """Axis-aligned box around `box` rotated like `Image.rotate(angle, center=(cx, cy))`."""
    # Image.rotate turns counter-clockwise on screen: in image coordinates (y down),
    # a point moves by the rotation matrix with -angle.
    a = math.radians(angle)
    cos, sin = math.cos(a), math.sin(a)
    x0, y0, x1, y1 = box
    xs, ys = [], []
    for x, y in ((x0, y0), (x1, y0), (x0, y1), (x1, y1)):
        dx, dy = x - cx, y - cy
        xs.append(cx + dx * cos + dy * sin)
        ys.append(cy - dx * sin + dy * cos)
    return (
        max(0, math.floor(min(xs))),
        max(0, math.floor(min(ys))),
        min(width, math.ceil(max(xs))),
        min(height, math.ceil(max(ys))),
    )


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def default_line_fonts(language: str) -> list[Path]:
    """The default fonts of synthetic lines for `language` (see DEFAULT_LINE_FONTS)."""
    patterns = DEFAULT_LINE_FONTS[get_profile(language).name]
    found = find_fonts(default_font_dirs(), include=patterns)
    basic = load_charset("en") if language == "en" else HIRAGANA[:80] + list("日本語の文字")
    fonts = covering_fonts(found, basic, min_coverage=1.0)
    if not fonts:
        raise EffOCRError(
            f"no font for {language!r} synthetic lines found in {[str(d) for d in default_font_dirs()]}; "
            "install fonts (see docs/fonts.md) or pass font paths"
        )
    return fonts


def synth_lines(
    out_json: str | os.PathLike,
    n_lines: int,
    language: str,
    font_paths: Sequence[str | os.PathLike] | None = None,
    *,
    seed: int,
    font_sizes: Sequence[int],
    max_chars: int,
    vertical_fraction: float,
    degrade: bool,
    text_source: str | os.PathLike | None = None,
    charset: Sequence[str] | None = None,
    style: str,
) -> Path:
    """Generate `n_lines` synthetic line images and their COCO JSON.

    Images go to `images/` beside `out_json` (replaced as a whole); `file_name`s are relative
    to it. The same arguments give byte-identical JSON and images.

    Args:
        out_json: Where the COCO JSON is written.
        n_lines: Number of lines.
        language: Profile name (`en`, `jp`): text, fonts, word boxes, vertical lines.
        font_paths: Fonts to draw with; None uses `default_line_fonts(language)`.
        seed: Seed of every random choice.
        font_sizes: Inclusive range of font sizes in pixels.
        max_chars: Maximum characters per line.
        vertical_fraction: Fraction of vertical lines (only for profiles with vertical text).
        degrade: Add skew, blur, noise and binarisation.
        text_source: UTF-8 text to draw lines from; None uses the shipped text.
        charset: If given, lines contain only these characters (others are left out of the
            text, random tokens are drawn from it), so every line character can be rendered.
        style: `basic` (the demo's lines) or `print` (hyphenation, upper-case lines, varied
            tracking, kerning, line height and margins, and `effocr.synth.degrade`'s scan look).

    Returns:
        The path of the JSON.
    """
    profile = get_profile(language)
    if n_lines < 1:
        raise EffOCRError(f"synth_lines: n_lines must be >= 1, got {n_lines}")
    if style not in STYLES:
        raise EffOCRError(f"synth_lines: style must be one of {list(STYLES)}, got {style!r}")
    lo, hi = int(min(font_sizes)), int(max(font_sizes))
    if lo < 6:
        raise EffOCRError(f"synth_lines: font sizes must be >= 6 px, got {list(font_sizes)}")
    fonts = [Path(p) for p in font_paths] if font_paths else default_line_fonts(language)
    for f in fonts:
        if not f.is_file():
            raise EffOCRError(f"{f}: font file not found")
    text = read_text_source(text_source or shipped_text_path(language))
    allowed = set(charset) if charset is not None else None
    symbols = token_symbols(language)
    if allowed is not None:
        symbols = [c for c in symbols if c in allowed] or [c for c in charset if not c.isspace()]
        text = "".join(c for c in text if c == " " or c in allowed).strip()
        if not text:
            raise EffOCRError("synth_lines: no character of the text source is in the charset")
    # Per font, the characters it really draws (cmap, ink, no placeholder glyph): the others
    # are left out of its lines, so no box is labelled with a character it does not show.
    candidates = sorted(set(text) | set(symbols))
    drawable = {str(f): usable_chars(f, candidates) for f in fonts}
    if profile.spaces:
        words = [w for w in text.split(" ") if w]
    else:
        text = text.replace(" ", "")
    vertical_fraction = vertical_fraction if profile.allows_vertical else 0.0

    out_json = Path(out_json)
    glyphs = _GlyphCache()
    images, annotations = [], []
    with atomic_path(out_json.parent / "images", is_dir=True) as img_dir:
        img_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n_lines):
            rng = random.Random(f"effocr-synth:{seed}:{i}")
            nprng = np.random.default_rng([seed, i])
            line = None
            for _attempt in range(20):
                font = str(rng.choice(fonts))
                size = rng.randint(lo, hi)
                vertical = rng.random() < vertical_fraction
                if profile.spaces:
                    raw = _english_line(rng, words, max_chars, symbols, allowed, style)
                else:
                    raw = _japanese_line(rng, text, max_chars, symbols)
                raw = "".join(c for c in raw if c == " " or c in drawable[font])
                line = _draw_line(glyphs, font, size, raw, vertical, degrade, rng, nprng, style)
                if line is not None and len(line.char_boxes) >= 2:
                    break
            if line is None:
                raise EffOCRError(
                    f"synth_lines: could not draw line {i} with fonts {[f.name for f in fonts]}"
                )
            image_id = i + 1
            file_name = f"line_{image_id:06d}.png"
            line.image.save(img_dir / file_name, format="PNG")
            images.append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "width": line.image.width,
                    "height": line.image.height,
                    "text": line.text,
                    "font": Path(font).stem,
                    "font_size": size,
                }
            )
            for box in line.char_boxes:
                annotations.append(_annotation(len(annotations) + 1, image_id, CHAR_CAT, box))
            if profile.spaces:
                for box in _word_boxes(line.text, line.char_boxes):
                    annotations.append(_annotation(len(annotations) + 1, image_id, WORD_CAT, box))
        coco = {
            "info": {
                "description": f"EffOCR synthetic {language} lines",
                "generator": "effocr.synth.lines.synth_lines",
                "seed": seed,
                "fonts": [f.stem for f in fonts],
                "font_sizes": [lo, hi],
                "max_chars": max_chars,
                "vertical_fraction": vertical_fraction,
                "degrade": degrade,
                "style": style,
            },
            "images": images,
            "annotations": annotations,
            "categories": CATEGORIES,
        }
    # The JSON last: it is the declared output, so it only appears once the images are in place.
    write_json(out_json, coco, indent=None)
    LOG.info("wrote %d lines (%d boxes) to %s", len(images), len(annotations), out_json)
    return out_json


def _annotation(
    ann_id: int, image_id: int, cat: int, box: tuple[float, float, float, float]
) -> dict:
    x0, y0, x1, y1 = (int(v) for v in box)
    w, h = x1 - x0, y1 - y0
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat,
        "bbox": [x0, y0, w, h],
        "area": w * h,
        "iscrowd": 0,
        "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
    }


def _word_boxes(
    text: str, char_boxes: list[tuple[float, float, float, float]]
) -> list[tuple[float, ...]]:
    """Union of the char boxes of each space-separated word."""
    out = []
    i = 0
    for word in text.split(" "):
        if not word:
            continue
        bs = char_boxes[i : i + len(word)]
        i += len(word)
        out.append(
            (
                min(b[0] for b in bs),
                min(b[1] for b in bs),
                max(b[2] for b in bs),
                max(b[3] for b in bs),
            )
        )
    return out


# ---------------------------------------------------------------------------
# Command line: effocr synth-lines
# ---------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr synth-lines` (flags override the config's `synth` section)."""
    parser.add_argument(
        "--config", help="workflow config (YAML); its synth/fonts sections give the defaults"
    )
    parser.add_argument("--out", help="output COCO JSON (default: synth.coco_json)")
    parser.add_argument("--n-lines", type=int)
    parser.add_argument("--language", choices=["en", "jp"])
    parser.add_argument("--fonts", nargs="+", help="font files or directories")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--font-sizes", type=int, nargs=2, metavar=("MIN", "MAX"))
    parser.add_argument("--max-chars", type=int)
    parser.add_argument("--vertical-fraction", type=float)
    parser.add_argument("--no-degrade", action="store_true", help="clean renders, no scan effects")
    parser.add_argument("--text-source", help="UTF-8 text to draw lines from")
    parser.add_argument(
        "--charset",
        help="charset name or file: lines contain only its characters (default: the config's render charset)",
    )


def line_fonts_from_config(
    charset: Sequence[str], *, fonts: FontsSection, synth: SynthSection, run: RunSection
) -> list[Path]:
    """Fonts of synthetic lines for the config sections `fonts` (`dirs`, `include`,
    `exclude`, `min_coverage`), `synth` (`line_fonts`) and `run` (`language`).

    `synth.line_fonts` set: the fonts the `fonts` section selects whose stems match one of its
    globs. Otherwise, with `fonts.dirs` and `fonts.include` unset, the curated
    `default_line_fonts` (regular text faces) minus `fonts.exclude`; else the fonts the `fonts`
    section selects. Either way only fonts covering `fonts.min_coverage` of `charset` are kept.
    """
    line_fonts = synth.line_fonts
    if line_fonts is not None:
        found = find_fonts(section_fonts(fonts), include=line_fonts)
    elif fonts.dirs is None and not fonts.include:
        found = [
            f for f in default_line_fonts(run.language) if find_fonts([f], exclude=fonts.exclude)
        ]
    else:
        found = section_fonts(fonts)
    found = covering_fonts(found, charset, min_coverage=fonts.min_coverage)
    if not found:
        raise EffOCRError(
            f"no font for synthetic lines covers {fonts.min_coverage:.0%} of the charset "
            f"(fonts: dirs={_plain(fonts.dirs)}, include={_plain(fonts.include)}, "
            f"synth.line_fonts={_plain(line_fonts)}); see docs/fonts.md"
        )
    return found


def _plain(value: tuple | None) -> list | None:
    """A section's tuple as the list the config file has (for messages)."""
    return None if value is None else list(value)


def line_charset(*, render: RenderSection, synth: SynthSection, run: RunSection) -> list[str]:
    """The charset of synthetic lines: the render charset (`render.charset`,
    `render.charset_from_text` with `synth.text_source`, `run.language`) without its
    ligatures (lines draw single characters)."""
    return resolve_charset(
        render.charset, render.charset_from_text, run.language, synth.text_source, ()
    )


def synth_lines_from_config(
    out_json: str | os.PathLike | None,
    *,
    synth: SynthSection,
    fonts: FontsSection,
    render: RenderSection,
    run: RunSection,
) -> Path:
    """`synth_lines` with the config sections `synth`, `fonts` (the keys of
    `line_fonts_from_config`), `render` (`charset`, `charset_from_text`) and `run`; written to
    `out_json`, or `synth.coco_json` when None.

    Lines contain only characters of the render charset (`effocr.synth.charsets.resolve_charset`),
    so every character in them has renders.
    """
    charset = line_charset(render=render, synth=synth, run=run)
    return synth_lines(
        out_json or synth.coco_json,
        synth.n_lines,
        language=run.language,
        font_paths=line_fonts_from_config(charset, fonts=fonts, synth=synth, run=run),
        seed=run.seed,
        font_sizes=list(synth.font_sizes),
        max_chars=synth.max_chars,
        vertical_fraction=synth.vertical_fraction,
        degrade=synth.degrade,
        text_source=synth.text_source,
        charset=charset,
        style=synth.style,
    )


def run(args: argparse.Namespace) -> int:
    """Run `effocr synth-lines`."""
    from effocr.config import config_sections, load_config

    overrides: dict = {"synth": {}}
    for key in ("n_lines", "font_sizes", "max_chars", "vertical_fraction", "text_source"):
        if getattr(args, key) is not None:
            overrides["synth"][key] = getattr(args, key)
    if args.no_degrade:
        overrides["synth"]["degrade"] = False
    if args.language:
        overrides["language"] = args.language
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.charset:
        overrides["render"] = {"charset": args.charset, "charset_from_text": False}
    if args.fonts:
        overrides["fonts"] = {"dirs": args.fonts, "include": []}
    sections = config_sections(load_config(args.config, overrides))
    print(synth_lines_from_config(args.out, **sections.pick("synth", "fonts", "render", "run")))
    return 0
