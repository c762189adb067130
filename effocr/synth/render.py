"""Glyph renders: every charset character in every font, as the recognizer's synthetic data.

Two render modes, matching how real crops look at inference:

* ``ascender`` (English): the glyph keeps its place in the line. The image spans the font's
  full line height (ascent line to descent line) and the ink's width plus padding, so ``,``
  sits low and ``'`` high, like full-height crops of a text line.
* ``centered`` (Japanese): the ink, plus padding, centred in a white square.

`render_glyphs` writes ``out_dir/U+XXXX/<font stem>.png`` and a manifest CSV (columns of
docs/architecture.md). Placeholder glyphs ("tofu": one image shared by more than two
characters of a font) and empty renders are left out.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import random
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from effocr.config import FontsSection, RenderSection, RunSection
from effocr.profiles import get_profile
from effocr.synth.charsets import resolve_charset, write_charset
from effocr.synth.fonts import (
    covering_fonts,
    default_font_dirs,
    font_chars,
    load_font,
    section_fonts,
    tofu_filter,
)
from effocr.utils import EffOCRError, atomic_path, label_to_codepoints

LOG = logging.getLogger(__name__)

MODES = ("ascender", "centered")
MANIFEST_COLUMNS = ["path", "codepoints", "source", "origin", "split"]


def _ink(font_path: str, char: str, size: int) -> tuple[np.ndarray, int, int] | None:
    """Coverage of `char` and the offset of its top-left from the pen (left, ascent line)."""
    font = load_font(font_path, size)
    left, top, right, bottom = font.getbbox(char, anchor="la")
    pad = 2 + size // 8  # getbbox is not always the ink extent
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    im = Image.new("L", (max(w, 1), max(h, 1)), 0)
    ImageDraw.Draw(im).text((pad - left, pad - top), char, font=font, fill=255, anchor="la")
    arr = np.asarray(im)
    ys, xs = np.nonzero(arr)
    if len(xs) == 0:
        return None
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return arr[y0:y1, x0:x1], int(x0 - pad + left), int(y0 - pad + top)


def _to_rgb(alpha: np.ndarray) -> Image.Image:
    return Image.fromarray(255 - alpha, mode="L").convert("RGB")


def render_glyph(
    font_path: str | os.PathLike,
    char: str,
    size: int,
    mode: str,
    padding: float,
) -> Image.Image:
    """Render one character, black on white (RGB).

    Args:
        font_path: Font file.
        char: The character (or multi-code-point label).
        size: Font size in pixels.
        mode: ``ascender`` (full line height, ink width + padding) or ``centered`` (ink centred
            in a square).
        padding: Padding around the ink as a fraction of `size` (horizontal only in
            ``ascender`` mode).

    Raises:
        EffOCRError: for an unknown mode or a character the font draws no ink for.
    """
    if mode not in MODES:
        raise EffOCRError(f"unknown render mode {mode!r}; known: {', '.join(MODES)}")
    ink = _ink(str(font_path), char, size)
    if ink is None:
        raise EffOCRError(f"{font_path}: {label_to_codepoints(char)} draws no ink")
    alpha, dx, dy = ink
    pad = round(padding * size)
    h, w = alpha.shape
    if mode == "ascender":
        ascent, descent = load_font(str(font_path), size).getmetrics()
        # Rows from the ascent line to the descent line; grown only if ink sticks out.
        top, bottom = min(0, dy), max(ascent + descent, dy + h)
        canvas = np.zeros((bottom - top, w + 2 * pad), dtype=np.uint8)
        canvas[dy - top : dy - top + h, pad : pad + w] = alpha
        return _to_rgb(canvas)
    side = max(h, w) + 2 * pad
    canvas = np.zeros((side, side), dtype=np.uint8)
    y, x = (side - h) // 2, (side - w) // 2
    canvas[y : y + h, x : x + w] = alpha
    return _to_rgb(canvas)


def _render_font(
    font_path: str, charset: Sequence[str], out_dir: str, size: int, padding: float, mode: str
) -> list[tuple[str, str]]:
    """Render the charset characters one font covers; returns (label, relative path) rows."""
    covered = font_chars(font_path)
    stem = Path(font_path).stem
    renders: dict[str, Image.Image] = {}
    for label in charset:
        if label.isspace() or any(c not in covered for c in label):
            continue
        try:
            renders[label] = render_glyph(font_path, label, size, mode, padding)
        except EffOCRError:
            continue  # in the cmap but no ink: nothing to learn from
    real = tofu_filter(renders)
    rows = []
    for label, im in renders.items():
        if label not in real:
            continue
        code = label_to_codepoints(label)
        rel = Path(code) / f"{stem}.png"
        (Path(out_dir) / code).mkdir(parents=True, exist_ok=True)
        im.save(Path(out_dir) / rel, format="PNG")
        rows.append((label, rel.as_posix()))
    dropped = len(renders) - len(rows)
    LOG.info("%s: %d renders (%d placeholder glyphs dropped)", stem, len(rows), dropped)
    return rows


def render_glyphs(
    charset: Sequence[str],
    font_paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    manifest_path: str | os.PathLike,
    *,
    size: int,
    padding: float,
    mode: str,
    seed: int,
    max_fonts: int | None = None,
    keep_fonts: Sequence[str] = (),
    workers: int = 1,
) -> Path:
    """Render every charset character in every font that covers it, and write the manifest.

    Args:
        charset: Labels to render.
        font_paths: Fonts, in order (font stems must be unique).
        out_dir: Glyph folder (replaced as a whole): ``out_dir/U+XXXX/<font stem>.png``.
        manifest_path: CSV with path (relative to its own folder), codepoints, source=render,
            origin=font stem, split=train.
        size, padding, mode: See `render_glyph`.
        seed: Seeds the choice of fonts when `max_fonts` is set.
        max_fonts: Use at most this many fonts (`keep_fonts` always kept, the rest drawn by seed).
        keep_fonts: Font stems that must stay when `max_fonts` trims the list (the reference).
        workers: Processes rendering fonts in parallel.

    Returns:
        The manifest path.
    """
    if mode not in MODES:
        raise EffOCRError(f"unknown render mode {mode!r}; known: {', '.join(MODES)}")
    fonts = select_fonts([Path(p) for p in font_paths], max_fonts, keep_fonts, seed=seed)
    if not fonts:
        raise EffOCRError("render_glyphs: no fonts to render with")
    stems = [f.stem for f in fonts]
    if len(set(stems)) != len(stems):
        raise EffOCRError(f"render_glyphs: font stems must be unique, got {stems}")
    out_dir, manifest_path = Path(out_dir), Path(manifest_path)
    rel_root = Path(os.path.relpath(out_dir, manifest_path.parent)).as_posix()
    rows: list[dict[str, str]] = []
    with atomic_path(out_dir, is_dir=True) as tmp_dir:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        args = [(str(f), list(charset), str(tmp_dir), size, padding, mode) for f in fonts]
        if workers > 1 and len(fonts) > 1:
            with ProcessPoolExecutor(max_workers=min(workers, len(fonts))) as pool:
                results = list(pool.map(_render_font, *zip(*args, strict=True)))
        else:
            results = [_render_font(*a) for a in args]
        for font, font_rows in zip(fonts, results, strict=True):
            for label, rel in font_rows:
                rows.append(
                    {
                        "path": f"{rel_root}/{rel}",
                        "codepoints": label_to_codepoints(label),
                        "source": "render",
                        "origin": font.stem,
                        "split": "train",
                    }
                )
    if not rows:
        raise EffOCRError(f"render_glyphs: no character of the charset is drawn by fonts {stems}")
    with atomic_path(manifest_path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    rendered = {row["codepoints"] for row in rows}
    missing = [c for c in charset if not c.isspace() and label_to_codepoints(c) not in rendered]
    LOG.info(
        "%d renders of %d/%d charset labels in %d fonts -> %s",
        len(rows),
        len(rendered),
        len(charset),
        len(fonts),
        manifest_path,
    )
    if missing:
        shown = " ".join(label_to_codepoints(c) for c in missing[:20])
        LOG.warning("%d charset labels have no render in any font: %s ...", len(missing), shown)
    return manifest_path


def select_fonts(
    fonts: Sequence[Path], max_fonts: int | None, keep: Sequence[str] = (), *, seed: int
) -> list[Path]:
    """At most `max_fonts` of `fonts` (original order kept): stems in `keep` first, the rest by seed."""
    fonts = list(fonts)
    if max_fonts is None or len(fonts) <= max_fonts:
        return fonts
    kept = [f for f in fonts if f.stem in set(keep)][:max_fonts]
    rest = [f for f in fonts if f not in kept]
    chosen = set(kept) | set(random.Random(seed).sample(rest, max_fonts - len(kept)))
    return [f for f in fonts if f in chosen]


# ---------------------------------------------------------------------------
# From the workflow config
# ---------------------------------------------------------------------------


def render_mode(render: RenderSection, language: str) -> str:
    """`render.mode`, else the language profile's."""
    return render.mode or get_profile(language).render_mode


def reference_font_stems(fonts: FontsSection, language: str) -> list[str]:
    """Stems named by `fonts.reference`, else the profile's preferred reference fonts."""
    return list(fonts.reference or get_profile(language).reference_fonts)


def resolve_fonts(fonts: FontsSection, charset: Sequence[str]) -> list[Path]:
    """Fonts of the `fonts` section covering at least `fonts.min_coverage` of `charset`.

    Raises:
        EffOCRError: when no font qualifies.
    """
    found = covering_fonts(section_fonts(fonts), charset, min_coverage=fonts.min_coverage)
    if not found:
        dirs = list(fonts.dirs) if fonts.dirs is not None else default_font_dirs()
        raise EffOCRError(
            f"no font in {[str(d) for d in dirs]} (include={list(fonts.include)}, "
            f"exclude={list(fonts.exclude)}) covers {fonts.min_coverage:.0%} of the charset; "
            "see docs/fonts.md"
        )
    return found


# ---------------------------------------------------------------------------
# Command line: effocr render-glyphs
# ---------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr render-glyphs` (flags override the config)."""
    parser.add_argument(
        "--config", help="workflow config (YAML): fonts/render sections give the defaults"
    )
    parser.add_argument("--out-dir", required=True, help="glyph folder to write")
    parser.add_argument("--manifest", help="manifest CSV (default: OUT_DIR/../manifest.csv)")
    parser.add_argument("--charset", help="charset name or file (default: the config's)")
    parser.add_argument(
        "--fonts", nargs="+", help="font files or directories (default: the config's)"
    )
    parser.add_argument("--size", type=int)
    parser.add_argument("--padding", type=float)
    parser.add_argument("--mode", choices=MODES)
    parser.add_argument("--charset-out", help="also write the resolved charset to this file")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes rendering fonts in parallel"
    )


def render_glyphs_from_config(
    out_dir: str | os.PathLike,
    manifest_path: str | os.PathLike,
    charset_path: str | os.PathLike | None = None,
    *,
    render: RenderSection,
    fonts: FontsSection,
    run: RunSection,
    text_source: str | None,
    workers: int = 1,
) -> Path:
    """`render_glyphs` with the config sections `render`, `fonts` and `run` (`seed`,
    `language`).

    Args:
        charset_path: If given, the resolved charset is also written there (code points).
        text_source: `synth.text_source`, read with `render.charset_from_text` (else None).
    """
    charset = resolve_charset(
        render.charset, render.charset_from_text, run.language, text_source, render.ligatures
    )
    manifest = render_glyphs(
        charset,
        resolve_fonts(fonts, charset),
        out_dir,
        manifest_path,
        size=render.size,
        padding=render.padding,
        mode=render_mode(render, run.language),
        seed=run.seed,
        max_fonts=fonts.max_fonts,
        keep_fonts=reference_font_stems(fonts, run.language),
        workers=workers,
    )
    if charset_path is not None:
        write_charset(
            charset_path,
            charset,
            f"Render charset of this run ({len(charset)} labels), see render.charset.",
        )
    return manifest


def run(args: argparse.Namespace) -> int:
    """Run `effocr render-glyphs`."""
    from effocr.config import config_sections, load_config

    overrides: dict = {"render": {}}
    for key in ("size", "padding", "mode"):
        if getattr(args, key) is not None:
            overrides["render"][key] = getattr(args, key)
    if args.charset:
        overrides["render"].update(charset=args.charset, charset_from_text=False)
    if args.fonts:
        overrides["fonts"] = {"dirs": args.fonts, "include": []}
    config = load_config(args.config, overrides)
    sections = config_sections(config)
    out_dir = Path(args.out_dir)
    manifest = Path(args.manifest) if args.manifest else out_dir.parent / "manifest.csv"
    text_source = config["synth"]["text_source"] if config["render"]["charset_from_text"] else None
    print(
        render_glyphs_from_config(
            out_dir,
            manifest,
            args.charset_out,
            **sections.pick("render", "fonts", "run"),
            text_source=text_source,
            workers=args.workers,
        )
    )
    return 0
