"""COCO JSON tools like the original's scripts: split by image, merge, subset.

Every function returns new dicts; inputs are never modified. `effocr coco merge|split|subset`
exposes them on the command line.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import random
from pathlib import Path

from effocr.config import RunSection, SplitSection
from effocr.data.coco import load_coco, save_coco
from effocr.utils import EffOCRError

LOG = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def _with_images(coco: dict, image_ids: list[int]) -> dict:
    """A copy of `coco` keeping only `image_ids` (in that order) and their annotations."""
    keep = set(image_ids)
    by_id = {img["id"]: img for img in coco["images"]}
    out = {k: copy.deepcopy(v) for k, v in coco.items() if k not in ("images", "annotations")}
    out["images"] = [copy.deepcopy(by_id[i]) for i in image_ids]
    out["annotations"] = [copy.deepcopy(a) for a in coco["annotations"] if a["image_id"] in keep]
    return out


def split_counts(n: int, ratios: list[float]) -> list[int]:
    """Integer counts summing to `n` in proportion to `ratios` (largest remainder)."""
    if len(ratios) == 0 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise EffOCRError(f"split ratios must be non-negative with a positive sum, got {ratios}")
    total = sum(ratios)
    exact = [n * r / total for r in ratios]
    counts = [int(e) for e in exact]
    # Hand the remaining images to the largest remainders; ties go to the earlier split.
    order = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def split_coco(
    coco: dict, ratios: list[float], seed: int, names: tuple[str, ...] = SPLITS
) -> dict[str, dict]:
    """Split by image at random (deterministic for a seed) into `names` with `ratios`.

    Image ids are sorted before shuffling, so the split does not depend on the JSON's order.
    """
    if len(ratios) != len(names):
        raise EffOCRError(f"need {len(names)} split ratios ({', '.join(names)}), got {ratios}")
    ids = sorted(img["id"] for img in coco["images"])
    random.Random(seed).shuffle(ids)
    out: dict[str, dict] = {}
    start = 0
    for name, count in zip(names, split_counts(len(ids), list(ratios)), strict=True):
        out[name] = _with_images(coco, sorted(ids[start : start + count]))
        start += count
    return out


def read_name_list(path: str | os.PathLike) -> list[str]:
    """File names listed one per line (blank lines and `#` comments ignored)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise EffOCRError(f"{path}: split file not found") from exc
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def split_coco_by_files(coco: dict, files: dict[str, str | os.PathLike]) -> dict[str, dict]:
    """Split by user-given lists of image `file_name`s (one text file per split).

    Raises:
        EffOCRError: a listed name is not in the JSON, or a name is listed in two splits.
    """
    by_name = {img["file_name"]: img["id"] for img in coco["images"]}
    seen: dict[str, str] = {}
    out: dict[str, dict] = {}
    for split, path in files.items():
        ids = []
        for name in read_name_list(path):
            if name not in by_name:
                raise EffOCRError(f"{path}: {name!r} is not a file_name of the COCO JSON")
            if name in seen:
                raise EffOCRError(
                    f"{path}: {name!r} is already in split {seen[name]!r}; splits must be disjoint"
                )
            seen[name] = split
            ids.append(by_name[name])
        out[split] = _with_images(coco, sorted(ids))
    unused = len(by_name) - len(seen)
    if unused:
        LOG.warning("%d image(s) are in none of the split files and are left out", unused)
    return out


def merge(cocos: list[dict], sources: list[str] | None = None) -> dict:
    """Concatenate COCO dicts, renumbering image and annotation ids from 1.

    Category ids follow the first input; the others are mapped by category name.

    Raises:
        EffOCRError: category names differ between inputs, or a `file_name` occurs twice.
    """
    if not cocos:
        raise EffOCRError("merge needs at least one COCO JSON")
    sources = sources or [f"input {i + 1}" for i in range(len(cocos))]
    first_cats = {c["name"]: c["id"] for c in cocos[0]["categories"]}
    out = {k: copy.deepcopy(v) for k, v in cocos[0].items() if k not in ("images", "annotations")}
    out["images"], out["annotations"] = [], []
    names: dict[str, str] = {}
    next_img = next_ann = 1
    for coco, src in zip(cocos, sources, strict=True):
        cats = {c["name"]: c["id"] for c in coco["categories"]}
        if set(cats) != set(first_cats):
            raise EffOCRError(
                f"{src}: categories {sorted(cats)} differ from {sources[0]}'s {sorted(first_cats)}"
            )
        cat_map = {cats[n]: first_cats[n] for n in cats}
        img_map = {}
        for img in coco["images"]:
            if img["file_name"] in names:
                raise EffOCRError(
                    f"{src}: file_name {img['file_name']!r} is also in {names[img['file_name']]}"
                )
            names[img["file_name"]] = src
            new = copy.deepcopy(img)
            img_map[img["id"]] = new["id"] = next_img
            next_img += 1
            out["images"].append(new)
        for ann in coco["annotations"]:
            new = copy.deepcopy(ann)
            new["id"] = next_ann
            next_ann += 1
            new["image_id"] = img_map[ann["image_id"]]
            new["category_id"] = cat_map[ann["category_id"]]
            out["annotations"].append(new)
    return out


def subset(
    coco: dict,
    n: int | None = None,
    file_names: list[str] | None = None,
    *,
    seed: int,
) -> dict:
    """Keep `n` images drawn at random (by seed), or the images named in `file_names`.

    Raises:
        EffOCRError: neither or both of `n` and `file_names`, `n` too large, or an unknown name.
    """
    if (n is None) == (file_names is None):
        raise EffOCRError("subset needs exactly one of n or file_names")
    if file_names is not None:
        by_name = {img["file_name"]: img["id"] for img in coco["images"]}
        missing = [f for f in file_names if f not in by_name]
        if missing:
            raise EffOCRError(f"file_name(s) not in the COCO JSON: {missing[:10]}")
        return _with_images(coco, sorted({by_name[f] for f in file_names}))
    assert n is not None
    if n < 0 or n > len(coco["images"]):
        raise EffOCRError(f"cannot take {n} images from {len(coco['images'])}")
    ids = sorted(img["id"] for img in coco["images"])
    return _with_images(coco, sorted(random.Random(seed).sample(ids, n)))


def write_splits(parts: dict[str, dict], outputs: dict[str, str | os.PathLike]) -> None:
    """Write each split to its path (atomically, one file at a time)."""
    for name, path in outputs.items():
        save_coco(parts[name], path)
        LOG.info(
            "%s: %d images, %d annotations -> %s",
            name,
            len(parts[name]["images"]),
            len(parts[name]["annotations"]),
            path,
        )


def split_coco_file(
    coco_json: str | os.PathLike,
    outputs: dict[str, str | os.PathLike],
    *,
    split: SplitSection,
    run: RunSection,
) -> None:
    """Split a COCO JSON file into `outputs` ({split: path}) by `split.files` if given, else
    by `split.ratios` (images drawn with `run.seed`)."""
    _refuse_overwrite(coco_json, list(outputs.values()))
    coco = load_coco(coco_json)
    files = dict(split.files or {})
    if files:
        unknown = set(files) - set(outputs)
        if unknown or set(outputs) - set(files):
            raise EffOCRError(
                f"split files must name exactly the splits {sorted(outputs)}, got {sorted(files)}"
            )
        parts = split_coco_by_files(coco, files)
    else:
        parts = split_coco(coco, list(split.ratios), run.seed, tuple(outputs))
    write_splits(parts, outputs)


def _refuse_overwrite(inputs: str | os.PathLike | list, outputs: list) -> None:
    """Never write over an input file."""
    ins = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    in_paths = {Path(p).resolve() for p in ins}
    for out in outputs:
        if Path(out).resolve() in in_paths:
            raise EffOCRError(f"{out}: output would overwrite an input file")


# ---------------------------------------------------------------------------
# Command line: effocr coco merge|split|subset
# ---------------------------------------------------------------------------


def _parse_files(items: list[str]) -> dict[str, str]:
    files = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or name not in SPLITS:
            raise EffOCRError(f"--files takes SPLIT=PATH with SPLIT in {SPLITS}, got {item!r}")
        files[name] = path
    return files


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr coco`."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("merge", help="concatenate COCO JSONs, renumbering ids")
    p.add_argument("inputs", nargs="+", help="COCO JSON files")
    p.add_argument("-o", "--output", required=True, help="merged COCO JSON")
    p = sub.add_parser("split", help="split by image into train/val/test")
    p.add_argument("input", help="COCO JSON")
    p.add_argument("-o", "--out-dir", required=True, help="writes train.json, val.json, test.json")
    p.add_argument(
        "--ratios", type=float, nargs=3, default=None, metavar="R", help="config split.ratios"
    )
    p.add_argument("--seed", type=int, default=None, help="config seed")
    p.add_argument(
        "--files", nargs=3, metavar="SPLIT=PATH", help="user-given splits: text files of file_names"
    )
    p = sub.add_parser("subset", help="keep n random images or the listed ones")
    p.add_argument("input", help="COCO JSON")
    p.add_argument("-o", "--output", required=True, help="subset COCO JSON")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("-n", type=int, help="number of images drawn at random")
    g.add_argument("--list", help="text file of file_names to keep")
    p.add_argument(
        "--seed", type=int, default=None, help="seed of the random draw (default: config's seed)"
    )


def run(args: argparse.Namespace) -> int:
    """Run `effocr coco ACTION`."""
    if args.action == "merge":
        _refuse_overwrite(args.inputs, [args.output])
        merged = merge([load_coco(p) for p in args.inputs], list(args.inputs))
        save_coco(merged, args.output)
        print(f"{args.output}: {len(merged['images'])} images from {len(args.inputs)} files")
    elif args.action == "split":
        outputs = {s: str(Path(args.out_dir) / f"{s}.json") for s in SPLITS}
        from effocr.config import config_sections

        given = {"split": {"files": _parse_files(args.files) if args.files else None}}
        if args.ratios is not None:
            given["split"]["ratios"] = args.ratios
        if args.seed is not None:
            given["seed"] = args.seed
        sections = config_sections(given, source="effocr coco split")
        split_coco_file(args.input, outputs, split=sections.split, run=sections.run)
        print(f"{args.input}: split into {', '.join(outputs.values())}")
    elif args.action == "subset":
        _refuse_overwrite(args.input, [args.output])
        coco = load_coco(args.input)
        names = read_name_list(args.list) if args.list else None
        if args.seed is None:
            from effocr.config import config_sections

            args.seed = config_sections({}, source="effocr coco subset").run.seed
        out = subset(coco, args.n, names, seed=args.seed)
        save_coco(out, args.output)
        print(f"{args.output}: {len(out['images'])} images")
    return 0
