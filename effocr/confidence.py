"""Calibrated word and line confidences: the probability that a word or line is read exactly.

The raw confidence of a glyph is the cosine of its embedding to the nearest reference glyph;
the mean cosine of a word ranks words but is no probability (cosines of 0.8 may be right
nine times in ten on one bundle and half the time on another). At export, the bundle reads
validation-split lines it was not trained on, and a logistic model per level (word, line) is
fitted from a few features of the glyphs to whether the unit was read exactly right
(`fit_calibration`). The bundle keeps it as `confidence.json` (manifest section
`confidence`); the line pipeline applies it to every line it reads (`apply_calibration`), and
the outputs carry the result as the word and line confidence (the raw mean cosine stays in
predictions.jsonl as `cosine`). A bundle without it (every bundle exported before it, or one
whose validation lines were all right or all wrong) gives the mean cosine, flagged
`confidence_calibrated: false`.

Features (`FEATURES`) of a unit's glyphs: mean and minimum cosine, mean and minimum margin
(the chosen glyph's cosine minus that of the best reference of another label) and the log of
the glyph count. The fit is L2-regularised logistic regression (Newton / IRLS, NumPy only) on
standardised features, constrained so that the probability never falls when a cosine or
margin rises (a feature whose weight comes out negative is dropped and the fit repeated).

No torch, no ONNX Runtime at import: inference imports this module.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from effocr.utils import EffOCRError, write_json

if TYPE_CHECKING:
    from effocr.bundle import Manifest
    from effocr.pipeline import LineResult, Pipeline

LOG = logging.getLogger(__name__)

CONFIDENCE_FILE = "confidence.json"
LEVELS = ("word", "line")
FEATURES = ("mean_cosine", "min_cosine", "mean_margin", "min_margin", "log_glyphs")
# Features whose rise must never lower the probability (all but the glyph count).
INCREASING = (True, True, True, True, False)
# Fewer right (or wrong) units than this at a level and no calibration is fitted: a logistic
# fit on a handful of one class only says "always" or "never".
MIN_PER_CLASS = 5
# L2 penalty on the standardised weights (not the intercept): a mild pull towards the base
# rate that keeps a small validation split from over-confident weights.
RIDGE = 1.0
ECE_BINS = 10


def unit_features(cosines: Sequence[float], margins: Sequence[float]) -> np.ndarray:
    """The `FEATURES` of one word or line from its glyphs' cosines and margins."""
    c = np.asarray(cosines, np.float64)
    m = np.asarray(margins, np.float64)
    if len(c) == 0:
        raise ValueError("a unit without glyphs has no confidence features")
    return np.array([c.mean(), c.min(), m.mean(), m.min(), np.log(len(c))])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow warning for large |z|


@dataclass
class LogisticModel:
    """P(right) = sigmoid(intercept + coef . (x - mean) / scale)."""

    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for the rows of `x` (N x len(FEATURES)), in [0, 1]."""
        z = (np.atleast_2d(x) - np.asarray(self.mean)) / np.asarray(self.scale)
        return _sigmoid(self.intercept + z @ np.asarray(self.coef))

    def to_dict(self) -> dict:
        return {
            "mean": self.mean,
            "scale": self.scale,
            "coef": self.coef,
            "intercept": self.intercept,
        }

    @classmethod
    def from_dict(cls, data: dict, source: str) -> LogisticModel:
        try:
            model = cls(
                [float(v) for v in data["mean"]],
                [float(v) for v in data["scale"]],
                [float(v) for v in data["coef"]],
                float(data["intercept"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EffOCRError(f"{source}: not a logistic model ({exc!r})") from exc
        sizes = {len(model.mean), len(model.scale), len(model.coef)}
        if sizes != {len(FEATURES)} or not all(s > 0 for s in model.scale):
            raise EffOCRError(
                f"{source}: expected {len(FEATURES)} features ({', '.join(FEATURES)}) with "
                "positive scales"
            )
        if not np.all(np.isfinite([*model.mean, *model.coef, model.intercept])):
            raise EffOCRError(f"{source}: non-finite parameters")
        return model


def _irls(z: np.ndarray, y: np.ndarray, active: np.ndarray, ridge: float) -> np.ndarray:
    """Weights (intercept first) of the L2-regularised logistic fit on the `active` columns."""
    x = np.hstack([np.ones((len(z), 1)), z[:, active]])
    penalty = np.full(x.shape[1], ridge)
    penalty[0] = 0.0
    w = np.zeros(x.shape[1])
    base = np.clip(y.mean(), 1e-3, 1 - 1e-3)
    w[0] = np.log(base / (1 - base))
    for _ in range(100):
        p = _sigmoid(x @ w)
        grad = x.T @ (p - y) + penalty * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    full = np.zeros(z.shape[1] + 1)
    full[0] = w[0]
    full[1:][active] = w[1:]
    return full


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    increasing: Sequence[bool] = INCREASING,
    ridge: float = RIDGE,
) -> LogisticModel:
    """Fit P(y = 1 | x), never falling in the `increasing` features.

    Features are standardised on `x`; a feature with (almost) no spread is left out. While
    an `increasing` feature gets a negative weight, the most negative one is left out and the
    fit repeated, so the result is monotone in each of them.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"features {x.shape} do not match labels {y.shape}")
    mean = x.mean(0)
    scale = x.std(0)
    active = scale > 1e-9
    scale = np.where(active, scale, 1.0)
    z = (x - mean) / scale
    inc = np.asarray(increasing, bool)
    while True:
        w = _irls(z, y, active, ridge)
        wrong = inc & active & (w[1:] < 0)
        if not wrong.any():
            break
        active[np.argmin(np.where(wrong, w[1:], 0.0))] = False
    return LogisticModel(mean.tolist(), scale.tolist(), w[1:].tolist(), float(w[0]))


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the mean |accuracy - mean confidence| over equal-width confidence bins, weighted
    by the share of units in each bin."""
    p = np.clip(np.asarray(p, np.float64), 0.0, 1.0)
    y = np.asarray(y, np.float64)
    if len(p) == 0:
        return float("nan")
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.sum() * abs(y[sel].mean() - p[sel].mean())
    return float(total / len(p))


# ---------------------------------------------------------------------------
# Units of a line result and whether they are right
# ---------------------------------------------------------------------------


def unit_glyphs(res: LineResult) -> tuple[list[list[int]], list[int]]:
    """Indices of `res.chars` per word (the text's words, as the outputs split them) and
    for the whole line."""
    from effocr.formats.results import word_groups

    return word_groups(res), list(range(len(res.chars)))


def line_units(res: LineResult) -> dict[str, np.ndarray]:
    """`unit_features` of each word and of the line (level -> rows), for a line with glyphs."""
    words, line = unit_glyphs(res)
    cos = [c.score for c in res.chars]
    mar = [c.margin for c in res.chars]
    rows = {
        "word": [unit_features([cos[i] for i in g], [mar[i] for i in g]) for g in words],
        "line": [unit_features(cos, mar)] if line else [],
    }
    return {k: np.asarray(v, np.float64).reshape(-1, len(FEATURES)) for k, v in rows.items()}


def word_correctness(words: Sequence[str], reference: str) -> list[bool]:
    """For each read word: is it a word of `reference` at the same place (inside an
    ``equal`` block of the word-level edit script)? Compared as `effocr.metrics.normalize`
    leaves them."""
    from rapidfuzz.distance import Levenshtein

    from effocr.metrics import normalize

    ref = normalize(reference).split(" ")
    norm = [normalize(w) for w in words]
    right = [False] * len(norm)
    for op in Levenshtein.opcodes(norm, ref):
        if op.tag == "equal":
            for i in range(op.src_start, op.src_end):
                right[i] = True
    return right


def line_correct(hypothesis: str, reference: str) -> bool:
    """Is the line read exactly (after `effocr.metrics.normalize`)?"""
    from effocr.metrics import normalize

    return normalize(hypothesis) == normalize(reference)


@dataclass
class Samples:
    """Features and right/wrong labels of the units of a set of lines, per level."""

    x: dict[str, list[np.ndarray]] = field(default_factory=lambda: {k: [] for k in LEVELS})
    y: dict[str, list[bool]] = field(default_factory=lambda: {k: [] for k in LEVELS})
    lines: int = 0

    def add(self, res: LineResult, reference: str) -> None:
        """One line's units (a failed line, or one without glyphs, adds nothing)."""
        if not res.ok or not res.chars:
            return
        units = line_units(res)
        groups, _ = unit_glyphs(res)
        words = ["".join(res.chars[i].char for i in g) for g in groups]
        right = word_correctness(words, reference)
        self.x["word"].extend(units["word"])
        self.y["word"].extend(right)
        self.x["line"].extend(units["line"])
        self.y["line"].append(line_correct(res.text, reference))
        self.lines += 1

    def arrays(self, level: str) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(self.x[level], np.float64).reshape(-1, len(FEATURES))
        return x, np.asarray(self.y[level], bool)


# ---------------------------------------------------------------------------
# The bundle's calibration
# ---------------------------------------------------------------------------


@dataclass
class Calibration:
    """The fitted models per level and what they were fitted on (`confidence.json`)."""

    models: dict[str, LogisticModel]
    fitted_on: dict = field(default_factory=dict)

    def predict(self, level: str, x: np.ndarray) -> np.ndarray:
        return self.models[level].predict(x)

    def to_dict(self) -> dict:
        return {
            "method": "logistic",
            "features": list(FEATURES),
            "fitted_on": self.fitted_on,
            **{level: self.models[level].to_dict() for level in LEVELS},
        }

    def save(self, bundle_dir: str | os.PathLike) -> Path:
        path = Path(bundle_dir) / CONFIDENCE_FILE
        write_json(path, self.to_dict())
        return path

    @classmethod
    def from_dict(cls, data: dict, source: str) -> Calibration:
        if not isinstance(data, dict) or data.get("method") != "logistic":
            raise EffOCRError(f"{source}: not a confidence calibration (method 'logistic')")
        if data.get("features") != list(FEATURES):
            raise EffOCRError(
                f"{source}: features {data.get('features')!r}, this effocr computes "
                f"{list(FEATURES)!r}"
            )
        missing = [level for level in LEVELS if level not in data]
        if missing:
            raise EffOCRError(f"{source}: no model for {', '.join(missing)}")
        models = {
            level: LogisticModel.from_dict(data[level], f"{source}: {level}") for level in LEVELS
        }
        return cls(models, dict(data.get("fitted_on") or {}))

    @classmethod
    def load(cls, bundle_dir: str | os.PathLike, section: dict) -> Calibration | None:
        """The calibration a bundle's manifest section `confidence` names (None: empty)."""
        if not section:
            return None
        path = Path(bundle_dir) / section["file"]
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EffOCRError(f"{path}: cannot read the confidence calibration: {exc}") from exc
        return cls.from_dict(data, str(path))


def apply_calibration(res: LineResult, calibration: Calibration) -> None:
    """Set `res.confidence` and `res.word_confidences` (a read line with glyphs only)."""
    if not res.ok or not res.chars:
        return
    units = line_units(res)
    res.word_confidences = [float(p) for p in calibration.predict("word", units["word"])]
    res.confidence = float(calibration.predict("line", units["line"])[0])


def fit_calibration(samples: Samples) -> tuple[Calibration | None, dict]:
    """Fit both levels on `samples`; None (and the reason in the report) when a level has
    fewer than `MIN_PER_CLASS` right or wrong units. The report gives, per level, the units,
    their accuracy and the expected calibration error of the mean cosine and of the fit on
    these same units (an in-sample figure: the held-out one is bench/confidence.py's)."""
    report: dict = {"lines": samples.lines}
    models = {}
    for level in LEVELS:
        x, y = samples.arrays(level)
        n_right = int(y.sum())
        entry = {
            "units": len(y),
            "right": n_right,
            "accuracy": float(y.mean()) if len(y) else None,
            "ece_cosine": expected_calibration_error(x[:, 0], y) if len(y) else None,
        }
        report[level] = entry
        if min(n_right, len(y) - n_right) < MIN_PER_CLASS:
            entry["skipped"] = (
                f"{n_right} right and {len(y) - n_right} wrong {level}s: at least "
                f"{MIN_PER_CLASS} of each are needed"
            )
            continue
        models[level] = fit_logistic(x, y)
        entry["ece_fit"] = expected_calibration_error(models[level].predict(x), y)
    if len(models) < len(LEVELS):
        return None, report
    return Calibration(models, report), report


def read_lines(
    pipeline: Pipeline, images: Sequence[str], references: Sequence[str], batch: int = 32
) -> Samples:
    """`Samples` of `images` read by `pipeline` (`effocr.pipeline.Pipeline`) against their
    `references`."""
    samples = Samples()
    for start in range(0, len(images), batch):
        results = pipeline.run(list(images[start : start + batch]), start)
        for res, ref in zip(results, references[start : start + batch], strict=True):
            samples.add(res, ref)
    return samples


def calibrate_bundle(
    bundle_dir: str | os.PathLike,
    manifest: Manifest,
    lines_spec: dict,
    n_lines: int | None,
    work_dir: str | os.PathLike,
) -> dict:
    """Read the first `n_lines` lines (None: all) of `lines_spec` (an `effocr.evaluate` set
    spec: held-out lines with their transcriptions) with the bundle in `bundle_dir`, fit the
    calibration and, when both levels could be fitted, write `confidence.json` and set
    `manifest.confidence` (the caller writes the manifest). Returns the fit's report."""
    from effocr.evaluate import load_eval_set
    from effocr.pipeline import Pipeline

    eval_set = load_eval_set(lines_spec, work_dir)
    chosen = eval_set.lines[:n_lines]
    pipeline = Pipeline.from_bundle(bundle_dir, verify=False, manifest=manifest)
    samples = read_lines(
        pipeline, [str(ln.image) for ln in chosen], [ln.reference for ln in chosen]
    )
    calibration, report = fit_calibration(samples)
    report["source"] = str(lines_spec["path"])
    if calibration is None:
        LOG.warning(
            "no confidence calibration (outputs give mean cosines): %s",
            "; ".join(report[lv]["skipped"] for lv in LEVELS if "skipped" in report[lv]),
        )
        manifest.confidence = {}
        return report
    calibration.fitted_on = report
    calibration.save(bundle_dir)
    manifest.confidence = {"file": CONFIDENCE_FILE, "lines": samples.lines}
    LOG.info(
        "confidence calibration on %d lines: word ECE %.3f -> %.3f, line ECE %.3f -> %.3f "
        "(in-sample)",
        samples.lines,
        report["word"]["ece_cosine"],
        report["word"]["ece_fit"],
        report["line"]["ece_cosine"],
        report["line"]["ece_fit"],
    )
    return report


# ---------------------------------------------------------------------------
# Command line: calibrate an existing bundle
# ---------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr calibrate-confidence`."""
    parser.add_argument("--model", "-m", required=True, help="bundle directory (not changed)")
    parser.add_argument(
        "--lines",
        required=True,
        help="held-out lines with transcriptions, NAME=PATH[:TYPE[:IMAGE_DIR]] as "
        "`effocr evaluate --set` (coco, gt_dir or page)",
    )
    parser.add_argument("--output", "-o", required=True, help="the calibrated bundle (a copy)")
    parser.add_argument(
        "--max-lines", type=int, default=None, help="read at most this many lines (default: all)"
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of `effocr calibrate-confidence`: the bundle copied with a calibration."""
    import shutil
    import tempfile

    from effocr.bundle import Manifest
    from effocr.evaluate import parse_set_spec
    from effocr.utils import atomic_path

    source = Path(args.model)
    manifest = Manifest.read(source)
    if Path(args.output).resolve() == source.resolve():
        raise EffOCRError(f"{args.output}: the output must not be the bundle itself")
    spec = parse_set_spec(args.lines)
    with atomic_path(args.output, is_dir=True) as tmp, tempfile.TemporaryDirectory() as work:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        (tmp / CONFIDENCE_FILE).unlink(missing_ok=True)
        manifest.confidence = {}
        report = calibrate_bundle(tmp, manifest, spec, args.max_lines, work)
        manifest.write(tmp)
    print(json.dumps(report, indent=2))
    return 0
