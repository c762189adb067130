"""effocr.lm: the character n-gram model, the lattice decoder, the bundle's lm.json and the
pipeline with and without it (real ONNX Runtime and FAISS on the test bundles)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import export_sections
from schema_defaults import at_images

from effocr.bundle import Manifest
from effocr.config import LMSection, config_sections, load_config
from effocr.data.coco import load_coco
from effocr.lm import LM_FILE, CharLM, LMDecoder, decode_lattice, lm_section, training_texts
from effocr.utils import EffOCRError

TEXT = "the cat sat on the mat. the rat ate the hat; then the bat left the tent."


def lm_config(**changes) -> LMSection:
    return config_sections({"lm": changes}).lm


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_probabilities_sum_to_one_over_the_vocabulary(order: int) -> None:
    lm = CharLM.train([TEXT], order)
    unknown = "\u2603"  # not in the text: stands for every character outside the vocabulary
    assert unknown not in lm.vocab
    for context in ["", "t", "th", "the ", "at; ", "zzzz", "xq"]:
        total = sum(lm.prob(context, c) for c in [*lm.vocab, unknown])
        assert total == pytest.approx(1.0, abs=1e-9), context


def test_unseen_ngrams_and_characters_get_probability() -> None:
    lm = CharLM.train([TEXT], 4)
    assert lm.prob("the", " ") > lm.prob("the", "{") > 0
    assert lm.prob("xyz", "q") > 0  # context and character never seen
    assert lm.prob("th", "e") > 0.5  # "th" is followed by "e" in 6 of 7 cases
    # Only the last order - 1 characters count.
    assert lm.prob("a long prefix the", " ") == pytest.approx(lm.prob("the", " "), rel=0)
    assert lm.prob("a long prefix the", " ") != pytest.approx(lm.prob("he", " "))
    assert lm.logprob("t", "he") == pytest.approx(
        math.log(lm.prob("t", "h")) + math.log(lm.prob("th", "e"))
    )


def test_witten_bell_by_hand() -> None:
    # Order 2 on "aab": unigram counts a:2 b:1 (T=2); context "a" -> a:1 b:1 (T=2).
    lm = CharLM.train(["aab"], 2)
    base = 1 / 3  # vocabulary {a, b} plus the unknown symbol
    p_a = (2 + 2 * base) / (3 + 2)
    p_b_after_a = (1 + 2 * ((1 + 2 * base) / 5)) / (2 + 2)
    assert lm.prob("", "a") == pytest.approx(p_a)
    assert lm.prob("a", "b") == pytest.approx(p_b_after_a)
    assert lm.prob("b", "a") == pytest.approx(p_a)  # "b" never precedes anything: unigram


def test_lines_are_counted_separately() -> None:
    lm = CharLM.train(["ab", "cd"], 2)
    assert "b" not in lm.counts  # no n-gram "bc" across the two lines


def test_save_load_round_trip_and_bad_files(tmp_path: Path) -> None:
    lm = CharLM.train([TEXT], 5)
    path = tmp_path / LM_FILE
    lm.save(path)
    back = CharLM.load(path)
    assert back.order == 5 and back.vocab == lm.vocab
    for ctx, ch in [("the ", "c"), ("zz", "{"), ("", "t")]:
        assert back.prob(ctx, ch) == pytest.approx(lm.prob(ctx, ch), rel=1e-12)
    bad = tmp_path / "bad.json"
    for content, problem in [
        ("{not json", "bad.json"),
        (json.dumps({"format": "other"}), "not an effocr character language model"),
        (json.dumps({**lm.to_dict(), "format_version": 9}), "format_version 9"),
        (json.dumps({**lm.to_dict(), "order": 0}), "`order` must be a positive integer"),
        (json.dumps({**lm.to_dict(), "counts": {"": {"a": -1}}}), "bad count"),
        (json.dumps({**lm.to_dict(), "order": 2}), "bad context for order 2"),
    ]:
        bad.write_text(content, encoding="utf-8")
        with pytest.raises(EffOCRError, match=problem) as err:
            CharLM.load(bad)
        assert str(bad) in str(err.value)


def test_training_texts(tiny_coco, tmp_path: Path) -> None:
    coco_json, _ = tiny_coco
    text = tmp_path / "corpus.txt"
    text.write_text("# a comment\nsome running\n  text\n", encoding="utf-8")
    texts = training_texts([coco_json], [text])
    lines = [im["text"] for im in load_coco(coco_json)["images"]]
    assert texts == [*lines, "some running text"]
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n", encoding="utf-8")
    with pytest.raises(EffOCRError, match="empty.txt"):
        training_texts([], [empty])


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


def test_decoder_picks_the_probable_path_and_ignores_the_lm_at_weight_zero() -> None:
    lm = CharLM.train([TEXT * 3], 4)
    # "{he" looks a little more like what the glyphs showed than "the".
    lattice = [
        [(0, "{", 0.82), (1, "t", 0.80)],
        [(0, "h", 0.90), (1, "b", 0.70)],
        [(0, "c", 0.81), (1, "e", 0.80)],
    ]
    assert decode_lattice(lattice, None, lm, 0.0, 16) == [0, 0, 0]
    assert decode_lattice(lattice, None, lm, 0.05, 16) == [1, 0, 1]
    # A confident visual decision beats a weak LM preference.
    firm = [[(0, "{", 0.99), (1, "t", 0.50)], *lattice[1:]]
    assert decode_lattice(firm, None, lm, 0.05, 16)[0] == 0


def test_decoder_scores_the_spaces_it_is_given() -> None:
    lm = CharLM.train(["a b. a b. a b. ab, ab, ab,"], 3)
    # Second glyph: "." or ","; after "a b" the text has ".", after "ab" it has ",".
    lattice = [[(0, "a", 0.9)], [(0, "b", 0.9)], [(0, ".", 0.80), (1, ",", 0.80)]]
    assert decode_lattice(lattice, [False, True, False], lm, 0.1, 8) == [0, 0, 0]
    assert decode_lattice(lattice, [False, False, False], lm, 0.1, 8) == [0, 0, 1]


def test_decoder_with_a_wide_beam_is_exact() -> None:
    lm = CharLM.train([TEXT * 3], 3)
    rng = np.random.default_rng(0)
    letters = sorted(set(TEXT))
    for _ in range(20):
        lattice = [
            [(j, str(rng.choice(letters)), float(rng.uniform(0.5, 1))) for j in range(3)]
            for _ in range(6)
        ]
        best = decode_lattice(lattice, None, lm, 0.1, 10_000)

        def score(path, lattice=lattice):
            text = "".join(lattice[i][j][1] for i, j in enumerate(path))
            vis = sum(lattice[i][j][2] for i, j in enumerate(path))
            return vis + 0.1 * lm.logprob("", text)

        # Exhaustive check over all 3^6 paths.
        grid = np.stack(np.meshgrid(*[range(3)] * 6, indexing="ij"), -1).reshape(-1, 6)
        assert score(best) == pytest.approx(max(score(p) for p in grid.tolist()), abs=1e-9)


def test_lm_decoder_candidates_margin_and_duplicate_classes() -> None:
    lm = CharLM.train([TEXT * 3], 4)
    chars = ["{", "t", "t", "h", "e", "c"]
    dec = LMDecoder(lm, chars, weight=0.05, k=3, beam=8, margin=0.1, lexicon_margin=0.0)
    assert dec.active
    # Rows 1 and 2 are both "t" (two fonts): one candidate; "c" is beyond the margin.
    cands = dec._candidates(np.array([0.9, 0.88, 0.87]), np.array([0, 1, 2]))
    assert [(j, ch) for j, ch, _ in cands] == [(0, "{"), (1, "t")]
    assert dec._candidates(np.array([0.9, 0.7, 0.6]), np.array([0, 5, -1]))[0][1] == "{"
    assert len(dec._candidates(np.array([0.9, 0.7, 0.6]), np.array([0, 5, -1]))) == 1
    sims = np.array([[0.82, 0.80, 0.1], [0.9, 0.2, 0.1], [0.81, 0.80, 0.1]])
    rows = np.array([[0, 1, 3], [3, 4, 5], [5, 4, 0]])
    assert dec(sims, rows, None).tolist() == [1, 0, 1]
    assert dec(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), None).tolist() == []
    assert not LMDecoder(lm, chars, weight=0.0, k=3, beam=8, margin=0.1, lexicon_margin=0.0).active
    assert not LMDecoder(lm, chars, weight=0.1, k=1, beam=8, margin=0.1, lexicon_margin=0.0).active
    with pytest.raises(EffOCRError, match="weight"):
        LMDecoder(lm, chars, weight=-1.0, k=3, beam=8, margin=0.1, lexicon_margin=0.0)


# ---------------------------------------------------------------------------
# Bundles and the pipeline
# ---------------------------------------------------------------------------


def bundle_with_lm(bundle: Path, out: Path, texts: list[str], **cfg) -> Path:
    """A copy of a fixture bundle with an LM trained on `texts` (as export writes it)."""
    shutil.copytree(bundle, out)
    lm = CharLM.train(texts, lm_config(**cfg).order)
    lm.save(out / LM_FILE)
    manifest = Manifest.read(out)
    manifest.lm = lm_section(lm_config(**cfg), lm.order)
    manifest.write(out)
    return out


def test_export_ships_the_lm_with_its_checksum(tiny_bundle: Path, tiny_coco_factory, tmp_path):
    from effocr.export import export_bundle

    coco_json, image_dir = tiny_coco_factory(8, "en", 5, degrade=False, max_chars=14)
    lm_json = tmp_path / "lm.json"
    CharLM.train(training_texts([coco_json], []), 3).save(lm_json)
    root = tiny_bundle.parent
    out = tmp_path / "bundle"
    export_bundle(
        root / "recognizer" / "model.pt",
        root / "index",
        root / "localizer" / "model.pt",
        coco_json,
        out,
        **export_sections(
            at_images(None, image_dir),
            export={"quantize": "none"},
            lm={"weight": 0.2, "enabled": False},
        ),
        lm_json=lm_json,
    )
    manifest = Manifest.read(out)
    assert manifest.lm == {
        "file": "lm.json",
        "order": 3,
        "enabled": False,
        "weight": 0.2,
        "k": lm_config().k,
        "beam": lm_config().beam,
        "margin": lm_config().margin,
        "lexicon_margin": lm_config().lexicon_margin,
    }
    assert "lm.json" in manifest.files
    assert (out / "lm.json").read_bytes() == lm_json.read_bytes()
    # A changed lm.json is caught by the checksum, naming the file.
    with open(out / "lm.json", "a", encoding="utf-8") as fh:
        fh.write(" ")
    with pytest.raises(EffOCRError, match=r"lm\.json: checksum mismatch"):
        Manifest.read(out)
    # A broken LM fails the export and leaves no bundle.
    (tmp_path / "broken.json").write_text("{}", encoding="utf-8")
    with pytest.raises(EffOCRError, match="broken.json"):
        export_bundle(
            root / "recognizer" / "model.pt",
            root / "index",
            root / "localizer" / "model.pt",
            coco_json,
            tmp_path / "bundle2",
            **export_sections(at_images(None, image_dir), export={"quantize": "none"}),
            lm_json=tmp_path / "broken.json",
        )
    assert not (tmp_path / "bundle2").exists()


def test_a_bundle_without_lm_reads_as_before(tiny_bundle: Path) -> None:
    from effocr.infer import Engine

    manifest = Manifest.read(tiny_bundle)
    assert manifest.lm == {} and "lm" not in manifest.to_dict()
    assert "lm.json" not in manifest.file_names()
    with Engine(tiny_bundle, device="cpu") as engine:
        assert engine.pipeline.decoder is None
    with pytest.raises(EffOCRError, match="has no language model"):
        Engine(tiny_bundle, device="cpu", lm=True)


def test_en_bundle_with_lm_end_to_end(en_bundle: Path, tiny_coco_factory, tmp_path) -> None:
    """An LM trained on the bundle's own training text: weight 0 changes nothing, and on
    unseen lines of the same letters the LM does not make the text worse; only labels and
    their cosines change, never boxes or spaces."""
    from effocr.infer import Engine
    from effocr.metrics import cer
    from tests.conftest import en_lines

    train_json, _ = en_lines(tiny_coco_factory, 16, 11)
    bundle = bundle_with_lm(
        en_bundle, tmp_path / "b", training_texts([train_json], []), weight=0.05
    )
    test_json, image_dir = en_lines(tiny_coco_factory, 6, 23)
    images = sorted(image_dir.glob("*.png"))
    refs_by_name = {im["file_name"]: im["text"] for im in load_coco(test_json)["images"]}
    refs = [refs_by_name[p.name] for p in images]
    with Engine(bundle, device="cpu", lm=False) as engine:
        off = engine.infer(images)
    with Engine(bundle, device="cpu", lm=True, lm_weight=0.0) as engine:
        assert engine.pipeline.decoder is None
        zero = engine.infer(images)
    with Engine(bundle, device="cpu") as engine:  # the bundle says enabled
        assert engine.pipeline.decoder is not None
        on = engine.infer(images)
        assert set(engine.timings) >= {"lm", "knn"} and engine.timings["lm"] > 0
    assert [r.to_dict() for r in zero] == [r.to_dict() for r in off]
    for a, b in zip(off, on, strict=True):
        assert [c.bbox for c in a.chars] == [c.bbox for c in b.chars]
        assert a.words == b.words
        assert [i for i, ch in enumerate(a.text) if ch == " "] == [
            i for i, ch in enumerate(b.text) if ch == " "
        ]
        for ca, cb in zip(a.chars, b.chars, strict=True):
            assert cb.score <= ca.score + 1e-6  # the cosine of the class chosen, <= top-1's
    assert cer(refs, [r.text for r in on]) <= cer(refs, [r.text for r in off]) + 1e-9
    # Evaluation records what it used.
    from effocr.evaluate import evaluate_set

    spec = {"name": "t", "path": str(test_json), "type": "coco", "image_dir": str(image_dir)}
    opts = {**load_config(None)["evaluate"], "tesseract": False}
    m_off = evaluate_set(bundle, spec, tmp_path / "off", opts, lm=False)
    m_on = evaluate_set(bundle, spec, tmp_path / "on", opts)
    assert m_off["lm"] == {"enabled": False}
    assert m_on["lm"]["enabled"] is True and m_on["lm"]["weight"] == pytest.approx(0.05)
    assert m_off["effocr"]["cer"] == pytest.approx(cer(refs, [r.text for r in off]))
    assert m_on["effocr"]["cer"] == pytest.approx(cer(refs, [r.text for r in on]))


def test_lm_settings_overrides() -> None:
    from effocr.lm import lm_settings

    section = lm_section(lm_config(enabled=False, weight=0.3), 5)
    assert lm_settings(section, None, None, source="b") is None
    assert lm_settings(section, True, None, source="b")["weight"] == 0.3
    assert lm_settings(section, True, 0.1, source="b")["weight"] == 0.1
    on = {**section, "enabled": True}
    assert lm_settings(on, None, None, source="b") == on
    assert lm_settings(on, False, 0.1, source="b") is None
    assert lm_settings(on, None, None, source="b", lexicon_margin=0.25)["lexicon_margin"] == 0.25
    assert lm_settings(on, None, None, source="b")["lexicon_margin"] == on["lexicon_margin"]
    assert lm_settings({}, None, None, source="b") is None
    with pytest.raises(EffOCRError, match="b: this bundle has no language model"):
        lm_settings({}, True, None, source="b")


def test_infer_cli_lm_switch(tiny_bundle: Path, tiny_coco_factory, tmp_path: Path, capsys) -> None:
    from effocr.cli import main

    _, image_dir = tiny_coco_factory(8, "en", 5, degrade=False, max_chars=14)
    image = str(sorted(image_dir.glob("*.png"))[0])
    assert main(["infer", "--model", str(tiny_bundle), "--lm", "on", image]) == 1
    assert "has no language model" in capsys.readouterr().err
    assert main(["infer", "--model", str(tiny_bundle), "--lm", "off", image]) == 0
    off = json.loads(capsys.readouterr().out)
    bundle = bundle_with_lm(tiny_bundle, tmp_path / "b", ["the text of the tiny lines"])
    assert main(["infer", "--model", str(bundle), "--lm", "on", "--lm-weight", "0", image]) == 0
    assert json.loads(capsys.readouterr().out) == off
    assert main(["infer", "--model", str(bundle), image]) == 0  # on, as the bundle says
    on = json.loads(capsys.readouterr().out)
    assert [c["bbox"] for c in on["chars"]] == [c["bbox"] for c in off["chars"]]


def test_line_candidates_match_the_per_glyph_rule_and_steps_match_logprob() -> None:
    """The line-at-once candidate masks keep exactly what the per-glyph rule keeps (within the
    margin of the nearest, no row -1, first column of each class), and `CharLM.step` is
    `logprob` plus the cut context, from the cache or not."""
    lm = CharLM.train([TEXT * 3], 4)
    chars = ["{", "t", "t", "h", "e", "c", "h"]
    dec = LMDecoder(lm, chars, weight=0.05, k=5, beam=8, margin=0.15, lexicon_margin=0.0)
    rng = np.random.default_rng(1)
    sims = np.sort(rng.uniform(0.5, 1.0, (200, 5)).astype(np.float32), axis=1)[:, ::-1]
    rows = rng.integers(-1, len(chars), (200, 5))
    rows[:, 0] = np.maximum(rows[:, 0], 0)
    got = dec._line_candidates(sims, rows)
    for i in range(len(rows)):
        want, seen = [], set()
        floor = float(sims[i, 0]) - 0.15
        for j, (sim, row) in enumerate(zip(sims[i].tolist(), rows[i].tolist(), strict=True)):
            if row >= 0 and sim >= floor and chars[row] not in seen:
                seen.add(chars[row])
                want.append((j, chars[row], sim))
        assert got[i] == want
    # A line with one candidate per glyph is its nearest neighbours, decoded or not.
    firm = np.array([[0.9, 0.5], [0.95, 0.6]], np.float32)
    assert dec(firm, np.array([[0, 3], [4, 5]]), None).tolist() == [0, 0]
    for ctx, text in [("", "t"), ("the", " "), ("e t", "he"), ("abc", "d")]:
        for _ in range(2):  # computed, then cached
            lp, new = lm.step(ctx, text)
            assert lp == pytest.approx(lm.logprob(ctx, text), abs=1e-12)
            assert new == (ctx + text)[-3:]
