"""effocr.recognizer.words: the word-level recognizer's vocabulary, crops and word reading."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_coco import BOX, STEP, THICK, make_lines

from effocr.onnx_session import CPU_PROVIDER, make_session
from effocr.pipeline import CharResult, LineResult, RecognizerStage, ReferenceSearch
from effocr.recognizer.reference import ReferenceIndex
from effocr.recognizer.transforms import glyph_squares
from effocr.recognizer.words import (
    WordReader,
    crop_words,
    letter_span,
    ranked_vocabulary,
    word_core,
    word_spans,
    word_vocabulary,
)
from effocr.utils import EffOCRError, label_to_codepoints

CATEGORIES = {"char_category": "char", "word_category": "word"}


def test_vocabulary_counts_words_case_folded_and_adds_title_case():
    text = "The cat and the dog. THE end, (the) cat's 42 x-ray x; the Cat"
    # the: 5, cat: 2 (cat's and x-ray are not words of letters only; x is too short).
    assert word_vocabulary(text, 2) == ["the", "The", "cat", "Cat"]
    # Ties in alphabetical order.
    assert word_vocabulary(text, 4)[4:] == ["and", "And", "dog", "Dog"]


def test_ranked_vocabulary_keeps_the_list_order():
    words = ["the", "The", "of", "x", "don't", "Data", "42", "and"]
    assert ranked_vocabulary(words, 3) == ["the", "The", "of", "Of", "data", "Data"]
    assert ranked_vocabulary(words, 10)[-2:] == ["and", "And"]
    with pytest.raises(EffOCRError, match="size"):
        ranked_vocabulary(words, 0)


def test_letter_span_and_core():
    assert letter_span(["(", "t", "h", "e", ")", ","]) == (1, 4)
    assert letter_span([".", ","]) == (0, 0)
    # A misread inside a word stays in the core: that is what the word recognizer may fix.
    assert word_core(["'", "t", "{", "e", ","]) == (1, 4)
    assert word_core(["1", "9", "a"]) is None  # numbers stay with the characters
    assert word_core(["a", ","]) is None  # one letter: left to the characters
    assert word_core(["a", ","], min_labels=1) == (0, 1)


def test_word_spans_follow_the_text_with_multi_character_labels():
    labels = ["a", "fi", "r", "s", "t", ",", "b"]
    assert word_spans("a first, b", labels) == [(0, 1), (1, 6), (6, 7)]
    assert word_spans("a  first,b", labels) == [(0, 1), (1, 7)]
    with pytest.raises(ValueError, match="label 1"):
        word_spans("a frist, b", labels)
    with pytest.raises(ValueError, match="goes on"):
        word_spans("a first, b c", labels)


def _manifest(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_crop_words_cuts_vocabulary_words_at_full_height(tmp_path):
    json_path, image_dir, coco = make_lines(tmp_path, ["ab, cd", "(ef) gh"])
    out = tmp_path / "words"
    counts = crop_words(
        {"train": json_path},
        image_dir,
        out,
        tmp_path / "words.csv",
        ["ab", "ef", "xy"],
        padding=1,
        jitter=2,
        jitter_range=0.15,
        seed=3,
        **CATEGORIES,
    )
    rows = _manifest(tmp_path / "words.csv")
    assert counts == {"train": 6}
    labels = sorted({r["codepoints"] for r in rows})
    assert labels == [label_to_codepoints("ab"), label_to_codepoints("ef")]
    plain = {r["codepoints"]: r for r in rows if "_j" not in r["path"]}
    # "ab": chars at positions 0 and 1, without the comma; "ef": positions 1-2 without "(", ")".
    ab = Image.open(tmp_path / plain[label_to_codepoints("ab")]["path"])
    assert ab.size == (STEP + BOX + 2, THICK)
    ef = Image.open(tmp_path / plain[label_to_codepoints("ef")]["path"])
    assert ef.size == (STEP + BOX + 2, THICK)
    assert {r["source"] for r in rows} == {"real"} and {r["split"] for r in rows} == {"train"}
    assert plain[label_to_codepoints("ef")]["origin"] == "line_1.png"
    # The same inputs give the same jittered cuts.
    again = crop_words(
        {"train": json_path},
        image_dir,
        tmp_path / "again",
        tmp_path / "again.csv",
        ["ab", "ef"],
        padding=1,
        jitter=2,
        jitter_range=0.15,
        seed=3,
        **CATEGORIES,
    )
    assert again == counts
    for r in rows:
        a = np.asarray(Image.open(tmp_path / r["path"]))
        b = np.asarray(Image.open(tmp_path / r["path"].replace("words/", "again/")))
        assert np.array_equal(a, b)


def test_crop_words_names_the_line_whose_boxes_do_not_match(tmp_path):
    json_path, image_dir, coco = make_lines(tmp_path, ["ab cd"])
    coco["images"][0]["text"] = "ab cde"
    json_path.write_text(json.dumps(coco))
    with pytest.raises(EffOCRError, match=r"lines\.json: image .*line_0\.png"):
        crop_words(
            {"val": json_path},
            image_dir,
            tmp_path / "words",
            tmp_path / "words.csv",
            ["ab"],
            padding=0,
            jitter=0,
            jitter_range=0.15,
            seed=0,
            **CATEGORIES,
        )
    assert not (tmp_path / "words.csv").exists() and not (tmp_path / "words").exists()


def _line(text: str, width: int = 200, height: int = 30) -> LineResult:
    """A read line: one 10-px box per character, spaces 10 px wide."""
    res = LineResult(image="line.png", text=text, width=width, height=height)
    x = 2.0
    for ch in text:
        if ch != " ":
            res.chars.append(CharResult([x, 5.0, x + 8.0, 25.0], label_to_codepoints(ch), ch, 0.5))
        x += 10.0
    return res


class _NoModel:
    """`apply` needs neither a model nor an index."""


def _reader(threshold: float = 0.83, padding: int = 2) -> WordReader:
    return WordReader(_NoModel(), _NoModel(), 32, padding, threshold)


def test_candidates_are_the_letters_of_words_without_digits():
    res = _line("(Tbe) lest, 1994 of a")
    cands = _reader().candidates(res)
    assert [(c.start, c.end, c.word) for c in cands] == [(1, 4, 0), (5, 9, 1), (14, 16, 3)]
    # Tbe: chars at x 12..38, plus 2 px each side; full line height.
    assert cands[0].box == (10, 0, 42, 30)
    res.vertical = True
    assert _reader().candidates(res) == []


def test_apply_replaces_words_at_or_above_the_threshold():
    res = _line("(Tbe) lest, of")
    reader = _reader(0.85)
    cands = reader.candidates(res)
    sims = np.array([0.9, 0.8, 0.5], np.float32)
    words = ["The", "test", "or"]
    out, n = reader.apply(res, cands, sims, words)
    assert (out.text, n) == ("(The) lest, of", 1)
    assert res.text == "(Tbe) lest, of"  # the input is not changed
    out, n = reader.apply(res, cands, sims, words, min_similarity=0.75)
    assert (out.text, n) == ("(The) test, of", 2)
    assert [c.char for c in out.chars][:6] == ["(", "T", "h", "e", ")", "t"]
    assert out.chars[2].bbox == res.chars[2].bbox and out.chars[2].score == pytest.approx(0.9)
    assert out.chars[2].codepoints == "U+0068"
    out, n = reader.apply(res, cands, sims, words, min_similarity=0.0)
    assert out.text == "(The) test, or"


def test_apply_spreads_a_word_of_another_length_over_its_span():
    # "rn" read as one glyph "m": five glyphs for the six letters of "modern".
    res = _line("a modem, so")
    reader = _reader()
    cands = reader.candidates(res)
    assert [(c.start, c.end) for c in cands] == [(1, 6), (7, 9)]
    out, n = reader.apply(res, cands, np.array([0.95, 0.99]), ["modern", "so"])
    assert out.text == "a modern, so" and n == 2
    letters = out.chars[1:7]
    assert [c.char for c in letters] == list("modern")
    x0, x1 = res.chars[1].bbox[0], res.chars[5].bbox[2]
    assert letters[0].bbox[0] == pytest.approx(x0) and letters[-1].bbox[2] == pytest.approx(x1)
    widths = [c.bbox[2] - c.bbox[0] for c in letters]
    assert widths == pytest.approx([(x1 - x0) / 6] * 6)
    assert out.chars[7].char == "," and out.chars[7].bbox == res.chars[6].bbox
    # A word read as it already was keeps its glyphs and boxes.
    assert [c.bbox for c in out.chars[8:]] == [c.bbox for c in res.chars[7:]]
    # The words after a longer replacement still line up with the text.
    out, _ = reader.apply(res, cands, np.array([0.95, 0.99]), ["modern", "to"])
    assert out.text == "a modern, to"


def _pixels_model(path, size: int):
    """An ONNX model whose embedding is the normalised pixels themselves: unlike an untrained
    net, it tells a crop from the same crop moved by a pixel."""
    torch.onnx.export(
        torch.nn.Flatten(),
        torch.zeros(1, 3, size, size),
        str(path),
        input_names=["imgs"],
        output_names=["embs"],
        dynamic_axes={"imgs": {0: "n"}, "embs": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )
    return make_session(path, [CPU_PROVIDER], 1)


def test_nearest_reads_each_word_crop_with_onnx_and_faiss(tmp_path):
    """Real ONNX Runtime and FAISS: a word crop of a line finds the reference holding the same
    pixels, and a crop one pixel wider does not match it."""
    stage = RecognizerStage(_pixels_model(tmp_path / "word.onnx", 32), (0.5,) * 3, (0.25,) * 3, 8)
    rng = np.random.default_rng(0)
    text = "ab cde fg"
    res = _line(text, width=100, height=30)
    img = np.full((30, 100), 255, np.uint8)
    for c in res.chars:  # a different ink pattern under every glyph box
        x0, y0, x1, y1 = (int(v) for v in c.bbox)
        img[y0:y1, x0:x1] = rng.integers(0, 200, (y1 - y0, x1 - x0))
    reader = WordReader(stage, None, 32, 1, 0.83)
    cands = reader.candidates(res)
    refs = glyph_squares(img, np.asarray([c.box for c in cands]), 32)
    index = ReferenceIndex.build(stage(refs), ["ab", "cde", "fg"])
    reader.search = ReferenceSearch(index, index.labels)
    sims, words = reader.nearest(img, cands)
    assert words == ["ab", "cde", "fg"]
    assert np.all(sims > 1 - 1e-4)
    # With more padding, a word wider than the line is high is no longer the reference's
    # pixels; "fg" is narrower, so its crop is padded with white to the same square anyway.
    wider = WordReader(stage, reader.search, 32, 3, 0.83)
    sims_wider, _ = wider.nearest(img, wider.candidates(res))
    assert np.all(sims_wider[:2] < 0.99) and sims_wider[2] > 1 - 1e-4
    out, n = reader(img, res)
    assert out.text == text and n == 3
    assert reader(img, _line(""))[1] == 0
