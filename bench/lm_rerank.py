"""CER/WER with and without the language model, for several orders, weights and lexicon margins.

The bundle (copied; never changed) is given an LM trained on the texts named here; each set is
run through the pipeline once with the k nearest glyphs kept, then decoded per (order, weight)
from those candidates, so a grid costs one inference pass. Weight 0 and lexicon margin 0 are the
plain top-1 search (geometry is not applied here, nor are two glyphs read as one: that needs
crops of the line, and `effocr evaluate` measures it). Also times the decoder (ms per line) and
can write the best weight's bundle.

    .venv/bin/python bench/lm_rerank.py --bundle results/bundle \
        --coco results/data/splits/train.json --text effocr/resources/text/en.txt \
        --set test=results/data/splits/test.json:coco:data/synthetic/en/images \
        --set uw3=../shared/data/uw3-50lines
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import SHARED_DATA, cpu_line  # noqa: E402  (bench/common.py)

from effocr.bundle import Manifest  # noqa: E402
from effocr.config import config_sections, load_config  # noqa: E402
from effocr.evaluate import load_eval_set, parse_set_spec  # noqa: E402
from effocr.lexicon import read_word_lists  # noqa: E402
from effocr.lm import LM_FILE, CharLM, LMDecoder, lm_section, training_texts  # noqa: E402
from effocr.metrics import score_set  # noqa: E402
from effocr.pipeline import Pipeline, assemble_text  # noqa: E402


class Recorder:
    """Stands in for the decoder during the one inference pass: keeps the lattice, picks top-1."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.active = True
        self.lattices: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []

    # Reading two glyphs as one needs crops of the line, not only its lattice: not part of this
    # grid (effocr evaluate measures it).
    regroups = False

    def read(self, sims, rows, spaces):
        self.lattices.append((sims.copy(), rows.copy(), None if spaces is None else spaces.copy()))
        return np.zeros(len(rows), dtype=np.int64), spaces


def lattices(bundle: Path, images: list[str], k: int) -> list:
    """Per line: (sims, rows, spaces) of the k nearest, or None for a line with no glyphs."""
    pipe = Pipeline.from_bundle(bundle, verify=False, lm=False)
    pipe.decoder = Recorder(k)
    out = []
    for img in images:
        before = len(pipe.decoder.lattices)
        (res,) = pipe.run([img])
        out.append(pipe.decoder.lattices[-1] if len(pipe.decoder.lattices) > before else None)
    return out, pipe.search.chars


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Defaults: the demo's (`make demo`): its bundle, its LM training text and training split,
    # its test split and, where ../shared has them, the UW3 lines.
    ap.add_argument("--bundle", default=str(REPO / "results" / "bundle"))
    ap.add_argument(
        "--coco",
        nargs="*",
        default=[str(REPO / "results" / "data" / "splits" / "train.json")],
        help="COCO JSONs whose line texts train",
    )
    ap.add_argument(
        "--text",
        nargs="*",
        default=[str(REPO / "effocr" / "resources" / "text" / "en.txt")],
        help="running-text files that train",
    )
    ap.add_argument("--set", dest="sets", action="append", help="default: demo test split, UW3")
    ap.add_argument("--orders", default="3,4,5,6", help="the first one is --write-bundle's")
    ap.add_argument("--weights", default="0,0.02,0.05,0.1,0.2,0.3")
    lm_cfg = load_config(None)["lm"]  # the schema's defaults
    ap.add_argument("--k", type=int, default=lm_cfg["k"])
    ap.add_argument("--beam", type=int, default=lm_cfg["beam"])
    ap.add_argument("--margins", default=str(lm_cfg["margin"]))
    ap.add_argument(
        "--lexicon",
        nargs="*",
        default=[],
        help="word lists whose words join the lexicon (besides the texts' words)",
    )
    ap.add_argument("--lexicon-margins", default=str(lm_cfg["lexicon_margin"]))
    ap.add_argument("--label", default="", help="name of the training text in the table")
    ap.add_argument(
        "--json", default=str(REPO / "bench" / "results" / "lm_rerank.json"), help="the rows"
    )
    ap.add_argument(
        "--write-bundle",
        default=None,
        help="also write a copy of the bundle with an LM of the first order, enabled, at the "
        "last weight (for `effocr evaluate --lm on|off`)",
    )
    args = ap.parse_args()
    if not (Path(args.bundle) / "model.yaml").is_file():
        raise SystemExit(f"{args.bundle}: not a bundle (run `make demo`, or give --bundle)")
    if args.sets is None:
        demo_images = REPO / "data" / "synthetic" / "en" / "images"
        args.sets = [
            f"test={REPO / 'results' / 'data' / 'splits' / 'test.json'}:coco:{demo_images}"
        ]
        if (SHARED_DATA / "uw3-50lines").is_dir():
            args.sets.append(f"uw3={SHARED_DATA / 'uw3-50lines'}")
    texts = training_texts(args.coco, args.text)
    words = read_word_lists(args.lexicon)
    orders = [int(v) for v in args.orders.split(",")]
    weights = [float(v) for v in args.weights.split(",")]
    margins = [float(v) for v in args.margins.split(",")]
    lexicon_margins = [float(v) for v in args.lexicon_margins.split(",")]
    rows = []
    print(cpu_line())
    print(
        f"LM text: {args.label or ', '.join(args.coco + args.text)} ({sum(map(len, texts))} chars)"
    )
    with tempfile.TemporaryDirectory() as work:
        for spec_text in args.sets:
            spec = parse_set_spec(spec_text)
            eval_set = load_eval_set(spec, work)
            refs = [line.reference for line in eval_set.lines]
            lats, chars = lattices(
                Path(args.bundle), [str(x.image) for x in eval_set.lines], args.k
            )
            for order in orders:
                lm = CharLM.train(texts, order, words)
                grid = [(w, m, x) for w in weights for m in margins for x in lexicon_margins]
                for w, margin, lexicon_margin in grid:
                    dec = LMDecoder(
                        lm,
                        chars,
                        weight=w,
                        k=args.k,
                        beam=args.beam,
                        margin=margin,
                        lexicon_margin=lexicon_margin,
                    )
                    hyps = []
                    t0 = time.perf_counter()
                    for lat in lats:
                        if lat is None:
                            hyps.append("")
                            continue
                        sims, rws, spaces = lat
                        pick, line_spaces = (
                            dec.read(sims, rws, spaces)
                            if dec.active
                            else (np.zeros(len(rws), int), spaces)
                        )
                        labels = [chars[r] for r in rws[np.arange(len(rws)), pick]]
                        hyps.append(assemble_text(labels, line_spaces))
                    ms = 1000 * (time.perf_counter() - t0) / len(lats)
                    _, score = score_set(refs, hyps)
                    row = {
                        "set": spec["name"],
                        "order": order,
                        "weight": w,
                        "margin": margin,
                        "lexicon_margin": lexicon_margin,
                        "k": args.k,
                        "beam": args.beam,
                        "cer": score.cer,
                        "wer": score.wer,
                        "ms_per_line": ms,
                    }
                    rows.append(row)
                    print(
                        f"{spec['name']:<6} order {order} weight {w:<5} margin {margin:<4} "
                        f"lexicon {lexicon_margin:<4} CER {score.cer:.4f} WER {score.wer:.4f} "
                        f"lm {ms:.2f} ms/line"
                    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    if args.write_bundle:
        lm = CharLM.train(texts, orders[0], words)
        section = {
            "enabled": True,
            "weight": weights[-1],
            "k": args.k,
            "beam": args.beam,
            "margin": margins[-1],
            "lexicon_margin": lexicon_margins[-1],
        }
        bundle_with_lm(Path(args.bundle), Path(args.write_bundle), lm, section)
    return 0


def bundle_with_lm(bundle: Path, out: Path, lm: CharLM, section: dict) -> None:
    """A copy of `bundle` with `lm` and its manifest section (for trying an LM on old bundles)."""
    shutil.copytree(bundle, out)
    lm.save(out / LM_FILE)
    manifest = Manifest.read(out, verify=False)
    manifest.lm = lm_section(config_sections({"lm": section}).lm, lm.order)
    manifest.write(out)


if __name__ == "__main__":
    raise SystemExit(main())
