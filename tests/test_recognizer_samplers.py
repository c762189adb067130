"""effocr.recognizer.samplers: m per class, exact class visits, hard-negative blocks, repeatability."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from effocr.recognizer.samplers import HardNegativeSampler, MPerClassSampler, pack_units
from effocr.utils import EffOCRError


def _labels(n_classes: int = 23, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Uneven classes, some smaller than m.
    sizes = rng.integers(1, 12, size=n_classes)
    return np.repeat(np.arange(n_classes), sizes)


def _check_batches(sampler, labels, m):
    batches = list(sampler)
    assert len(batches) == len(sampler)
    visits = Counter()
    for batch in batches:
        assert len(batch) <= sampler.batch_size
        per_class = Counter(int(labels[i]) for i, _ in batch)
        assert set(per_class.values()) == {m}, per_class
        visits.update(per_class.keys())
    return batches, visits


@pytest.mark.parametrize(
    "n_classes,batch_size,m,passes", [(23, 32, 4, 3), (5, 64, 4, 4), (40, 16, 2, 1)]
)
def test_m_per_class_and_exact_visits(n_classes, batch_size, m, passes):
    labels = _labels(n_classes)
    sampler = MPerClassSampler(labels, m, batch_size, num_passes=passes, seed=3)
    batches, visits = _check_batches(sampler, labels, m)
    assert visits == {c: passes for c in range(n_classes)}
    # All batches are full except the last, when there are enough classes.
    slots = batch_size // m
    if n_classes >= slots:
        assert all(len(b) == batch_size for b in batches[:-1])
    # Samples of a class are drawn without replacement while it has enough.
    big = [c for c in range(n_classes) if (labels == c).sum() >= m * passes]
    for c in big:
        idx = [i for b in batches for i, _ in b if labels[i] == c]
        assert len(idx) == len(set(idx))


def test_epochs_repeat_and_differ():
    labels = _labels()
    s = MPerClassSampler(labels, 4, 32, num_passes=2, seed=11)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(2)
    e2 = list(s)
    s.set_epoch(1)
    assert list(s) == e1
    assert e1 != e2
    t = MPerClassSampler(labels, 4, 32, num_passes=2, seed=11)
    t.set_epoch(1)
    assert list(t) == e1


def test_hard_negative_blocks_present():
    labels = _labels(30)
    sets = [[0, 1, 2, 3], [4, 5, 6, 7], [0, 8, 9, 10], [11, 12, 13, 14], [29, 28, 27, 99]]
    sampler = HardNegativeSampler(
        labels, 4, 32, sets, num_passes=2, seed=5, hard_negatives_ratio=None
    )
    assert sampler.blocks_per_epoch == len(sets)
    batches, visits = _check_batches(sampler, labels, 4)
    batch_classes = [{int(labels[i]) for i, _ in b} for b in batches]
    # Every set (the unknown class 99 dropped) shares one batch with all its classes.
    for s in sets:
        block = {c for c in s if c != 99}
        assert any(block <= bc for bc in batch_classes), s
    # Regular visits still all happen; blocks add more.
    assert all(visits[c] >= 2 for c in range(30))
    assert sum(visits.values()) > 2 * 30


def test_hard_negative_ratio_sets_epoch_share():
    labels = _labels(40)
    sets = [[c, (c + 1) % 40, (c + 2) % 40] for c in range(40)] * 3
    sampler = HardNegativeSampler(
        labels, 4, 32, sets, num_passes=2, seed=1, hard_negatives_ratio=0.5
    )
    assert sampler.blocks_per_epoch == int(np.ceil(0.5 * 40 * 2 / 3))
    blocks = sampler.epoch_blocks()
    assert len(blocks) == sampler.blocks_per_epoch
    batches, visits = _check_batches(sampler, labels, 4)
    assert sum(visits.values()) >= 80 + len(blocks)


HARD_NEGATIVES = {"num_passes": 1, "seed": 0, "hard_negatives_ratio": 1.0}


def test_sampler_errors():
    labels = _labels(10)
    with pytest.raises(EffOCRError, match="multiple of m"):
        MPerClassSampler(labels, 3, 32, num_passes=1, seed=0)
    with pytest.raises(EffOCRError, match="do not fit"):
        HardNegativeSampler(labels, 4, 8, [[0, 1, 2, 3]], **HARD_NEGATIVES)
    with pytest.raises(EffOCRError, match="no usable"):
        HardNegativeSampler(labels, 4, 32, [[0, 55]], **HARD_NEGATIVES)


def test_pack_units_distinct_classes():
    units = [(0,), (0,), (1,), (0, 1, 2), (3,), (3,), (2,)]
    batches = pack_units(units, 3)
    assert all(len(b) == len(set(b)) <= 3 for b in batches)
    assert sorted(c for b in batches for c in b).count(0) >= 2
