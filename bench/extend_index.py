"""How well `effocr extend-index` adds characters to a trained bundle without retraining.

Takes `--chars` out of a bundle's reference index, adds them back with `extend_index` (renders
in the reference font only, and in every font of the config), and reads the test lines with the
full, the reduced and the re-extended bundles: the accuracy on glyphs of those characters that
the localizer finds (IoU >= 0.5 with the true box) and the CER of the whole set. Writes JSON and
prints a table.

    .venv/bin/python bench/extend_index.py --bundle results/bundle \
        --test results/data/splits/test.json --image-dir data/synthetic/en/images
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_info, cpu_line  # noqa: E402

from effocr.bundle import MANIFEST, Manifest  # noqa: E402
from effocr.config import config_sections, load_config, section_defaults  # noqa: E402
from effocr.data.coco import index_coco, line_chars, load_coco  # noqa: E402
from effocr.infer import Engine  # noqa: E402
from effocr.metrics import cer  # noqa: E402
from effocr.recognizer.extend import extend_index  # noqa: E402
from effocr.recognizer.reference import ReferenceIndex  # noqa: E402
from effocr.synth.fonts import find_fonts  # noqa: E402
from effocr.synth.render import reference_font_stems, render_mode, resolve_fonts  # noqa: E402


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def reduced_bundle(bundle: Path, out: Path, drop: str) -> None:
    """A copy of `bundle` whose index lacks the classes in `drop`."""
    index = ReferenceIndex.load(bundle)
    keep = [i for i, c in enumerate(index.labels) if c not in drop]
    prototypes = index.prototypes.select(keep) if index.prototypes is not None else None
    small = ReferenceIndex.build(
        index.vectors()[keep], [index.labels[i] for i in keep], index.meta, prototypes
    )
    out.mkdir(parents=True)
    for item in bundle.iterdir():
        if item.is_file() and item.name != MANIFEST:
            shutil.copy2(item, out / item.name)
    small.write_files(out)
    manifest = Manifest.read(bundle)
    manifest.index["count"] = len(small)
    manifest.write(out)


def read_set(bundle: Path, coco: dict, image_dir: Path, chars: str) -> dict:
    dataset = section_defaults("dataset")
    idx = index_coco(coco, dataset["char_category"], dataset["word_category"])
    with Engine(bundle) as engine:
        results = engine.infer([image_dir / im["file_name"] for im in coco["images"]])
    hits = found = total = 0
    for res, image in zip(results, coco["images"], strict=True):
        for char, ann in line_chars(idx, image):
            if char not in chars:
                continue
            total += 1
            x, y, w, h = ann["bbox"]
            match = [c for c in res.chars if iou(c.bbox, (x, y, x + w, y + h)) >= 0.5]
            if match:
                found += 1
                hits += match[0].char == char
    refs = [im["text"] for im in coco["images"]]
    return {
        "glyphs": total,
        "found": found,
        "read": hits,
        "accuracy_found": hits / found if found else None,
        "cer": cer(refs, [r.text for r in results]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("results/bundle"))
    parser.add_argument("--test", type=Path, default=Path("results/data/splits/test.json"))
    parser.add_argument("--image-dir", type=Path, default=Path("data/synthetic/en/images"))
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--chars", default="bfkmvwxyz", help="characters taken out, then added")
    parser.add_argument("--out", type=Path, default=Path("bench/results/extend_index.json"))
    args = parser.parse_args()

    sections = config_sections(load_config(args.config))
    coco = load_coco(args.test)
    all_fonts = resolve_fonts(sections.fonts, list(args.chars))
    stems = set(reference_font_stems(sections.fonts, sections.run.language))
    ref_fonts = [f for f in find_fonts(sections.fonts.dirs) if f.stem in stems] or all_fonts[:1]
    render = (
        sections.render.size,
        sections.render.padding,
        render_mode(sections.render, sections.run.language),
    )
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reduced_bundle(args.bundle, tmp / "reduced", args.chars)
        extend_index(tmp / "reduced", tmp / "ref_font", args.chars, ref_fonts, *render)
        extend_index(tmp / "reduced", tmp / "all_fonts", args.chars, all_fonts, *render)
        for name, bundle in (
            ("original", args.bundle),
            ("without the characters", tmp / "reduced"),
            (f"added back, reference font ({len(ref_fonts)})", tmp / "ref_font"),
            (f"added back, config fonts ({len(all_fonts)})", tmp / "all_fonts"),
        ):
            rows[name] = read_set(bundle, coco, args.image_dir, args.chars)
    out = {
        "cpu": cpu_info(),
        "bundle": str(args.bundle),
        "test": str(args.test),
        "chars": args.chars,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(cpu_line())
    print(f"characters {args.chars!r} on {args.test} ({len(coco['images'])} lines)")
    print(f"{'bundle':36s} {'glyphs':>6s} {'found':>6s} {'read':>6s} {'acc':>6s} {'CER':>7s}")
    for name, r in rows.items():
        acc = "-" if r["accuracy_found"] is None else f"{r['accuracy_found']:.3f}"
        print(
            f"{name:36s} {r['glyphs']:6d} {r['found']:6d} {r['read']:6d} {acc:>6s} {r['cer']:7.4f}"
        )
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    raise SystemExit(main())
