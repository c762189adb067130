"""The reference index: one L2-normalised embedding per character class in a FAISS IndexFlatIP,
and optionally several more per class (`reference_prototypes`).

Files (docs/architecture.md): `ref.index` (FAISS), `ref_labels.txt` (one label in code-point
form per line, row i = vector i, so whitespace and non-BMP characters round-trip),
`index.json` (model, fonts, dimension, count) and `ref_prototypes.npz`. Building it needs the
recognizer (torch); searching and reading it (`effocr.recognizer.reference`) does not.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np
import torch
from torch.utils.data import DataLoader

from effocr.config import FontsSection, RecognizerSection, RunSection
from effocr.recognizer.dataset import (
    GlyphRecord,
    ImageListDataset,
    read_manifest,
    reference_groups,
    resolve_reference_fonts,
)
from effocr.recognizer.model import RecognizerNet, load_recognizer
from effocr.recognizer.reference import (  # noqa: F401 (re-exported: the index's public API)
    INDEX_FILE,
    LABELS_FILE,
    META_FILE,
    Prototypes,
    ReferenceIndex,
    read_labels,
)
from effocr.utils import (
    EffOCRError,
    codepoints_to_label,
    progress,
    select_device,
    set_threads,
)

LOG = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Embedding many glyph images in batches
# ---------------------------------------------------------------------------


@torch.no_grad()
def embed_paths(
    model: RecognizerNet,
    paths: Sequence[str | Path],
    batch_size: int = 256,
    device: str = "cpu",
    workers: int = 0,
    desc: str = "embed",
) -> np.ndarray:
    """Read, preprocess and embed glyph images in batches (bounded memory for 20,000+ classes)."""
    model.eval()
    ds = ImageListDataset(paths, model.input_size, model.mean, model.std)
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.startswith("cuda"),
    )
    out = np.empty((len(ds), model.dim), dtype=np.float32)
    pos = 0
    for batch in progress(loader, desc=desc, unit="batch"):
        # float32 even on GPU: the index must match what the ONNX model computes at inference.
        emb = model(batch.to(device, non_blocking=True)).float().cpu().numpy()
        out[pos : pos + len(emb)] = emb
        pos += len(emb)
    return out


def embed_groups(
    model: RecognizerNet,
    groups: dict[str, list[GlyphRecord]],
    batch_size: int,
    device: str,
    workers: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Every image of `groups` embedded: ``(embeddings (N, D), owner (N,))``, owner = the
    position of the image's class in `groups`."""
    codes = list(groups)
    paths = [r.path for code in codes for r in groups[code]]
    owner = np.repeat(np.arange(len(codes)), [len(groups[c]) for c in codes])
    return embed_paths(model, paths, batch_size, device, workers, desc="reference"), owner


def class_means(embs: np.ndarray, owner: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, D) unit means of the unit rows of `embs` by `owner`."""
    sums = np.zeros((n_classes, embs.shape[1]), dtype=np.float32)
    np.add.at(sums, owner, embs)
    faiss.normalize_L2(sums)
    return sums


def class_embeddings(
    model: RecognizerNet,
    groups: dict[str, list[GlyphRecord]],
    batch_size: int = 256,
    device: str = "cpu",
    workers: int = 0,
) -> tuple[list[str], np.ndarray]:
    """One embedding per class: the mean of its renders' unit embeddings, re-normalised.

    Returns:
        ``(labels, embeddings)`` in the order of `groups`.
    """
    embs, owner = embed_groups(model, groups, batch_size, device, workers)
    return [codepoints_to_label(c) for c in groups], class_means(embs, owner, len(groups))


def class_centroids(
    embs: np.ndarray, owner: np.ndarray, per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Up to `per_class` unit k-means centroids of each class's rows of `embs` (a class with no
    more rows than that keeps its rows). Returns ``(vectors, owner)``.

    Seeded k-means on one thread (FAISS's threads would change the sums' order): the same
    embeddings give the same centroids.
    """
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return _centroids(embs, owner, per_class, seed)
    finally:
        faiss.omp_set_num_threads(threads)


def _centroids(
    embs: np.ndarray, owner: np.ndarray, per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    vectors, owners = [], []
    for cls in np.unique(owner):
        rows = np.ascontiguousarray(embs[owner == cls], dtype=np.float32)
        if len(rows) > per_class:
            km = faiss.Kmeans(
                rows.shape[1],
                per_class,
                niter=20,
                seed=int(seed),
                min_points_per_centroid=1,
                max_points_per_centroid=1 << 20,
            )
            km.train(rows)
            rows = np.array(km.centroids, dtype=np.float32)
        faiss.normalize_L2(rows)
        vectors.append(rows)
        owners.append(np.full(len(rows), cls, dtype=np.int64))
    if not vectors:
        return np.zeros((0, embs.shape[1]), np.float32), np.zeros(0, np.int64)
    return np.concatenate(vectors), np.concatenate(owners)


def crop_sample(
    records: Sequence[GlyphRecord], codes: Sequence[str], per_class: int, seed: int
) -> dict[str, list[GlyphRecord]]:
    """Up to `per_class` real training-split crops of each class in `codes`, a seeded sample.

    Records are sorted by path first, so the sample depends on the manifest's content and the
    seed, not on its row order.
    """
    wanted = set(codes)
    by_code: dict[str, list[GlyphRecord]] = {}
    for r in records:
        if r.source == "real" and r.split == "train" and r.codepoints in wanted:
            by_code.setdefault(r.codepoints, []).append(r)
    rng = np.random.default_rng(seed)
    sample = {}
    for code in codes:
        group = sorted(by_code.get(code, []), key=lambda r: str(r.path))
        if len(group) > per_class:
            keep = np.sort(rng.choice(len(group), per_class, replace=False))
            group = [group[i] for i in keep]
        if group:
            sample[code] = group
    return sample


def mix_vectors(renders: np.ndarray, crops: np.ndarray, weight: float) -> np.ndarray:
    """Unit rows of `(1 - weight) * renders + weight * crops` (both unit rows, one per class)."""
    mixed = ((1.0 - weight) * renders + weight * crops).astype(np.float32)
    faiss.normalize_L2(mixed)
    return mixed


def build_reference_index(
    model_pt: str | Path,
    renders_manifest: str | Path,
    out_dir: str | Path,
    *,
    crops_manifest: str | Path | None = None,
    recognizer: RecognizerSection,
    fonts: FontsSection,
    run: RunSection,
    threads: int = 1,
    batch_size: int = 256,
) -> ReferenceIndex:
    """Embed the reference font renders with a trained recognizer and save the index.

    Args:
        model_pt: Recognizer `model.pt` (the second pass in the workflow).
        renders_manifest: Renders manifest (or any manifest with `render` rows).
        out_dir: Index directory (written atomically).
        crops_manifest: The recognizer dataset's manifest, whose `real` training-split crops
            are mixed into the reference vectors (needed when `recognizer.reference_crops` > 0).
        recognizer: `device`, `reference_crops`, `reference_crop_weight`.
        fonts: `reference`.
        run: `language` (its profile's reference fonts when `fonts.reference` is null), `seed`
            (the crop sample).
        threads: CPU threads (torch, FAISS, loader workers).
        batch_size: Images per forward pass.

    Raises:
        EffOCRError: no render rows, or `reference_crops` > 0 without a crops manifest.
    """
    from effocr.profiles import get_profile

    start = time.perf_counter()
    if recognizer.reference_crops and crops_manifest is None:
        raise EffOCRError(
            f"recognizer.reference_crops is {recognizer.reference_crops}: the reference index "
            "needs the recognizer dataset's manifest for its crops (--crops)"
        )
    set_threads(threads)
    faiss.omp_set_num_threads(max(1, int(threads)))
    device = select_device(recognizer.device)
    model = load_recognizer(model_pt, device=device)
    records = [r for r in read_manifest(renders_manifest) if r.source == "render"]
    if not records:
        raise EffOCRError(f"{renders_manifest}: no render rows to build the reference index from")
    profile = get_profile(run.language)
    stems = resolve_reference_fonts(
        (r.origin for r in records),
        fonts.reference,
        profile.reference_fonts,
    )
    groups = reference_groups(records, stems)
    workers = _loader_workers(threads, device)
    labels, embs = class_embeddings(model, groups, batch_size, device, workers)
    codes = list(groups)
    row = {c: i for i, c in enumerate(codes)}
    crops_meta = None
    # Per class: its crops' embeddings (for the prototypes), by index row.
    crop_embs, crop_rows = np.zeros((0, embs.shape[1]), np.float32), np.zeros(0, np.int64)
    if recognizer.reference_crops:
        sample = crop_sample(
            read_manifest(crops_manifest), codes, recognizer.reference_crops, run.seed
        )
        if sample:
            crop_embs, owner = embed_groups(model, sample, batch_size, device, workers)
            rows = [row[c] for c in sample]
            crop_rows = np.asarray(rows)[owner]
            means = class_means(crop_embs, owner, len(sample))
            embs[rows] = mix_vectors(embs[rows], means, recognizer.reference_crop_weight)
        crops_meta = {
            "manifest": str(crops_manifest),
            "per_class": recognizer.reference_crops,
            "weight": recognizer.reference_crop_weight,
            "classes": len(sample),
            "crops": sum(len(g) for g in sample.values()),
        }
        LOG.info(
            "reference vectors of %d of %d classes mixed with %d training crops (weight %.2f)",
            len(sample),
            len(codes),
            crops_meta["crops"],
            recognizer.reference_crop_weight,
        )
    prototypes = None
    if recognizer.reference_prototypes:
        prototypes = reference_prototypes(
            model,
            records,
            row,
            (crop_embs, crop_rows),
            recognizer,
            run.seed,
            (batch_size, device, workers),
        )
    meta = {
        "model": str(model_pt),
        "encoder": model.encoder_name,
        "encoder_args": model.encoder_args,
        "input_size": model.input_size,
        "fonts": list(stems),
        "fonts_averaged": len(stems) > 1,
        "crops": crops_meta,
        "language": run.language,
        "labels": "code points, one per line (ref_labels.txt)",
    }
    index = ReferenceIndex.build(embs, labels, meta, prototypes)
    index.save(out_dir)
    LOG.info(
        "reference index: %d classes, dim %d, fonts %s, %.1f s",
        len(index),
        index.dim,
        stems,
        time.perf_counter() - start,
    )
    return index


def reference_prototypes(
    model: RecognizerNet,
    renders: Sequence[GlyphRecord],
    row: dict[str, int],
    crops: tuple[np.ndarray, np.ndarray],
    recognizer: RecognizerSection,
    seed: int,
    embedding: tuple[int, str, int],
) -> Prototypes:
    """Each class's `reference_prototypes` centroids of its renders in every font of
    `renders`, and as many of its training crops' embeddings (`crops`: embeddings and their
    index rows; empty without `reference_crops`).

    Args:
        row: Index row of each class (code points); renders of other classes are skipped.
        embedding: ``(batch_size, device, loader workers)`` for embedding the renders.
    """
    per_class = recognizer.reference_prototypes
    groups: dict[str, list[GlyphRecord]] = {}
    for r in sorted(renders, key=lambda r: str(r.path)):
        if r.codepoints in row:
            groups.setdefault(r.codepoints, []).append(r)
    render_embs, owner = embed_groups(model, groups, *embedding)
    render_rows = np.asarray([row[c] for c in groups], dtype=np.int64)[owner]
    parts = [
        class_centroids(render_embs, render_rows, per_class, seed),
        class_centroids(*crops, per_class, seed),
    ]
    vectors = np.concatenate([v for v, _ in parts])
    rows = np.concatenate([r for _, r in parts])
    LOG.info(
        "%d prototypes: up to %d per class of %d renders and %d training crops (weight %.2f)",
        len(rows),
        2 * per_class,
        len(render_embs),
        len(crops[1]),
        recognizer.reference_prototype_weight,
    )
    return Prototypes.build(vectors, rows, recognizer.reference_prototype_weight)


def _loader_workers(threads: int, device: str) -> int:
    """DataLoader workers: none for one thread (the work stays in-process), else threads - 1."""
    threads = max(1, int(threads or 1))
    if device.startswith("cuda"):
        return min(threads, 8)
    return min(threads - 1, 8)


# ---------------------------------------------------------------------------
# Command line: effocr build-reference-index
# ---------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr build-reference-index`."""
    parser.add_argument("--model", required=True, help="recognizer model.pt")
    parser.add_argument("--renders", required=True, help="renders manifest (CSV)")
    parser.add_argument("--out", required=True, help="output index directory")
    parser.add_argument(
        "--crops",
        default=None,
        help="recognizer dataset manifest whose training crops are mixed into the reference "
        "vectors (config: recognizer.reference_crops, reference_crop_weight)",
    )
    parser.add_argument("--config", default=None, help="workflow config YAML (fonts, language)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)


def run(args: argparse.Namespace) -> int:
    """Build and save the reference index."""
    from effocr.config import config_sections, load_config

    sections = config_sections(load_config(args.config))
    index = build_reference_index(
        args.model,
        args.renders,
        args.out,
        crops_manifest=args.crops,
        **sections.pick("recognizer", "fonts", "run"),
        threads=args.threads,
        batch_size=args.batch_size,
    )
    print(f"wrote {args.out}: {len(index)} classes, dimension {index.dim}")
    return 0
