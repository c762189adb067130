"""effocr.lexicon: the word list in lm.json and the rereading of the words it does not hold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from effocr.bundle import Manifest
from effocr.config import config_sections
from effocr.lexicon import Lexicon, read_word_list, words_of
from effocr.lm import LM_FILE, CharLM, LMDecoder, train_lm_file
from effocr.utils import EffOCRError

LEX = Lexicon(["design", "from", "theory", "real", "life", "algorithm", "an", "a", "i"])


def line(readings: list[list[tuple[str, float]]]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(sims, rows, chars) of a line whose glyph i has the given (class, cosine) neighbours,
    best first; missing columns are row -1."""
    chars: list[str] = []
    k = max(len(r) for r in readings)
    sims = np.zeros((len(readings), k), np.float32)
    rows = np.full((len(readings), k), -1, np.int64)
    for i, glyph in enumerate(readings):
        for j, (text, sim) in enumerate(glyph):
            chars.append(text)
            sims[i, j], rows[i, j] = sim, len(chars) - 1
    return sims, rows, chars


def spelled(word: str, sure: float = 0.95) -> list[list[tuple[str, float]]]:
    return [[(ch, sure)] for ch in word]


def text_of(sims, rows, chars, picked, spaces) -> str:
    out = []
    for i, j in enumerate(picked):
        if spaces[i] and i:
            out.append(" ")
        out.append(chars[rows[i, j]])
    return "".join(out)


def read(readings, margin, lexicon=LEX, spaces=None) -> str:
    sims, rows, chars = line(readings)
    spaces = np.zeros(len(readings), bool) if spaces is None else spaces
    given = spaces.copy()
    picked, spaces = lexicon.correct(
        sims, rows, chars, np.zeros(len(rows), np.int64), spaces, margin
    )
    assert not (spaces & ~given).any()  # spaces may go, none comes
    return text_of(sims, rows, chars, picked, spaces)


def spaced(*words: list[list[tuple[str, float]]]) -> tuple[list, np.ndarray]:
    """The glyphs of several words and the spaces between them."""
    glyphs = [g for w in words for g in w]
    spaces = np.zeros(len(glyphs), bool)
    at = 0
    for w in words[:-1]:
        at += len(w)
        spaces[at] = True
    return glyphs, spaces


def test_words_of_texts_and_word_lists(tmp_path: Path) -> None:
    assert words_of(["The theory, of 1974 Graphs-and x2y", "don't"]) == {
        "The", "theory", "of", "Graphs", "and", "x", "y", "don", "t",
    }  # fmt: skip
    wl = tmp_path / "words.txt"
    wl.write_text("# a list\nDesign\n\n  from \nAlgorithm's\n", encoding="utf-8")
    assert read_word_list(wl) == {"Design", "from", "Algorithm's"}
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"one\ntwo\ncaf\xe9\n")
    with pytest.raises(EffOCRError, match=r"latin1\.txt: line 3: .*not UTF-8"):
        read_word_list(bad)
    with pytest.raises(EffOCRError, match=r"missing\.txt: cannot read"):
        read_word_list(tmp_path / "missing.txt")


def test_case_of_the_words_given() -> None:
    """A word given in lower case reads in lower, Title and UPPER case; one given only
    capitalised (a name) reads capitalised or in capitals, not in lower case."""
    lexicon = Lexicon(["theory", "Theory", "Thai", "NASA"])
    assert lexicon.words == {"theory", "Thai", "NASA"}  # `Theory` adds nothing
    for word in ("theory", "Theory", "THEORY", "Thai", "THAI", "NASA", "Nasa"):
        assert lexicon.holds(list(word)), word
    for word in ("thai", "nasa", "tHeory"):
        assert not lexicon.holds(list(word)), word
    # `thei` (a space away from `the`) is not reread into the name.
    thei = spelled("th") + [[("e", 0.9), ("a", 0.88)]] + spelled("i")
    assert read(thei, 0.5, lexicon) == "thei"
    assert read([[("T", 0.9)], *thei[1:]], 0.5, lexicon) == "Thai"


@pytest.mark.parametrize(
    ("word", "held", "suspect"),
    [
        ("design", True, False),
        ("Design", True, False),
        ("DESIGN", True, False),
        ("dEsign", False, True),  # no word has this case
        ("desigm", False, True),
        ("design,", True, False),  # punctuation around a word is not the word
        ("(theory)", True, False),
        ("real-life", True, False),
        ("real-lfe", False, True),
        ("exi8tence", False, True),  # a digit among letters
        ("t$rize", False, True),
        ("1974", False, False),  # numbers and punctuation are not reread
        ("1974].", False, False),
        ("--", False, False),
    ],
)
def test_held_and_suspect_words(word: str, held: bool, suspect: bool) -> None:
    assert LEX.holds(list(word)) is held
    assert LEX.suspect(list(word), hyphenated_end=False) is suspect


def test_a_line_end_broken_by_a_hyphen_is_reread_only_when_broken() -> None:
    assert not LEX.suspect(list("charac-"), hyphenated_end=True)
    assert LEX.suspect(list("ch4rac-"), hyphenated_end=True)
    assert LEX.suspect(list("charac-"), hyphenated_end=False)


def test_an_unknown_word_takes_the_cheapest_reading_within_the_margin() -> None:
    desigm = spelled("desig") + [[("m", 0.95), ("n", 0.90), ("r", 0.80)]]
    assert read(desigm, 0.06) == "design"
    assert read(desigm, 0.04) == "desigm"  # "n" gives up 0.05
    # Two glyphs off: "flom" -> "from" costs 0.03; the margin counts the whole word.
    flom = [[("f", 0.9)], [("l", 0.64), ("I", 0.63), ("r", 0.61)], [("o", 0.9)], [("m", 0.9)]]
    assert read(flom, 0.03 + 1e-4) == "from"
    assert read(flom, 0.029) == "flom"
    # The cheapest of the readings the lexicon holds wins, not the first found.
    lexicon = Lexicon(["bats", "cats", "hats"])
    glyphs = [[("x", 0.9), ("b", 0.7), ("h", 0.8), ("c", 0.85)], [("a", 0.9)], [("t", 0.9)]]
    assert read([*glyphs, [("s", 0.9)]], 0.5, lexicon) == "cats"


def test_what_the_rereading_keeps() -> None:
    # A name the lexicon lacks, with no known reading nearby, stays.
    assert read(spelled("Galil"), 1.0) == "Galil"
    # Punctuation may change around the word, a letter may not become punctuation.
    theony = spelled("Theo") + [[("n", 0.78), ("r", 0.69)], [("y", 0.95)]]
    assert read([*theony, [(".", 0.92), (",", 0.91)]], 0.2) in ("Theory.", "Theory,")
    zvi = [[("Z", 0.9), ("/", 0.85)], [("V", 0.95)], [("I", 0.9), ("|", 0.88)]]
    assert read(zvi, 1.0, Lexicon(["v", "zvi"])) == "ZVI"  # 'zvi' known: held as read
    assert read(zvi, 1.0, Lexicon(["v"])) == "ZVI"  # not "/V|"
    # The case must be one a word has: "alSorithm" -> "algorithm", "Theory", "THEORY".
    als = [[("a", 0.9)], [("l", 0.9)], [("S", 0.76), ("s", 0.67), ("g", 0.6)]] + spelled("orithm")
    assert read(als, 0.2) == "algorithm"
    assert read(spelled("THEONY")[:4] + [[("N", 0.8), ("R", 0.75)]] + spelled("Y"), 0.1) == "THEORY"
    # Words are taken between the spaces: only the unknown one is reread.
    sims_line = (
        spelled("an") + [[("m", 0.9), ("n", 0.88)]] + spelled("desig") + [[("m", 0.95), ("n", 0.9)]]
    )
    spaces = np.zeros(9, bool)
    spaces[3] = True
    assert read(sims_line, 0.1, spaces=spaces) == "anm design"


def test_a_word_split_by_a_space_is_joined_when_the_lexicon_holds_it() -> None:
    # `s uitable`: the localizer took the gap after a narrow letter for a space.
    lexicon = Lexicon(["suitable", "theory", "the"])
    glyphs, spaces = spaced(spelled("s"), spelled("uitable"))
    assert read(glyphs, 0.1, lexicon, spaces) == "suitable"
    # The joined reading may change glyphs, within the margin, as a word read alone may.
    intro = [[("J", 0.9), ("I", 0.85)], *spelled("NTR")]
    glyphs, spaces = spaced(intro, spelled("ODUCTION"))
    assert read(glyphs, 0.1, Lexicon(["introduction"]), spaces) == "INTRODUCTION"
    assert read(glyphs, 0.04, Lexicon(["introduction"]), spaces) == "JNTR ODUCTION"
    # Two words the lexicon holds (or short ones) are not joined, even into a word it holds.
    glyphs, spaces = spaced(spelled("the"), spelled("ory"))
    assert read(glyphs, 1.0, lexicon, spaces) == "the ory"
    # Punctuation between two words keeps its space: it would have to read as a letter.
    glyphs, spaces = spaced(spelled("theo,"), spelled("ryx"))
    assert read(glyphs, 1.0, lexicon, spaces) == "theo, ryx"


def test_decoder_read_gives_the_spaces_it_kept() -> None:
    lm = CharLM.train(["suitable"], 3)
    glyphs, spaces = spaced(spelled("s"), spelled("uitable"))
    sims, rows, chars = line(glyphs)
    dec = LMDecoder(lm, chars, weight=0.0, k=1, beam=4, margin=0.2, lexicon_margin=0.1)
    assert not dec.active  # one neighbour: nothing to choose (the pipeline does not call it)
    dec = LMDecoder(lm, chars, weight=0.0, k=2, beam=4, margin=0.2, lexicon_margin=0.1)
    picked, kept = dec.read(sims, rows, spaces)
    assert picked.tolist() == [0] * 8 and not kept.any() and spaces[1]  # the input untouched
    assert dec(sims, rows, spaces).tolist() == picked.tolist()
    picked, kept = dec.read(sims, rows, None)
    assert kept is None


def test_the_search_stops_after_max_readings(monkeypatch) -> None:
    """A word with many near classes cannot stall a line: the search gives up after
    MAX_READINGS complete readings (here none, so nothing is reread)."""
    import effocr.lexicon as lexicon_module

    desigm = spelled("desig") + [[("m", 0.95), ("n", 0.90)]]
    assert read(desigm, 0.1) == "design"
    monkeypatch.setattr(lexicon_module, "MAX_READINGS", 0)
    assert read(desigm, 0.1) == "desigm"
    # Every glyph `a` or `b` at the same cosine, every prefix of a word: bounded all the same.
    monkeypatch.setattr(lexicon_module, "MAX_READINGS", 5000)
    lexicon = Lexicon(["a" * 60, "ab" * 30])
    assert read([[("a", 0.9), ("b", 0.9)] for _ in range(50)], 1.0, lexicon) == "a" * 50


def test_lm_json_keeps_the_lexicon(tmp_path: Path) -> None:
    word_list = tmp_path / "words.txt"
    word_list.write_text("Algorithm\nmatching\n", encoding="utf-8")
    out = tmp_path / LM_FILE
    lm = train_lm_file(
        [],
        [_text(tmp_path, "The theory of graphs. Graphs")],
        out,
        word_lists=[word_list],
        lm=config_sections({"lm": {"order": 3}}).lm,
    )
    want = {"The", "theory", "of", "graphs", "Algorithm", "matching"}
    assert lm.lexicon.words == want
    back = CharLM.load(out)
    assert back.lexicon.words == want
    assert json.loads(out.read_text(encoding="utf-8"))["words"] == sorted(want)
    # A file written before the lexicon reads with an empty one; a bad `words` is an error.
    data = json.loads(out.read_text(encoding="utf-8"))
    del data["words"]
    out.write_text(json.dumps(data), encoding="utf-8")
    assert len(CharLM.load(out).lexicon) == 0
    out.write_text(json.dumps({**data, "words": ["ok", 3]}), encoding="utf-8")
    with pytest.raises(EffOCRError, match=r"lm\.json: `words`"):
        CharLM.load(out)
    with pytest.raises(EffOCRError, match=r"nowhere\.txt"):
        train_lm_file(
            [],
            [_text(tmp_path, "x")],
            out,
            word_lists=[tmp_path / "nowhere.txt"],
            lm=config_sections({}).lm,
        )


def _text(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_decoder_rereads_with_the_lexicon_alone() -> None:
    lm = CharLM.train(["design from theory"], 3)
    readings = spelled("desig") + [[("m", 0.95), ("n", 0.9)]]
    sims, rows, chars = line(readings)
    spaces = np.zeros(len(rows), bool)

    def decoder(**kw) -> LMDecoder:
        return LMDecoder(lm, chars, **{"weight": 0.0, "k": 2, "beam": 4, "margin": 0.2, **kw})

    assert not decoder(lexicon_margin=0.0).active
    dec = decoder(lexicon_margin=0.1)
    assert dec.active
    assert text_of(sims, rows, chars, dec(sims, rows, spaces), spaces) == "design"
    # Lines without known spaces (Japanese) are not reread.
    assert dec(sims, rows, None).tolist() == [0] * len(rows)
    # An LM without words has no lexicon to reread with.
    assert not LMDecoder(
        CharLM(3, lm.counts), chars, weight=0.0, k=2, beam=4, margin=0.2, lexicon_margin=0.1
    ).active
    with pytest.raises(EffOCRError, match="lexicon_margin"):
        decoder(lexicon_margin=-0.1)


def test_bundle_lm_sections_without_lexicon_margin_read_as_off(tiny_bundle: Path, tmp_path) -> None:
    from effocr.infer import Engine
    from effocr.lm import lm_section

    bundle = tmp_path / "b"
    import shutil

    shutil.copytree(tiny_bundle, bundle)
    lm = CharLM.train(["the text of the tiny lines"], 3)
    lm.save(bundle / LM_FILE)
    manifest = Manifest.read(bundle)
    section = lm_section(config_sections({"lm": {"lexicon_margin": 0.3}}).lm, 3)
    manifest.lm = {k: v for k, v in section.items() if k != "lexicon_margin"}
    manifest.write(bundle)
    assert Manifest.read(bundle).lm["lexicon_margin"] == 0.0
    manifest.lm = section
    manifest.write(bundle)
    assert Manifest.read(bundle).lm["lexicon_margin"] == 0.3
    with Engine(bundle, device="cpu", lm=True, lm_weight=0.0) as engine:
        assert engine.pipeline.decoder.lexicon_margin == 0.3


def lexicon_bundle(en_bundle: Path, tiny_coco_factory, tmp_path: Path, n_lines: int, seed: int):
    """(bundle, lm, test_json, images): a copy of the tiny English bundle whose LM (weight 0)
    has the lexicon of `n_lines` new English lines' own words (margin 0.5, k 8), and those
    lines."""
    import shutil

    from effocr.lm import lm_section, training_texts
    from tests.conftest import en_lines

    test_json, image_dir = en_lines(tiny_coco_factory, n_lines, seed)
    bundle = tmp_path / "b"
    shutil.copytree(en_bundle, bundle)
    lm = CharLM.train(training_texts([test_json], []), 3)
    lm.save(bundle / LM_FILE)
    manifest = Manifest.read(bundle)
    section = config_sections({"lm": {"weight": 0.0, "k": 8, "lexicon_margin": 0.5}}).lm
    manifest.lm = lm_section(section, 3)
    manifest.write(bundle)
    return bundle, lm, test_json, sorted(image_dir.glob("*.png"))


def test_en_bundle_rereads_only_into_words_of_its_lexicon(
    en_bundle: Path, tiny_coco_factory, tmp_path
) -> None:
    """Through the pipeline, with the lexicon of the lines' own words (the LM off): a word
    differs from the plain reading only where that was not a word of the lexicon and the new
    reading is, boxes stay but for two overlapping ones read as one glyph (their union), and
    the text gets closer to the truth."""
    from effocr.data.coco import load_coco
    from effocr.formats.results import word_groups
    from effocr.infer import Engine
    from effocr.metrics import cer

    bundle, lm, test_json, images = lexicon_bundle(en_bundle, tiny_coco_factory, tmp_path, 6, 23)
    refs_by_name = {im["file_name"]: im["text"] for im in load_coco(test_json)["images"]}
    refs = [refs_by_name[p.name] for p in images]
    with Engine(bundle, device="cpu", lm=False, geometry=False) as engine:
        off = engine.infer(images)
    with Engine(bundle, device="cpu", geometry=False) as engine:
        assert engine.pipeline.decoder is not None and engine.pipeline.decoder.active
        on = engine.infer(images)
    changed = 0
    for a, b in zip(off, on, strict=True):
        # Which glyphs of the plain reading each glyph of this one is (one, or a pair).
        source, i = [], 0
        for char in b.chars:
            if char.bbox == a.chars[i].bbox:
                source.append((i,))
                i += 1
                continue
            first, second = a.chars[i].bbox, a.chars[i + 1].bbox
            assert second[0] < first[2]  # overlapping boxes only
            assert char.bbox == pytest.approx(
                [*np.minimum(first[:2], second[:2]), *np.maximum(first[2:], second[2:])]
            )
            source.append((i, i + 1))
            i += 2
        assert i == len(a.chars)
        groups_a = [tuple(g) for g in word_groups(a)]
        for group in word_groups(b):
            word_b = [b.chars[i].char for i in group]
            group_a = tuple(j for i in group for j in source[i])
            word_a = [a.chars[j].char for j in group_a]
            if group_a not in groups_a or word_a != word_b:
                # A new reading, or a word joined from two: held, and not held before.
                changed += 1
                assert lm.lexicon.holds(word_b), word_b
                assert group_a not in groups_a or not lm.lexicon.holds(word_a), word_a
    assert changed > 0
    assert cer(refs, [r.text for r in on]) < cer(refs, [r.text for r in off])


def test_short_words_are_not_reread() -> None:
    """`lem` (the end of a hyphenated `prob-lem`) is one glyph from `len`: words of fewer
    than MIN_LETTERS letters stay as read, however cheap another reading is."""
    lexicon = Lexicon(["len", "lend"])
    assert not lexicon.suspect(list("lem"), hyphenated_end=False)
    assert read(spelled("le") + [[("m", 0.9), ("n", 0.89)]], 1.0, lexicon) == "lem"
    assert read(spelled("le") + [[("m", 0.9), ("n", 0.89)]] + spelled("d"), 1.0, lexicon) == "lend"


def pixels_key(img: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()


class SplitOneGlyph:
    """A localizer stage that boxes one glyph of each line twice: two overlapping halves, as
    the localizer boxes a wide letter it takes for two (`nn` for `m`)."""

    def __init__(self, stage, which: dict[int, int]) -> None:
        self.stage = stage
        self.which = which  # pixels_key(line) -> the glyph to split (none: the line as is)
        self.allows_vertical = stage.allows_vertical

    def __call__(self, img: np.ndarray):
        import dataclasses

        det = self.stage(img)
        i = self.which.get(pixels_key(img))
        if i is None:
            return det
        x0, y0, x1, y1 = det.chars[i]
        mid = (x0 + x1) / 2
        halves = np.asarray([[x0, y0, mid + 1, y1], [mid - 1, y0, x1, y1]], det.chars.dtype)
        return dataclasses.replace(
            det,
            chars=np.concatenate([det.chars[:i], halves, det.chars[i + 1 :]]),
            char_scores=np.insert(det.char_scores, i, det.char_scores[i]),
            spaces=np.insert(det.spaces, i + 1, False),
        )


def test_en_bundle_reads_a_letter_boxed_twice_as_one(en_bundle: Path, tiny_coco_factory, tmp_path):
    """Through the pipeline: one letter inside a word the lexicon holds, boxed as two
    overlapping halves, is read as one glyph again (the halves' union, which is its own box, and
    its label); without the lexicon the two halves stay two glyphs. Lines without such a word
    are read as they were."""
    from effocr.formats.results import word_groups
    from effocr.imageio import decode_image
    from effocr.infer import Engine

    bundle, lm, _, images = lexicon_bundle(en_bundle, tiny_coco_factory, tmp_path, 12, 29)
    with Engine(bundle, device="cpu", lm=False, geometry=False) as engine:
        off = engine.infer(images)
    with Engine(bundle, device="cpu", geometry=False) as engine:
        plain = engine.infer(images)
        # Per line in which nothing was read as one already (the glyphs are the localizer's
        # boxes), the widest letter inside a held word of four letters or more.
        which = {}
        for res, res_off in zip(plain, off, strict=True):
            if len(res.chars) != len(res_off.chars):
                continue
            inner = [
                i
                for group in word_groups(res)
                if len(group) >= 4 and lm.lexicon.holds([res.chars[i].char for i in group])
                for i in group[1:-1]
            ]
            if inner:
                widths = [res.chars[i].bbox[2] - res.chars[i].bbox[0] for i in inner]
                key = pixels_key(decode_image(res.image, keep_grey=True))
                which[key] = inner[int(np.argmax(widths))]
        assert len(which) >= 3
        engine.pipeline.localizer = SplitOneGlyph(engine.pipeline.localizer, which)
        split = engine.infer(images)
    with Engine(bundle, device="cpu", lm=False, geometry=False) as engine:
        engine.pipeline.localizer = SplitOneGlyph(engine.pipeline.localizer, which)
        unread = engine.infer(images)
    for s, u, o, p in zip(split, unread, off, plain, strict=True):
        assert len(u.chars) == len(o.chars) + (
            pixels_key(decode_image(p.image, keep_grey=True)) in which
        )
        assert s.text == p.text
        np.testing.assert_allclose([c.bbox for c in s.chars], [c.bbox for c in p.chars], atol=1e-3)


def regroup(readings, pairs, margin, lexicon, spaces=None, splits=None):
    """(text, merged) of `Lexicon.regroup` on a line whose glyph i has `readings[i]` and whose
    glyphs i, i + 1 cropped as one have `pairs[i]` (each: (class, cosine), best first)."""
    starts = sorted(pairs)
    sims, rows, chars = line(list(readings) + [pairs[i] for i in starts])
    n = len(readings)
    spaces = np.zeros(n, bool) if spaces is None else spaces
    splits = np.ones(n - 1, bool) if splits is None else splits
    asked: list[int] = []

    def pair_knn(wanted: list[int]):
        asked.extend(wanted)
        at = [n + starts.index(i) if i in pairs else n for i in wanted]
        return sims[at], np.where(np.isin(wanted, starts)[:, None], rows[at], -1)

    picked, merged = lexicon.regroup(
        sims[:n], rows[:n], chars, np.zeros(n, np.int64), spaces, margin, splits, pair_knn
    )
    assert all(i in asked for i in merged)
    out = []
    for i in range(n):
        if i - 1 in merged:
            continue
        if spaces[i] and i:
            out.append(" ")
        out.append(
            chars[rows[n + starts.index(i), merged[i]]]
            if i in merged
            else chars[rows[i, picked[i]]]
        )
    return "".join(out), merged, asked


MONSTERS = Lexicon(["monsters", "gall", "rims"])


def test_a_letter_boxed_twice_reads_as_one_when_the_lexicon_holds_the_word() -> None:
    nnonsters = [[("n", 0.80)], [("n", 0.87)], *spelled("onsters")]
    pairs = {0: [("m", 0.94), ("n", 0.76)], 1: [("m", 0.90)], 2: [("m", 0.90)]}
    assert regroup(nnonsters, pairs, 0.2, MONSTERS)[:2] == ("monsters", {0: 0})
    # Only pairs the caller says may be one letter (the pipeline: overlapping boxes).
    splits = np.ones(8, bool)
    splits[0] = False
    text, merged, asked = regroup(nnonsters, pairs, 0.2, MONSTERS, splits=splits)
    assert (text, merged) == ("nnonsters", {}) and 0 not in asked
    # A word the lexicon holds, and words of fewer than four letters, ask for no crops.
    for word in ("monsters", "nnm"):
        assert regroup(spelled(word), {0: [("m", 0.99)]}, 1.0, MONSTERS)[2] == []


def test_a_pair_reads_as_one_only_when_its_crop_matches_as_well_as_its_halves() -> None:
    # GALIL: `LI` cropped as one reads `L` less well than `I` alone: two letters, not one split.
    galil = [[("G", 0.95)], [("A", 0.95)], [("L", 0.965)], [("I", 0.928)], [("L", 0.95)]]
    pairs = {2: [("L", 0.887)]}
    assert regroup(galil, pairs, 1.0, MONSTERS)[:2] == ("GALIL", {})
    pairs = {2: [("L", 0.93)]}
    assert regroup(galil, pairs, 1.0, MONSTERS)[:2] == ("GALL", {2: 0})
    # Between the worse half and the halves' mean, the crop pays what it gives up: here
    # 0.99 + 0.80 - 2 x 0.85 = 0.09 of the margin.
    rinns = [[("r", 0.95)], [("i", 0.95)], [("r", 0.99)], [("n", 0.80)], [("s", 0.95)]]
    pairs = {2: [("m", 0.85)]}
    assert regroup(rinns, pairs, 0.1, MONSTERS)[:2] == ("rims", {2: 0})
    assert regroup(rinns, pairs, 0.08, MONSTERS)[:2] == ("rirns", {})


def test_a_pair_reads_as_a_letter_inside_its_word_only() -> None:
    # Not as punctuation (a joiner here, which would make two held parts), and not across a
    # space.
    word = [*spelled("real"), [("x", 0.9)], [("y", 0.9)], *spelled("life")]
    assert regroup(word, {4: [("-", 0.99)]}, 1.0, LEX)[:2] == ("realxylife", {})
    assert regroup(word, {4: [("n", 0.99)]}, 1.0, Lexicon(["realnlife"]))[:2] == (
        "realnlife",
        {4: 0},
    )
    glyphs, spaces = spaced(spelled("xx"), [[("n", 0.8)]], [[("n", 0.8)], *spelled("onsters")])
    text, merged, asked = regroup(glyphs, {2: [("m", 0.99)]}, 1.0, MONSTERS, spaces=spaces)
    assert (text, merged) == ("xx n nonsters", {}) and 2 not in asked


def test_decoder_regroups_only_with_the_lexicon_on_and_spaces_known() -> None:
    lm = CharLM.train(["monsters"], 3)
    sims, rows, chars = line([[("n", 0.80), ("m", 0.5)], [("n", 0.87)], *spelled("onsters")])
    spaces = np.zeros(len(rows), bool)

    def never(starts):
        raise AssertionError(starts)

    off = LMDecoder(lm, chars, weight=0.0, k=2, beam=4, margin=0.2, lexicon_margin=0.0)
    picked = np.zeros(len(rows), np.int64)
    assert off.regroup(sims, rows, picked, spaces, np.ones(8, bool), never)[1] == {}
    on = LMDecoder(lm, chars, weight=0.0, k=2, beam=4, margin=0.2, lexicon_margin=0.2)
    assert on.regroup(sims, rows, picked, None, np.ones(8, bool), never)[1] == {}
    knn = (np.asarray([[0.95, 0.5]] * 8), np.asarray([[1, 0]] * 8))  # row 1: "m"
    picked, merged = on.regroup(sims, rows, picked, spaces, np.ones(8, bool), lambda s: knn)
    assert merged == {0: 0}


def test_lexicon_margin_given_at_run_time(en_bundle: Path, tiny_coco_factory, tmp_path, capsys):
    """`--lexicon-margin` (`effocr infer`, `effocr evaluate`) and `Engine(lexicon_margin=...)`
    replace the bundle's margin: 0 reads as without the lexicon; a negative one is an error."""
    from effocr.cli import main
    from effocr.infer import Engine

    bundle, _, test_json, images = lexicon_bundle(en_bundle, tiny_coco_factory, tmp_path, 6, 23)
    with Engine(bundle, device="cpu", geometry=False, lexicon_margin=0.0) as engine:
        assert engine.pipeline.decoder is None  # weight 0 and margin 0: nothing to decide
    with Engine(bundle, device="cpu", geometry=False, lexicon_margin=0.3) as engine:
        assert engine.pipeline.decoder.lexicon_margin == 0.3
    common = ["--model", str(bundle), "--geometry", "off"]
    outputs = {}
    for args in (["--lm", "off"], ["--lexicon-margin", "0"], []):
        assert main(["infer", *common, *args, *map(str, images)]) == 0
        outputs[tuple(args)] = capsys.readouterr().out
    assert outputs[("--lexicon-margin", "0")] == outputs[("--lm", "off")]
    assert outputs[()] != outputs[("--lm", "off")]  # the bundle's 0.5 rereads
    assert main(["infer", *common, "--lexicon-margin", "-1", str(images[0])]) == 1
    assert "lexicon_margin must be" in capsys.readouterr().err
    spec = f"t={test_json}:coco:{images[0].parent}"
    out = tmp_path / "eval"
    argv = ["evaluate", *common, "--set", spec, "--output", str(out), "--no-tesseract"]
    assert main([*argv, "--lexicon-margin", "0.2"]) == 0
    metrics = json.loads((out / "t" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["lm"]["enabled"] and metrics["lm"]["lexicon_margin"] == 0.2
