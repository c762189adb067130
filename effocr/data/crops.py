"""Real glyph crops cut from annotated lines, as the recognizer sees them at inference.

By default a crop spans the full line height (the x-range of the char box), or the full line
width for a vertical line (the y-range of the box): the glyph's vertical position is what
separates `,` from `'`.

With `crops.jitter` each training box is also cut a few more times with its ends moved
(`jitter_box`): the localizer's boxes on real print are a few pixels off the annotation's, and
where glyphs touch they take in part of the neighbour (`r` beside `n` read as `n` on UW3).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import random
from pathlib import Path

from effocr.config import (
    CropsSection,
    DatasetSection,
    RunSection,
    config_sections,
    section_defaults,
)
from effocr.data.coco import index_coco, is_vertical, line_chars, load_coco
from effocr.profiles import get_profile
from effocr.utils import EffOCRError, atomic_path, label_to_codepoints, open_rgb, progress

LOG = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["path", "codepoints", "source", "origin", "split", "image_id", "ann_id"]


def crop_box(
    bbox: list[float],
    width: int,
    height: int,
    vertical: bool,
    full_height: bool,
    padding: int,
) -> tuple[int, int, int, int]:
    """Integer crop box (x0, y0, x1, y1) of a char bbox [x, y, w, h], clipped to the image.

    `padding` pixels are added along the reading direction (x, or y for vertical lines); with
    `full_height` the other axis spans the whole line.
    """
    x, y, w, h = bbox
    x0, y0, x1, y1 = math.floor(x), math.floor(y), math.ceil(x + w), math.ceil(y + h)
    if vertical:
        y0, y1 = y0 - padding, y1 + padding
        if full_height:
            x0, x1 = 0, width
    else:
        x0, x1 = x0 - padding, x1 + padding
        if full_height:
            y0, y1 = 0, height
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(width, x1), min(height, y1)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty crop for box {bbox} in a {width}x{height} image")
    return x0, y0, x1, y1


def jitter_box(
    box: tuple[int, int, int, int],
    width: int,
    height: int,
    vertical: bool,
    jitter_range: float,
    rng: random.Random,
) -> tuple[int, int, int, int]:
    """`box` (a `crop_box`) with its two ends along the reading direction moved at random.

    Each end moves outwards by up to `jitter_range` of the line's thickness (its height, or its
    width when vertical) and inwards by up to that or a quarter of the box's length, whichever
    is less, so a narrow glyph keeps most of its ink. The result stays inside the image and at
    least one pixel long.
    """
    x0, y0, x1, y1 = box
    lo, hi, limit, thickness = (y0, y1, height, width) if vertical else (x0, x1, width, height)
    reach = jitter_range * thickness
    inward = min(reach, 0.25 * (hi - lo))
    new_lo = min(max(0, round(lo + rng.uniform(-reach, inward))), limit - 1)
    new_hi = max(min(limit, round(hi + rng.uniform(-inward, reach))), new_lo + 1)
    return (x0, new_lo, x1, new_hi) if vertical else (new_lo, y0, new_hi, y1)


def crop_glyphs(
    split_jsons: dict[str, str | os.PathLike],
    image_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    manifest_path: str | os.PathLike,
    full_height: bool,
    padding: int,
    *,
    jitter: int,
    jitter_range: float,
    seed: int,
    char_category: str,
    word_category: str,
    allows_vertical: bool | None = None,
) -> dict[str, int]:
    """Cut one crop per char box of every split and write the crops manifest.

    With `jitter` > 0 every box of the `train` split is cut `jitter` more times, its ends moved
    by `jitter_box` (drawn from `seed`, the line's file name and the annotation id, so the same
    inputs give the same crops); those crops are named `..._<ann_id>_j<k>.png`.

    `allows_vertical` is whether vertical lines occur (the language profile's `allows_vertical`): False
    crops every line as horizontal (full height), as the English localizer reads it; True or
    None treat a line taller than wide as vertical.

    Crops go to `out_dir/<split>/<U+XXXX>/<image stem>_<ann_id>.png`; the manifest (CSV) has
    the columns of docs/architecture.md plus `image_id` and `ann_id`, with paths relative to
    the manifest's directory. Both outputs are written atomically.

    Returns:
        Number of crops per split (jittered ones included).

    Raises:
        EffOCRError: an image is in two splits, a line's box count does not match its text,
            or an image cannot be read.
    """
    if padding < 0:
        raise EffOCRError(f"crop padding must be >= 0, got {padding}")
    if jitter < 0 or not 0 <= jitter_range <= 1:
        raise EffOCRError(
            f"crop jitter must be >= 0 and jitter_range in [0, 1], got {jitter}, {jitter_range}"
        )
    image_dir = Path(image_dir)
    out_dir = Path(out_dir)
    manifest_path = Path(manifest_path)
    line_split: dict[str, str] = {}
    counts: dict[str, int] = {}
    rows: list[dict] = []
    with atomic_path(out_dir, is_dir=True) as tmp_dir:
        for split, json_path in split_jsons.items():
            coco = load_coco(json_path)
            try:
                index = index_coco(coco, char_category, word_category)
            except EffOCRError as exc:
                raise EffOCRError(f"{json_path}: {exc}") from exc
            counts[split] = 0
            for image in progress(coco["images"], desc=f"crops {split}"):
                name = image["file_name"]
                if name in line_split:
                    raise EffOCRError(
                        f"{json_path}: line {name!r} is also in split {line_split[name]!r}; "
                        "a line's crops must stay in one split"
                    )
                line_split[name] = split
                try:
                    pairs = line_chars(index, image, allows_vertical)
                except EffOCRError as exc:
                    raise EffOCRError(f"{json_path}: {exc}") from exc
                if not pairs:
                    continue
                line_rows = _crop_line(
                    image,
                    pairs,
                    image_dir,
                    tmp_dir,
                    split,
                    out_dir,
                    manifest_path,
                    full_height,
                    padding,
                    json_path,
                    allows_vertical,
                    jitter=(jitter, jitter_range, seed) if split == "train" else None,
                )
                rows.extend(line_rows)
                counts[split] += len(line_rows)
    # The manifest goes last: it only exists when every crop is in place.
    with atomic_path(manifest_path) as tmp_manifest:
        with open(tmp_manifest, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    LOG.info("crops per split: %s -> %s", counts, out_dir)
    return counts


def _crop_line(
    image: dict,
    pairs: list[tuple[str, dict]],
    image_dir: Path,
    tmp_dir: Path,
    split: str,
    out_dir: Path,
    manifest_path: Path,
    full_height: bool,
    padding: int,
    json_path: str | os.PathLike,
    allows_vertical: bool | None = None,
    jitter: tuple[int, float, int] | None = None,
) -> list[dict]:
    """Save the crops of one line under `tmp_dir`; manifest rows point at their final place.

    `jitter`: (extra crops per box, jitter_range, seed), or None to cut each box once."""
    path = image_dir / image["file_name"]
    try:
        line = open_rgb(path)
    except (OSError, ValueError) as exc:
        raise EffOCRError(f"{json_path}: image {image['id']}: cannot read {path}: {exc}") from exc
    vertical = is_vertical(image, allows_vertical)
    stem = Path(image["file_name"]).stem
    rel_root = Path(os.path.relpath(out_dir, manifest_path.parent))
    rows = []
    for char, ann in pairs:
        try:
            box = crop_box(ann["bbox"], line.width, line.height, vertical, full_height, padding)
        except ValueError as exc:
            raise EffOCRError(
                f"{json_path}: image {image['id']} annotation {ann['id']}: {exc}"
            ) from exc
        label = label_to_codepoints(char)
        variants = [("", box)]
        if jitter is not None and jitter[0] > 0:
            n, jitter_range, seed = jitter
            # Seeded per box, so a crop does not depend on which lines came before it.
            rng = random.Random(f"{seed}/{image['file_name']}/{ann['id']}")
            variants += [
                (f"_j{k}", jitter_box(box, line.width, line.height, vertical, jitter_range, rng))
                for k in range(1, n + 1)
            ]
        for suffix, cut in variants:
            rel = Path(split) / label / f"{stem}_{ann['id']}{suffix}.png"
            dest = tmp_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            # Fast PNG compression: encoding dominates the run time, file size hardly changes.
            line.crop(cut).save(dest, compress_level=1)
            rows.append(
                {
                    "path": (rel_root / rel).as_posix(),
                    "codepoints": label,
                    "source": "real",
                    "origin": image["file_name"],
                    "split": split,
                    "image_id": image["id"],
                    "ann_id": ann["id"],
                }
            )
    return rows


def crop_glyphs_from_config(
    split_jsons: dict[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    manifest_path: str | os.PathLike,
    *,
    crops: CropsSection,
    dataset: DatasetSection,
    run: RunSection,
) -> dict[str, int]:
    """`crop_glyphs` with the config sections `crops`, `dataset` (`image_dir`, the
    categories) and `run` (`language`: whether its lines can be vertical; `seed`: the jitter)."""
    return crop_glyphs(
        split_jsons,
        dataset.image_dir,
        out_dir,
        manifest_path,
        crops.full_height,
        crops.padding,
        jitter=crops.jitter,
        jitter_range=crops.jitter_range,
        seed=run.seed,
        char_category=dataset.char_category,
        word_category=dataset.word_category,
        allows_vertical=get_profile(run.language).allows_vertical,
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr crop-glyphs`."""
    parser.add_argument(
        "splits", nargs="+", metavar="SPLIT=COCO_JSON", help="e.g. train=train.json val=val.json"
    )
    parser.add_argument("--image-dir", required=True, help="directory of the images' file_names")
    parser.add_argument("--out-dir", required=True, help="crops go to OUT_DIR/<split>/<U+XXXX>/")
    parser.add_argument("--manifest", required=True, help="crops manifest (CSV)")
    parser.add_argument(
        "--full-height",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="crop the whole line height (default: config's crops.full_height); "
        "--no-full-height crops the box only",
    )
    parser.add_argument(
        "--padding",
        type=int,
        default=None,
        help="pixels along the reading direction (default: config's crops.padding)",
    )
    parser.add_argument(
        "--jitter",
        type=int,
        default=None,
        help="extra crops of each training box with its ends moved "
        "(default: config's crops.jitter)",
    )
    parser.add_argument(
        "--jitter-range",
        type=float,
        default=None,
        help="how far an end moves, as a share of the line height "
        "(default: config's crops.jitter_range)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the jitter (default: config's seed)"
    )
    parser.add_argument(
        "--char-category",
        default=None,
        help="name of the character category (default: config's dataset.char_category)",
    )
    parser.add_argument(
        "--word-category",
        default=None,
        help="name of the word category (default: config's dataset.word_category)",
    )
    parser.add_argument(
        "--language",
        default=None,
        help="language profile: lines are vertical only where it has vertical lines "
        "(default: any line taller than wide)",
    )


def run(args: argparse.Namespace) -> int:
    """Run `effocr crop-glyphs`."""
    splits = {}
    for item in args.splits:
        name, sep, path = item.partition("=")
        if not sep or not name:
            raise EffOCRError(f"expected SPLIT=COCO_JSON, got {item!r}")
        splits[name] = path
    crops, dataset = section_defaults("crops"), section_defaults("dataset")
    given = {"jitter": args.jitter, "jitter_range": args.jitter_range}
    crops.update({k: v for k, v in given.items() if v is not None})
    counts = crop_glyphs(
        splits,
        args.image_dir,
        args.out_dir,
        args.manifest,
        crops["full_height"] if args.full_height is None else args.full_height,
        crops["padding"] if args.padding is None else args.padding,
        jitter=crops["jitter"],
        jitter_range=crops["jitter_range"],
        seed=config_sections({}, source="effocr crop-glyphs").run.seed
        if args.seed is None
        else args.seed,
        char_category=args.char_category or dataset["char_category"],
        word_category=args.word_category or dataset["word_category"],
        allows_vertical=get_profile(args.language).allows_vertical if args.language else None,
    )
    print(f"{args.manifest}: {sum(counts.values())} crops ({counts})")
    return 0
