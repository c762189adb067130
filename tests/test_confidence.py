"""Calibrated word and line confidences (effocr.confidence).

The fit is checked on synthetic data with a known relation (real NumPy), and end to end on
the session's English bundle: calibrated on one set of unseen lines, it must be better
calibrated than the raw cosine on another, and every writer must carry it (XML validated
against the official XSDs). A bundle without a calibration still reads, flagged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import EN_CLASSES, EN_LINE_KWARGS
from page_formats_check import assert_valid, hocr_problems, hocr_properties, parse

from effocr.confidence import (
    CONFIDENCE_FILE,
    FEATURES,
    Calibration,
    LogisticModel,
    expected_calibration_error,
    fit_calibration,
    fit_logistic,
    line_correct,
    read_lines,
    word_correctness,
)
from effocr.utils import EffOCRError

PC = "{http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15}"
AL = "{http://www.loc.gov/standards/alto/ns-v4#}"


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _known(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features like a bundle's (cosines near 0.8, small margins, a few glyphs) and labels
    drawn from a known logistic relation in the mean cosine and the mean margin."""
    mean_cos = rng.uniform(0.6, 1.0, n)
    min_cos = mean_cos - rng.uniform(0.0, 0.2, n)
    mean_margin = rng.uniform(0.0, 0.3, n)
    min_margin = mean_margin * rng.uniform(0.2, 1.0, n)
    log_glyphs = np.log(rng.integers(1, 12, n))
    x = np.stack([mean_cos, min_cos, mean_margin, min_margin, log_glyphs], 1)
    p = _sigmoid(-14.0 + 15.0 * mean_cos + 12.0 * mean_margin)
    return x, p, rng.random(n) < p


def test_fit_recovers_a_known_relation():
    rng = np.random.default_rng(0)
    x, _, y = _known(6000, rng)
    model = fit_logistic(x, y)
    xt, pt, yt = _known(4000, rng)
    got = model.predict(xt)
    assert np.all((got >= 0) & (got <= 1))
    # The true probabilities back, within sampling error, and calibrated on new draws.
    assert np.mean(np.abs(got - pt)) < 0.03
    assert expected_calibration_error(got, yt) < 0.03
    # The raw cosine as a probability is not (the check has teeth).
    assert expected_calibration_error(xt[:, 0], yt) > 0.1
    # Irrelevant features get (near) no weight; the relevant ones a positive one.
    coef = dict(zip(FEATURES, model.coef, strict=True))
    assert coef["mean_cosine"] > 0.5 and coef["mean_margin"] > 0.5
    assert abs(coef["log_glyphs"]) < 0.2


def test_fit_is_monotone_in_cosines_and_margins():
    """A relation where a higher minimum cosine lowers the chance (nonsense for OCR, and
    possible in a small sample): the fit leaves that feature out rather than follow it."""
    rng = np.random.default_rng(1)
    x, _, _ = _known(3000, rng)
    y = rng.random(len(x)) < _sigmoid(-14.0 + 15.0 * x[:, 0] - 20.0 * (x[:, 1] - x[:, 0]))
    model = fit_logistic(x, y)
    inc = np.asarray(model.coef)[:4]
    assert np.all(inc >= 0) and inc[0] > 0
    assert model.coef[1] == 0.0
    grid = np.tile(x[:1], (50, 1))
    for col in range(4):
        g = grid.copy()
        g[:, col] = np.linspace(-0.2, 1.0, 50)
        assert np.all(np.diff(model.predict(g)) >= 0)


def test_expected_calibration_error_known_values():
    y = np.array([1] * 8 + [0] * 2, bool)
    assert expected_calibration_error(np.full(10, 0.8), y) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(10, 0.95), ~y) == pytest.approx(0.75)
    # Two bins, each off by 0.1, weighted by their counts.
    p = np.array([0.15] * 10 + [0.85] * 10)
    lab = np.array([0] * 9 + [1] + [1] * 7 + [0] * 3, bool)
    assert expected_calibration_error(p, lab) == pytest.approx(0.1)


def test_word_and_line_correctness():
    assert word_correctness(["the", "cat", "sat"], "the bat sat") == [True, False, True]
    # A word read twice: one copy is right, the extra one is not.
    assert word_correctness(["a", "a", "b"], "a b") in ([True, False, True], [False, True, True])
    assert word_correctness(["ab"], "a b") == [False]
    assert line_correct("the  cat ", "the cat") and not line_correct("the cat", "the cut")


def test_fit_needs_right_and_wrong_units():
    from effocr.confidence import Samples

    samples = Samples()
    for _ in range(20):
        samples.x["word"].append(np.array([0.9, 0.8, 0.1, 0.05, 1.0]))
        samples.y["word"].append(True)
        samples.x["line"].append(np.array([0.9, 0.8, 0.1, 0.05, 2.0]))
        samples.y["line"].append(True)
    samples.lines = 20
    calibration, report = fit_calibration(samples)
    assert calibration is None
    assert "0 wrong words" in report["word"]["skipped"]


def test_calibration_file_round_trip_and_errors(tmp_path):
    model = LogisticModel([0.5] * 5, [0.1] * 5, [1.0, 0.0, 0.5, 0.0, -0.1], -0.3)
    cal = Calibration({"word": model, "line": model}, {"lines": 3})
    cal.save(tmp_path)
    section = {"file": CONFIDENCE_FILE, "lines": 3}
    back = Calibration.load(tmp_path, section)
    x = np.array([[0.7, 0.6, 0.2, 0.1, 1.5]])
    assert back.predict("line", x) == pytest.approx(cal.predict("line", x))
    assert Calibration.load(tmp_path, {}) is None
    data = json.loads((tmp_path / CONFIDENCE_FILE).read_text())
    data["features"] = ["mean_cosine"]
    (tmp_path / CONFIDENCE_FILE).write_text(json.dumps(data))
    with pytest.raises(EffOCRError, match=r"confidence\.json: features"):
        Calibration.load(tmp_path, section)
    (tmp_path / CONFIDENCE_FILE).write_text("{not json")
    with pytest.raises(EffOCRError, match="cannot read the confidence calibration"):
        Calibration.load(tmp_path, section)


# ---------------------------------------------------------------------------
# On a trained bundle
# ---------------------------------------------------------------------------


def _short_lines(factory, seed: int):
    """60 unseen lines of one or two words: enough read exactly right, and enough not, at
    both levels for the tiny English bundle."""
    from effocr.synth.fonts import matplotlib_font_dir

    kwargs = {**EN_LINE_KWARGS, "max_chars": 8}
    fonts = [matplotlib_font_dir() / "DejaVuSans.ttf"]
    return factory(60, "en", seed, font_paths=fonts, charset=list(EN_CLASSES), **kwargs)


@pytest.fixture(scope="module")
def calibrated(en_bundle, tiny_coco_factory, tmp_path_factory) -> dict:
    """`en_bundle` calibrated (a copy) on one set of unseen lines; another set held out."""
    from effocr.cli import main

    fit_json, fit_images = _short_lines(tiny_coco_factory, 31)
    held_json, held_images = _short_lines(tiny_coco_factory, 32)
    out = tmp_path_factory.mktemp("calibrated") / "bundle"
    spec = f"fit={fit_json}:coco:{fit_images}"
    assert (
        main(["calibrate-confidence", "-m", str(en_bundle), "--lines", spec, "-o", str(out)]) == 0
    )
    return {"bundle": out, "held": (held_json, held_images), "fit": (fit_json, fit_images)}


def _held_samples(bundle: Path, held: tuple[Path, Path]):
    from effocr.data.coco import load_coco
    from effocr.pipeline import Pipeline

    coco_json, images = held
    coco = load_coco(coco_json)
    pipeline = Pipeline.from_bundle(bundle)
    paths = [str(images / im["file_name"]) for im in coco["images"]]
    results = pipeline.run(paths)
    samples = read_lines(pipeline, paths, [im["text"] for im in coco["images"]])
    return results, samples


def test_calibrated_bundle_beats_the_cosine_on_held_out_lines(calibrated, en_bundle):
    from effocr.bundle import Manifest
    from effocr.confidence import line_units

    bundle = calibrated["bundle"]
    manifest = Manifest.read(bundle)
    assert manifest.confidence["file"] == CONFIDENCE_FILE
    assert 50 <= manifest.confidence["lines"] <= 60  # the fit lines with glyphs
    assert (bundle / CONFIDENCE_FILE).is_file() and not (en_bundle / CONFIDENCE_FILE).exists()
    cal = Calibration.load(bundle, manifest.confidence)
    results, samples = _held_samples(bundle, calibrated["held"])
    assert samples.lines >= 50
    for level in ("word", "line"):
        x, y = samples.arrays(level)
        assert 3 <= y.sum() <= len(y) - 3  # both kinds among the held-out units
        p = cal.predict(level, x)
        assert np.all((p >= 0) & (p <= 1))
        ece_cal = expected_calibration_error(p, y)
        ece_cos = expected_calibration_error(np.clip(x[:, 0], 0, 1), y)
        assert ece_cal < 0.5 * ece_cos, (level, ece_cal, ece_cos)
        # Monotone in the mean cosine, the rest held fixed.
        grid = np.tile(x[:1], (30, 1))
        grid[:, 0] = np.linspace(0.0, 1.0, 30)
        assert np.all(np.diff(cal.predict(level, grid)) >= -1e-12)
    # What the pipeline set on each line is the calibration's value for its units.
    for res in results:
        if not res.chars:
            continue
        units = line_units(res)
        assert res.confidence == pytest.approx(float(cal.predict("line", units["line"])[0]))
        assert res.word_confidences == pytest.approx(cal.predict("word", units["word"]).tolist())
        assert len(res.word_confidences) == len(res.text.split(" "))


def test_writers_carry_the_calibrated_confidence(calibrated, tmp_path):
    from effocr.cli import main

    coco_json, images = calibrated["held"]
    inputs = sorted(images.glob("*.png"))[:4]
    out = tmp_path / "out"
    fmt = ["--format", "page,alto,hocr,jsonl"]
    argv = ["infer", "--model", str(calibrated["bundle"]), "--output", str(out), *fmt]
    assert main([*argv, *map(str, inputs)]) == 0
    records = [json.loads(ln) for ln in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 4
    for rec, path in zip(records, inputs, strict=True):
        assert rec["chars"], rec
        assert rec["confidence_calibrated"] is True
        scores = [c["score"] for c in rec["chars"]]
        assert rec["cosine"] == pytest.approx(sum(scores) / len(scores), abs=1e-5)
        words = rec["word_confidences"]
        assert len(words) == len(rec["text"].split(" "))
        assert all(0.0 <= w <= 1.0 for w in [*words, rec["confidence"]])
        stem = path.stem
        root = assert_valid((out / "page" / f"{stem}.xml").read_bytes(), "page")
        (line,) = root.iter(f"{PC}TextLine")
        conf = float(line.find(f"{PC}TextEquiv").get("conf"))
        assert conf == pytest.approx(rec["confidence"], abs=2e-4)
        page_words = [float(w.find(f"{PC}TextEquiv").get("conf")) for w in line.iter(f"{PC}Word")]
        assert page_words == pytest.approx(words, abs=2e-4)
        glyph_conf = [float(g.find(f"{PC}TextEquiv").get("conf")) for g in line.iter(f"{PC}Glyph")]
        assert glyph_conf == pytest.approx([min(max(s, 0), 1) for s in scores], abs=2e-4)
        alto = assert_valid((out / "alto" / f"{stem}.xml").read_bytes(), "alto")
        wc = [float(s.get("WC")) for s in alto.iter(f"{AL}String")]
        assert wc == pytest.approx(words, abs=2e-4)
        data = (out / "hocr" / f"{stem}.hocr").read_bytes()
        assert hocr_problems(data) == []
        wconf = [
            float(hocr_properties(el.get("title"))["x_wconf"])
            for el in parse(data).iter()
            if el.get("class") == "ocrx_word"
        ]
        assert wconf == pytest.approx([100 * w for w in words], abs=0.02)


def test_bundle_without_calibration_reads_flagged(en_bundle, calibrated):
    from effocr.infer import Engine

    held_json, images = calibrated["held"]
    paths = sorted(images.glob("*.png"))[:3]
    with Engine(en_bundle) as engine:
        results = engine.infer(paths)
        pages = engine.read(paths)
    for res, page in zip(results, pages, strict=True):
        assert res.chars
        assert res.confidence is None and res.word_confidences is None
        rec = res.to_dict()
        mean = sum(min(max(c.score, 0), 1) for c in res.chars) / len(res.chars)
        assert rec["confidence_calibrated"] is False
        assert rec["confidence"] == pytest.approx(mean, abs=1e-5)
        (line,) = page.regions[0].lines
        assert line.confidence == pytest.approx(mean)
        for word in line.words:
            want = sum(g.confidence for g in word.glyphs) / len(word.glyphs)
            assert word.confidence == pytest.approx(want)


def test_manifest_naming_a_broken_calibration_is_refused(calibrated, tmp_path):
    from effocr.infer import Engine

    bundle = tmp_path / "bundle"
    shutil.copytree(calibrated["bundle"], bundle)
    (bundle / CONFIDENCE_FILE).write_text('{"method": "isotonic"}')
    with pytest.raises(EffOCRError, match=r"confidence\.json: not a confidence calibration"):
        Engine(bundle, verify=False)
    # Removed from the manifest too, the bundle reads as an uncalibrated one.
    meta = yaml.safe_load((bundle / "model.yaml").read_text())
    del meta["confidence"]
    del meta["files"][CONFIDENCE_FILE]
    (bundle / "model.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    with Engine(bundle) as engine:
        (res,) = engine.infer([sorted(calibrated["held"][1].glob("*.png"))[0]])
    assert res.ok and res.to_dict()["confidence_calibrated"] is False
