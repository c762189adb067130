"""Font discovery, character coverage (cmap) and the placeholder-glyph ("tofu") filter."""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from effocr.profiles import SYSTEM_FONT_DIRS
from effocr.utils import EffOCRError

LOG = logging.getLogger(__name__)

FONT_SUFFIXES = (".ttf", ".otf", ".ttc")

# A render seen more than this many times in one font is a placeholder glyph (as the original).
TOFU_MAX_REPEATS = 2


def matplotlib_font_dir() -> Path | None:
    """The directory of the TrueType fonts matplotlib ships (DejaVu, STIX, Computer Modern)."""
    try:
        import matplotlib
    except ImportError:  # matplotlib is a dependency, but fonts must not hinge on it
        return None
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return path if path.is_dir() else None


def default_font_dirs() -> list[Path]:
    """Font directories used when the config gives none: matplotlib's, then the system's."""
    dirs: list[Path] = []
    mpl = matplotlib_font_dir()
    if mpl is not None:
        dirs.append(mpl)
    for d in SYSTEM_FONT_DIRS:
        path = Path(os.path.expanduser(d))
        if path.is_dir():
            dirs.append(path)
    return dirs


def _matches(stem: str, patterns: Iterable[str]) -> bool:
    stem = stem.lower()
    return any(fnmatch.fnmatchcase(stem, p.lower()) for p in patterns)


def find_fonts(
    dirs: Iterable[str | os.PathLike] | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> list[Path]:
    """Font files (.ttf/.otf/.ttc, recursively) in `dirs`, in a deterministic order.

    Directories are scanned in the given order, files sorted by path within each. A font file
    reached twice (symlinks) or a second file with the same stem is skipped: renders are named
    by font stem, so stems must be unique. A missing directory is skipped with a warning.

    Args:
        dirs: Directories (or single font files); None means `default_font_dirs()`.
        include: If not empty, keep only fonts whose file stem matches one of these globs
            (case-insensitive).
        exclude: Drop fonts whose file stem matches one of these globs.
    """
    dirs = default_font_dirs() if dirs is None else [Path(os.path.expanduser(str(d))) for d in dirs]
    found: list[Path] = []
    seen_real: set[Path] = set()
    seen_stem: set[str] = set()
    for d in dirs:
        d = Path(d)
        if d.is_file():
            candidates = [d]
        elif d.is_dir():
            candidates = sorted(
                (p for p in d.rglob("*") if p.suffix.lower() in FONT_SUFFIXES),
                key=lambda p: str(p.relative_to(d)),
            )
        else:
            LOG.warning("font directory %s does not exist; skipped", d)
            continue
        for path in candidates:
            try:
                real = path.resolve(strict=True)
            except OSError:  # a dangling symlink
                continue
            if not real.is_file() or real in seen_real or path.stem in seen_stem:
                continue
            if include and not _matches(path.stem, include):
                continue
            if exclude and _matches(path.stem, exclude):
                continue
            seen_real.add(real)
            seen_stem.add(path.stem)
            found.append(path)
    return found


@functools.lru_cache(maxsize=512)
def _font_chars_cached(path: str, _mtime: float) -> frozenset[str]:
    from fontTools.ttLib import TTFont

    try:
        # Face 0 of a collection: the face Pillow renders by default.
        kwargs = {"fontNumber": 0} if path.lower().endswith(".ttc") else {}
        with TTFont(path, lazy=True, **kwargs) as font:
            cmap = font.getBestCmap() or {}
    except Exception as exc:  # fontTools raises many types for broken files
        raise EffOCRError(f"{path}: cannot read the font's character map: {exc}") from exc
    return frozenset(chr(c) for c in cmap)


def section_fonts(fonts: Any) -> list[Path]:
    """The fonts a config `fonts` section selects (`dirs`, null for the defaults; `include`,
    `exclude`), before any charset coverage is asked of them."""
    return find_fonts(fonts.dirs, include=fonts.include, exclude=fonts.exclude)


def font_chars(path: str | os.PathLike) -> set[str]:
    """The characters a font maps to a glyph (its best Unicode cmap; face 0 of a .ttc)."""
    p = Path(path)
    try:
        mtime = p.stat().st_mtime
    except OSError as exc:
        raise EffOCRError(f"{p}: font file not found") from exc
    return set(_font_chars_cached(str(p), mtime))


def covering_fonts(
    font_paths: Iterable[str | os.PathLike], chars: Iterable[str], min_coverage: float
) -> list[Path]:
    """Fonts whose cmap covers at least `min_coverage` of the characters of `chars` (labels;
    a multi-character one such as a ligature counts as its letters; unreadable fonts skipped)."""
    wanted = {c for label in chars for c in label if not c.isspace()}
    out: list[Path] = []
    for path in font_paths:
        try:
            have = font_chars(path)
        except EffOCRError as exc:
            LOG.warning("%s", exc)
            continue
        if not wanted or len(wanted & have) / len(wanted) >= min_coverage:
            out.append(Path(path))
    return out


@functools.lru_cache(maxsize=256)
def load_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    """A Pillow font (cached); raises `EffOCRError` naming the file when it cannot be loaded."""
    try:
        return ImageFont.truetype(path, size)
    except OSError as exc:
        raise EffOCRError(f"{path}: cannot load font: {exc}") from exc


def _ink_hash(font: ImageFont.FreeTypeFont, char: str) -> str | None:
    """Hash of a char's rendered ink, or None when it draws nothing."""
    left, top, right, bottom = font.getbbox(char)
    w, h = max(1, right - left + 2), max(1, bottom - top + 2)
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).text((1 - left, 1 - top), char, font=font, fill=255)
    arr = np.asarray(im)
    ys, xs = np.nonzero(arr)
    if len(xs) == 0:
        return None
    ink = arr[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    return hashlib.sha1(ink.tobytes() + str(ink.shape).encode()).hexdigest()


def tofu_filter(images: dict[str, Image.Image | np.ndarray | None]) -> set[str]:
    """Characters whose render is real: not empty, and not a placeholder shared by > 2 chars.

    Args:
        images: char -> its render in one font (None for an empty render).
    """
    hashes: dict[str, str] = {}
    for ch, img in images.items():
        if img is None:
            continue
        arr = np.asarray(img)
        hashes[ch] = hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest()
    counts = Counter(hashes.values())
    return {ch for ch, h in hashes.items() if counts[h] <= TOFU_MAX_REPEATS}


def usable_chars(font_path: str | os.PathLike, chars: Iterable[str], size: int = 32) -> set[str]:
    """The chars of `chars` this font really draws: in its cmap, with ink, and not tofu.

    Whitespace is never usable (there are no space glyphs to recognise).
    """
    covered = font_chars(font_path)
    font = load_font(str(font_path), size)
    hashes: dict[str, str | None] = {}
    for ch in chars:
        if ch.isspace() or any(c not in covered for c in ch):
            continue
        hashes[ch] = _ink_hash(font, ch)
    counts = Counter(h for h in hashes.values() if h is not None)
    return {ch for ch, h in hashes.items() if h is not None and counts[h] <= TOFU_MAX_REPEATS}
