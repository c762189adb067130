"""CER/WER with and without the word-level recognizer (effocr/recognizer/words.py), by threshold.

Trains a word recognizer beside an English bundle, from the bundle's own workflow run: a
vocabulary of the most frequent words of the config's `synth.text_source` (or of a ranked word
list, `--word-list`), rendered in a subset
of its fonts, plus the vocabulary words cut from its synthetic training lines. The trainer and
the index are the character recognizer's (`train_recognizer`, `build_reference_index`), with
words as classes; the model runs through ONNX Runtime as the bundle's do. Each evaluation set
is read once by the bundle (its LM as the bundle says); the words' nearest references are then
applied at every threshold, so the grid costs one pass. Threshold "off" is the bundle alone.
The bundle and the run are only read.

    .venv/bin/python bench/word_recognizer.py --config config/base-en.yaml \
        --results results-en --bundle models/en --set uw3=../shared/data/uw3-50lines \
        --set test=results-en/data/splits/test.json:coco:data/synthetic/base-en/images
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import string
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import SHARED_DATA, cpu_line  # noqa: E402  (bench/common.py)

from effocr.config import config_sections, load_config  # noqa: E402
from effocr.evaluate import load_eval_set, parse_set_spec  # noqa: E402
from effocr.imageio import decode_image  # noqa: E402
from effocr.metrics import score_set  # noqa: E402
from effocr.onnx_session import CPU_PROVIDER, make_session  # noqa: E402
from effocr.pipeline import Pipeline, RecognizerStage, ReferenceSearch  # noqa: E402
from effocr.recognizer.dataset import MANIFEST_COLUMNS  # noqa: E402
from effocr.recognizer.index import build_reference_index  # noqa: E402
from effocr.recognizer.model import export_onnx, load_recognizer  # noqa: E402
from effocr.recognizer.train import train_recognizer  # noqa: E402
from effocr.recognizer.words import (  # noqa: E402
    WordReader,
    crop_words,
    ranked_vocabulary,
    word_vocabulary,
)
from effocr.synth.render import reference_font_stems, render_glyphs, resolve_fonts, select_fonts  # noqa: E402
from effocr.synth.text import read_text_source  # noqa: E402
from effocr.utils import setup_logging  # noqa: E402


def merge_manifests(parts: list[Path], out: Path) -> None:
    """One manifest of several in the same folder (paths are relative to it)."""
    with open(out, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for part in parts:
            with open(part, encoding="utf-8", newline="") as src:
                writer.writerows(csv.DictReader(src))


def train_words(args: argparse.Namespace, work: Path) -> dict:
    """Vocabulary, renders, crops, training, index and ONNX export; returns their figures."""
    config = load_config(args.config)
    sections = config_sections(config)
    run = sections.run
    results = Path(args.results)
    t0 = time.perf_counter()
    if args.word_list:
        ranked = Path(args.word_list).read_text(encoding="utf-8").split()
        vocab = ranked_vocabulary(ranked, args.vocabulary)
    else:
        vocab = word_vocabulary(read_text_source(config["synth"]["text_source"]), args.vocabulary)
    letters = list(string.ascii_letters)
    fonts = resolve_fonts(sections.fonts, letters)
    reference = reference_font_stems(sections.fonts, run.language)
    fonts = select_fonts(fonts, args.fonts, reference, seed=run.seed)
    render_glyphs(
        vocab,
        fonts,
        work / "renders",
        work / "renders.csv",
        size=args.render_size,
        padding=sections.render.padding,
        mode="ascender",
        seed=run.seed,
        workers=args.threads,
    )
    t_render = time.perf_counter() - t0
    splits = {s: results / "data" / "splits" / f"{s}.json" for s in ("train", "val")}
    crop_counts = crop_words(
        splits,
        config["dataset"]["image_dir"],
        work / "crops",
        work / "crops.csv",
        vocab,
        padding=sections.crops.padding,
        jitter=args.jitter,
        jitter_range=sections.crops.jitter_range,
        seed=run.seed,
        char_category=sections.dataset.char_category,
        word_category=sections.dataset.word_category,
    )
    merge_manifests([work / "renders.csv", work / "crops.csv"], work / "words.csv")
    t_data = time.perf_counter() - t0
    recognizer = dataclasses.replace(
        sections.recognizer,
        input_size=args.input_size,
        epochs=args.epochs,
        num_passes=args.num_passes,
        reference_crops=0,
        device="cpu",
        wandb=None,
    )
    summary = train_recognizer(
        work / "words.csv",
        work / "model",
        recognizer=recognizer,
        fonts=sections.fonts,
        run=run,
        threads=args.threads,
    )
    t_train = time.perf_counter() - t0 - t_data
    build_reference_index(
        work / "model" / "model.pt",
        work / "renders.csv",
        work / "index",
        recognizer=recognizer,
        fonts=sections.fonts,
        run=run,
        threads=args.threads,
    )
    export_onnx(work / "model" / "model.pt", work / "word.onnx", opset=17)
    return {
        "vocabulary": len(vocab),
        "fonts": len(fonts),
        "renders_s": round(t_render, 1),
        "data_s": round(t_data, 1),
        "train_s": round(t_train, 1),
        "crops": crop_counts,
        "val_p_at_1": summary["best_val_p1"],
        "vocab": vocab,
    }


def check_words(
    ref: str, before: str, after: str, cands, sims, threshold: float, checked: dict
) -> None:
    """Count the accepted words of a line whose word count matches its reference's."""
    ref_words, old, new = ref.split(), before.split(), after.split()
    if not len(ref_words) == len(old) == len(new):
        return
    for cand, sim in zip(cands, sims, strict=True):
        if sim < threshold:
            continue
        k = cand.word
        right_now, right_before = new[k] == ref_words[k], old[k] == ref_words[k]
        key = (
            ("right" if right_before else "fixed")
            if right_now
            else ("broken" if right_before else "wrong")
        )
        checked[key] += 1


def word_reader(work: Path, padding: int) -> WordReader:
    """The trained word model (ONNX, one thread) and index."""
    model = load_recognizer(work / "model" / "model.pt")
    session = make_session(work / "word.onnx", [CPU_PROVIDER], 1)
    return WordReader(
        RecognizerStage(session, model.mean, model.std, 64),
        ReferenceSearch.load(work / "index"),
        model.input_size,
        padding,
        min_similarity=0.83,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "config" / "base-en.yaml"))
    ap.add_argument("--results", default=str(REPO / "results-en"), help="the config's run")
    ap.add_argument("--bundle", default=str(REPO / "models" / "en"))
    ap.add_argument("--set", dest="sets", action="append", help="default: UW3 from ../shared")
    ap.add_argument("--vocabulary", type=int, default=2000, help="words (x2: lower, title case)")
    ap.add_argument(
        "--word-list",
        default=None,
        help="words, most frequent first, whitespace-separated (default: the config's "
        "synth.text_source, by frequency)",
    )
    ap.add_argument("--fonts", type=int, default=16, help="fonts the words are rendered in")
    ap.add_argument("--render-size", type=int, default=40, help="font size of the renders, px")
    ap.add_argument("--input-size", type=int, default=64, help="the word model's input side")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--num-passes", type=int, default=1)
    ap.add_argument("--jitter", type=int, default=1, help="extra jittered cuts per train word")
    ap.add_argument("--padding", type=int, default=2, help="pixels around a word's letters")
    ap.add_argument("--thresholds", default="0.7,0.75,0.8,0.83,0.86,0.9,0.93")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None, help="keep the word model here (default: temporary)")
    ap.add_argument("--train-only", action="store_true", help="stop after training (--work)")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "word_recognizer.json"))
    args = ap.parse_args()
    if not args.train_only and not (Path(args.bundle) / "model.yaml").is_file():
        raise SystemExit(f"{args.bundle}: not a bundle (run `make model-en`, or give --bundle)")
    if args.sets is None:
        args.sets = [f"uw3={SHARED_DATA / 'uw3-50lines'}"]
    setup_logging(None)
    print(cpu_line())
    thresholds = [float(v) for v in args.thresholds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp) / "words"
        work.mkdir(parents=True, exist_ok=True)
        if not (work / "word.onnx").is_file() and any(work.iterdir()):
            raise SystemExit(f"{work}: an unfinished word model (still training, or failed)")
        if (work / "word.onnx").is_file():
            trained = json.loads((work / "trained.json").read_text(encoding="utf-8"))
        else:
            trained = train_words(args, work)
            (work / "trained.json").write_text(json.dumps(trained), encoding="utf-8")
        if args.train_only:
            return 0
        vocab = set(trained.pop("vocab"))
        print(
            f"word model: {trained['vocabulary']} words in {trained['fonts']} fonts, crops "
            f"{trained['crops']}, val p@1 {trained['val_p_at_1']}, data {trained['data_s']} s, "
            f"training {trained['train_s']} s"
        )
        reader = word_reader(work, args.padding)
        pipe = Pipeline.from_bundle(args.bundle, verify=False)
        rows = []
        for spec_text in args.sets:
            spec = parse_set_spec(spec_text)
            eval_set = load_eval_set(spec, tmp)
            refs = [line.reference for line in eval_set.lines]
            read, t_words, n_cands = [], 0.0, 0
            for line in eval_set.lines:
                (res,) = pipe.run([str(line.image)])
                t = time.perf_counter()
                img = decode_image(str(line.image), keep_grey=True)
                cands = reader.candidates(res)
                sims, words = reader.nearest(img, cands)
                t_words += time.perf_counter() - t
                n_cands += len(cands)
                read.append((res, cands, sims, words))
            ref_words = [w for r in refs for w in r.split()]
            covered = sum(w.strip(string.punctuation) in vocab for w in ref_words)
            for threshold in [None, *thresholds]:
                hyps, replaced = [], 0
                # Accepted words of lines with as many words as their reference: right, fixed
                # (the characters had it wrong) and broken (the characters had it right).
                checked = {"right": 0, "fixed": 0, "broken": 0, "wrong": 0}
                for ref, (res, cands, sims, words) in zip(refs, read, strict=True):
                    if threshold is None or res.error is not None:
                        hyps.append(res.text if res.error is None else None)
                        continue
                    out, n = reader.apply(res, cands, sims, words, threshold)
                    hyps.append(out.text)
                    replaced += n
                    check_words(ref, res.text, out.text, cands, sims, threshold, checked)
                _, score = score_set(refs, hyps)
                row = {
                    "set": spec["name"],
                    "threshold": threshold,
                    "cer": score.cer,
                    "wer": score.wer,
                    "words_accepted": replaced,
                    "accepted_checked": checked,
                    "word_candidates": n_cands,
                    "reference_words_in_vocabulary": covered / max(1, len(ref_words)),
                    "word_ms_per_line": 1000 * t_words / max(1, len(read)),
                    **{k: v for k, v in trained.items() if k != "crops"},
                }
                rows.append(row)
                name = "off" if threshold is None else f"{threshold:.2f}"
                print(
                    f"{spec['name']:<6} threshold {name:<5} CER {score.cer:.4f} WER "
                    f"{score.wer:.4f} accepted {replaced}/{n_cands} words {checked} "
                    f"(vocabulary covers {covered / max(1, len(ref_words)):.0%} of the "
                    f"reference words), word stage {row['word_ms_per_line']:.1f} ms/line"
                )
            # The most similar accepted words that were wrong are what a threshold must stop.
            sims_all = np.concatenate([s for _, _, s, _ in read]) if read else np.zeros(0)
            if len(sims_all):
                print(f"{spec['name']:<6} word cosines: median {np.median(sims_all):.3f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
