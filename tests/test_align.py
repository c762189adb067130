"""`effocr.align`: character boxes for lines that only have a transcription.

The dynamic programme is checked on hand-built similarity tables with one right answer each
(one-to-one, split, merge, missed character, extra box, a space deciding between two
readings); the whole chain on fresh synthetic lines with the tiny English bundle, whose true
boxes are known; and bad input (no text, characters the index lacks, a folder that is not
ours, an unreadable image).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
from conftest import EN_CLASSES, EN_LINE_KWARGS, en_lines
from schema_defaults import CATEGORIES

from effocr.align import (
    AlignSettings,
    LineScores,
    Step,
    TopK,
    dp_align,
    place_boxes,
    require_training_lines,
    text_chars,
    word_boxes,
)
from effocr.cli import main
from effocr.config import config_sections
from effocr.data.coco import index_coco, line_chars, load_coco, save_coco
from effocr.data.validate import validate_coco
from effocr.localizer.postprocess import box_iou
from effocr.utils import EffOCRError

FLOOR = 0.1


@pytest.fixture(scope="module")
def settings() -> AlignSettings:
    """The schema's defaults: the penalties the answers below must hold for."""
    return AlignSettings.from_config(config_sections({}).align)


def top(**sims: float) -> TopK:
    return TopK(dict(sims), FLOOR)


def scores(whole, left=None, right=None, merged=None, word_start=None) -> LineScores:
    n = len(whole)
    return LineScores(
        whole=whole,
        left=left or [top()] * n,
        right=right or [top()] * n,
        merged=merged or [top()] * max(n - 1, 0),
        word_start=word_start or [False] * n,
    )


def ops(steps: list[Step]) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    return [(s.op, s.boxes, s.chars) for s in steps]


def align(text: str, sc: LineScores, settings: AlignSettings) -> list[Step]:
    chars, space_before = text_chars(text)
    return dp_align(chars, space_before, sc, settings)


# ---------------------------------------------------------------------------
# The dynamic programme on hand-built cases
# ---------------------------------------------------------------------------


def test_one_to_one(settings):
    sc = scores([top(a=0.9, o=0.6), top(b=0.9, h=0.7), top(c=0.9, e=0.8)])
    steps = align("abc", sc, settings)
    assert ops(steps) == [("match", (0,), (0,)), ("match", (1,), (1,)), ("match", (2,), (2,))]
    assert [s.sims for s in steps] == [(0.9,), (0.9,), (0.9,)]


def test_split_box_holds_two_characters(settings):
    # Box 1 covers "bc": as a whole it looks a little like b, its halves clearly like b and c.
    sc = scores(
        [top(a=0.9), top(b=0.5)],
        left=[top(), top(b=0.9)],
        right=[top(), top(c=0.85)],
    )
    steps = align("abc", sc, settings)
    assert ops(steps) == [("match", (0,), (0,)), ("split", (1,), (1, 2))]
    assert steps[1].sims == (0.9, 0.85)


def test_merge_two_boxes_into_one_character(settings):
    # The localizer broke "b" in two (boxes 1 and 2); their union reads as b.
    sc = scores(
        [top(a=0.9), top(b=0.4, l=0.5), top(b=0.4), top(c=0.9)],
        merged=[top(), top(b=0.95), top()],
    )
    steps = align("abc", sc, settings)
    assert ops(steps) == [
        ("match", (0,), (0,)),
        ("merge", (1, 2), (1,)),
        ("match", (3,), (2,)),
    ]


def test_missed_character(settings):
    sc = scores([top(a=0.9), top(c=0.9)])
    steps = align("abc", sc, settings)
    assert ops(steps) == [("match", (0,), (0,)), ("missed", (), (1,)), ("match", (1,), (2,))]


def test_extra_box(settings):
    sc = scores([top(a=0.9), top(x=0.3), top(b=0.9)])
    steps = align("ab", sc, settings)
    assert ops(steps) == [("match", (0,), (0,)), ("extra", (1,), ()), ("match", (2,), (1,))]


def test_space_decides_which_box_is_the_extra_one(settings):
    # Boxes 1 and 2 look alike (b); box 2 starts a word. With a space before b the b is box 2,
    # without one it is box 1: only the transcription's space tells them apart.
    sc = scores(
        [top(a=0.9), top(b=0.6), top(b=0.6)],
        merged=[top(), top(b=0.6)],
        word_start=[False, False, True],
    )
    assert ops(align("a b", sc, settings)) == [
        ("match", (0,), (0,)),
        ("extra", (1,), ()),
        ("match", (2,), (1,)),
    ]
    assert ops(align("ab", sc, settings)) == [
        ("match", (0,), (0,)),
        ("match", (1,), (1,)),
        ("extra", (2,), ()),
    ]


def test_every_box_and_character_used_once(settings):
    rng = np.random.default_rng(0)
    alphabet = "abcdef"
    for _ in range(20):
        n, text = int(rng.integers(1, 9)), "".join(rng.choice(list(alphabet), rng.integers(1, 9)))

        def rand() -> TopK:
            return top(**{c: float(rng.uniform(0, 1)) for c in rng.choice(list(alphabet), 3)})

        sc = LineScores(
            [rand() for _ in range(n)],
            [rand() for _ in range(n)],
            [rand() for _ in range(n)],
            [rand() for _ in range(n - 1)],
            [bool(v) for v in rng.integers(0, 2, n)],
        )
        steps = align(text, sc, settings)
        assert [b for s in steps for b in s.boxes] == list(range(n))
        assert [c for s in steps for c in s.chars] == list(range(len(text)))


def test_topk_floor_for_labels_outside():
    row = TopK({"a": 0.9, "b": 0.7}, 0.4)
    assert row("a") == 0.9 and row("z") == 0.4


# ---------------------------------------------------------------------------
# Boxes from the steps
# ---------------------------------------------------------------------------


def test_split_cut_by_widths_and_missed_box_interpolated(settings):
    boxes = np.array([[0, 2, 30, 18], [50, 0, 60, 20], [80, 1, 90, 19]], np.float32)
    steps = [
        Step("split", (0,), (0, 1), (0.9, 0.9)),
        Step("match", (1,), (2,), (0.9,)),
        Step("missed", (), (3,)),
        Step("match", (2,), (4,), (0.9,)),
    ]
    chars = list("mibcd")
    out, problem = place_boxes(
        steps, chars, boxes, (20, 100), False, {"m": 1.0, "i": 0.5}, settings
    )
    assert problem is None
    np.testing.assert_allclose(out[0], [0, 2, 20, 18])  # m is twice as wide as i
    np.testing.assert_allclose(out[1], [20, 2, 30, 18])
    np.testing.assert_allclose(out[2], [50, 0, 60, 20])
    # The missed c fills the gap between its neighbours, their height.
    np.testing.assert_allclose(out[3], [60, 0, 80, 20])


def test_missed_character_without_room_is_a_problem(settings):
    boxes = np.array([[0, 0, 10, 20], [10.5, 0, 20, 20]], np.float32)
    steps = [
        Step("match", (0,), (0,), (0.9,)),
        Step("missed", (), (1,)),
        Step("match", (1,), (2,), (0.9,)),
    ]
    _, problem = place_boxes(steps, list("abc"), boxes, (20, 40), False, {}, settings)
    assert problem is not None and "'b'" in problem and "missed" in problem


def test_vertical_split_cuts_along_y(settings):
    boxes = np.array([[0, 0, 20, 40]], np.float32)
    steps = [Step("split", (0,), (0, 1), (0.9, 0.9))]
    out, _ = place_boxes(steps, list("ab"), boxes, (40, 20), True, {}, settings)
    np.testing.assert_allclose(out[0], [0, 0, 20, 20])
    np.testing.assert_allclose(out[1], [0, 20, 20, 40])


def test_text_chars_and_word_boxes():
    chars, space = text_chars("  ab  c d ")
    assert chars == list("abcd")
    assert space == [False, False, True, True]
    boxes = [[0, 0, 5, 10], [5, 1, 9, 11], [20, 0, 25, 10], [30, 2, 35, 12]]
    assert word_boxes("ab c d", boxes) == [[0, 0, 9, 11], [20, 0, 25, 10], [30, 2, 35, 12]]


# ---------------------------------------------------------------------------
# End to end with a real bundle
# ---------------------------------------------------------------------------

# The tiny bundle accepts 6 of these 8 unseen lines and puts every character of them at
# IoU >= 0.5 with its true box (the lowest 0.6; 93 % without tightening the boxes to the ink);
# an off-by-one assignment or a broken reading order puts most below.
IOU_FRACTION_BOUND = 0.9


def _strip(coco_json, out_json):
    coco = load_coco(coco_json)
    save_coco({**coco, "annotations": []}, out_json)
    return coco


def _ious(truth: dict, out: dict) -> list[float]:
    ti, oi = index_coco(truth, **CATEGORIES), index_coco(out, **CATEGORIES)
    ious = []
    for im in oi.images.values():
        true = [a["bbox"] for _, a in line_chars(ti, ti.images[im["id"]])]
        got = sorted(oi.image_anns(im["id"], oi.char_id), key=lambda a: a["id"])
        for t, g in zip(true, (a["bbox"] for a in got), strict=True):
            tb = np.array([[t[0], t[1], t[0] + t[2], t[1] + t[3]]])
            gb = np.array([[g[0], g[1], g[0] + g[2], g[1] + g[3]]])
            ious.append(float(box_iou(tb, gb)[0, 0]))
    return ious


@pytest.mark.slow
def test_align_synthetic_lines_end_to_end(en_bundle, tiny_coco_factory, tmp_path):
    coco_json, image_dir = en_lines(tiny_coco_factory, 8, 21)  # not the bundle's lines
    truth = _strip(coco_json, tmp_path / "text_only.json")
    out = tmp_path / "aligned"
    args = ["align", str(en_bundle), "--coco", str(tmp_path / "text_only.json")]
    assert main([*args, "--images", str(image_dir), "--output", str(out)]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["lines"] == 8
    assert report["accepted"] >= 6, report["lines_report"]
    aligned = load_coco(out / "lines.json")
    ious = _ious(truth, aligned)
    assert len(ious) == sum(len(text_chars(im["text"])[0]) for im in aligned["images"])
    assert np.mean(np.asarray(ious) >= 0.5) >= IOU_FRACTION_BOUND, sorted(ious)[:10]
    # The output is a valid raw COCO of the same images, words included.
    problems, _ = validate_coco(out / "lines.json", image_dir, **CATEGORIES)
    assert not problems, problems
    assert any(c["name"] == "word" for c in aligned["categories"])
    rows = (out / "report.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("image_id,file_name,status,confidence") and len(rows) == 9


@pytest.mark.slow
def test_bad_lines_are_reported_and_the_rest_aligned(en_bundle, tiny_coco_factory, tmp_path):
    coco_json, image_dir = en_lines(tiny_coco_factory, 8, 21)
    truth = load_coco(coco_json)
    coco = {**truth, "annotations": []}
    ims = coco["images"] = [dict(im) for im in truth["images"][:5]]
    ims[0]["text"] = "   "
    del ims[1]["text"]
    ims[2]["file_name"] = "no-such-line.png"
    # A letter the bundle's index lacks (z, in place of the true first character) is placed by
    # its neighbours; a line of such letters alone is rejected.
    original = ims[4]["text"]
    first = next(i for i, c in enumerate(original) if not c.isspace())
    ims[4]["text"] = original[:first] + "z" + original[first + 1 :]
    ims[3]["text"] = "zz zq"
    src = tmp_path / "lines.json"
    save_coco(coco, src)
    before = src.read_bytes()
    out = tmp_path / "aligned"
    args = ["align", str(en_bundle), "--coco", str(src), "--images", str(image_dir)]
    assert main([*args, "--output", str(out)]) == 0
    assert src.read_bytes() == before
    rows = {r["image_id"]: r for r in json.loads((out / "report.json").read_text())["lines_report"]}
    assert "no transcription" in rows[ims[0]["id"]]["reason"]
    assert "no transcription" in rows[ims[1]["id"]]["reason"]
    assert "no-such-line.png" in rows[ims[2]["id"]]["reason"]
    assert rows[ims[4]["id"]]["unknown_chars"] == "z"
    assert rows[ims[4]["id"]]["status"] == "accepted", rows[ims[4]["id"]]
    assert "reference index" in rows[ims[4]["id"]]["reason"]
    assert rows[ims[3]["id"]]["status"] == "rejected"
    assert "no character of the text is in the reference index" in rows[ims[3]["id"]]["reason"]
    # The unknown letter's box is still where the true first character is.
    aligned = load_coco(out / "lines.json")
    assert [im["id"] for im in aligned["images"]] == [ims[4]["id"]]
    truth_one = {**truth, "images": [truth["images"][4]]}
    assert _ious(truth_one, aligned)[0] >= 0.5


@pytest.mark.slow
def test_lines_with_boxes_kept_and_foreign_output_refused(en_bundle, tiny_coco_factory, tmp_path):
    coco_json, image_dir = en_lines(tiny_coco_factory, 8, 21)
    truth = load_coco(coco_json)
    keep = {im["id"] for im in truth["images"][:2]}
    coco = {
        **truth,
        "images": truth["images"][:2],
        "annotations": [a for a in truth["annotations"] if a["image_id"] in keep],
    }
    src = tmp_path / "boxed.json"
    save_coco(coco, src)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me", encoding="utf-8")
    args = ["align", str(en_bundle), "--coco", str(src), "--images", str(image_dir)]
    assert main([*args, "--output", str(foreign)]) == 1
    assert os.listdir(foreign) == ["notes.txt"]
    out = tmp_path / "aligned"
    assert main([*args, "--output", str(out)]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["given"] == 2 and report["accepted"] == 0
    assert load_coco(out / "lines.json")["annotations"] == coco["annotations"]


def test_settings_from_config_follow_the_schema():
    s = AlignSettings.from_config(
        config_sections({"align": {"top_k": 5, "split_penalty": 0.4}}).align
    )
    assert s.top_k == 5 and s.split_penalty == 0.4
    assert dataclasses.replace(s, top_k=3).top_k == 3


@pytest.mark.slow
def test_workflow_trains_on_aligned_lines(en_bundle, tiny_coco_factory, tmp_path):
    """With `align.bundle`, rule align_lines feeds the data stage (real Snakemake)."""
    from test_workflow_data import _snakemake

    coco_json, image_dir = en_lines(tiny_coco_factory, 8, 21)
    _strip(coco_json, tmp_path / "text_only.json")
    config = {
        "seed": 7,
        "init_from": None,  # from scratch: no synthetic base for few lines
        "dataset": {"coco_json": str(tmp_path / "text_only.json"), "image_dir": str(image_dir)},
        "align": {"bundle": str(en_bundle)},
    }
    target = "results/data/splits/train.json"
    result = _snakemake(tmp_path, config, target)
    assert result.returncode == 0, result.stderr[-4000:]
    res = tmp_path / "results" / "data"
    report = json.loads((res / "aligned" / "report.json").read_text(encoding="utf-8"))
    accepted = {r["image_id"] for r in report["lines_report"] if r["status"] == "accepted"}
    assert len(accepted) >= 6
    split_ids = set()
    for split in ("train", "val", "test"):
        split_ids |= {im["id"] for im in load_coco(res / "splits" / f"{split}.json")["images"]}
    assert split_ids == accepted
    assert json.loads((res / "validation.json").read_text(encoding="utf-8"))["valid"]
    again = _snakemake(tmp_path, config, target)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_dataset_characters_the_bundle_lacks_are_added_before_aligning(
    en_bundle, tiny_coco_factory, tmp_path
):
    """`align.extend_index` (default): rule extend_align_bundle adds the characters of the
    transcriptions that the given bundle's index lacks, and align_lines reads that copy; with
    it off, those characters are only placed by geometry (real Snakemake)."""
    from test_envs import _job_counts, _rule_inputs
    from test_workflow_data import _snakemake

    from effocr.recognizer.reference import ReferenceIndex
    from effocr.synth.fonts import matplotlib_font_dir

    new = "bgk"  # letters en_bundle's index lacks (it holds EN_CLASSES)
    assert not set(new) & set(ReferenceIndex.load(en_bundle).labels)
    coco_json, image_dir = tiny_coco_factory(
        8, "en", 31, font_paths=[matplotlib_font_dir() / "DejaVuSans.ttf"],
        charset=list(EN_CLASSES + new), **EN_LINE_KWARGS,
    )  # fmt: skip
    truth = _strip(coco_json, tmp_path / "text_only.json")
    seen = set("".join(im["text"] for im in truth["images"])) & set(new)
    assert seen
    before = {p.name: p.read_bytes() for p in en_bundle.iterdir()}
    config = {
        "seed": 7,
        "init_from": None,
        "dataset": {"coco_json": str(tmp_path / "text_only.json"), "image_dir": str(image_dir)},
        "fonts": {"include": ["DejaVuSans", "DejaVuSerif"]},
        "align": {"bundle": str(en_bundle), "min_confidence": 0.0},
    }
    target = "results/data/aligned/report.json"
    result = _snakemake(tmp_path, config, target)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert _job_counts(log)["extend_align_bundle"] == 1
    extended = tmp_path / "results" / "data" / "align_bundle"
    labels = ReferenceIndex.load(extended).labels
    assert set(labels) == set(ReferenceIndex.load(en_bundle).labels) | seen
    assert "results/data/align_bundle" in _rule_inputs(log, "align_lines")
    report = json.loads((tmp_path / target).read_text(encoding="utf-8"))
    assert not any(set(r["unknown_chars"]) & seen for r in report["lines_report"])
    assert {p.name: p.read_bytes() for p in en_bundle.iterdir()} == before

    config["align"]["extend_index"] = False
    off = _snakemake(tmp_path, config, target)
    assert off.returncode == 0, (off.stdout + off.stderr)[-4000:]
    report = json.loads((tmp_path / target).read_text(encoding="utf-8"))
    unknown = set("".join(r["unknown_chars"] for r in report["lines_report"]))
    assert unknown == seen


def test_inputs_inside_the_output_and_a_missing_bundle_are_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "char"}]}
    save_coco(coco, out / "lines.json")
    args = ["align", str(tmp_path / "no-bundle"), "--images", str(tmp_path)]
    assert main([*args, "--coco", str(out / "lines.json"), "--output", str(out)]) == 1
    assert "inside the output folder" in capsys.readouterr().err
    save_coco(coco, tmp_path / "lines.json")
    assert main([*args, "--coco", str(tmp_path / "lines.json"), "--output", str(out)]) == 1
    assert "no-bundle" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["lines.json"]


def test_nothing_accepted_names_the_reasons():
    rows = [
        {"reason": "the localizer found no character"},
        {"reason": "confidence 0.412 < align.min_confidence 0.6 (similarity 0.7, one-to-one 0.5)"},
        {"reason": "confidence 0.377 < align.min_confidence 0.6 (similarity 0.6, one-to-one 0.6)"},
    ]
    rows = [{"status": "rejected", **row} for row in rows]
    summary = {"lines": 3, "accepted": 0, "given": 0, "lines_report": rows}
    with pytest.raises(EffOCRError, match="no line of 3") as err:
        require_training_lines(summary, "out/report.csv")
    assert "2 x confidence" in str(err.value) and "out/report.csv" in str(err.value)
    with pytest.raises(EffOCRError, match="1 x the localizer found no character"):
        require_training_lines(summary)
    require_training_lines({**summary, "accepted": 1}, "out/report.csv")
