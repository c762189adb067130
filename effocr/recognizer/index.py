"""The reference index: one L2-normalised embedding per character class in a FAISS IndexFlatIP.

Files (docs/architecture.md): `ref.index` (FAISS), `ref_labels.txt` (one label in code-point
form per line, row i = vector i, so whitespace and non-BMP characters round-trip) and
`index.json` (model, fonts, dimension, count).
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

from effocr.recognizer.dataset import (
    CODEPOINTS_RE,
    GlyphRecord,
    ImageListDataset,
    read_manifest,
    reference_groups,
    resolve_reference_fonts,
)
from effocr.recognizer.model import RecognizerNet, load_recognizer
from effocr.utils import (
    EffOCRError,
    atomic_path,
    codepoints_to_label,
    label_to_codepoints,
    progress,
    read_json,
    select_device,
    set_threads,
)

LOG = logging.getLogger(__name__)

INDEX_FILE = "ref.index"
LABELS_FILE = "ref_labels.txt"
META_FILE = "index.json"


class ReferenceIndex:
    """Exact cosine search over class embeddings (FAISS `IndexFlatIP` on unit vectors).

    Attributes:
        index: The FAISS index.
        labels: Label (characters) of each row.
        meta: What `index.json` holds.
    """

    def __init__(self, index: faiss.Index, labels: Sequence[str], meta: dict | None = None) -> None:
        if index.ntotal != len(labels):
            raise EffOCRError(
                f"reference index has {index.ntotal} vectors but {len(labels)} labels"
            )
        self.index = index
        self.labels = list(labels)
        self.meta = dict(meta or {})

    @classmethod
    def build(
        cls, embeddings: np.ndarray, labels: Sequence[str], meta: dict | None = None
    ) -> ReferenceIndex:
        """Index `embeddings` (N, D), re-normalised to unit length, with one label per row."""
        embs = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embs.ndim != 2 or embs.shape[0] != len(labels):
            raise EffOCRError(f"embeddings {embs.shape} do not match {len(labels)} labels")
        if len(set(labels)) != len(labels):
            raise EffOCRError("reference index labels must be unique")
        faiss.normalize_L2(embs)
        index = faiss.IndexFlatIP(embs.shape[1])
        index.add(embs)
        meta = {**(meta or {}), "dimension": int(embs.shape[1]), "count": int(embs.shape[0])}
        return cls(index, labels, meta)

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, embeddings: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The `k` nearest classes of each query.

        Args:
            embeddings: (N, D) float32 query embeddings (L2-normalised).
            k: Neighbours per query (at most the number of classes).

        Returns:
            ``(scores, rows)``, both (N, k): cosine similarities and row numbers; map rows to
            labels with `self.labels` (or `labels_of`).
        """
        q = np.ascontiguousarray(embeddings, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise EffOCRError(f"query embeddings {q.shape} do not match index dimension {self.dim}")
        k = max(1, min(int(k), len(self)))
        scores, rows = self.index.search(q, k)
        return scores, rows

    def labels_of(self, rows: np.ndarray) -> list[list[str]]:
        """Labels of a (N, k) array of row numbers."""
        return [[self.labels[r] for r in row] for row in np.asarray(rows)]

    def save(self, out_dir: str | Path) -> Path:
        """Write `ref.index`, `ref_labels.txt` and `index.json` into `out_dir`, together, atomically."""
        import json

        out_dir = Path(out_dir)
        with atomic_path(out_dir, is_dir=True) as tmp:
            faiss.write_index(self.index, str(tmp / INDEX_FILE))
            with open(tmp / LABELS_FILE, "w", encoding="utf-8", newline="\n") as f:
                for label in self.labels:
                    f.write(label_to_codepoints(label) + "\n")
            (tmp / META_FILE).write_text(
                json.dumps(self.meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
        return out_dir

    @classmethod
    def load(cls, index_dir: str | Path) -> ReferenceIndex:
        """Read an index written by `save`.

        Raises:
            EffOCRError: for missing files, an unreadable label line or a count mismatch.
        """
        index_dir = Path(index_dir)
        for name in (INDEX_FILE, LABELS_FILE):
            if not (index_dir / name).exists():
                raise EffOCRError(f"{index_dir / name}: reference index file not found")
        labels = read_labels(index_dir / LABELS_FILE)
        index = faiss.read_index(str(index_dir / INDEX_FILE))
        meta = read_json(index_dir / META_FILE) if (index_dir / META_FILE).exists() else {}
        if index.ntotal != len(labels):
            raise EffOCRError(
                f"{index_dir}: {INDEX_FILE} has {index.ntotal} vectors but {LABELS_FILE} "
                f"has {len(labels)} labels"
            )
        return cls(index, labels, meta)


def read_labels(path: str | Path) -> list[str]:
    """Read `ref_labels.txt` (one code-point label per line).

    Raises:
        EffOCRError: naming the line of an invalid label.
    """
    labels: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            code = line.strip()
            if not CODEPOINTS_RE.match(code):
                raise EffOCRError(f"{path}: line {line_no}: not a code-point label: {code!r}")
            labels.append(codepoints_to_label(code))
    return labels


# ---------------------------------------------------------------------------
# Embedding many glyph images in batches
# ---------------------------------------------------------------------------


@torch.no_grad()
def embed_tensors(
    model: RecognizerNet, images: torch.Tensor, batch_size: int = 256, device: str = "cpu"
) -> np.ndarray:
    """Embed already preprocessed images (N, 3, S, S) in batches; returns (N, D) float32."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device, non_blocking=True)
        out.append(model(batch).float().cpu())
    if not out:
        return np.zeros((0, model.dim), dtype=np.float32)
    return torch.cat(out).numpy()


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
    codes = list(groups)
    paths = [r.path for code in codes for r in groups[code]]
    owner = np.repeat(np.arange(len(codes)), [len(groups[c]) for c in codes])
    embs = embed_paths(model, paths, batch_size, device, workers, desc="reference")
    sums = np.zeros((len(codes), embs.shape[1]), dtype=np.float32)
    np.add.at(sums, owner, embs)
    faiss.normalize_L2(sums)
    return [codepoints_to_label(c) for c in codes], sums


def build_reference_index(
    model_pt: str | Path,
    renders_manifest: str | Path,
    out_dir: str | Path,
    config: dict,
    threads: int = 1,
    batch_size: int = 256,
) -> ReferenceIndex:
    """Embed the reference font renders with a trained recognizer and save the index.

    Args:
        model_pt: Recognizer `model.pt` (the second pass in the workflow).
        renders_manifest: Renders manifest (or any manifest with `render` rows).
        out_dir: Index directory (written atomically).
        config: Validated config (`fonts.reference`, `language`, `recognizer.device`).
        threads: CPU threads (torch, FAISS, loader workers).
        batch_size: Images per forward pass.
    """
    from effocr.profiles import get_profile

    start = time.perf_counter()
    set_threads(threads)
    faiss.omp_set_num_threads(max(1, int(threads)))
    device = select_device(config.get("recognizer", {}).get("device", "auto"))
    model = load_recognizer(model_pt, device=device)
    records = [r for r in read_manifest(renders_manifest) if r.source == "render"]
    if not records:
        raise EffOCRError(f"{renders_manifest}: no render rows to build the reference index from")
    profile = get_profile(config.get("language", "en"))
    stems = resolve_reference_fonts(
        (r.origin for r in records),
        config.get("fonts", {}).get("reference"),
        profile.reference_fonts,
    )
    groups = reference_groups(records, stems)
    labels, embs = class_embeddings(
        model, groups, batch_size, device, workers=_loader_workers(threads, device)
    )
    meta = {
        "model": str(model_pt),
        "encoder": model.encoder_name,
        "input_size": model.input_size,
        "fonts": list(stems),
        "fonts_averaged": len(stems) > 1,
        "language": config.get("language", "en"),
        "labels": "code points, one per line (ref_labels.txt)",
    }
    index = ReferenceIndex.build(embs, labels, meta)
    index.save(out_dir)
    LOG.info(
        "reference index: %d classes, dim %d, fonts %s, %.1f s",
        len(index),
        index.dim,
        stems,
        time.perf_counter() - start,
    )
    return index


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
    parser.add_argument("--config", default=None, help="workflow config YAML (fonts, language)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)


def run(args: argparse.Namespace) -> int:
    """Build and save the reference index."""
    from effocr.config import load_config

    config = load_config(args.config)
    index = build_reference_index(
        args.model, args.renders, args.out, config, args.threads, args.batch_size
    )
    print(f"wrote {args.out}: {len(index)} classes, dimension {index.dim}")
    return 0
