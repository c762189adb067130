"""Benchmark: few-shot on a held-out typeface family, issue 15.

One typeface family that the demo never draws (default EB Garamond, `--family`: a file-stem
glob) gives 240 synthetic lines (`effocr synth-lines`, style `print`: its own scan-like
degradations, fixed `--data-seed`; text from `--text-source`, default The Devil's Dictionary,
which neither the demo's lines nor its language model saw). In generation order: the first 32
are the training lines, the next 8 the validation lines (the 40 annotated lines), the last 200
the held-out test lines. Rows, each evaluated on the 200 lines with `effocr evaluate` (CER and
WER, the language model on and off):

* ``scratch``: the workflow (real Snakemake, the demo's config/config.yaml deep-merged with
  the row's settings, in a work folder outside the repository) on the 40 lines, `init_from:
  null`;
* ``base``: the base bundle (`--base`, the demo's) as it is, no training;
* ``warm``: the workflow on the 40 lines, `init_from: <base bundle>`;
* ``synthetic``: the workflow on the 40 lines, `init_from: synthetic` (the workflow trains a
  base on its own synthetic lines, in the demo's line fonts, under the work folder, and
  fine-tunes from it).

The training runs keep the demo's `fonts` (its pinned list has no EB Garamond: the family is
seen only through the 40 lines), train no line detector and evaluate nothing themselves (the
target is the bundle). `split.files` gives the workflow's split: 32 train, 8 val; its test
split, which only the export's ONNX parity check reads, is the 8 validation lines again under
other file names (the export refuses an empty one). `--seeds` repeats the training rows with
config `seed` set (the data stay the same); each seed and the mean/min/max per row are
reported. The target: the better of warm and synthetic (mean CER) at least 3 times lower than
scratch and than base. `--model-config` (YAML) sets the model of scratch and synthetic alike
(e.g. a wider recognizer: bench/data/few_shot_model.yaml), so that the two compare one model
trained two ways; warm keeps its base bundle's.

A script the base never saw (``--charset-add`` adds characters to the en charset of every run,
``--wordlist`` draws the text from a word list, ``--long-s`` spells it with ``ſ``): German
Fraktur in Blankenburg (Debian fonts-blankenburg) with words of wngerman's list.

Usage:
    .venv/bin/python bench/few_shot.py --base results/bundle
    .venv/bin/python bench/few_shot.py --rows scratch base warm --seeds 1234 1235 --keep
    .venv/bin/python bench/few_shot.py --synthetic-config bench/data/few_shot_synthetic.yaml
    .venv/bin/python bench/few_shot.py --rows scratch base synthetic \
        --synthetic-config bench/data/few_shot_synthetic.yaml \
        --model-config bench/data/few_shot_model.yaml
    .venv/bin/python bench/few_shot.py --family 'Blankenburg*' --wordlist /usr/share/dict/ngerman \
        --long-s --charset-add äöüÄÖÜßſ --output bench/results/few_shot_fraktur.json
Writes bench/results/few_shot.json (settings, CPU, data, per row and seed: CER/WER with the
language model on and off, wall and CPU seconds of training; after each row, so a partial run
keeps what it did) and prints a table.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

import yaml
from common import cpu_info, cpu_line  # bench/common.py (this script's folder is on sys.path)
from uw3_finetune import (  # bench/uw3_finetune.py: the workflow and `effocr evaluate` runs
    evaluate,
    rule_seconds,
    run_checked,
    snakemake,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from effocr.config import deep_merge  # noqa: E402 (the repository is on sys.path now)
from effocr.data.coco_tools import merge, subset  # noqa: E402

RESULTS = ROOT / "bench" / "results"
ROWS = ("scratch", "base", "warm", "synthetic")
TRAINED = ("scratch", "warm", "synthetic")
FEW_SHOT = ("warm", "synthetic")
TARGET_RATIO = 3.0
PARITY = "parity_"  # file-name prefix of the workflow's test split (copies of the val lines)
DEFAULT_TEXT = ROOT / "effocr" / "resources" / "text" / "devils-dictionary.txt"


def long_s(word: str) -> str:
    """Blackletter spelling, roughly: every `s` but a word's last is the long `ſ`."""
    return "".join("ſ" if c == "s" and i < len(word) - 1 else c for i, c in enumerate(word))


def wordlist_text(path: Path, seed: int, out: Path, use_long_s: bool) -> Path:
    """Running text from a word list (e.g. wngerman's /usr/share/dict/ngerman): 3,000 lines of
    6-12 words drawn with `seed`, a comma or full stop now and then, the next word then
    capitalised after a full stop; `use_long_s` spells them with `ſ`."""
    words = [w for w in path.read_text(encoding="utf-8").split() if w.isalpha()]
    if not words:
        raise SystemExit(f"--wordlist {path}: no words in it")
    rng = random.Random(seed)
    lines = []
    for _ in range(3000):
        picked = [rng.choice(words) for _ in range(rng.randint(6, 12))]
        if use_long_s:
            picked = [long_s(w) for w in picked]
        text = []
        for i, w in enumerate(picked):
            if text and text[-1].endswith("."):
                w = w[:1].upper() + w[1:]
            r = rng.random()
            text.append(w + ("," if r < 0.08 else "." if r < 0.14 and i < len(picked) - 1 else ""))
        lines.append(" ".join(text) + ".")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def charset_overlay(args: argparse.Namespace) -> dict:
    """`render.charset` with the --charset-add characters (every run: generation and rows)."""
    if not args.charset_add:
        return {}
    return {"render": {"charset": str(args.work / "charset.txt")}}


def write_charset_file(args: argparse.Namespace) -> None:
    from effocr.synth.charsets import load_charset, write_charset

    if args.charset_add:
        base = load_charset("en")
        extra = [c for c in dict.fromkeys(args.charset_add) if c not in base and not c.isspace()]
        write_charset(args.work / "charset.txt", [*base, *extra])


def generate_lines(args: argparse.Namespace, demo: dict, folder: Path) -> Path:
    """The held-out family's lines (`effocr synth-lines` with a generated config)."""
    n = sum(args.lines)
    folder.mkdir(parents=True)
    text_source = args.text_source
    if args.wordlist is not None:
        text_source = wordlist_text(args.wordlist, args.data_seed, folder / "text.txt", args.long_s)
    args.text_source = text_source
    config = deep_merge(
        demo,
        {
            "seed": args.data_seed,
            "synth": {
                "n_lines": n,
                "style": "print",
                "line_fonts": [args.family],
                "text_source": str(text_source),
            },
            # The family must be among the fonts the `fonts` section finds.
            "fonts": {"include": [args.family]},
            **charset_overlay(args),
        },
    )
    config_path = folder / "generate.yaml"
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    out = folder / "lines" / "lines.json"
    cmd = [
        sys.executable, "-m", "effocr.cli", "synth-lines", "--config", str(config_path),
        "--out", str(out),
    ]  # fmt: skip
    run_checked(cmd, {**os.environ, "PYTHONPATH": str(ROOT)})
    return out


def prepare_data(args: argparse.Namespace, demo: dict, folder: Path) -> dict:
    """Lines, the workflow's dataset (40 lines + the parity copies, split files) and the
    held-out set; what each holds."""
    lines_json = generate_lines(args, demo, folder)
    coco = json.loads(lines_json.read_text(encoding="utf-8"))
    images = sorted(coco["images"], key=lambda im: im["id"])
    n_train, n_val, _ = args.lines
    parts = {
        "train": images[:n_train],
        "val": images[n_train : n_train + n_val],
        "test": images[n_train + n_val :],
    }
    fonts = sorted({im["font"] for im in images})
    for where, include in (
        ("the demo's fonts", demo["fonts"]["include"]),
        ("--synthetic-config's fonts", synthetic_overlay(args).get("fonts", {}).get("include")),
        ("--model-config's fonts", yaml_overlay(args.model_config).get("fonts", {}).get("include")),
    ):
        if include is None:
            continue
        if not include:  # every installed font: the family too
            raise SystemExit(f"{where}: fonts.include is empty, which selects {args.family} too")
        seen = [f for f in fonts if any(fnmatch.fnmatch(f.lower(), p.lower()) for p in include)]
        if seen:
            raise SystemExit(f"--family {args.family}: {seen} are among {where}")

    # The workflow's dataset: train + val, and val again under other names as its test split
    # (read only by the export's parity check; splits must be disjoint and non-empty).
    names = {k: [im["file_name"] for im in v] for k, v in parts.items()}
    parity = subset(coco, file_names=names["val"], seed=0)
    for im in parity["images"]:
        im["file_name"] = PARITY + im["file_name"]
    merged = merge([subset(coco, file_names=names["train"] + names["val"], seed=0), parity])
    src_images = lines_json.parent / "images"
    dataset = folder / "dataset"
    (dataset / "images").mkdir(parents=True)
    for name in names["train"] + names["val"]:
        shutil.copy2(src_images / name, dataset / "images" / name)
    for name in names["val"]:
        shutil.copy2(src_images / name, dataset / "images" / (PARITY + name))
    (dataset / "lines.json").write_text(json.dumps(merged), encoding="utf-8")
    split_files = {}
    for name, listed in (
        ("train", names["train"]),
        ("val", names["val"]),
        ("test", [PARITY + n for n in names["val"]]),
    ):
        split_files[name] = str(dataset / f"{name}.txt")
        Path(split_files[name]).write_text("\n".join(listed) + "\n", encoding="utf-8")

    heldout = folder / "heldout.json"
    heldout.write_text(json.dumps(subset(coco, file_names=names["test"], seed=0)), encoding="utf-8")
    return {
        "family": args.family,
        "fonts": fonts,
        "text_source": str(args.text_source),
        "data_seed": args.data_seed,
        "lines": {k: len(v) for k, v in parts.items()},
        "chars": {k: sum(len(im["text"]) for im in v) for k, v in parts.items()},
        "fonts_per_split": {k: dict(Counter(im["font"] for im in v)) for k, v in parts.items()},
        # Not in the JSON output: the paths the rows use.
        "_dataset": {
            "coco_json": str(dataset / "lines.json"),
            "image_dir": str(dataset / "images"),
            "split_files": split_files,
        },
        "_heldout": f"{heldout}:coco:{src_images}",
    }


def yaml_overlay(path: Path | None) -> dict:
    """A YAML file's settings, or nothing."""
    if path is None:
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def synthetic_overlay(args: argparse.Namespace) -> dict:
    """--synthetic-config: the `synthetic` row's own settings."""
    return yaml_overlay(args.synthetic_config)


def model_overlay(row: str, args: argparse.Namespace) -> dict:
    """--model-config for the rows that choose their architecture (scratch, synthetic); warm
    keeps its base bundle's, which it loads."""
    return yaml_overlay(args.model_config) if row in ("scratch", "synthetic") else {}


def row_config(row: str, seed: int, args: argparse.Namespace, demo: dict, data: dict, base: Path):
    """The demo's config with the row's settings (a training row)."""
    ds = data["_dataset"]
    overrides: dict = {
        "results_dir": "results",  # relative to the work folder (snakemake --directory)
        "seed": seed,
        "init_from": {"scratch": None, "warm": str(base), "synthetic": "synthetic"}[row],
        "dataset": {"format": "coco", "coco_json": ds["coco_json"], "image_dir": ds["image_dir"]},
        "split": {"files": ds["split_files"]},
        "line_detector": {"enabled": False},
        "evaluate": {"sets": [], "tesseract": False},
    }
    if row == "synthetic":
        # The synthetic lines of the base it trains: in the work folder, the demo's line fonts
        # unless --synthetic-config says otherwise.
        overrides["synth"] = {
            "coco_json": "synthdata/lines.json",
            "line_fonts": demo["synth"]["line_fonts"],
        }
        overrides = deep_merge(overrides, synthetic_overlay(args))
    overrides = deep_merge(overrides, model_overlay(row, args))
    for section, key, value in (
        ("recognizer", "epochs", args.recognizer_epochs),
        ("recognizer", "hard_negatives_epochs", args.hn_epochs),
        ("recognizer", "lr", args.recognizer_lr),
        ("localizer", "epochs", args.localizer_epochs),
        ("localizer", "lr", args.localizer_lr),
    ):
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    return deep_merge(deep_merge(demo, charset_overlay(args)), overrides)


def evaluate_both(bundle: Path, data: dict, out: Path) -> dict:
    return {f"lm_{lm}": evaluate(bundle, data["_heldout"], out / lm, lm) for lm in ("on", "off")}


def run_row(row: str, args: argparse.Namespace, demo: dict, data: dict, base: Path) -> dict:
    if row == "base":
        return {"runs": [{"seed": None, **evaluate_both(base, data, args.work / "base" / "eval")}]}
    runs = []
    for seed in args.seeds:
        work = args.work / row / f"seed{seed}"
        config = row_config(row, seed, args, demo, data, base)
        timing = snakemake(work, config, "results/bundle", args.cores)
        run = {"seed": seed, **evaluate_both(work / "results" / "bundle", data, work / "eval")}
        run["training"] = timing
        run["rule_seconds"] = rule_seconds(work / "results")
        runs.append(run)
        print(f"{row} seed {seed}: CER {fmt(run['lm_on']['cer'])} (LM on)", flush=True)
    return {"runs": runs}


def summarise(entry: dict) -> None:
    """mean/min/max of CER and WER over the row's runs, per LM setting (in place)."""
    entry["summary"] = {
        lm: {
            metric: {
                "mean": statistics.fmean(r[lm][metric] for r in entry["runs"]),
                "min": min(r[lm][metric] for r in entry["runs"]),
                "max": max(r[lm][metric] for r in entry["runs"]),
            }
            for metric in ("cer", "wer")
        }
        for lm in ("lm_on", "lm_off")
    }


def target_check(rows: dict) -> dict:
    """Per LM setting: the better few-shot path (mean CER) against scratch and base."""
    out = {}
    for lm in ("lm_on", "lm_off"):
        cer = {
            r: rows[r]["summary"][lm]["cer"]["mean"] for r in ROWS if "summary" in rows.get(r, {})
        }
        paths = [r for r in FEW_SHOT if r in cer]
        if not paths or not all(r in cer for r in ("scratch", "base")):
            out[lm] = {"complete": False, "cer": cer}
            continue
        best = min(paths, key=cer.get)
        ratios = {
            f"{other}_over_{best}": (cer[other] / cer[best] if cer[best] else float("inf"))
            for other in ("scratch", "base")
        }
        out[lm] = {
            "complete": True,
            "cer": cer,
            "best": best,
            "ratios": ratios,
            "met": all(v >= TARGET_RATIO for v in ratios.values()),
        }
    return out


def fmt(x: float) -> str:
    return f"{100 * x:.2f}%"


def print_table(out: dict) -> None:
    print(cpu_line(out["cpu"]))
    d = out["data"]
    print(
        f"held-out family {d['family']} ({', '.join(d['fonts'])}); lines train/val/test "
        f"{d['lines']['train']}/{d['lines']['val']}/{d['lines']['test']}"
    )
    head = f"{'row':<10} {'seed':>6} {'CER LM on':>10} {'CER LM off':>11} {'WER LM on':>10}"
    print(f"{head} {'train wall s':>13} {'train CPU s':>12}")
    for row, entry in out["rows"].items():
        if "error" in entry:
            print(f"{row:<10} failed: {entry['error'].splitlines()[0]}")
            continue
        for r in entry["runs"]:
            t = r.get("training", {})
            seed = "-" if r["seed"] is None else r["seed"]
            print(
                f"{row:<10} {seed:>6} {fmt(r['lm_on']['cer']):>10} {fmt(r['lm_off']['cer']):>11} "
                f"{fmt(r['lm_on']['wer']):>10} {t.get('wall_s', '-'):>13} {t.get('cpu_s', '-'):>12}"
            )
        if len(entry["runs"]) > 1:
            s = entry["summary"]
            span = {lm: s[lm]["cer"] for lm in ("lm_on", "lm_off")}
            print(
                f"{row:<10} {'mean':>6} {fmt(span['lm_on']['mean']):>10} "
                f"{fmt(span['lm_off']['mean']):>11}   (CER min-max: LM on "
                f"{fmt(span['lm_on']['min'])}-{fmt(span['lm_on']['max'])}, LM off "
                f"{fmt(span['lm_off']['min'])}-{fmt(span['lm_off']['max'])})"
            )
    for lm, t in out["target"].items():
        if not t["complete"]:
            print(f"target ({lm}): not all of scratch, base and warm/synthetic ran")
            continue
        ratios = ", ".join(f"{k.replace('_over_', '/')} = {v:.2f}x" for k, v in t["ratios"].items())
        verdict = "met" if t["met"] else "not met"
        print(
            f"target ({lm}): best few-shot path {t['best']} CER {fmt(t['cer'][t['best']])}; "
            f"{ratios}: {verdict} (>= {TARGET_RATIO:g}x against both)"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, default=ROOT / "results" / "bundle", help="base bundle")
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    ap.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1234], help="config seed per run")
    ap.add_argument("--family", default="EBGaramond*", help="held-out family (file-stem glob)")
    ap.add_argument("--text-source", type=Path, default=DEFAULT_TEXT)
    ap.add_argument("--data-seed", type=int, default=1515, help="seed of the generated lines")
    ap.add_argument(
        "--wordlist", type=Path, help="draw the text from this word list instead of --text-source"
    )
    ap.add_argument("--long-s", action="store_true", help="spell the word-list text with ſ")
    ap.add_argument(
        "--charset-add", default="", help="characters added to the en charset (all runs)"
    )
    ap.add_argument(
        "--lines", type=int, nargs=3, default=[32, 8, 200], metavar=("TRAIN", "VAL", "TEST")
    )
    # Training settings of every training row (default: the demo's, i.e. the profile's).
    ap.add_argument("--recognizer-epochs", type=int)
    ap.add_argument("--hn-epochs", type=int)
    ap.add_argument("--recognizer-lr", type=float)
    ap.add_argument("--localizer-epochs", type=int)
    ap.add_argument("--localizer-lr", type=float)
    ap.add_argument(
        "--synthetic-config",
        type=Path,
        help="YAML merged into the synthetic row's config "
        "(e.g. bench/data/few_shot_synthetic.yaml)",
    )
    ap.add_argument(
        "--model-config",
        type=Path,
        help="YAML merged into the scratch and synthetic rows' configs, e.g. a wider recognizer "
        "(bench/data/few_shot_model.yaml); warm keeps its base bundle's architecture",
    )
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--work", type=Path, help="new folder for the runs (default: under temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder after the run")
    ap.add_argument("--output", type=Path, default=RESULTS / "few_shot.json")
    args = ap.parse_args()

    if not (args.base / "model.yaml").is_file():
        raise SystemExit(f"{args.base}: not a bundle (no model.yaml); give one with --base")
    if args.work is None:
        args.work = Path(tempfile.mkdtemp(prefix="effocr-few-shot-"))
    elif args.work.exists():
        raise SystemExit(f"{args.work} exists: remove it or name another --work")
    else:
        args.work.mkdir(parents=True)
    args.work = args.work.resolve()
    # A copy: the workflow reads the base, and nothing here may change it.
    base = args.work / "base_bundle"
    shutil.copytree(args.base, base)
    demo = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    write_charset_file(args)
    rows = [r for r in ROWS if r in args.rows]
    data = prepare_data(args, demo, args.work / "data")
    out: dict = {
        "base": str(args.base),
        "settings": {
            "rows": rows,
            "seeds": args.seeds,
            "cores": args.cores,
            "synthetic_config": synthetic_overlay(args),
            "model_config": yaml_overlay(args.model_config),
            "wordlist": str(args.wordlist) if args.wordlist else None,
            "long_s": args.long_s,
            "charset_add": args.charset_add,
            **{
                k: getattr(args, k)
                for k in (
                    "recognizer_epochs",
                    "hn_epochs",
                    "recognizer_lr",
                    "localizer_epochs",
                    "localizer_lr",
                )
            },
        },
        "cpu": cpu_info(),
        "data": {k: v for k, v in data.items() if not k.startswith("_")},
        "rows": {},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for row in rows:
        try:
            entry = run_row(row, args, demo, data, base)
            summarise(entry)
        except SystemExit as exc:  # a failed workflow or evaluation: the other rows still run
            entry = {"error": str(exc)}
            print(f"{row}: failed: {exc}", file=sys.stderr, flush=True)
        out["rows"][row] = entry
        out["target"] = target_check(out["rows"])
        args.output.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")

    print_table(out)
    failed = [r for r, e in out["rows"].items() if "error" in e]
    if args.keep or failed:
        print(f"written: {args.output} (work folder kept: {args.work})")
    else:
        shutil.rmtree(args.work)
        print(f"written: {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
