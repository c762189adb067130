"""Reading the glyph manifests and serving glyph images to training, validation and indexing."""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from effocr.recognizer.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RenderAugment,
    as_rgb_array,
    preprocess,
)
from effocr.utils import CODEPOINTS_RE, EffOCRError, codepoints_to_label, label_to_codepoints

LOG = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("path", "codepoints", "source", "origin", "split")
SOURCES = ("render", "real")
SPLITS = ("train", "val", "test")

# Decoded images are kept in memory below this many bytes (the demo set is a few MB); larger
# sets (20,000-class Japanese) are read from disk by the DataLoader workers.
CACHE_BYTES = 1 << 30


@dataclass(frozen=True)
class GlyphRecord:
    """One row of a glyph manifest, its path resolved against the manifest's directory."""

    path: Path
    codepoints: str
    source: str
    origin: str
    split: str

    @property
    def label(self) -> str:
        """The label as characters."""
        return codepoints_to_label(self.codepoints)


def read_manifest(path: str | Path) -> list[GlyphRecord]:
    """Read a renders/crops/recognizer-dataset manifest (see docs/architecture.md).

    Raises:
        EffOCRError: naming the file and row of a missing column, bad label, source or split.
    """
    path = Path(path)
    if not path.exists():
        raise EffOCRError(f"{path}: manifest not found")
    base = path.parent
    records: list[GlyphRecord] = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise EffOCRError(f"{path}: missing column(s) {missing}; found {reader.fieldnames}")
        for row_no, row in enumerate(reader, start=2):
            where = f"{path}: row {row_no}"
            code = (row["codepoints"] or "").strip()
            if not CODEPOINTS_RE.match(code):
                raise EffOCRError(
                    f"{where}: codepoints must look like U+0041 or U+0041_U+0301, got {code!r}"
                )
            label = codepoints_to_label(code)
            source = (row["source"] or "").strip()
            if source not in SOURCES:
                raise EffOCRError(f"{where}: source must be one of {SOURCES}, got {source!r}")
            split = (row["split"] or "").strip()
            if split not in SPLITS:
                raise EffOCRError(f"{where}: split must be one of {SPLITS}, got {split!r}")
            rel = (row["path"] or "").strip()
            if not rel:
                raise EffOCRError(f"{where}: empty path")
            records.append(
                GlyphRecord(
                    path=(base / rel),
                    codepoints=label_to_codepoints(label),  # canonical form
                    source=source,
                    origin=(row["origin"] or "").strip(),
                    split=split,
                )
            )
    if not records:
        raise EffOCRError(f"{path}: manifest has no rows")
    return records


def load_image(path: str | Path) -> np.ndarray:
    """Read a glyph image as an HxWx3 uint8 RGB array.

    Raises:
        EffOCRError: if the file is missing or not an image.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return as_rgb_array(img)
    except FileNotFoundError as exc:
        raise EffOCRError(f"{path}: glyph image not found") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise EffOCRError(f"{path}: not a readable image: {exc}") from exc


def resolve_reference_fonts(
    available: Iterable[str],
    configured: Sequence[str] | None,
    profile_fonts: Sequence[str],
) -> list[str]:
    """Pick the reference font stem(s) among the rendered fonts.

    `configured` (config `fonts.reference`): every listed stem that was rendered (embeddings are
    then averaged per class). Otherwise the profile's preferred stems: the first rendered one.

    Raises:
        EffOCRError: when none of the wanted stems was rendered.
    """
    available = sorted(set(available))
    if configured:
        found = [s for s in configured if s in available]
        lost = [s for s in configured if s not in available]
        if not found:
            raise EffOCRError(
                f"fonts.reference: none of {list(configured)} is among the rendered fonts "
                f"{available[:20]}{' ...' if len(available) > 20 else ''}"
            )
        if lost:
            LOG.warning("reference fonts not rendered, ignored: %s", lost)
        return found
    for stem in profile_fonts:
        if stem in available:
            return [stem]
    raise EffOCRError(
        f"none of the profile's reference fonts {list(profile_fonts)} is among the rendered fonts "
        f"{available[:20]}{' ...' if len(available) > 20 else ''}; set fonts.reference"
    )


def reference_groups(
    records: Sequence[GlyphRecord], stems: Sequence[str]
) -> dict[str, list[GlyphRecord]]:
    """Renders that represent each class in the reference index, keyed by codepoints.

    A class uses the renders of the reference font(s); a class that no reference font covers
    falls back to its renders in all other fonts (logged), so no rendered class is unreachable.
    """
    wanted = set(stems)
    by_class: dict[str, list[GlyphRecord]] = defaultdict(list)
    fallback: dict[str, list[GlyphRecord]] = defaultdict(list)
    for r in records:
        if r.source != "render":
            continue
        (by_class if r.origin in wanted else fallback)[r.codepoints].append(r)
    missing = sorted(set(fallback) - set(by_class))
    if missing:
        LOG.warning(
            "%d class(es) not covered by reference font(s) %s use their other renders, e.g. %s",
            len(missing),
            list(stems),
            [codepoints_to_label(c) for c in missing[:10]],
        )
        for code in missing:
            by_class[code] = fallback[code]
    return dict(sorted(by_class.items()))


class GlyphDataset(Dataset):
    """Glyph images with class indices; renders are augmented, real crops only preprocessed.

    Items are addressed by ``(index, seed)`` pairs from the samplers (the seed drives the
    augmentation) or by a plain index (no augmentation).
    """

    def __init__(
        self,
        records: Sequence[GlyphRecord],
        class_to_idx: dict[str, int],
        size: int,
        augment: RenderAugment | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        cache: bool | None = None,
    ) -> None:
        self.records = list(records)
        self.class_to_idx = class_to_idx
        self.labels = np.array([class_to_idx[r.codepoints] for r in self.records], dtype=np.int64)
        self.size = int(size)
        self.augment = augment
        self.mean = tuple(mean)
        self.std = tuple(std)
        self._cache: list[np.ndarray] | None = None
        if cache is None:
            cache = len(self.records) * 96 * 96 * 3 < CACHE_BYTES
        if cache:
            self._cache = [load_image(r.path) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def image(self, i: int) -> np.ndarray:
        """The decoded image of item `i`."""
        if self._cache is not None:
            return self._cache[i]
        return load_image(self.records[i].path)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        if isinstance(key, tuple):
            i, seed = key
        else:
            i, seed = int(key), None
        rec = self.records[i]
        img = self.image(i)
        if seed is not None and self.augment is not None and rec.source == "render":
            arr = self.augment(img, seed)
        else:
            arr = preprocess(img, self.size, self.mean, self.std)
        return torch.from_numpy(arr), int(self.labels[i])


class ImageListDataset(Dataset):
    """Preprocessed images of a list of paths (for batched embedding in DataLoader workers)."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.paths = list(paths)
        self.size = size
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(
            preprocess(load_image(self.paths[i]), self.size, self.mean, self.std)
        )
