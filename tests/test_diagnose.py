"""Error attribution: which model made each error (effocr.diagnose, `effocr evaluate --diagnose`).

Hand-built lines with known answers for each class, the counting rule (class counts add up
to the CER's edit distance), the box-level method, and the wiring through a real bundle.
"""

import csv
import json
import random

import pytest
from rapidfuzz.distance import Levenshtein

from effocr.cli import main
from effocr.diagnose import (
    CLASSES,
    LineInput,
    Token,
    attribute_line,
    box_attribution,
    diagnose_set,
    expected_sizes,
    format_errors_table,
    hypothesis_tokens,
    normalize_tokens,
    token_spans,
)
from effocr.evaluate import load_coco_set
from effocr.metrics import ScoreOptions, normalize
from effocr.report import build_report

OPTS = ScoreOptions()


def boxes_of(widths, gap=2.0):
    """Boxes laid out left to right with these widths and gaps (negative: overlapping)."""
    out, x = [], 0.0
    for w in widths:
        x += gap
        out.append([x, 0.0, x + w, 30.0])
        x += w
    return out


def diagnose(ref, text, labels, boxes, expected=None):
    toks = hypothesis_tokens(text, labels, OPTS)
    spans = token_spans(toks, boxes)
    return attribute_line(normalize(ref, OPTS), toks, spans, expected)


def classes(diag):
    return [(e.cls, e.reference, e.hypothesis, e.edits) for e in diag.errors]


# Every glyph 10 px wide (the line's median): expected extent 1.0 for each character.


def test_merge_one_wide_box_for_two_characters():
    # "rn" read as one "m" box twice a glyph wide: a localizer merge, both edits its.
    d = diagnose("barn", "bam", ["b", "a", "m"], [[0, 0, 10, 30], [12, 0, 22, 30], [24, 0, 44, 30]])
    assert classes(d) == [("merge", "rn", "m", 2)]
    assert d.distance == 2 and d.errors[0].boxes == (2,) and d.errors[0].kind == "localizer"


def test_glyph_sized_box_is_a_substitution_and_a_missed_character():
    # The same texts with an "m" box one glyph wide: the recognizer misread one glyph and
    # the localizer missed the other.
    d = diagnose("barn", "bam", ["b", "a", "m"], [[0, 0, 10, 30], [12, 0, 22, 30], [24, 0, 34, 30]])
    assert sorted(classes(d)) == [("missed", "r", "", 1), ("substitution", "n", "m", 1)]


def test_merge_with_a_matching_label_counts_one_edit():
    boxes = [[0, 0, 10, 30], [12, 0, 22, 30], [24, 0, 44, 30]]
    d = diagnose("ball", "bal", ["b", "a", "l"], boxes)
    assert classes(d) == [("merge", "ll", "l", 1)]


def test_split_two_narrow_boxes_for_one_character():
    d = diagnose(
        "amx",
        "arnx",
        ["a", "r", "n", "x"],
        [[0, 0, 10, 30], [12, 0, 17, 30], [17, 0, 22, 30], [24, 0, 34, 30]],
    )
    assert classes(d) == [("split", "m", "rn", 2)]
    assert d.errors[0].boxes == (1, 2)


def test_duplicate_box_over_one_glyph_is_a_split():
    # Two boxes on the same comma (heavily overlapping): one glyph, two boxes.
    boxes = [[0, 0, 10, 30], [12, 0, 16, 30], [13, 0, 17, 30], [30, 0, 40, 30]]
    d = diagnose("a, b", "a,, b", ["a", ",", ",", "b"], boxes, {",": 0.4, "": 1.0})
    assert classes(d) == [("split", ",", ",,", 1)]


def test_extra_box_in_empty_space():
    boxes = [[0, 0, 10, 30], [12, 0, 22, 30], [40, 0, 42, 30], [60, 0, 70, 30]]
    d = diagnose("abd", "abxd", ["a", "b", "x", "d"], boxes)
    assert classes(d) == [("extra", "", "x", 1)]


def test_missed_character():
    d = diagnose("abcd", "abd", ["a", "b", "d"], [[0, 0, 10, 30], [12, 0, 22, 30], [36, 0, 46, 30]])
    assert classes(d) == [("missed", "c", "", 1)]


def test_spaces_missed_and_invented():
    four = [[0, 0, 10, 30], [12, 0, 22, 30], [24, 0, 34, 30], [36, 0, 46, 30]]
    d = diagnose("ab cd", "abcd", list("abcd"), four)
    assert classes(d) == [("space_missed", " ", "", 1)]
    assert d.errors[0].key == ("b c", "")  # shown with its neighbours
    d = diagnose("abcd", "ab cd", list("abcd"), four)
    assert classes(d) == [("space_invented", "", " ", 1)]


def test_a_space_on_the_wrong_side_of_a_glyph_is_a_space_error():
    boxes = [[0, 0, 10, 30], [12, 0, 22, 30], [34, 0, 44, 30], [56, 0, 66, 30]]
    d = diagnose("ab cd", "abc d", list("abcd"), boxes)
    assert sorted(classes(d)) == [("space_invented", "", " ", 1), ("space_missed", " ", "", 1)]


def test_substitution_is_the_recognizers():
    d = diagnose("ab", "aq", ["a", "q"], [[0, 0, 10, 30], [12, 0, 22, 30]])
    assert classes(d) == [("substitution", "b", "q", 1)]
    assert d.errors[0].kind == "recognizer" and d.errors[0].boxes == (1,)


def test_without_boxes_there_are_no_merges_or_splits():
    toks = hypothesis_tokens("bam", None, OPTS)
    d = attribute_line("barn", toks)
    assert {e.cls for e in d.errors} <= {"missed", "substitution"}
    assert sum(e.edits for e in d.errors) == 2


def test_a_merge_away_from_the_edit_scripts_deletion_is_still_found():
    # rapidfuzz deletes the third "l"; the boxes say the first two share one wide box.
    assert [op.tag for op in Levenshtein.opcodes("xlllx", "xllx")] == ["equal", "delete", "equal"]
    d = diagnose("xlllx", "xllx", list("xllx"), boxes_of([10, 20, 10, 10]))
    assert classes(d) == [("merge", "ll", "l", 1)]
    assert d.errors[0].ref_pos == 1 and d.errors[0].boxes == (1,)


@pytest.mark.parametrize("seed", range(40))
def test_class_counts_add_up_to_the_edit_distance(seed):
    rng = random.Random(seed)
    alphabet = "aelmnrt ,."
    ref = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
    hyp = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
    labels = [c for c in hyp if c != " "]
    widths = [rng.uniform(2, 25) for _ in labels]
    toks = hypothesis_tokens(hyp, labels, OPTS)
    spans = token_spans(toks, boxes_of(widths, gap=rng.uniform(-3, 4)))
    d = attribute_line(normalize(ref, OPTS), toks, spans, {"": 1.0, "m": 1.6, "l": 0.4})
    assert sum(e.edits for e in d.errors) == d.distance
    assert d.distance == Levenshtein.distance(normalize(ref, OPTS), normalize(hyp, OPTS))
    assert all(e.cls in CLASSES for e in d.errors)


@pytest.mark.parametrize(
    "text",
    ["  ``Quote'' him  ", "a\u201cb\u201d c\u2019s", "A  B\tC", "''''x", "İstanbul ÉTÉ", ""],
)
@pytest.mark.parametrize(
    "options",
    [ScoreOptions(), ScoreOptions(ignore_case=True), ScoreOptions(ignore_spaces=True)],
)
def test_tokens_normalise_like_the_metrics(text, options):
    toks = normalize_tokens([Token(c, i) for i, c in enumerate(text)], options)
    assert "".join(t.char for t in toks) == normalize(text, options)


def test_hypothesis_tokens_carry_their_boxes():
    toks = hypothesis_tokens("fia b", ["fi", "a", "b"], OPTS)
    assert [(t.char, t.tag) for t in toks] == [("f", 0), ("i", 0), ("a", 1), (" ", None), ("b", 2)]
    # A ligature box is shared: each of its characters gets half of its span.
    spans = token_spans(toks, [[0, 0, 20, 9], [22, 0, 32, 9], [40, 0, 50, 9]])
    assert spans[0] == pytest.approx((0.0, 1.0)) and spans[1] == pytest.approx((1.0, 2.0))
    assert spans[3] is None
    # Labels that do not spell the text: the text is kept, without boxes.
    toks = hypothesis_tokens("ab", ["x"], OPTS)
    assert [(t.char, t.tag) for t in toks] == [("a", None), ("b", None)]


def test_expected_sizes_come_from_correct_characters():
    toks = hypothesis_tokens("mil", list("mil"), OPTS)
    spans = token_spans(toks, [[0, 0, 20, 9], [22, 0, 26, 9], [28, 0, 38, 9]])
    exp = expected_sizes([("mil", toks, spans)] * 2)
    assert exp["m"] == pytest.approx(2.0) and exp["i"] == pytest.approx(0.4)
    assert exp[""] == pytest.approx(1.0)


# ---------------------------------------------------------------------------
# Box-level attribution
# ---------------------------------------------------------------------------


def test_box_attribution_classes():
    true = [
        ("a", [0, 5, 10, 25]),  # ok
        ("b", [12, 5, 22, 25]),  # read as "h": substitution
        ("c", [24, 5, 34, 25]),  # no box: missed
        ("r", [36, 5, 42, 25]),  # "rn" under one box: merge
        ("n", [43, 5, 53, 25]),
        ("m", [60, 5, 76, 25]),  # two boxes: split
    ]
    pred = [
        ("a", [0, 0, 10, 30]),
        ("h", [12, 0, 22, 30]),
        ("m", [35, 0, 54, 30]),
        ("r", [60, 0, 67, 30]),
        ("n", [68, 0, 76, 30]),
        (".", [90, 0, 93, 30]),  # nothing there: extra
    ]
    true_cls, pred_cls = box_attribution(true, pred)
    assert true_cls == ["ok", "substitution", "missed", "merge", "merge", "split"]
    assert pred_cls == {1: "substitution", 2: "merge", 3: "split", 4: "split", 5: "extra"}


def test_box_and_text_methods_agree_on_a_clear_line():
    ref = "ab crn m"
    true = [("a", [0, 0, 10, 30]), ("b", [12, 0, 22, 30]), ("c", [34, 0, 44, 30])]
    true += [("r", [46, 0, 52, 30]), ("n", [54, 0, 64, 30]), ("m", [76, 0, 92, 30])]
    chars = [("a", [0, 0, 10, 30]), ("h", [12, 0, 22, 30]), ("c", [34, 0, 44, 30])]
    chars += [("m", [46, 0, 64, 30]), ("r", [76, 0, 84, 30]), ("n", [84, 0, 92, 30])]
    pred = {
        "text": "ah cm rn",
        "chars": [{"char": c, "bbox": b} for c, b in chars],
    }
    line = LineInput(ref, pred, vertical=False, true_chars=true)
    # A second, correct line teaches the expected sizes.
    good = LineInput(
        "abc rnm",
        {
            "text": "abc rnm",
            "chars": [{"char": c, "bbox": b} for c, b in true[:3] + true[3:]],
        },
    )
    diags, summary = diagnose_set([line, good, good])
    assert classes(diags[0]) == [
        ("substitution", "b", "h", 1),
        ("merge", "rn", "m", 2),
        ("split", "m", "rn", 2),
    ]
    assert summary["attributed"] == summary["char_errors"] == 5
    by_char = {r["char"]: r for r in summary["chars"]}
    assert by_char["b"]["recognizer"] == 1 and by_char["b"]["localizer"] == 0
    assert by_char["m"] == {
        "char": "m", "count": 3, "in_errors": 1, "rate": pytest.approx(1 / 3),
        "recognizer": 0, "localizer": 1,
    }  # fmt: skip
    cmp = summary["boxes"]["compare"]
    assert cmp["chars"] == 6 and cmp["same"] == 6
    assert summary["boxes"]["true_chars"] == {"merge": 2, "ok": 2, "split": 1, "substitution": 1}
    table = format_errors_table(summary, "x")
    assert "merge" in table and "text vs box method: same class for 6/6" in table


def test_failed_line_is_its_own_class():
    diags, summary = diagnose_set([LineInput("abc", {"text": None, "error": "boom"})])
    assert summary["classes"]["failed"]["errors"] == 3
    assert summary["kinds"]["failed"]["share"] == pytest.approx(1.0)


def test_coco_sets_carry_their_true_boxes(tiny_coco, tmp_path):
    coco_json, image_dir = tiny_coco
    lines = load_coco_set(coco_json, image_dir)
    for line in lines:
        assert [c for c, _ in line.char_boxes] == [c for c in line.reference if not c.isspace()]
        assert all(b[2] > b[0] and b[3] > b[1] for _, b in line.char_boxes)
    # A line whose boxes do not match its text is still scored, without its boxes.
    coco = json.loads(coco_json.read_text(encoding="utf-8"))
    first = coco["images"][0]["id"]
    drop = next(a["id"] for a in coco["annotations"] if a["image_id"] == first)
    coco["annotations"] = [a for a in coco["annotations"] if a["id"] != drop]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(coco), encoding="utf-8")
    lines = load_coco_set(broken, image_dir)
    assert lines[0].char_boxes is None and all(line.char_boxes for line in lines[1:])


# ---------------------------------------------------------------------------
# Wiring: effocr evaluate --diagnose with a real bundle
# ---------------------------------------------------------------------------


def check_errors_section(metrics: dict) -> None:
    """The documented rule: class errors add up to the CER's edit distance."""
    errors, effocr = metrics["errors"], metrics["effocr"]
    assert errors["char_errors"] == effocr["char_errors"] == errors["attributed"]
    assert errors["ref_chars"] == effocr["ref_chars"]
    assert sum(v["errors"] for v in errors["classes"].values()) == effocr["char_errors"]
    assert sum(v["rate"] for v in errors["classes"].values()) == pytest.approx(effocr["cer"])
    assert sum(v["errors"] for v in errors["kinds"].values()) == effocr["char_errors"]
    for cls, rows in errors["top"].items():
        assert sum(r["count"] for r in rows) <= errors["classes"][cls]["events"]


def test_evaluate_diagnose_with_a_real_bundle(tiny_bundle, tiny_coco_factory, tmp_path, capsys):
    coco_json, image_dir = tiny_coco_factory(6, "en", 9, degrade=False, max_chars=14)
    out = tmp_path / "ev"
    args = ["evaluate", "--model", str(tiny_bundle), "--no-tesseract", "--diagnose"]
    args += ["--set", f"syn={coco_json}:coco:{image_dir}", "--output", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "error attribution of syn" in printed and "= localizer" in printed
    metrics = json.loads((out / "syn" / "metrics.json").read_text())
    check_errors_section(metrics)
    assert metrics["effocr"]["char_errors"] > 0  # a tiny model errs: something to attribute
    boxes = metrics["errors"]["boxes"]
    assert boxes["lines"] == 6
    assert sum(boxes["true_chars"].values()) == boxes["compare"]["chars"]
    with open(out / "syn" / "errors.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sum(int(r["edits"]) for r in rows) == metrics["effocr"]["char_errors"]
    assert {r["kind"] for r in rows} <= {"localizer", "recognizer"}
    # Without --diagnose: the same metrics, no errors.csv.
    assert main([a for a in args if a != "--diagnose"] + ["--output", str(tmp_path / "ev2")]) == 0
    assert not (tmp_path / "ev2" / "syn" / "errors.csv").exists()
    again = json.loads((tmp_path / "ev2" / "syn" / "metrics.json").read_text())
    assert again["errors"]["classes"] == metrics["errors"]["classes"]
    # The report shows the table and carries the section.
    summary = build_report({"syn": out / "syn"}, tmp_path / "report", worst_lines=12)
    assert summary["sets"]["syn"]["errors"] == metrics["errors"]
    html = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "Which model made the errors" in html
    worst = max(metrics["errors"]["classes"].items(), key=lambda kv: kv[1]["errors"])[0]
    assert f"<td class=l>{worst}</td>" in html
