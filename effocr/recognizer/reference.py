"""The reference index at inference time: FAISS search over the class embeddings, and its files.

Files (docs/architecture.md): `ref.index` (FAISS), `ref_labels.txt` (one label in code-point
form per line, row i = vector i, so whitespace and non-BMP characters round-trip),
`index.json` (model, fonts, dimension, count) and, optionally, `ref_prototypes.npz`: several
vectors per class (centroids of its renders in every training font and of its real training
crops) and the weight of the best of them in a class's score (`Prototypes`). Kept free of
torch, so that inference (`effocr.infer`) starts without importing it;
`effocr.recognizer.index` builds the index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
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
PROTOTYPES_FILE = artifacts.INDEX_PROTOTYPES


@dataclass(frozen=True)
class Prototypes:
    """Several unit vectors per class beside its one reference vector.

    One vector per class is the mean of very different looks (a bold grotesque and a light
    italic, a clean render and a smudged scan); a crop that looks like one of them can lie
    nearer another class's mean. A class's score is then
    ``(1 - weight) * cos(query, class vector) + weight * max cos(query, its prototypes)``;
    a class without prototypes scores its class vector alone.

    Attributes:
        vectors: (P, D) float32 unit rows, grouped by class (`rows` ascending).
        rows: (P,) class row (index row) of each vector.
        weight: Share of the best prototype in the score, in [0, 1].
    """

    vectors: np.ndarray
    rows: np.ndarray
    weight: float

    @classmethod
    def build(cls, vectors: np.ndarray, rows: np.ndarray, weight: float) -> Prototypes:
        """Unit rows of `vectors` sorted by class row (stable); checks the shapes and weight."""
        vecs = np.array(vectors, dtype=np.float32, copy=True)
        rows = np.asarray(rows, dtype=np.int64)
        if vecs.ndim != 2 or rows.shape != (len(vecs),):
            raise EffOCRError(f"prototypes {vecs.shape} do not match {rows.shape} class rows")
        if not 0.0 <= float(weight) <= 1.0:
            raise EffOCRError(f"prototype weight {weight} is not in [0, 1]")
        order = np.argsort(rows, kind="stable")
        vecs = np.ascontiguousarray(vecs[order])
        faiss.normalize_L2(vecs)
        return cls(vecs, rows[order], float(weight))

    def save(self, path: str | Path) -> None:
        """Write the `.npz` (plain arrays: read back without unpickling)."""
        with open(path, "wb") as f:
            np.savez(
                f,
                vectors=self.vectors,
                rows=self.rows.astype(np.int32),
                weight=np.float32(self.weight),
            )

    @classmethod
    def load(cls, path: str | Path, n_classes: int, dim: int) -> Prototypes:
        """Read a file written by `save`, checked against the index it belongs to.

        Raises:
            EffOCRError: an unreadable file, or vectors and rows that do not fit the index.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                vectors, rows, weight = data["vectors"], data["rows"], float(data["weight"])
        except (OSError, ValueError, KeyError) as exc:
            raise EffOCRError(f"{path}: cannot read reference prototypes: {exc}") from exc
        if vectors.ndim != 2 or vectors.shape[1] != dim or rows.shape != (len(vectors),):
            raise EffOCRError(
                f"{path}: prototypes {vectors.shape} with {rows.shape} rows do not fit an index "
                f"of dimension {dim}"
            )
        if len(rows) and (rows.min() < 0 or rows.max() >= n_classes):
            raise EffOCRError(f"{path}: a prototype names a class row outside 0..{n_classes - 1}")
        return cls.build(vectors, rows, weight)

    def __len__(self) -> int:
        return len(self.rows)

    @cached_property
    def _groups(self) -> tuple[np.ndarray, np.ndarray]:
        # The classes that have prototypes and where each one's run of rows starts (`rows` is
        # sorted): found once, not on every search.
        return np.unique(self.rows, return_index=True)

    def select(self, keep: Sequence[int]) -> Prototypes:
        """The prototypes of the class rows `keep`, renumbered as their positions in `keep`."""
        new_row = {int(r): i for i, r in enumerate(keep)}
        mask = np.isin(self.rows, list(new_row))
        rows = [new_row[int(r)] for r in self.rows[mask]]
        return Prototypes.build(self.vectors[mask], np.asarray(rows, np.int64), self.weight)

    def scores(self, queries: np.ndarray, class_vectors: np.ndarray) -> np.ndarray:
        """(N, C) scores of unit `queries` (N, D) against every class."""
        scores = queries @ class_vectors.T
        if not len(self.rows) or self.weight == 0.0:
            return scores
        sims = queries @ self.vectors.T
        classes, starts = self._groups
        best = np.maximum.reduceat(sims, starts, axis=1)
        scores[:, classes] = (1.0 - self.weight) * scores[:, classes] + self.weight * best
        return scores


class ReferenceIndex:
    """Exact cosine search over class embeddings (FAISS `IndexFlatIP` on unit vectors), with
    `Prototypes` when the index has them.

    Attributes:
        index: The FAISS index (one vector per class).
        labels: Label (characters) of each row.
        meta: What `index.json` holds.
        prototypes: The classes' further vectors, or None.
    """

    def __init__(
        self,
        index: faiss.Index,
        labels: Sequence[str],
        meta: dict | None = None,
        prototypes: Prototypes | None = None,
    ) -> None:
        if index.ntotal != len(labels):
            raise EffOCRError(
                f"reference index has {index.ntotal} vectors but {len(labels)} labels"
            )
        self.index = index
        self.labels = list(labels)
        self.meta = dict(meta or {})
        self.prototypes = prototypes if prototypes is not None and len(prototypes) else None
        # The class vectors as an array: with prototypes, scores are one matrix product.
        self._class_vectors = self.vectors() if self.prototypes is not None else None

    @classmethod
    def build(
        cls,
        embeddings: np.ndarray,
        labels: Sequence[str],
        meta: dict | None = None,
        prototypes: Prototypes | None = None,
    ) -> ReferenceIndex:
        """Index `embeddings` (N, D), re-normalised to unit length, with one label per row
        (and `prototypes` of those rows, if given)."""
        embs = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embs.ndim != 2 or embs.shape[0] != len(labels):
            raise EffOCRError(f"embeddings {embs.shape} do not match {len(labels)} labels")
        if len(set(labels)) != len(labels):
            raise EffOCRError("reference index labels must be unique")
        faiss.normalize_L2(embs)
        index = faiss.IndexFlatIP(embs.shape[1])
        index.add(embs)
        meta = {**(meta or {}), "dimension": int(embs.shape[1]), "count": int(embs.shape[0])}
        if prototypes is not None:
            if prototypes.vectors.shape[1] != embs.shape[1] or (
                len(prototypes) and prototypes.rows.max() >= len(labels)
            ):
                raise EffOCRError(
                    f"prototypes {prototypes.vectors.shape} do not fit {len(labels)} classes "
                    f"of dimension {embs.shape[1]}"
                )
            meta["prototypes"] = {"count": len(prototypes), "weight": prototypes.weight}
        return cls(index, labels, meta, prototypes)

    def vectors(self) -> np.ndarray:
        """(N, D) float32 copy of the class vectors, row i = label i.

        A NumPy array whatever FAISS returns: once `faiss.contrib.torch_utils` is imported
        (pytorch-metric-learning does), FAISS answers `reconstruct_n` with a torch tensor.
        """
        return np.asarray(self.index.reconstruct_n(0, len(self)), dtype=np.float32)

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
        return self.knn(q, k)

    def knn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """`search` without its checks, as FAISS answers: with more `k` than classes, the
        missing neighbours are row -1 (the inference pipeline's hot path)."""
        if self.prototypes is None:
            return self.index.search(queries, k)
        scores = self.prototypes.scores(queries, self._class_vectors)
        n, c = scores.shape
        take = min(k, c)
        if take < c:
            rows = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        else:
            rows = np.broadcast_to(np.arange(c), (n, c))
        sims = np.take_along_axis(scores, rows, axis=1)
        order = np.argsort(-sims, axis=1, kind="stable")
        rows = np.take_along_axis(rows, order, axis=1)
        sims = np.take_along_axis(sims, order, axis=1)
        if take < k:
            sims = np.pad(sims, ((0, 0), (0, k - take)), constant_values=-np.finfo(np.float32).max)
            rows = np.pad(rows, ((0, 0), (0, k - take)), constant_values=-1)
        return sims.astype(np.float32), rows.astype(np.int64)

    def labels_of(self, rows: np.ndarray) -> list[list[str]]:
        """Labels of a (N, k) array of row numbers."""
        return [[self.labels[r] for r in row] for row in np.asarray(rows)]

    def save(self, out_dir: str | Path) -> Path:
        """Write the index files into `out_dir`, together, atomically."""
        out_dir = Path(out_dir)
        with atomic_path(out_dir, is_dir=True) as tmp:
            self.write_files(tmp)
        return out_dir

    def write_files(self, folder: str | Path) -> None:
        """Write the index files into an existing `folder` (a bundle being assembled)."""
        import json

        folder = Path(folder)
        faiss.write_index(self.index, str(folder / INDEX_FILE))
        with open(folder / LABELS_FILE, "w", encoding="utf-8", newline="\n") as f:
            for label in self.labels:
                f.write(label_to_codepoints(label) + "\n")
        (folder / META_FILE).write_text(
            json.dumps(self.meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        if self.prototypes is not None:
            self.prototypes.save(folder / PROTOTYPES_FILE)

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
        prototypes = None
        if (index_dir / PROTOTYPES_FILE).exists():
            prototypes = Prototypes.load(index_dir / PROTOTYPES_FILE, len(labels), index.d)
        return cls(index, labels, meta, prototypes)


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
