"""`Engine.iter_infer` scheduling on a real bundle: results in input order however many chunks
are in flight, a bounded window of them, and a worker process that dies.

Each image is a held-out line padded on the right by its own number of white pixels, so the
result's width says which input it belongs to.
"""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest
from conftest import en_lines

from effocr.infer import Engine, decode_image
from effocr.utils import EffOCRError

pytestmark = pytest.mark.slow

N_IMAGES = 20  # one line per chunk: 20 chunks, more than 4 x 2 workers


@pytest.fixture(scope="module")
def images(tiny_coco_factory) -> list[np.ndarray]:
    coco_json, image_dir = en_lines(tiny_coco_factory, 8, 12)
    lines = [
        decode_image(image_dir / im["file_name"])
        for im in json.loads(coco_json.read_text(encoding="utf-8"))["images"]
    ]
    return [
        np.pad(lines[i % len(lines)], ((0, 0), (0, i + 1), (0, 0)), constant_values=255)
        for i in range(N_IMAGES)
    ]


@pytest.fixture(scope="module")
def expected(en_bundle, images) -> list:
    with Engine(en_bundle, workers=1, device="cpu") as engine:
        return engine.infer(images)


def _same(got, want, images) -> None:
    assert [r.width for r in got] == [im.shape[1] for im in images]  # input order
    assert [r.error for r in got] == [None] * len(images)
    assert [r.text for r in got] == [r.text for r in want]
    for a, b in zip(got, want, strict=True):
        assert len(a.chars) == len(b.chars)
        if a.chars:
            bbox = np.array([c.bbox for c in a.chars], float)
            np.testing.assert_allclose(bbox, [c.bbox for c in b.chars], atol=0.05)


def test_threads_keep_order_with_a_bounded_window(en_bundle, images, expected):
    engine = Engine(en_bundle, workers=2, device="cpu", chunk_lines=1, parallel="thread")
    submitted = []
    submit = engine.runner._submit

    def counting_submit(pool, chunk):
        submitted.append(chunk[0][0])
        return submit(pool, chunk)

    engine.runner._submit = counting_submit
    results = engine.iter_infer(images)
    first = next(results)
    # The first result comes out once 4 x 2 chunks are in flight, not after all 20 went in.
    assert submitted == list(range(8))
    got = [first, *results]
    assert submitted == list(range(N_IMAGES))
    _same(got, expected, images)


def test_worker_processes_keep_order(en_bundle, images, expected):
    with Engine(en_bundle, workers=2, device="cpu", chunk_lines=1, parallel="process") as engine:
        engine.start()  # otherwise 20 lines are a small job, run in this process
        _same(engine.infer(images), expected, images)
        assert engine.lines_done == N_IMAGES
        assert engine._pool is not None and len(engine._pool._processes) == 2


def _kill_a_worker(engine: Engine) -> None:
    """SIGKILL one worker process, as the OOM killer would, and wait until the pool knows."""
    # ProcessPoolExecutor's own bookkeeping: its workers by pid, and the flag it sets when one
    # dies (from then on it refuses work and fails the futures still pending).
    pool = engine._pool
    os.kill(next(iter(pool._processes)), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not pool._broken and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool._broken, "the pool did not notice its dead worker"


def test_a_dead_worker_is_an_effocr_error_and_the_pool_restarts(en_bundle, images, expected):
    with Engine(en_bundle, workers=2, device="cpu", chunk_lines=1, parallel="process") as engine:
        engine.start()
        # Killed between jobs (the OOM killer, say): the next job reports it...
        _kill_a_worker(engine)
        with pytest.raises(EffOCRError, match="inference worker process died"):
            engine.infer(images)
        assert engine._pool is None
        # ... and the engine can start new workers for the next job.
        engine.start()
        _same(engine.infer(images), expected, images)
        # Killed while a job runs (all eight chunks submitted, the last one surely unfinished):
        # collecting its result reports the same error.
        submit = engine.runner._submit

        def submit_then_kill(pool, chunk):
            future = submit(pool, chunk)
            if chunk[0][0] == 7:
                _kill_a_worker(engine)
            return future

        engine.runner._submit = submit_then_kill
        with pytest.raises(EffOCRError, match="inference worker process died"):
            engine.infer(images[:8])
        del engine.runner._submit
        assert engine._pool is None
        engine.start()
        _same(engine.infer(images), expected, images)


def test_threads_is_the_deprecated_name_of_workers(en_bundle):
    # `threads` counted worker processes; it is `workers` now, the old keyword still works.
    with pytest.warns(DeprecationWarning, match="use workers="):
        engine = Engine(en_bundle, threads=2, device="cpu", parallel="thread")
    with engine:
        assert engine.workers == 2 and engine.runner.workers == 2
