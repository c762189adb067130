"""How well the confidences written to PAGE/ALTO/hOCR rank what is right and what is wrong.

For each evaluation set (``NAME=PATH[:TYPE[:IMAGE_DIR]]``, as `effocr evaluate --set`), the
bundle reads every line (`Engine.read`); each recognised glyph is aligned to the reference
(Levenshtein opcodes over the normalised texts without spaces): a glyph in an ``equal`` block
is right, any other is wrong. Reported per set:

* glyphs: the mean confidence of right and of wrong glyphs, and the AUROC of the glyph
  confidence as a detector of right glyphs (0.5: no better than chance);
* lines: the mean line confidence against the mean character accuracy (1 - CER, clipped at 0)
  and their Spearman rank correlation across lines (does a lower confidence mean more errors?);
* words and lines: the expected calibration error (10 equal-width bins) of the written
  confidence (calibrated when the bundle has `confidence.json`) and of the raw mean cosine, as
  the probability of being read exactly right (`effocr.confidence`: `word_correctness`,
  `line_correct`), and the accuracy and mean of each.

    .venv/bin/python bench/confidence.py --bundle results/bundle \
        --set uw3=../shared/data/uw3-50lines:gt_dir \
        --set demo_test=results/data/splits/test.json:coco:data/synthetic/en/images

Writes bench/results/confidence.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from rapidfuzz.distance import Levenshtein

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import SHARED_DATA, cpu_info, cpu_line  # noqa: E402  (bench/common.py)

from effocr.confidence import (  # noqa: E402
    expected_calibration_error,
    line_correct,
    word_correctness,
)
from effocr.evaluate import load_eval_set, parse_set_spec  # noqa: E402
from effocr.infer import Engine  # noqa: E402
from effocr.metrics import normalize  # noqa: E402


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half)."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="stable")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(values):  # average ranks over ties
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    def rank(x: np.ndarray) -> np.ndarray:
        return np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(float)

    if len(a) < 3:
        return float("nan")
    return float(np.corrcoef(rank(a), rank(b))[0, 1])


def glyph_correctness(glyph_texts: list[str], reference: str) -> list[bool]:
    """For each recognised glyph (reading order): does it match the reference there?"""
    hyp = [normalize(t).replace(" ", "") for t in glyph_texts]
    joined = "".join(hyp)
    ref = normalize(reference).replace(" ", "")
    right_chars = np.zeros(len(joined), bool)
    for op in Levenshtein.opcodes(joined, ref):
        if op.tag == "equal":
            right_chars[op.src_start : op.src_end] = True
    out, pos = [], 0
    for h in hyp:
        out.append(bool(len(h)) and bool(right_chars[pos : pos + len(h)].all()))
        pos += len(h)
    return out


def measure(engine: Engine, spec: dict, work: Path) -> dict:
    eval_set = load_eval_set(spec, work)
    pages = engine.read([str(line.image) for line in eval_set.lines])
    glyph_conf, glyph_right, line_conf, line_acc = [], [], [], []
    units: dict[str, dict[str, list]] = {
        level: {"confidence": [], "cosine": [], "right": []} for level in ("word", "line")
    }
    for line, page in zip(eval_set.lines, pages, strict=True):
        if page.error is not None or not page.regions:
            continue
        (ln,) = page.regions[0].lines
        right = glyph_correctness([g.text for g in ln.glyphs], line.reference)
        glyph_conf += [g.confidence for g in ln.glyphs]
        glyph_right += right
        ref = normalize(line.reference)
        cer = Levenshtein.distance(normalize(ln.text), ref) / max(len(ref), 1)
        line_conf.append(ln.confidence if ln.confidence is not None else 0.0)
        line_acc.append(max(0.0, 1.0 - cer))
        right_words = word_correctness([w.text for w in ln.words], line.reference)
        for w, ok in zip(ln.words, right_words, strict=True):
            units["word"]["confidence"].append(w.confidence)
            units["word"]["cosine"].append(np.mean([g.confidence for g in w.glyphs]))
            units["word"]["right"].append(ok)
        if ln.glyphs:
            units["line"]["confidence"].append(ln.confidence)
            units["line"]["cosine"].append(np.mean([g.confidence for g in ln.glyphs]))
            units["line"]["right"].append(line_correct(ln.text, line.reference))
    conf, right = np.asarray(glyph_conf, float), np.asarray(glyph_right, bool)
    lc, la = np.asarray(line_conf), np.asarray(line_acc)
    return {
        "lines": len(lc),
        "glyphs": len(conf),
        "glyph_accuracy": float(right.mean()) if len(right) else float("nan"),
        "mean_conf_right": float(conf[right].mean()) if right.any() else float("nan"),
        "mean_conf_wrong": float(conf[~right].mean()) if (~right).any() else float("nan"),
        "glyph_auroc": auroc(conf, right),
        "mean_line_conf": float(lc.mean()) if len(lc) else float("nan"),
        "mean_line_char_accuracy": float(la.mean()) if len(la) else float("nan"),
        "line_spearman": spearman(lc, la),
        **{
            f"{level}_calibration": {
                "units": len(u["right"]),
                "accuracy": float(np.mean(u["right"])) if u["right"] else float("nan"),
                "mean_confidence": float(np.mean(u["confidence"])) if u["right"] else float("nan"),
                "mean_cosine": float(np.mean(u["cosine"])) if u["right"] else float("nan"),
                "ece_confidence": expected_calibration_error(u["confidence"], u["right"]),
                "ece_cosine": expected_calibration_error(u["cosine"], u["right"]),
                "auroc_confidence": auroc(np.asarray(u["confidence"]), np.asarray(u["right"])),
                "auroc_cosine": auroc(np.asarray(u["cosine"]), np.asarray(u["right"])),
            }
            for level, u in units.items()
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=str(REPO / "results" / "bundle"))
    ap.add_argument(
        "--set",
        action="append",
        dest="sets",
        help="NAME=PATH[:TYPE[:IMAGE_DIR]] (default: the demo test split and ../shared's UW3 "
        "lines, those that exist)",
    )
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "confidence.json"))
    args = ap.parse_args()
    if not args.sets:
        defaults = {
            "demo_test": (
                REPO / "results" / "data" / "splits" / "test.json",
                f":coco:{REPO / 'data' / 'synthetic' / 'en' / 'images'}",
            ),
            "uw3": (SHARED_DATA / "uw3-50lines", ":gt_dir"),
        }
        args.sets = [f"{n}={p}{rest}" for n, (p, rest) in defaults.items() if p.exists()]
        if not args.sets:
            ap.error("no --set given and no default set found")
    results = {"cpu": cpu_info(), "bundle": args.bundle, "sets": {}}
    print(cpu_line())
    with Engine(args.bundle) as engine, tempfile.TemporaryDirectory() as work:
        for text in args.sets:
            spec = parse_set_spec(text)
            results["sets"][spec["name"]] = r = measure(engine, spec, Path(work))
            print(
                f"{spec['name']}: {r['lines']} lines, {r['glyphs']} glyphs, "
                f"{100 * r['glyph_accuracy']:.1f} % right; glyph conf right "
                f"{r['mean_conf_right']:.3f} / wrong {r['mean_conf_wrong']:.3f}, AUROC "
                f"{r['glyph_auroc']:.3f}; line conf {r['mean_line_conf']:.3f} vs char accuracy "
                f"{r['mean_line_char_accuracy']:.3f}, Spearman {r['line_spearman']:.3f}"
            )
            for level in ("word", "line"):
                c = r[f"{level}_calibration"]
                print(
                    f"  {level}s: {c['units']}, {100 * c['accuracy']:.1f} % exactly right; "
                    f"mean confidence {c['mean_confidence']:.3f} (ECE {c['ece_confidence']:.3f}), "
                    f"mean cosine {c['mean_cosine']:.3f} (ECE {c['ece_cosine']:.3f}); AUROC "
                    f"{c['auroc_confidence']:.3f} / {c['auroc_cosine']:.3f}"
                )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
