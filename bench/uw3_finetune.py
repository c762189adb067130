"""Benchmark: fine-tuning from line transcriptions only (no boxes), issue 15.

* ``uw3``: the 50 real scanned UW3 lines (`../shared/data/uw3-50lines`, `.gt.txt` only) split by
  sorted file name into 35 training and 15 test lines (the split is `bench/data/uw3_split.json`;
  the images stay where they are, the script takes the folder). The workflow (real Snakemake, a
  generated config in a work folder outside the repository) imports the 35 lines
  (`dataset.format: lines`), aligns them with the base bundle (`align.bundle`), fine-tunes both
  models from it (`init_from`) and exports a bundle. Both bundles are evaluated on the 15 test
  lines with `effocr evaluate` (CER, the language model on and off). Reported: both CERs, lines
  accepted per alignment round, wall and CPU time of the training run.
* ``new_chars`` (UW3 holds no character that the base index lacks): synthetic lines in the
  demo's line fonts whose text has characters the base bundle never saw (`--new-chars`), their
  boxes stripped, the same fine-tuning with the charset extended; on held-out lines, before (the
  base bundle + `effocr extend-index`) and after: the accuracy of those characters in the
  evaluation's line alignment (LM on and off) and the recognizer's p@1 on their glyphs that the
  localizer finds (true boxes known, LM off).

Usage:
    .venv/bin/python bench/uw3_finetune.py --base results/bundle --uw3 ../shared/data/uw3-50lines
    .venv/bin/python bench/uw3_finetune.py --base results/bundle --rounds 2 --skip new_chars
Writes bench/results/uw3_finetune.json (figures, settings, CPU) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import (  # bench/common.py (this script's folder is on sys.path)
    SHARED_DATA,
    cpu_info,
    cpu_line,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from effocr.config import deep_merge  # noqa: E402 (the repository is on sys.path now)

RESULTS = ROOT / "bench" / "results"
SPLIT_FILE = ROOT / "bench" / "data" / "uw3_split.json"
N_TRAIN = 35


def uw3_split(folder: Path) -> dict:
    """35/15 by sorted file name; must equal the stored split (else the folder differs)."""
    names = sorted(p.name.removesuffix(".gt.txt") for p in folder.glob("*.gt.txt"))
    if not names:
        raise SystemExit(f"{folder}: no .gt.txt lines there (give the folder with --uw3)")
    split = {"train": names[:N_TRAIN], "test": names[N_TRAIN:]}
    stored = json.loads(SPLIT_FILE.read_text(encoding="utf-8"))
    if {k: stored[k] for k in ("train", "test")} != split:
        raise SystemExit(f"{folder}: its lines differ from the split in {SPLIT_FILE}")
    return split


def copy_lines(src: Path, names: list[str], dst: Path) -> None:
    """The named `.gt.txt` lines and their images into `dst` (the inputs stay untouched)."""
    dst.mkdir(parents=True)
    for name in names:
        for path in src.glob(f"{name}.*"):
            shutil.copy2(path, dst / path.name)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def snakemake(work: Path, config: dict, target: str, cores: int) -> dict:
    """The workflow in `work` (outside the repository); wall and CPU seconds."""
    (work / "config").mkdir(parents=True, exist_ok=True)
    config_path = work / "config" / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(work), "--configfile", str(config_path),
        "--workflow-profile", "none", "--cores", str(cores), "--latency-wait", "1", target,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cpu0, t0 = children_cpu(), time.perf_counter()
    with open(work / "snakemake.log", "w", encoding="utf-8") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if rc != 0:
        raise SystemExit(f"snakemake failed (exit {rc}): see {work / 'snakemake.log'}")
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}


def rule_seconds(results: Path) -> dict:
    """Seconds per rule from the benchmark files (the last round's rules by their own name)."""
    out = {}
    for tsv in sorted((results / "benchmarks").glob("*.tsv")):
        rows = tsv.read_text(encoding="utf-8").splitlines()
        out[tsv.stem] = float(rows[-1].split("\t")[0])
    return out


def accepted_per_round(results: Path, rounds: int) -> list[dict]:
    reports = [results / "rounds" / str(r) / "data" / "aligned" for r in range(1, rounds)]
    reports.append(results / "data" / "aligned")
    rows = []
    for r, folder in enumerate(reports, start=1):
        rep = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        rows.append({"round": r, "lines": rep["lines"], "accepted": rep["accepted"]})
    return rows


def split_sizes(results: Path) -> dict:
    """Lines per split of the workflow's own split of the accepted lines."""
    return {
        name: len(json.loads((results / "data" / "splits" / f"{name}.json").read_text())["images"])
        for name in ("train", "val", "test")
    }


def run_checked(cmd: list[str], env: dict) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def evaluate(bundle: Path, eval_set: str, out: Path, lm: str) -> dict:
    """`effocr evaluate` (no Tesseract); metrics.json's EffOCR figures + predictions."""
    cmd = [
        sys.executable, "-m", "effocr.cli", "evaluate", "--model", str(bundle),
        "--set", f"test={eval_set}", "--output", str(out), "--no-tesseract", "--lm", lm,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run_checked(cmd, env)
    metrics = json.loads((out / "test" / "metrics.json").read_text(encoding="utf-8"))
    eff = metrics["effocr"]
    return {
        "cer": eff["cer"],
        "wer": eff["wer"],
        "ref_chars": eff["ref_chars"],
        "char_errors": eff["char_errors"],
        "lines": eff["lines"],
    }


def char_accuracy(eval_dir: Path, chars: str) -> dict:
    """Per character of `chars`: its occurrences in the references and how many were read as
    themselves (rapidfuzz's alignment of reference and hypothesis, `equal` spans)."""
    import csv

    from rapidfuzz.distance import Levenshtein

    counts = {c: [0, 0] for c in chars}
    with open(eval_dir / "test" / "lines.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            ref, hyp = row["reference"], row["hypothesis"]
            for c in ref:
                if c in counts:
                    counts[c][0] += 1
            for op in Levenshtein.opcodes(ref, hyp):
                if op.tag == "equal":
                    for c in ref[op.src_start : op.src_end]:
                        if c in counts:
                            counts[c][1] += 1
    total = sum(n for n, _ in counts.values())
    right = sum(k for _, k in counts.values())
    return {
        "per_char": {c: {"n": n, "correct": k} for c, (n, k) in counts.items()},
        "accuracy": right / total if total else None,
        "n": total,
    }


def glyph_p1(bundle: Path, coco: dict, image_dir: Path, chars: str) -> dict:
    """p@1 of the recognizer + index on the glyphs of `chars` that the localizer finds (a box
    with IoU >= 0.5 with the true one), without the language model: the bundle's own reading
    of those characters, apart from localization and the LM."""
    import numpy as np

    from effocr.config import section_defaults
    from effocr.data.coco import index_coco, line_chars
    from effocr.infer import Engine
    from effocr.localizer.postprocess import box_iou

    # The categories effocr synth-lines writes: the dataset section's defaults.
    dataset = section_defaults("dataset")
    idx = index_coco(coco, dataset["char_category"], dataset["word_category"])
    with Engine(bundle, lm=False) as engine:
        results = engine.infer([image_dir / im["file_name"] for im in coco["images"]])
    total = found = right = 0
    for res, image in zip(results, coco["images"], strict=True):
        boxes = np.array([c.bbox for c in res.chars], dtype=float).reshape(-1, 4)
        for char, ann in line_chars(idx, image):
            if char not in chars:
                continue
            total += 1
            x, y, w, h = ann["bbox"]
            if not len(boxes):
                continue
            ious = box_iou(np.array([[x, y, x + w, y + h]], dtype=float), boxes)[0]
            if ious.max() >= 0.5:
                found += 1
                right += res.chars[int(ious.argmax())].char == char
    return {
        "glyphs": total,
        "found": found,
        "correct": right,
        "p1": right / found if found else None,
    }


def given(**values) -> dict:
    """The values that are not None."""
    return {k: v for k, v in values.items() if v is not None}


def training_overrides(args: argparse.Namespace, work: Path, base: Path) -> dict:
    return {
        "results_dir": "results",  # relative to the work folder (snakemake --directory)
        "init_from": str(base),
        "align": {"bundle": str(base), "rounds": args.rounds},
        # Fine-tuning: few epochs. The workflow's own test split only feeds the export's
        # parity check (the evaluation uses the lines held out here), so it is kept small.
        "split": {"ratios": [0.8, 0.1, 0.1]},
        # Both models start from the base, so they train at their warm_start_lr (the config's
        # unless given).
        "recognizer": {
            "epochs": args.recognizer_epochs,
            "hard_negatives_epochs": args.hn_epochs,
            **given(warm_start_lr=args.recognizer_warm_start_lr),
        },
        "localizer": {
            "epochs": args.localizer_epochs,
            **given(warm_start_lr=args.localizer_warm_start_lr),
        },
        "line_detector": {"enabled": False},
        "evaluate": {"sets": [], "tesseract": False},
    }


def run_uw3(args: argparse.Namespace, demo: dict, base: Path, work: Path) -> dict:
    split = uw3_split(args.uw3)
    copy_lines(args.uw3, split["train"], work / "train")
    copy_lines(args.uw3, split["test"], work / "test")
    config = deep_merge(
        demo,
        {
            **training_overrides(args, work, base),
            "dataset": {"format": "lines", "path": str(work / "train")},
        },
    )
    timing = snakemake(work, config, "results/bundle", args.cores)
    tuned = work / "results" / "bundle"
    test = f"{work / 'test'}:gt_dir"
    cer = {}
    for name, bundle in (("base", base), ("fine_tuned", tuned)):
        for lm in ("on", "off"):
            cer[f"{name}_lm_{lm}"] = evaluate(bundle, test, work / "eval" / f"{name}_{lm}", lm)
    return {
        "train_lines": len(split["train"]),
        "test_lines": len(split["test"]),
        "accepted_per_round": accepted_per_round(work / "results", args.rounds),
        "workflow_split": split_sizes(work / "results"),
        "training": timing,
        "rule_seconds": rule_seconds(work / "results"),
        "evaluation": cer,
    }


def run_new_chars(args: argparse.Namespace, demo: dict, base: Path, work: Path) -> dict:
    from effocr.data.coco import load_coco, save_coco
    from effocr.synth.charsets import load_charset, write_charset
    from effocr.synth.lines import synth_lines_from_config

    labels = (base / "ref_labels.txt").read_text(encoding="utf-8").split()
    known = {chr(int(lab.removeprefix("U+"), 16)) for lab in labels}
    new = "".join(c for c in args.new_chars if c not in known)
    if not new:
        raise SystemExit(f"--new-chars: the base index already has all of {args.new_chars!r}")
    work.mkdir(parents=True)
    charset = work / "charset.txt"
    write_charset(charset, [*load_charset("en"), *new])
    text = work / "text.txt"
    text.write_text(NEW_CHARS_TEXT, encoding="utf-8")
    n_train, n_test = args.new_chars_lines
    gen = deep_merge(
        demo,
        {
            "seed": 515,
            "synth": {"n_lines": n_train + n_test, "text_source": str(text)},
            "render": {"charset": str(charset)},
        },
    )
    from effocr.config import config_sections

    sections = config_sections(gen).pick("synth", "fonts", "render", "run")
    lines_json = synth_lines_from_config(work / "synthetic" / "lines.json", **sections)
    coco = load_coco(lines_json)
    images = sorted(coco["images"], key=lambda im: im["file_name"])
    train = {"images": images[:n_train], "annotations": [], "categories": coco["categories"]}
    save_coco(train, work / "train_text_only.json")
    # The held-out lines as a COCO evaluation set (their boxes are not needed there).
    test_ids = {im["id"] for im in images[n_train:]}
    test = {
        "images": images[n_train:],
        "annotations": [a for a in coco["annotations"] if a["image_id"] in test_ids],
        "categories": coco["categories"],
    }
    save_coco(test, work / "test.json")
    test_set = f"{work / 'test.json'}:coco:{lines_json.parent / 'images'}"

    extended = work / "base_extended"
    cmd = [
        sys.executable, "-m", "effocr.cli", "extend-index", str(base), "--output", str(extended),
        "--chars", new, "--config", str(args.config),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run_checked(cmd, env)

    config = deep_merge(
        demo,
        {
            **training_overrides(args, work, base),
            # Not synth.text_source: the language model would learn the test lines' text.
            "render": {"charset": str(charset)},
            "dataset": {
                "coco_json": str(work / "train_text_only.json"),
                "image_dir": str(lines_json.parent / "images"),
            },
        },
    )
    timing = snakemake(work, config, "results/bundle", args.cores)
    tuned = work / "results" / "bundle"
    out = {
        "new_chars": new,
        "train_lines": n_train,
        "test_lines": n_test,
        "accepted_per_round": accepted_per_round(work / "results", args.rounds),
        "workflow_split": split_sizes(work / "results"),
        "training": timing,
        "evaluation": {},
        "glyph_p1": {},
    }
    for name, bundle in (("base_extended", extended), ("fine_tuned", tuned)):
        for lm in ("on", "off"):
            eval_dir = work / "eval" / f"{name}_{lm}"
            res = evaluate(bundle, test_set, eval_dir, lm)
            res["new_chars"] = char_accuracy(eval_dir, new)
            out["evaluation"][f"{name}_lm_{lm}"] = res
        out["glyph_p1"][name] = glyph_p1(bundle, test, lines_json.parent / "images", new)
    return out


# Text for the synthetic lines of `new_chars`: German and French words, so the characters
# the English base lacks occur often, among ones it knows.
NEW_CHARS_TEXT = (
    "Über die Größe der Straße schrieb Jürgen Müller ein schönes Buch. Die Bäume blühen, "
    "die Vögel singen, und Grüße gehen an alle Mädchen und Jungen im Süden. Der Bär "
    "schläft; äußerst müde läuft er über die Brücke. Französisch: été, élève, café, "
    "université, déjà, très, où, château, forêt, garçon, leçon, Noël, naïve, hôtel, "
    "première, réalité, société, théâtre, répété, dîner, fenêtre. Öl, Äpfel, Übung, "
    "Fußgänger, Mäßigung, Schwäche, Köln, Zürich, Düsseldorf, Österreich, Kühe, Hände.\n"
) * 8


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, default=ROOT / "results" / "bundle", help="base bundle")
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    ap.add_argument("--uw3", type=Path, default=SHARED_DATA / "uw3-50lines")
    ap.add_argument(
        "--work",
        type=Path,
        help="new folder for the runs (default: a fresh one under the temp dir)",
    )
    ap.add_argument("--rounds", type=int, default=1, help="align.rounds")
    ap.add_argument("--recognizer-epochs", type=int, default=4)
    ap.add_argument("--hn-epochs", type=int, default=2)
    # 4 + 2 epochs are too few for the config's 0.0005 (tuned on 12 + 20): the new characters'
    # glyphs reach p@1 85.7 % at 0.0005, 92.1 % at 0.002; UW3 reads the same either way.
    ap.add_argument("--recognizer-warm-start-lr", type=float, default=0.002)
    ap.add_argument("--localizer-epochs", type=int, default=30)
    ap.add_argument("--localizer-warm-start-lr", type=float, help="default: the config's")
    ap.add_argument("--new-chars", default="äöüßéèêçÄÖÜ")
    ap.add_argument(
        "--new-chars-lines", type=int, nargs=2, default=[60, 20], metavar=("TRAIN", "TEST")
    )
    ap.add_argument("--skip", choices=("uw3", "new_chars"), action="append", default=[])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--output", type=Path, default=RESULTS / "uw3_finetune.json")
    args = ap.parse_args()

    if not (args.base / "model.yaml").is_file():
        raise SystemExit(f"{args.base}: not a bundle (no model.yaml); give one with --base")
    if args.work is None:
        # Kept after the run: its snakemake.log, rule logs and evaluations explain the figures.
        args.work = Path(tempfile.mkdtemp(prefix="effocr-uw3-finetune-"))
    elif args.work.exists():
        raise SystemExit(f"{args.work} exists: remove it or name another --work")
    else:
        args.work.mkdir(parents=True)
    # A copy: the workflow and extend-index read the base, and nothing here may change it.
    base = args.work / "base_bundle"
    shutil.copytree(args.base, base)
    demo = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    out: dict = {
        "base": str(args.base),
        "settings": {
            k: getattr(args, k)
            for k in (
                "rounds",
                "recognizer_epochs",
                "hn_epochs",
                "recognizer_warm_start_lr",
                "localizer_epochs",
                "localizer_warm_start_lr",
                "cores",
            )
        },  # fmt: skip
        "cpu": cpu_info(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    # Written after each case, so a failing second case keeps the first one's figures.
    for case, run in (("uw3", run_uw3), ("new_chars", run_new_chars)):
        if case not in args.skip:
            out[case] = run(args, demo, base, args.work / case)
            text = json.dumps(out, indent=2, ensure_ascii=False) + "\n"
            args.output.write_text(text, encoding="utf-8")

    print(cpu_line(out["cpu"]))
    print(f"{'case':<10} {'bundle':<14} {'LM':<4} {'CER':>7} {'new chars acc.':>15}")
    for case in ("uw3", "new_chars"):
        if case not in out:
            continue
        for key, res in out[case]["evaluation"].items():
            name, lm = key.rsplit("_lm_", 1)
            acc = res.get("new_chars", {}).get("accuracy")
            acc_s = "-" if acc is None else f"{100 * acc:.1f}%"
            print(f"{case:<10} {name:<14} {lm:<4} {100 * res['cer']:>6.2f}% {acc_s:>15}")
        for name, g in out[case].get("glyph_p1", {}).items():
            p1 = "-" if g["p1"] is None else f"{100 * g['p1']:.1f}%"
            print(f"  {case}: {name} p@1 on new-character glyphs (LM off): {p1} of {g['found']}")
        rounds = ", ".join(
            f"round {r['round']}: {r['accepted']}/{r['lines']}"
            for r in out[case]["accepted_per_round"]
        )
        t = out[case]["training"]
        print(f"  {case}: accepted {rounds}; training wall {t['wall_s']} s, CPU {t['cpu_s']} s")
    print(f"written: {args.output} (work folder {args.work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
