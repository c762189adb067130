"""CER/WER/exact match, normalisation, confusions and length buckets (effocr.metrics)."""

import random

import pytest

from effocr.metrics import (
    ScoreOptions,
    bucket_name,
    cer,
    confusions,
    normalize,
    score_line,
    score_set,
    wer,
)


def _levenshtein(a, b) -> int:
    """Textbook dynamic programme, to check rapidfuzz independently."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def test_quotes_case_spaces():
    text = "\u201cHe said\u201d  \u2018no\u2019, ''yes'' and ``maybe''\n"
    assert normalize(text) == '"He said" \'no\', "yes" and "maybe"'
    kept = normalize(text, ScoreOptions(normalize_quotes=False))
    assert kept == "\u201cHe said\u201d \u2018no\u2019, ''yes'' and ``maybe''"
    assert normalize("A B", ScoreOptions(ignore_case=True)) == "a b"
    assert normalize(" a  b\tc ", ScoreOptions(ignore_spaces=True)) == "abc"
    assert normalize(None) == ""


def test_cer_is_pooled_not_averaged():
    refs, hyps = ["abcd", "ab"], ["abce", "xy"]
    # (1 + 2) / (4 + 2) pooled; the mean of line CERs would be (0.25 + 1) / 2.
    assert cer(refs, hyps) == pytest.approx(0.5)
    lines, total = score_set(refs, hyps)
    assert [s.distance for s in lines] == [1, 2]
    assert total.char_errors == 3 and total.ref_chars == 6


def test_wer_and_exact_match():
    refs = ["the cat sat", "on the mat", "ok"]
    hyps = ["the cat sit", "on the mat", "0k"]
    assert wer(refs, hyps) == pytest.approx(2 / 7)
    _, total = score_set(refs, hyps)
    assert total.exact_lines == 1
    assert total.exact_match == pytest.approx(1 / 3)
    assert total.word_errors == 2 and total.ref_words == 7


def test_options_change_scores():
    refs, hyps = ["Hello World"], ["hello  world"]
    assert cer(refs, hyps) == pytest.approx(2 / 11)
    assert cer(refs, hyps, ignore_case=True) == 0.0
    assert cer(["a b"], ["ab"]) == pytest.approx(1 / 3)
    assert cer(["a b"], ["ab"], ignore_spaces=True) == 0.0


def test_missing_hypothesis_counts_as_empty():
    s = score_line("abc", None)
    assert s.distance == 3 and s.cer == 1.0 and not s.exact


def test_matches_reference_implementation():
    rng = random.Random(0)
    alphabet = "ab c,.é漢"
    refs = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))) for _ in range(40)]
    hyps = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(40)]
    opts = ScoreOptions(normalize_quotes=False)
    lines, total = score_set(refs, hyps, opts)
    expected = [
        _levenshtein(normalize(r, opts), normalize(h, opts))
        for r, h in zip(refs, hyps, strict=True)
    ]
    assert [s.distance for s in lines] == expected
    assert total.cer == pytest.approx(sum(expected) / sum(len(normalize(r, opts)) for r in refs))
    words = [_levenshtein(s.reference.split(), s.hypothesis.split()) for s in lines]
    assert [s.word_distance for s in lines] == words


def test_confusions_from_alignment():
    lines, _ = score_set(["hello", "cat", "dog"], ["hallo", "cart", "do"])
    counts = confusions(lines)
    assert counts[("e", "a")] == 1
    assert counts[("", "r")] == 1
    assert counts[("g", "")] == 1
    assert sum(counts.values()) == 3


def test_length_buckets():
    assert [bucket_name(n) for n in (0, 1, 10, 11, 40, 41, 80, 81, 500)] == [
        "0", "1-10", "1-10", "11-20", "21-40", "41-80", "41-80", "81+", "81+",
    ]  # fmt: skip
    _, total = score_set(["abcde", "x" * 50, "y" * 55], ["abcdX", "x" * 50, "y" * 50])
    by = {b["bucket"]: b for b in total.by_length}
    assert list(by) == ["1-10", "41-80"]
    assert by["1-10"]["cer"] == pytest.approx(0.2)
    assert by["41-80"]["lines"] == 2 and by["41-80"]["cer"] == pytest.approx(5 / 105)


def test_mismatched_lengths_and_empty_set():
    with pytest.raises(ValueError, match="2 references but 1"):
        score_set(["a", "b"], ["a"])
    _, total = score_set([], [])
    assert total.lines == 0 and total.cer == 0.0 and total.exact_match == 0.0
