"""effocr.data.coco_tools and `effocr coco merge|split|subset`."""

from __future__ import annotations

import json

import pytest
from test_coco import make_lines

from effocr.cli import main
from effocr.data.coco_tools import merge, split_coco, split_coco_by_files, split_counts, subset
from effocr.utils import EffOCRError, sha256_file

TEXTS = [f"l{i}" for i in range(20)]


@pytest.fixture
def coco(tmp_path):
    return make_lines(tmp_path, TEXTS)[2]


def _names(c):
    return [img["file_name"] for img in c["images"]]


def test_split_counts():
    assert split_counts(20, [0.7, 0.15, 0.15]) == [14, 3, 3]
    assert split_counts(10, [7, 1.5, 1.5]) == [7, 2, 1]
    assert sum(split_counts(7, [1, 1, 1])) == 7
    assert split_counts(3, [1, 0, 0]) == [3, 0, 0]
    with pytest.raises(EffOCRError, match="ratios"):
        split_counts(3, [0, 0, 0])


def test_split_by_image_deterministic_and_complete(coco):
    parts = split_coco(coco, [0.7, 0.15, 0.15], seed=5)
    assert [len(parts[s]["images"]) for s in ("train", "val", "test")] == [14, 3, 3]
    names = [n for s in parts.values() for n in _names(s)]
    assert sorted(names) == sorted(_names(coco))  # disjoint and complete
    for part in parts.values():
        ids = {img["id"] for img in part["images"]}
        assert all(a["image_id"] in ids for a in part["annotations"])
        assert part["categories"] == coco["categories"]
    assert sum(len(p["annotations"]) for p in parts.values()) == len(coco["annotations"])
    assert split_coco(coco, [0.7, 0.15, 0.15], seed=5) == parts
    # The order of the images in the JSON does not matter, the seed does.
    shuffled = dict(coco, images=list(reversed(coco["images"])))
    assert split_coco(shuffled, [0.7, 0.15, 0.15], seed=5) == parts
    assert split_coco(coco, [0.7, 0.15, 0.15], seed=6) != parts


def test_split_by_files(coco, tmp_path):
    files = {}
    for s, names in {"train": ["line_0.png", "line_1.png"], "val": ["line_2.png"]}.items():
        files[s] = tmp_path / f"{s}.txt"
        files[s].write_text("# comment\n" + "\n".join(names) + "\n\n")
    parts = split_coco_by_files(coco, files)
    assert _names(parts["train"]) == ["line_0.png", "line_1.png"]
    assert _names(parts["val"]) == ["line_2.png"]

    files["val"].write_text("line_1.png\n")
    with pytest.raises(EffOCRError, match="already in split 'train'"):
        split_coco_by_files(coco, files)
    files["val"].write_text("nope.png\n")
    with pytest.raises(EffOCRError, match="'nope.png' is not a file_name"):
        split_coco_by_files(coco, files)
    files["val"] = tmp_path / "missing.txt"
    with pytest.raises(EffOCRError, match="split file not found"):
        split_coco_by_files(coco, files)


def test_merge_renumbers_and_maps_categories(tmp_path):
    a = make_lines(tmp_path / "a", ["ab"])[2]
    b = make_lines(tmp_path / "b", ["cd", "e"])[2]
    for img in b["images"]:
        img["file_name"] = "b_" + img["file_name"]
    # Same names, other ids: annotations are remapped by name.
    b["categories"] = [{"id": 5, "name": "char"}, {"id": 6, "name": "word"}]
    for ann in b["annotations"]:
        ann["category_id"] += 5
    merged = merge([a, b])
    assert [img["id"] for img in merged["images"]] == [1, 2, 3]
    assert [ann["id"] for ann in merged["annotations"]] == list(range(1, 9))
    assert merged["categories"] == a["categories"]
    assert {ann["category_id"] for ann in merged["annotations"]} == {0, 1}
    img_of = {img["id"]: img["file_name"] for img in merged["images"]}
    assert sorted({img_of[x["image_id"]] for x in merged["annotations"]}) == sorted(img_of.values())
    assert b["categories"][0]["id"] == 5  # inputs untouched


def test_merge_rejects_disagreeing_categories_and_duplicates(tmp_path):
    a = make_lines(tmp_path / "a", ["ab"])[2]
    b = make_lines(tmp_path / "b", ["cd"])[2]
    with pytest.raises(EffOCRError, match="line_0.png' is also in"):
        merge([a, b])
    b["images"][0]["file_name"] = "other.png"
    b["categories"][1]["name"] = "token"
    with pytest.raises(EffOCRError, match="categories .* differ"):
        merge([a, b], ["a.json", "b.json"])


def test_subset(coco):
    five = subset(coco, n=5, seed=1)
    assert len(five["images"]) == 5
    assert subset(coco, n=5, seed=1) == five
    named = subset(coco, file_names=["line_3.png", "line_4.png"], seed=1)
    assert _names(named) == ["line_3.png", "line_4.png"]
    assert {a["image_id"] for a in named["annotations"]} == {4, 5}
    with pytest.raises(EffOCRError, match="cannot take 99"):
        subset(coco, n=99, seed=1)
    with pytest.raises(EffOCRError, match="not in the COCO JSON"):
        subset(coco, file_names=["x.png"], seed=1)
    with pytest.raises(EffOCRError, match="exactly one"):
        subset(coco, seed=1)


def test_cli_split_merge_subset(tmp_path, capsys):
    json_path, _, coco = make_lines(tmp_path, TEXTS)
    before = sha256_file(json_path)
    out = tmp_path / "splits"
    assert main(["coco", "split", str(json_path), "-o", str(out), "--seed", "3"]) == 0
    parts = {s: json.loads((out / f"{s}.json").read_text()) for s in ("train", "val", "test")}
    assert parts == split_coco(coco, [0.7, 0.15, 0.15], seed=3)

    merged = tmp_path / "merged.json"
    args = ["coco", "merge", str(out / "train.json"), str(out / "val.json"), str(out / "test.json")]
    assert main([*args, "-o", str(merged)]) == 0
    assert sorted(_names(json.loads(merged.read_text()))) == sorted(_names(coco))

    sub = tmp_path / "sub.json"
    assert main(["coco", "subset", str(json_path), "-o", str(sub), "-n", "4"]) == 0
    assert len(json.loads(sub.read_text())["images"]) == 4
    names = tmp_path / "names.txt"
    names.write_text("line_7.png\n")
    assert main(["coco", "subset", str(json_path), "-o", str(sub), "--list", str(names)]) == 0
    assert _names(json.loads(sub.read_text())) == ["line_7.png"]
    assert sha256_file(json_path) == before


def test_cli_split_files(tmp_path):
    json_path, _, _ = make_lines(tmp_path, TEXTS[:3])
    for i, s in enumerate(("train", "val", "test")):
        (tmp_path / f"{s}.txt").write_text(f"line_{i}.png\n")
    files = [f"{s}={tmp_path / s}.txt" for s in ("train", "val", "test")]
    assert (
        main(["coco", "split", str(json_path), "-o", str(tmp_path / "o"), "--files", *files]) == 0
    )
    assert _names(json.loads((tmp_path / "o" / "val.json").read_text())) == ["line_1.png"]


def test_cli_errors_write_nothing(tmp_path, capsys):
    json_path, _, _ = make_lines(tmp_path, TEXTS[:3])
    before = sha256_file(json_path)
    # Refuses to overwrite its input.
    assert main(["coco", "subset", str(json_path), "-o", str(json_path), "-n", "1"]) == 1
    assert "overwrite an input" in capsys.readouterr().err
    assert main(["coco", "merge", str(json_path), "-o", str(json_path)]) == 1
    assert sha256_file(json_path) == before
    # Bad input JSON: exit 1, no output.
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}')
    assert main(["coco", "split", str(bad), "-o", str(tmp_path / "s")]) == 1
    assert "missing top-level key" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    assert main(["coco", "subset", str(json_path), "-o", str(tmp_path / "x.json"), "-n", "9"]) == 1
    assert not (tmp_path / "x.json").exists()
    assert (
        main(
            ["coco", "split", str(json_path), "-o", str(tmp_path / "s"), "--files", "a=b", "c", "d"]
        )
        == 1
    )
