"""The reference index at inference time: FAISS search over the class embeddings, and its files.

Files (docs/architecture.md): `ref.index` (FAISS), `ref_labels.txt` (one label in code-point
form per line, row i = vector i, so whitespace and non-BMP characters round-trip) and
`index.json` (model, fonts, dimension, count). Kept free of torch, so that inference
(`effocr.infer`) starts without importing it; `effocr.recognizer.index` builds the index.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np

from effocr import artifacts
from effocr.utils import (
    CODEPOINTS_RE,
    EffOCRError,
    atomic_path,
    codepoints_to_label,
    label_to_codepoints,
    read_json,
)

INDEX_FILE = artifacts.INDEX
LABELS_FILE = artifacts.INDEX_LABELS
META_FILE = artifacts.INDEX_META


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
        out_dir = Path(out_dir)
        with atomic_path(out_dir, is_dir=True) as tmp:
            self.write_files(tmp)
        return out_dir

    def write_files(self, folder: str | Path) -> None:
        """Write the three index files into an existing `folder` (a bundle being assembled)."""
        import json

        folder = Path(folder)
        faiss.write_index(self.index, str(folder / INDEX_FILE))
        with open(folder / LABELS_FILE, "w", encoding="utf-8", newline="\n") as f:
            for label in self.labels:
                f.write(label_to_codepoints(label) + "\n")
        (folder / META_FILE).write_text(
            json.dumps(self.meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )

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
