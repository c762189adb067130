"""The recognizer dataset: glyph renders (all in train) plus real crops (in their line's split).

Only a manifest is written (no images are copied): its paths are rewritten relative to the
new manifest's directory. A summary JSON beside it gives classes and counts.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
from collections import Counter, defaultdict
from pathlib import Path

from effocr.utils import EffOCRError, atomic_path, codepoints_to_label, write_json

LOG = logging.getLogger(__name__)

BASE_COLUMNS = ["path", "codepoints", "source", "origin", "split"]
SPLITS = ("train", "val", "test")


def read_manifest(path: str | os.PathLike, source: str) -> list[dict]:
    """Read a manifest CSV, check its columns and labels, and make paths absolute.

    Raises:
        EffOCRError: missing file or columns, a bad label, a wrong `source`, a missing image.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except FileNotFoundError as exc:
        raise EffOCRError(f"{path}: manifest not found") from exc
    missing = [c for c in BASE_COLUMNS if c not in columns]
    if missing:
        raise EffOCRError(f"{path}: missing column(s) {', '.join(missing)}")
    # Plain string paths: pathlib's resolve() costs more than everything else here.
    base = os.path.abspath(path.parent)
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{path}: line {i}"
        if row["source"] != source:
            raise EffOCRError(f"{where}: source {row['source']!r}, expected {source!r}")
        try:
            codepoints_to_label(row["codepoints"])
        except ValueError as exc:
            raise EffOCRError(f"{where}: {exc}") from exc
        if not row["codepoints"].startswith("U+"):
            raise EffOCRError(f"{where}: not a code-point label: {row['codepoints']!r}")
        if source == "real" and row["split"] not in SPLITS:
            raise EffOCRError(f"{where}: split {row['split']!r} is not one of {SPLITS}")
        full = os.path.normpath(os.path.join(base, row["path"]))
        if not os.path.isfile(full):
            raise EffOCRError(f"{where}: image not found: {full}")
        row["path"] = full
    return rows


def check_line_splits(crops: list[dict], source: str = "crops manifest") -> None:
    """Crops of one line (same `origin`) must all be in one split.

    Raises:
        EffOCRError: naming the first line found in two splits.
    """
    splits: dict[str, set[str]] = defaultdict(set)
    for row in crops:
        splits[row["origin"]].add(row["split"])
    for origin, seen in sorted(splits.items()):
        if len(seen) > 1:
            raise EffOCRError(f"{source}: crops of line {origin!r} are in splits {sorted(seen)}")


def build_recognizer_dataset(
    renders_manifest: str | os.PathLike,
    crops_manifest: str | os.PathLike,
    out_manifest: str | os.PathLike,
    summary_path: str | os.PathLike | None = None,
) -> dict:
    """Merge the renders and the real crops into one manifest.

    Renders all go to `train`; real crops keep their split (that of their line). The summary
    (default: `summary.json` beside `out_manifest`) lists classes and counts per source/split.

    Returns:
        The summary.
    """
    out_manifest = Path(out_manifest)
    summary_path = Path(summary_path) if summary_path else out_manifest.with_name("summary.json")
    renders = read_manifest(renders_manifest, "render")
    crops = read_manifest(crops_manifest, "real")
    check_line_splits(crops, str(crops_manifest))
    for row in renders:
        row["split"] = "train"

    columns = list(BASE_COLUMNS)
    for row in renders + crops:
        for key in row:
            if key not in columns:
                columns.append(key)
    rows = sorted(renders, key=lambda r: (r["codepoints"], r["origin"], r["path"]))
    rows += sorted(
        crops,
        key=lambda r: (SPLITS.index(r["split"]), r["codepoints"], r["origin"], r["path"]),
    )
    out_dir = os.path.abspath(out_manifest.parent)
    for row in rows:
        row["path"] = Path(os.path.relpath(row["path"], out_dir)).as_posix()

    render_classes = {r["codepoints"] for r in renders}
    crop_classes = {r["codepoints"] for r in crops}
    counts = Counter((r["source"], r["split"]) for r in rows)
    summary = {
        "renders_manifest": str(renders_manifest),
        "crops_manifest": str(crops_manifest),
        "classes": len(render_classes | crop_classes),
        "render_classes": len(render_classes),
        "real_classes": len(crop_classes),
        # Classes seen only in real crops have no reference render, so retrieval cannot name them.
        "real_only_classes": sorted(crop_classes - render_classes),
        "rows": len(rows),
        "counts": {f"{src}/{split}": n for (src, split), n in sorted(counts.items())},
        "fonts": sorted({r["origin"] for r in renders}),
        "lines": {s: len({r["origin"] for r in crops if r["split"] == s}) for s in SPLITS},
    }
    with atomic_path(out_manifest) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
    write_json(summary_path, summary)
    if summary["real_only_classes"]:
        LOG.warning(
            "%d class(es) have real crops but no render: %s",
            len(summary["real_only_classes"]),
            " ".join(summary["real_only_classes"][:20]),
        )
    LOG.info(
        "recognizer dataset: %d rows, %d classes, %s",
        len(rows),
        summary["classes"],
        summary["counts"],
    )
    return summary


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr build-recognizer-dataset`."""
    parser.add_argument("--renders", required=True, help="renders manifest (render_glyphs)")
    parser.add_argument("--crops", required=True, help="crops manifest (crop-glyphs)")
    parser.add_argument("-o", "--output", required=True, help="recognizer dataset manifest (CSV)")
    parser.add_argument("--summary", default=None, help="summary JSON (default: beside output)")


def run(args: argparse.Namespace) -> int:
    """Run `effocr build-recognizer-dataset`."""
    for src in (args.renders, args.crops):
        if Path(src).resolve() == Path(args.output).resolve():
            raise EffOCRError(f"{args.output}: output would overwrite an input manifest")
    summary = build_recognizer_dataset(args.renders, args.crops, args.output, args.summary)
    print(
        f"{args.output}: {summary['rows']} rows, {summary['classes']} classes, {summary['counts']}"
    )
    return 0
