"""New characters without retraining: render them, embed them with the bundle's recognizer, add
them to its reference index (`effocr extend-index`).

The recognizer is a metric: a character it never saw in training still lands near its own
renders, so a class is added by rendering it in a few fonts, embedding the renders with the
bundle's ONNX recognizer (the model inference runs, int8 or float32) and appending the mean
unit embedding to the index. The input bundle is read only; the extended copy is written as a
whole to a new directory, with a manifest whose checksums cover the new index.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from effocr.bundle import MANIFEST, Manifest
from effocr.config import FontsSection, RenderSection, RunSection
from effocr.recognizer.reference import ReferenceIndex
from effocr.utils import EffOCRError, atomic_path, label_to_codepoints

LOG = logging.getLogger(__name__)


@dataclass
class ExtendResult:
    """What `extend_index` did: the classes added, those already present, the fonts per class,
    the size of the new index, and the characters no font draws (left out, `skip_undrawn`)."""

    added: list[str]
    present: list[str]
    fonts: dict[str, list[str]]
    count: int
    undrawn: list[str] = field(default_factory=list)


def new_labels(chars: Sequence[str], present: Sequence[str]) -> tuple[list[str], list[str]]:
    """`chars` split into those the index lacks and those it has (order kept, duplicates and
    whitespace dropped: a space is never a reference class, the localizer's gaps make it)."""
    have = set(present)
    added: list[str] = []
    already: list[str] = []
    for c in dict.fromkeys(chars):
        if c.isspace():
            continue
        (already if c in have else added).append(c)
    return added, already


def render_squares(
    label: str,
    fonts: Sequence[Path],
    input_size: int,
    size: int,
    padding: float,
    mode: str,
) -> tuple[np.ndarray, list[str]]:
    """Renders of `label` in every font that draws it, as (N, S, S, 3) uint8 glyph squares.

    The same pad-to-square + resize that the reference index's renders go through
    (`transforms.resize_square(pad_square(...))`).
    """
    from effocr.recognizer.transforms import as_rgb_array, pad_square, resize_square
    from effocr.synth.fonts import font_chars
    from effocr.synth.render import render_glyph

    squares, used = [], []
    for font in fonts:
        if not set(label) <= font_chars(font):
            continue
        try:
            img = render_glyph(font, label, size=size, mode=mode, padding=padding)
        except EffOCRError:  # in the cmap but drawn without ink (an empty glyph)
            continue
        squares.append(resize_square(pad_square(as_rgb_array(img)), input_size))
        used.append(font.stem)
    if not squares:
        return np.zeros((0, input_size, input_size, 3), dtype=np.uint8), []
    return np.stack(squares), used


def class_vectors(
    stage: Any,
    labels: Sequence[str],
    fonts: Sequence[Path],
    input_size: int,
    size: int,
    padding: float,
    mode: str,
) -> tuple[np.ndarray, dict[str, list[str]], list[str]]:
    """One unit embedding per label: the mean of its renders' embeddings by `stage` (an
    `effocr.pipeline.RecognizerStage`), as `build_reference_index` makes them from renders.

    Returns:
        ``(vectors, fonts_used, undrawn)``: (N, D) float32 rows for the labels some font draws
        (in order), the font stems each was rendered in, and the labels no font draws.
    """
    vectors, used_fonts, undrawn = [], {}, []
    for label in labels:
        squares, used = render_squares(label, fonts, input_size, size, padding, mode)
        if not used:
            undrawn.append(label)
            continue
        mean = stage(squares).mean(axis=0)
        vectors.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        used_fonts[label] = used
    dim = stage.session.get_outputs()[0].shape[-1]
    out = np.asarray(vectors, np.float32).reshape(len(vectors), -1 if vectors else dim)
    return out, used_fonts, undrawn


def extend_index(
    bundle_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    chars: Sequence[str],
    fonts: Sequence[Path],
    size: int,
    padding: float,
    mode: str,
    verify: bool = True,
    skip_undrawn: bool = False,
) -> ExtendResult:
    """Write a copy of the bundle at `bundle_dir` to `out_dir` with `chars` added to its index.

    Args:
        bundle_dir: The bundle to extend (not modified).
        out_dir: The new bundle (written as a whole; an earlier effocr output is replaced).
        chars: Characters to add; those the index has already are left as they are.
        fonts: Font files to render them in; a character is rendered in every font that has it,
            and its class embedding is the mean over those renders.
        size, padding, mode: How the renders are drawn (`render.size`, `render.padding`,
            `render.mode` of the config the bundle was trained with).
        verify: Check the bundle's checksums before reading it.
        skip_undrawn: Leave out characters that no font draws (logged, in the result) instead
            of failing.

    Raises:
        EffOCRError: for an unreadable bundle, an `out_dir` that is the bundle itself, or
            characters that no font draws (all named; unless `skip_undrawn`).
    """
    from effocr.onnx_session import make_session
    from effocr.pipeline import RecognizerStage

    bundle, out = Path(bundle_dir), Path(out_dir)
    if out.resolve() == bundle.resolve():
        raise EffOCRError(f"{out}: the output must be a new directory, not the bundle itself")
    manifest = Manifest.read(bundle, verify=verify)
    index = ReferenceIndex.load(bundle)
    added, present = new_labels(chars, index.labels)
    rec = manifest.recognizer
    stage = RecognizerStage(
        make_session(bundle / rec["file"], what="recognizer"),
        rec["mean"],
        rec["std"],
        int(manifest.infer["batch_size"]),
    )
    vectors, used_fonts, undrawn = class_vectors(
        stage, added, fonts, rec["input_size"], size, padding, mode
    )
    if undrawn:
        names = ", ".join(f"{c!r} ({label_to_codepoints(c)})" for c in undrawn)
        tried = ", ".join(f.name for f in fonts) or "none"
        if not skip_undrawn:
            raise EffOCRError(f"no font draws {names}; fonts tried: {tried}")
        LOG.warning("not added, no font draws %s; fonts tried: %s", names, tried)
        added = [c for c in added if c not in undrawn]
    embs = np.concatenate([index.vectors(), vectors.reshape(-1, index.dim)])
    meta = {**index.meta, "extended": {**index.meta.get("extended", {}), **used_fonts}}
    # The old classes keep their prototypes; an added class is scored by its vector alone.
    extended = ReferenceIndex.build(embs, index.labels + added, meta, index.prototypes)
    with atomic_path(out, is_dir=True) as tmp:
        for item in bundle.iterdir():
            if item.is_file() and item.name != MANIFEST:
                shutil.copy2(item, tmp / item.name)
        extended.write_files(tmp)
        manifest.index["count"] = len(extended)
        manifest.write(tmp)
    LOG.info("%s: %d classes added, %d present already", out, len(added), len(present))
    return ExtendResult(added, present, used_fonts, len(extended), undrawn)


def extend_for_texts(
    bundle_dir: str | os.PathLike,
    coco_json: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    fonts: FontsSection,
    render: RenderSection,
    run: RunSection,
) -> ExtendResult:
    """Rule extend_align_bundle: the bundle with every character of the lines' transcriptions
    (image `text` of the raw COCO) that its index lacks, rendered in the configured fonts.

    A base bundle aligning a dataset with new characters (German `ß` for an English base) would
    otherwise only place them by geometry; embedded by the base's own encoder they are
    recognised like the others. A character no font draws is left out (logged), as it was.
    """
    from effocr.data.coco import load_coco
    from effocr.synth.fonts import section_fonts
    from effocr.synth.render import render_mode

    # extend_index keeps only the characters the index lacks (new_labels).
    texts = "".join(im.get("text") or "" for im in load_coco(coco_json)["images"])
    result = extend_index(
        bundle_dir,
        out_dir,
        texts,
        # Every font the section selects: each character is drawn by the fonts that have it
        # (render_squares), so no coverage of a charset is asked of them.
        section_fonts(fonts),
        size=render.size,
        padding=render.padding,
        mode=render_mode(render, run.language),
        skip_undrawn=True,
    )
    LOG.info(
        "characters of %s that %s lacked, added: %s",
        coco_json,
        bundle_dir,
        "".join(result.added) or "none",
    )
    return result


# ---------------------------------------------------------------------------
# Command line: effocr extend-index
# ---------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr extend-index`."""
    parser.add_argument("bundle", help="bundle directory to extend (read only)")
    parser.add_argument("--output", required=True, help="directory of the extended bundle")
    parser.add_argument("--chars", default="", help="characters to add, e.g. 'ſßäöü'")
    parser.add_argument("--chars-file", help="a UTF-8 file whose characters are added too")
    parser.add_argument(
        "--ligatures",
        nargs="+",
        metavar="LIGATURE",
        help="ligature classes to add, read as all their letters, e.g. fi fl ffi "
        "(render.ligatures); each letter must be in the index or in --chars",
    )
    parser.add_argument(
        "--fonts",
        nargs="+",
        help="font files or directories to render in (default: the fonts of the config)",
    )
    parser.add_argument(
        "--config",
        default="config/config.yaml",
        help="the workflow config the bundle was trained with: render size, padding and mode, "
        "and the fonts when --fonts is not given",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the bundle's checksum check")


def run(args: argparse.Namespace) -> int:
    """Entry point of `effocr extend-index`."""
    from effocr.config import config_sections, load_config
    from effocr.synth.charsets import add_ligatures
    from effocr.synth.fonts import find_fonts
    from effocr.synth.render import render_mode, resolve_fonts

    chars = args.chars
    if args.chars_file:
        try:
            chars += Path(args.chars_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EffOCRError(f"{args.chars_file}: cannot read characters: {exc}") from exc
    ligatures = args.ligatures or []
    if not chars.strip() and not ligatures:
        raise EffOCRError("no characters to add: give --chars, --chars-file or --ligatures")
    sections = config_sections(load_config(args.config), source=args.config)
    wanted = [c for c in dict.fromkeys(chars) if not c.isspace()]
    if ligatures:
        known = ReferenceIndex.load(args.bundle).labels + wanted
        wanted += add_ligatures(known, ligatures)[len(known) :]
        chars = wanted
    fonts = find_fonts(args.fonts) if args.fonts else resolve_fonts(sections.fonts, wanted)
    result = extend_index(
        args.bundle,
        args.output,
        chars,
        fonts,
        size=sections.render.size,
        padding=sections.render.padding,
        mode=render_mode(sections.render, sections.run.language),
        verify=not args.no_verify,
    )
    print(
        f"{args.output}: {len(result.added)} classes added "
        f"({' '.join(result.added)}), {len(result.present)} present already, "
        f"{result.count} in all"
    )
    return 0
