"""Batch samplers for supervised contrastive training: m samples per class, exact class visits.

Both samplers extend pytorch-metric-learning's `MPerClassSampler` (its label bookkeeping and
argument checks) but replace its schedule: PML draws the classes of each batch at random with a
global NumPy generator, so a class may be visited any number of times and an epoch cannot be
repeated. Here an epoch visits every class exactly `num_passes` times (as the original's
`NoReplacementMPerClassSampler`), batches never hold a class twice, samples of a class are drawn
without replacement until the class runs out, and everything derives from `seed` and the epoch.

They are *batch* samplers (`DataLoader(batch_sampler=...)`). Each element of a batch is a pair
``(dataset_index, sample_seed)``: the dataset augments with `sample_seed`, so the pixels of an
epoch do not depend on the number of DataLoader workers.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np
from pytorch_metric_learning.samplers import MPerClassSampler as _PMLMPerClassSampler

from effocr.utils import EffOCRError


class MPerClassSampler(_PMLMPerClassSampler):
    """Each batch: `batch_size // m` distinct classes x `m` samples; each class `num_passes` times per epoch.

    The last batch of an epoch may hold fewer classes. When there are fewer classes than a batch
    has room for, every batch holds all classes. A class with fewer than `m` samples repeats
    samples (with different augmentation seeds).

    Args:
        labels: Class index of every dataset item.
        m: Samples per class in a batch.
        batch_size: Samples per batch; must be a multiple of `m`.
        num_passes: Visits of every class per epoch.
        seed: Base seed; the epoch's schedule depends on `seed` and `set_epoch`.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        m: int,
        batch_size: int,
        *,
        num_passes: int,
        seed: int,
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size == 0:
            raise EffOCRError("sampler: the training set is empty")
        if batch_size % m:
            raise EffOCRError(f"recognizer.batch_size ({batch_size}) must be a multiple of m ({m})")
        n_classes = len(np.unique(labels))
        # PML insists that m x classes >= batch_size; we allow smaller sets (tiny datasets,
        # tests) by handing it the effective batch size.
        pml_batch = min(batch_size, m * n_classes)
        super().__init__(labels, m, batch_size=pml_batch, length_before_new_iter=max(pml_batch, 1))
        self.batch_size = int(batch_size)
        self.slots = self.batch_size // self.m_per_class
        self.num_passes = int(num_passes)
        self.seed = int(seed)
        self.epoch = 0
        self.classes = np.array(sorted(self.labels_to_indices), dtype=np.int64)
        self._pools = {
            int(c): np.asarray(idx, dtype=np.int64) for c, idx in self.labels_to_indices.items()
        }
        self._num_batches: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose schedule `__iter__` yields next."""
        self.epoch = int(epoch)

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, 0x5EED])

    def _units(self, rng: np.random.Generator) -> list[tuple[int, ...]]:
        """The epoch's class visits in order: `num_passes` shuffled passes over the classes."""
        units: list[tuple[int, ...]] = []
        for _ in range(self.num_passes):
            units.extend((int(c),) for c in rng.permutation(self.classes))
        return units

    def class_batches(self) -> list[list[int]]:
        """The epoch's batches as lists of distinct classes (what `__iter__` fills with samples)."""
        return pack_units(self._units(self._rng()), self.slots)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = self._rng()
        batches = pack_units(self._units(rng), self.slots)
        self._num_batches = len(batches)
        pools: dict[int, deque] = {}
        for classes in batches:
            batch: list[tuple[int, int]] = []
            for c in classes:
                for idx in self._draw(c, pools, rng):
                    batch.append((int(idx), int(rng.integers(0, 2**31 - 1))))
            yield batch

    def _draw(self, c: int, pools: dict[int, deque], rng: np.random.Generator) -> list[int]:
        """`m` samples of class `c`, without replacement until its samples run out."""
        out: list[int] = []
        pool = pools.setdefault(c, deque())
        while len(out) < self.m_per_class:
            if not pool:
                pool.extend(rng.permutation(self._pools[c]).tolist())
            candidate = pool.popleft()
            out.append(candidate)
        return out

    def __len__(self) -> int:
        if self._num_batches is None:
            self._num_batches = len(self.class_batches())
        return self._num_batches


class HardNegativeSampler(MPerClassSampler):
    """`MPerClassSampler` plus hard-negative sets: each set's classes (x `m`) share one batch.

    As in the original's `HardNegativeClassSampler`, hard-negative blocks are inserted at random
    positions among the epoch's regular class visits, and sets are drawn from the list of
    `hard_negatives.txt` lines, so characters that occur often get more blocks. Each regular visit still
    happens exactly `num_passes` times.

    Args:
        hard_negatives_sets: Hard-negative sets as lists of class indices (own class first).
        hard_negatives_ratio: Hard-negative class visits per regular class visit in an epoch (1.0 doubles
            the epoch). None inserts every set once per epoch (the original's behaviour, which
            makes epochs as long as the number of training crops times k).
        Other args: see `MPerClassSampler`.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        m: int,
        batch_size: int,
        hard_negatives_sets: Sequence[Sequence[int]],
        *,
        num_passes: int,
        seed: int,
        hard_negatives_ratio: float | None,
    ) -> None:
        super().__init__(labels, m, batch_size, num_passes=num_passes, seed=seed)
        known = set(int(c) for c in self.classes)
        sets: list[tuple[int, ...]] = []
        for s in hard_negatives_sets:
            # Drop duplicates and classes absent from the training set, keep the order.
            block = tuple(dict.fromkeys(int(c) for c in s if int(c) in known))
            if len(block) >= 2:
                sets.append(block)
        if not sets:
            raise EffOCRError(
                "hard-negative sampler: no usable hard-negative set (need >= 2 known classes)"
            )
        too_big = max(len(s) for s in sets)
        if too_big > self.slots:
            raise EffOCRError(
                f"hard-negative sets of {too_big} classes do not fit a batch of {self.slots} classes "
                f"(batch_size {self.batch_size} / m {self.m_per_class}); lower recognizer.hard_negatives_k "
                "or raise recognizer.batch_size"
            )
        self.hard_negatives_sets = sets
        self.hard_negatives_ratio = hard_negatives_ratio
        mean_k = float(np.mean([len(s) for s in sets]))
        if hard_negatives_ratio is None:
            self.blocks_per_epoch = len(sets)
        else:
            regular = len(self.classes) * self.num_passes
            self.blocks_per_epoch = max(1, math.ceil(hard_negatives_ratio * regular / mean_k))

    def _blocks(self, rng: np.random.Generator) -> list[tuple[int, ...]]:
        """The epoch's hard-negative blocks: lines drawn without replacement, reshuffled as needed."""
        out: list[tuple[int, ...]] = []
        while len(out) < self.blocks_per_epoch:
            order = rng.permutation(len(self.hard_negatives_sets))
            need = self.blocks_per_epoch - len(out)
            out.extend(self.hard_negatives_sets[i] for i in order[:need])
        return out

    def _units(self, rng: np.random.Generator) -> list[tuple[int, ...]]:
        units = super()._units(rng)
        blocks = self._blocks(rng)
        # Random insertion points, as the original inserted each block at a random position.
        positions = np.sort(rng.integers(0, len(units) + 1, size=len(blocks)))
        merged: list[tuple[int, ...]] = []
        j = 0
        for i, unit in enumerate(units):
            while j < len(blocks) and positions[j] == i:
                merged.append(blocks[j])
                j += 1
            merged.append(unit)
        merged.extend(blocks[j:])
        return merged

    def epoch_blocks(self) -> list[tuple[int, ...]]:
        """The hard-negative blocks of the current epoch (for tests and diagnostics)."""
        rng = self._rng()
        super()._units(rng)
        return self._blocks(rng)


def pack_units(units: Sequence[tuple[int, ...]], slots: int) -> list[list[int]]:
    """Pack class units (single visits or hard-negative blocks) into batches of distinct classes.

    Units are taken in order. A single visit whose class is already in the batch is deferred to
    the next batch (so it still happens); a block that does not fit is deferred whole; a block's
    classes already present are not added twice. Every batch therefore holds distinct classes,
    and the first unit of a batch always fits, so packing always ends.
    """
    pending = deque(units)
    batches: list[list[int]] = []
    while pending:
        batch: list[int] = []
        present: set[int] = set()
        deferred: list[tuple[int, ...]] = []
        # Bounded look-ahead: near the end of an epoch only conflicting units may remain, and
        # scanning all of them for every batch would be quadratic.
        while pending and len(batch) < slots and len(deferred) <= 4 * slots + 64:
            unit = pending.popleft()
            new = [c for c in dict.fromkeys(unit) if c not in present]
            if len(unit) == 1 and not new:
                deferred.append(unit)
                continue
            if len(new) > slots - len(batch):
                deferred.append(unit)
                continue
            batch.extend(new)
            present.update(new)
        batches.append(batch)
        pending.extendleft(reversed(deferred))
    return batches
