"""Validation of a raw COCO JSON: structure, ids, images, boxes, text and charset.

`validate_coco` collects every problem (it does not stop at the first) so that a user can fix
a dataset in one go. It only reads its inputs.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections import Counter
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

from PIL import Image

from effocr.config import DatasetSection
from effocr.data.coco import category_id, is_vertical, line_text_chars, load_coco
from effocr.utils import EffOCRError, label_to_codepoints, sha256_file, write_json

LOG = logging.getLogger(__name__)

# Boxes may stick out of the image by this many pixels (rounding in annotation tools).
BOX_TOLERANCE = 1.0


@dataclass(frozen=True)
class Problem:
    """One violation: the file, the image and/or annotation it concerns, and what is wrong."""

    file: str
    message: str
    image_id: Any = None
    ann_id: Any = None

    def __str__(self) -> str:
        where = []
        if self.image_id is not None:
            where.append(f"image {self.image_id}")
        if self.ann_id is not None:
            where.append(f"annotation {self.ann_id}")
        loc = f" [{', '.join(where)}]" if where else ""
        return f"{self.file}{loc}: {self.message}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _check_image_file(path: Path, image: dict) -> str | None:
    """None when the file exists, decodes and has the declared size; else the problem."""
    if not path.is_file():
        return f"image file not found: {path}"
    try:
        with Image.open(path) as im:
            im.verify()
        # verify() does not decode pixel data; load() catches truncated files.
        with Image.open(path) as im:
            im.load()
            size = im.size
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a data problem
        return f"image file does not decode: {path}: {exc}"
    if size != (image["width"], image["height"]):
        return (
            f"image size {size[0]}x{size[1]} of {path} differs from width x height "
            f"{image['width']}x{image['height']} in the JSON"
        )
    return None


def validate_coco(
    json_path: str | os.PathLike,
    image_dir: str | os.PathLike,
    charset: list[str] | set[str] | None = None,
    *,
    char_category: str,
    word_category: str,
    check_images: bool = True,
) -> tuple[list[Problem], dict]:
    """Check a raw COCO JSON and its images.

    Args:
        json_path: The COCO JSON.
        image_dir: Directory the images' `file_name`s are relative to.
        charset: Characters the workflow knows; characters of `text` outside it are reported as
            warnings (not problems). None skips the check.
        char_category: Name of the character category (`character` is accepted as alias).
        word_category: Name of the word category (optional in the data).
        check_images: Open every image file (exists, decodes, size matches).

    Returns:
        `(problems, report)`: the violations (empty when valid) and a summary with counts,
        charset warnings and the JSON's sha256.

    Raises:
        EffOCRError: the file cannot be read as a COCO JSON at all.
    """
    json_path = Path(json_path)
    image_dir = Path(image_dir)
    coco = load_coco(json_path)
    file = str(json_path)
    problems: list[Problem] = []

    def add(message: str, image_id: Any = None, ann_id: Any = None) -> None:
        problems.append(Problem(file, message, image_id, ann_id))

    # Categories
    cat_ids: set[Any] = set()
    for i, cat in enumerate(coco["categories"]):
        if (
            not isinstance(cat, dict)
            or not _is_int(cat.get("id"))
            or not isinstance(cat.get("name"), str)
        ):
            add(f"categories[{i}]: needs an integer `id` and a string `name`, found {cat!r}")
            continue
        if cat["id"] in cat_ids:
            add(f"categories[{i}]: duplicate category id {cat['id']}")
        cat_ids.add(cat["id"])
    char_id = category_id(coco, char_category, required=False)
    word_id = category_id(coco, word_category, required=False)
    if char_id is None:
        names = [c.get("name") for c in coco["categories"] if isinstance(c, dict)]
        add(f"no character category named {char_category!r} (categories: {names})")

    # Images
    images: dict[Any, dict] = {}
    file_names: dict[str, Any] = {}
    for i, img in enumerate(coco["images"]):
        if not isinstance(img, dict):
            add(f"images[{i}]: must be an object, found {img!r}")
            continue
        iid = img.get("id")
        bad = []
        if not _is_int(iid):
            bad.append("`id` (integer)")
        if not isinstance(img.get("file_name"), str) or not img.get("file_name"):
            bad.append("`file_name` (string)")
        for key in ("width", "height"):
            if not _is_int(img.get(key)) or img[key] <= 0:
                bad.append(f"`{key}` (positive integer)")
        if bad:
            add(f"images[{i}]: missing or invalid {', '.join(bad)}", iid)
            continue
        if iid in images:
            add(f"duplicate image id {iid}", iid)
            continue
        if "text" not in img:
            add("missing `text` (the line transcription)", iid)
        elif not isinstance(img["text"], str):
            add(f"`text` must be a string, found {type(img['text']).__name__}", iid)
        if img["file_name"] in file_names:
            add(
                f"file_name {img['file_name']!r} also used by image {file_names[img['file_name']]}",
                iid,
            )
        file_names.setdefault(img["file_name"], iid)
        images[iid] = img

    # Annotations
    ann_ids: set[Any] = set()
    char_counts: Counter = Counter()
    n_chars = n_words = 0
    for i, ann in enumerate(coco["annotations"]):
        if not isinstance(ann, dict):
            add(f"annotations[{i}]: must be an object, found {ann!r}")
            continue
        aid = ann.get("id")
        iid = ann.get("image_id")
        bad = [k for k in ("id", "image_id", "category_id") if not _is_int(ann.get(k))]
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_num(v) for v in bbox)):
            bad.append("bbox")
        if not _is_num(ann.get("area")):
            bad.append("area")
        if ann.get("iscrowd") not in (0, 1) or isinstance(ann.get("iscrowd"), bool):
            bad.append("iscrowd")
        if bad:
            add(
                f"annotations[{i}]: missing or invalid {', '.join(bad)} "
                "(need integer id/image_id/category_id, bbox [x, y, w, h], numeric area, iscrowd 0/1)",
                iid if _is_int(iid) else None,
                aid,
            )
            if "id" in bad or "image_id" in bad or "bbox" in bad or "category_id" in bad:
                continue
        if aid in ann_ids:
            add(f"duplicate annotation id {aid}", iid, aid)
            continue
        ann_ids.add(aid)
        if iid not in images:
            add(f"image_id {iid} does not exist", None, aid)
            continue
        if ann["category_id"] not in cat_ids:
            add(f"unknown category_id {ann['category_id']}", iid, aid)
            continue
        img = images[iid]
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            add(f"degenerate box {bbox} (width and height must be > 0)", iid, aid)
        elif (
            x < -BOX_TOLERANCE
            or y < -BOX_TOLERANCE
            or x + w > img["width"] + BOX_TOLERANCE
            or y + h > img["height"] + BOX_TOLERANCE
        ):
            add(f"box {bbox} outside the {img['width']}x{img['height']} image", iid, aid)
        if ann["category_id"] == char_id:
            char_counts[iid] += 1
            n_chars += 1
        elif ann["category_id"] == word_id:
            n_words += 1

    if not images:
        add("no images: the dataset is empty")
    if check_images and not image_dir.is_dir():
        add(f"image directory not found: {image_dir}")
        check_images = False

    # Text against char boxes, charset, image files
    outside: Counter = Counter()
    charset_set = set(charset) if charset is not None else None
    no_char_boxes: list[Any] = []
    for iid, img in images.items():
        if isinstance(img.get("text"), str) and char_id is not None:
            chars = line_text_chars(img)
            if chars and char_counts[iid] == 0:
                no_char_boxes.append(iid)
            elif len(chars) != char_counts[iid]:
                add(
                    f"{char_counts[iid]} char boxes but {len(chars)} non-space characters in "
                    f"text {img['text']!r}",
                    iid,
                )
            if charset_set is not None:
                outside.update(c for c in chars if c not in charset_set)
        if check_images:
            msg = _check_image_file(image_dir / img["file_name"], img)
            if msg:
                add(msg, iid)

    if no_char_boxes:
        # Ground truth imported from PAGE/ALTO/line folders is often a transcription only: one
        # message for all such lines instead of one "0 char boxes" problem per line.
        shown = ", ".join(str(i) for i in no_char_boxes[:10])
        more = f" and {len(no_char_boxes) - 10} more" if len(no_char_boxes) > 10 else ""
        add(
            f"{len(no_char_boxes)} of {len(images)} line(s) have a transcription but no char "
            f"boxes (image ids {shown}{more}): the localizer and recognizer train on character "
            "boxes, and finding them from line transcriptions is not implemented yet. Use "
            "ground truth with glyph boxes (PAGE or ALTO Glyph elements), or leave these lines out "
            "(dataset.import.without_chars: skip; effocr import --without-chars skip)"
        )

    report = {
        "coco_json": file,
        "image_dir": str(image_dir),
        "sha256": sha256_file(json_path),
        "valid": not problems,
        "problems": len(problems),
        "images": len(images),
        "annotations": len(ann_ids),
        "chars": n_chars,
        "words": n_words,
        "vertical_lines": sum(1 for img in images.values() if is_vertical(img)),
        "categories": {
            c["name"]: c["id"] for c in coco["categories"] if isinstance(c, dict) and "name" in c
        },
        "charset_checked": charset is not None,
        "outside_charset": {
            label_to_codepoints(c): {"char": c, "count": n} for c, n in outside.most_common()
        },
    }
    return problems, report


def check_coco(
    json_path: str | os.PathLike,
    report_path: str | os.PathLike | None,
    charset: str | list[str] | None,
    *,
    dataset: DatasetSection,
    log_results: bool = True,
) -> dict:
    """Validate, log the result and write the report only when the data is valid.

    Args:
        dataset: The `dataset` section (`image_dir`, `char_category`, `word_category`).
        charset: A charset name or file (see `effocr.synth.charsets.load_charset`), the
            characters themselves (the workflow passes the resolved render charset), or None.

    Raises:
        EffOCRError: listing every problem, when the data is invalid (nothing is written).
    """
    chars = None
    if isinstance(charset, str) and charset:
        from effocr.synth.charsets import load_charset

        chars = load_charset(charset)
    elif charset is not None:
        chars = list(charset)
    problems, report = validate_coco(
        json_path,
        dataset.image_dir,
        chars,
        char_category=dataset.char_category,
        word_category=dataset.word_category,
    )
    report["charset"] = charset if isinstance(charset, str) else None
    report["charset_size"] = len(chars) if chars is not None else None
    # In a rule the log is the only place the user sees; the CLI prints the results itself.
    if log_results:
        for cp, info in report["outside_charset"].items():
            LOG.warning(
                "%s: character %r (%s) not in the charset: %d occurrence(s)",
                json_path,
                info["char"],
                cp,
                info["count"],
            )
        for p in problems:
            LOG.error("%s", p)
        if not problems:
            LOG.info("%s", summary_line(report))
    if problems:
        raise EffOCRError(
            f"{json_path}: {len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems)
        )
    if report_path is not None:
        write_json(report_path, report)
    return report


def summary_line(report: dict) -> str:
    """One-line summary of a valid dataset."""
    warn = len(report["outside_charset"])
    extra = f", {warn} character(s) outside the charset" if warn else ""
    return (
        f"{report['coco_json']}: valid: {report['images']} images, {report['chars']} chars, "
        f"{report['words']} words{extra}"
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr validate`."""
    parser.add_argument("coco_json", help="raw COCO JSON")
    parser.add_argument("--image-dir", required=True, help="directory of the images' file_names")
    parser.add_argument("--charset", default=None, help="charset name (en, jp_small...) or file")
    parser.add_argument(
        "--char-category", default=None, help="name of the character category (config default)"
    )
    parser.add_argument(
        "--word-category", default=None, help="name of the word category (config default)"
    )
    parser.add_argument("--report", default=None, help="write the JSON report here when valid")


def run(args: argparse.Namespace) -> int:
    """Exit 0 and print a summary when valid; raise (exit 1) with every problem otherwise."""
    from effocr.config import config_sections

    given = {
        "image_dir": args.image_dir,
        "char_category": args.char_category,
        "word_category": args.word_category,
    }
    dataset = config_sections(
        {"dataset": {k: v for k, v in given.items() if v is not None}}, source="effocr validate"
    ).dataset
    report = check_coco(
        args.coco_json, args.report, args.charset, dataset=dataset, log_results=False
    )
    print(summary_line(report))
    for cp, info in report["outside_charset"].items():
        print(f"  warning: {info['char']!r} ({cp}) not in charset: {info['count']}x")
    return 0
