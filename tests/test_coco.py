"""effocr.data.coco: loading, saving, categories, reading order of char and word boxes.

`make_lines` (also used by the other data-stage tests) draws tiny line images whose char and
word boxes are known exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import require_ipa_fonts
from PIL import Image, ImageDraw
from schema_defaults import CATEGORIES

from effocr.data.coco import (
    category_id,
    char_category_id,
    index_coco,
    is_vertical,
    line_chars,
    line_words,
    load_coco,
    save_coco,
    word_category_id,
)
from effocr.utils import EffOCRError

STEP, BOX, MARGIN, THICK = 12, 8, 4, 24


def make_lines(
    root: Path, texts: list[str], vertical: list[bool] | None = None, char_name: str = "char"
) -> tuple[Path, Path, dict]:
    """Write `root/lines.json` and `root/images/line_<i>.png` with one ink block per character.

    A character at position p (spaces included) has box x = MARGIN + STEP*p, y = MARGIN,
    BOX x (THICK - 2*MARGIN), transposed for a vertical line. Annotations are written in
    reverse reading order so that readers must sort them.
    """
    vertical = vertical or [False] * len(texts)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    coco: dict = {
        "info": {"description": "test lines"},
        "images": [],
        "annotations": [],
        "categories": [{"id": 0, "name": char_name}, {"id": 1, "name": "word"}],
    }
    ann_id = 1
    for i, (text, vert) in enumerate(zip(texts, vertical, strict=True)):
        length = 2 * MARGIN + STEP * len(text)
        w, h = (THICK, length) if vert else (length, THICK)
        img = Image.new("L", (w, h), 255)
        draw = ImageDraw.Draw(img)
        anns = []
        for p, ch in enumerate(text):
            if ch.isspace():
                continue
            box = [MARGIN + STEP * p, MARGIN, BOX, THICK - 2 * MARGIN]
            if vert:
                box = [box[1], box[0], box[3], box[2]]
            draw.rectangle([box[0], box[1], box[0] + box[2] - 1, box[1] + box[3] - 1], fill=0)
            anns.append(_ann(0, box, i + 1))
        pos = 0
        for word in text.split(" "):
            if word:
                box = [MARGIN + STEP * pos, MARGIN, STEP * len(word), THICK - 2 * MARGIN]
                if vert:
                    box = [box[1], box[0], box[3], box[2]]
                anns.append(_ann(1, box, i + 1))
            pos += len(word) + 1
        for ann in reversed(anns):
            ann["id"] = ann_id
            ann_id += 1
            coco["annotations"].append(ann)
        name = f"line_{i}.png"
        img.save(image_dir / name)
        coco["images"].append(
            {"id": i + 1, "file_name": name, "width": w, "height": h, "text": text}
        )
    json_path = root / "lines.json"
    json_path.write_text(json.dumps(coco), encoding="utf-8")
    return json_path, image_dir, coco


def _ann(cat: int, box: list[int], image_id: int) -> dict:
    return {
        "image_id": image_id,
        "category_id": cat,
        "bbox": box,
        "area": box[2] * box[3],
        "iscrowd": 0,
    }


def test_load_save_roundtrip(tmp_path):
    json_path, _, coco = make_lines(tmp_path, ["ab c"])
    loaded = load_coco(json_path)
    assert loaded == coco
    out = tmp_path / "out" / "copy.json"
    save_coco(loaded, out)
    assert load_coco(out) == coco
    assert [p.name for p in out.parent.iterdir()] == ["copy.json"]  # no temporary left


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "invalid JSON at line 1"),
        ("[1, 2]", "must be an object"),
        ('{"images": [], "annotations": []}', "missing top-level key(s) categories"),
        ('{"images": {}, "annotations": [], "categories": []}', "`images` must be a list"),
    ],
)
def test_load_coco_bad_input(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(EffOCRError, match="bad.json") as exc:
        load_coco(path)
    assert message in str(exc.value)


def test_load_coco_missing_file(tmp_path):
    with pytest.raises(EffOCRError, match="file not found"):
        load_coco(tmp_path / "nope.json")


def test_categories_and_alias(tmp_path):
    _, _, coco = make_lines(tmp_path, ["a"], char_name="character")
    assert char_category_id(coco) == 0
    assert category_id(coco, "character") == 0
    assert word_category_id(coco) == 1
    coco["categories"] = coco["categories"][:1]
    assert word_category_id(coco) is None
    with pytest.raises(EffOCRError, match="no category named 'glyph'"):
        char_category_id(coco, "glyph")


def test_line_chars_horizontal_reading_order(tmp_path):
    _, _, coco = make_lines(tmp_path, ["ab, c'd"])
    image = coco["images"][0]
    pairs = line_chars(coco, image)
    assert "".join(c for c, _ in pairs) == "ab,c'd"
    xs = [a["bbox"][0] for _, a in pairs]
    assert xs == sorted(xs)
    # Annotations were written in reverse order; matching follows x, not the file order.
    assert pairs[0][1]["bbox"][0] == MARGIN
    assert pairs[-1][1]["bbox"][0] == MARGIN + STEP * 6
    words = line_words(index_coco(coco, **CATEGORIES), image)
    assert [w["bbox"][2] // STEP for w in words] == [3, 3]


def test_line_chars_vertical(tmp_path):
    _, _, coco = make_lines(tmp_path, ["日本語"], vertical=[True])
    image = coco["images"][0]
    assert is_vertical(image)
    pairs = line_chars(coco, image)
    assert [c for c, _ in pairs] == ["日", "本", "語"]
    assert [a["bbox"][1] for _, a in pairs] == [MARGIN, MARGIN + STEP, MARGIN + 2 * STEP]


def test_line_chars_count_mismatch(tmp_path):
    _, _, coco = make_lines(tmp_path, ["abc"])
    coco["images"][0]["text"] = "abcd"
    with pytest.raises(EffOCRError, match="3 char boxes but 4 non-space characters"):
        line_chars(coco, coco["images"][0])
    del coco["images"][0]["text"]
    with pytest.raises(EffOCRError, match="no `text` field"):
        line_chars(coco, coco["images"][0])


@pytest.mark.parametrize(("language", "vertical_fraction"), [("en", 0.0), ("jp", 0.5)])
def test_reading_order_matches_synthetic_ground_truth(
    tiny_coco_factory, language, vertical_fraction
):
    # synth_lines writes each line's char boxes in reading order (ascending ids), slight skew
    # included: sorting by box centre must recover that order.
    if language == "jp":
        require_ipa_fonts()
    json_path, _ = tiny_coco_factory(
        6, language, 0, vertical_fraction=vertical_fraction, max_chars=12
    )
    coco = load_coco(json_path)
    index = index_coco(coco, **CATEGORIES)
    for image in coco["images"]:
        ids = [ann["id"] for _, ann in line_chars(index, image)]
        assert ids == sorted(ids), image["text"]
