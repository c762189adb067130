"""Reading, writing and querying the raw COCO JSON of annotated text lines.

The format is the original EffOCR's (see docs/architecture.md): images carry the line's
`text`; `char` boxes match the non-space characters of `text` in reading order.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from effocr.config import section_defaults
from effocr.utils import EffOCRError, atomic_path, read_json

TOP_LEVEL_KEYS = ("images", "annotations", "categories")
# EffSynth and the original GCV bootstrap name the character category "character".
CATEGORY_ALIASES = {"char": ("char", "character"), "character": ("character", "char")}


def load_coco(path: str | os.PathLike) -> dict:
    """Read a COCO JSON and check its top-level structure.

    Raises:
        EffOCRError: the file is missing or not JSON, or lacks `images`/`annotations`/`categories`
            lists.
    """
    coco = read_json(path)
    if not isinstance(coco, dict):
        raise EffOCRError(f"{path}: a COCO JSON must be an object, found {type(coco).__name__}")
    missing = [k for k in TOP_LEVEL_KEYS if k not in coco]
    if missing:
        raise EffOCRError(f"{path}: missing top-level key(s) {', '.join(missing)}")
    for key in TOP_LEVEL_KEYS:
        if not isinstance(coco[key], list):
            raise EffOCRError(
                f"{path}: top-level `{key}` must be a list, found {type(coco[key]).__name__}"
            )
    return coco


def save_coco(coco: dict, path: str | os.PathLike) -> None:
    """Write a COCO JSON atomically (UTF-8, compact)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(coco, f, ensure_ascii=False)
            f.write("\n")


def category_id(coco: dict, name: str, *, required: bool = True) -> int | None:
    """Id of the category called `name` (`char` and `character` are aliases).

    Raises:
        EffOCRError: when `required` and no such category exists.
    """
    names = CATEGORY_ALIASES.get(name, (name,))
    by_name = {
        c.get("name"): c.get("id") for c in coco.get("categories", []) if isinstance(c, dict)
    }
    for n in names:
        if n in by_name:
            return by_name[n]
    if required:
        known = sorted(str(n) for n in by_name)
        raise EffOCRError(f"no category named {name!r} (known: {known})")
    return None


def char_category_id(coco: dict, name: str = "char") -> int:
    """Id of the character category (required)."""
    cid = category_id(coco, name, required=True)
    assert cid is not None
    return cid


def word_category_id(coco: dict, name: str = "word") -> int | None:
    """Id of the word category, or None when the data has no word boxes (e.g. Japanese)."""
    return category_id(coco, name, required=False)


@dataclass
class CocoIndex:
    """Images by id and annotations grouped by image id and category."""

    coco: dict
    char_id: int
    word_id: int | None
    images: dict[int, dict] = field(default_factory=dict)
    anns: dict[int, dict[int, list[dict]]] = field(default_factory=dict)

    def image_anns(self, image_id: int, cat_id: int | None) -> list[dict]:
        """Annotations of one image and category (empty when none)."""
        if cat_id is None:
            return []
        return self.anns.get(image_id, {}).get(cat_id, [])


def index_coco(coco: dict, char_category: str, word_category: str) -> CocoIndex:
    """Build a `CocoIndex` (one pass over the annotations)."""
    index = CocoIndex(
        coco=coco,
        char_id=char_category_id(coco, char_category),
        word_id=word_category_id(coco, word_category),
    )
    index.images = {img["id"]: img for img in coco["images"]}
    grouped: dict[int, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for ann in coco["annotations"]:
        grouped[ann["image_id"]][ann["category_id"]].append(ann)
    index.anns = {k: dict(v) for k, v in grouped.items()}
    return index


def line_is_vertical(height: int, width: int, allows_vertical: bool | None = None) -> bool:
    """Whether a line of `height` x `width` pixels is read top to bottom.

    Args:
        vertical: Whether vertical lines occur at all (the language profile's `allows_vertical`).
            False: never (English; a one-glyph line taller than wide stays horizontal).
            True or None: a line taller than wide is vertical.
    """
    return allows_vertical is not False and height > width


def is_vertical(image: dict, allows_vertical: bool | None = None) -> bool:
    """`line_is_vertical` for a COCO image record (its `height` and `width`)."""
    return line_is_vertical(image["height"], image["width"], allows_vertical)


def sort_reading_order(anns: list[dict], vertical: bool) -> list[dict]:
    """Sort boxes by x centre (y centre for vertical lines); ties broken by the other axis, then id."""

    def key(ann: dict) -> tuple[float, float, Any]:
        x, y, w, h = ann["bbox"]
        cx, cy = x + w / 2, y + h / 2
        return (cy, cx, ann["id"]) if vertical else (cx, cy, ann["id"])

    return sorted(anns, key=key)


def line_text_chars(image: dict) -> list[str]:
    """The non-space characters of an image's `text` (what the char boxes are matched to)."""
    return [c for c in image.get("text", "") if not c.isspace()]


def _as_index(coco_or_index: dict | CocoIndex) -> CocoIndex:
    """An index as given; a COCO dict is indexed with the schema's category names (an index of
    other names is built with `index_coco`)."""
    if isinstance(coco_or_index, CocoIndex):
        return coco_or_index
    dataset = section_defaults("dataset")
    return index_coco(coco_or_index, dataset["char_category"], dataset["word_category"])


def line_chars(
    coco_or_index: dict | CocoIndex, image: dict, allows_vertical: bool | None = None
) -> list[tuple[str, dict]]:
    """The image's char annotations in reading order, each paired with its character.

    Pass a `CocoIndex` when calling this for many images (a plain COCO dict is indexed on
    every call). `allows_vertical`: whether vertical lines occur (see `is_vertical`).

    Raises:
        EffOCRError: the image has no `text` or its char box count differs from its number of
            non-space characters.
    """
    index = _as_index(coco_or_index)
    if not isinstance(image.get("text"), str):
        raise EffOCRError(f"image {image.get('id')} ({image.get('file_name')}): no `text` field")
    chars = line_text_chars(image)
    anns = sort_reading_order(
        index.image_anns(image["id"], index.char_id), is_vertical(image, allows_vertical)
    )
    if len(anns) != len(chars):
        raise EffOCRError(
            f"image {image['id']} ({image.get('file_name')}): {len(anns)} char boxes but "
            f"{len(chars)} non-space characters in text {image['text']!r}"
        )
    return list(zip(chars, anns, strict=True))


def line_words(
    coco_or_index: dict | CocoIndex, image: dict, allows_vertical: bool | None = None
) -> list[dict]:
    """The image's word annotations in reading order (empty without a word category)."""
    index = _as_index(coco_or_index)
    return sort_reading_order(
        index.image_anns(image["id"], index.word_id), is_vertical(image, allows_vertical)
    )
