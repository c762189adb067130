"""Runs a `Pipeline` over many lines: chunks, workers, input order, BLAS limits.

Chunks of lines go to `workers` workers, each with single-threaded ORT sessions (intra-op
threads = 1, which avoids oversubscribing the cores the pool already uses). On the CPU the
workers are processes by default: decoding, resizing and post-processing are Python/PIL/NumPy
work that holds the GIL, and with threads two workers got only 1.6x the lines/s of one. Each
worker process builds its own `Pipeline` from a `PipelineSpec`; worker threads
(``parallel="thread"``) share the caller's pipeline. On CUDA one worker feeds the GPU with
large batches instead. Anything with the `Pipeline` interface (``run(images, first_index)``,
``stats``) can be run, e.g. a page pipeline whose spec builds it in the workers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from threadpoolctl import ThreadpoolController

from effocr.imageio import ImageInput
from effocr.pipeline import LineResult, Pipeline, PipelineSpec
from effocr.utils import EffOCRError, progress

# Below this many lines per worker, a job does not start worker processes (see `Runner.iter_run`).
SMALL_JOB_LINES = 100

PARALLEL_MODES = ("auto", "process", "thread")

Chunk = list[tuple[int, ImageInput]]  # consecutive lines of a job, with their indices


def resolve_parallel(parallel: str, workers: int) -> str:
    """``process`` or ``thread`` for a `parallel` setting (``auto``: processes when > 1 worker).

    Raises:
        EffOCRError: an unknown setting.
    """
    if parallel not in PARALLEL_MODES:
        raise EffOCRError(f"parallel must be auto, process or thread, got {parallel!r}")
    if parallel == "auto":
        return "process" if workers > 1 else "thread"
    return parallel


class Runner:
    """Spreads the lines of a job over workers that each run a `Pipeline`; results in order.

    Args:
        pipeline: The caller's pipeline (small jobs, one worker, worker threads).
        spec: Builds a worker process's own pipeline (picklable).
        workers: Workers (CPU cores kept busy).
        parallel: ``process`` (worker processes, started by `start` or by the first job of at
            least `SMALL_JOB_LINES` lines per worker, and kept until `close`), ``thread``
            (threads sharing `pipeline`) or ``auto`` (processes when more than one worker).
        chunk_lines: Lines handed to a worker at once.
        limit_blas: Hold NumPy's BLAS to one thread during a job (the CPU workers use the
            cores).
        small_job: Items per worker under which a job runs in the calling process (a page
            is some fifty lines' work: the page runner uses a smaller figure); None:
            `SMALL_JOB_LINES`.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        spec: PipelineSpec,
        *,
        workers: int,
        parallel: str = "auto",
        chunk_lines: int = 8,
        limit_blas: bool = True,
        small_job: int | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.spec = spec
        self.workers = int(workers)
        self.parallel = resolve_parallel(parallel, self.workers)
        self.chunk_lines = int(chunk_lines)
        # None: SMALL_JOB_LINES, read when a job starts.
        self.small_job = small_job
        self._pool: Any = None
        # Made once: each `threadpool_limits` call otherwise re-scans the loaded libraries
        # (0.35 ms, paid on every job).
        self._blas = ThreadpoolController() if limit_blas else None

    def _process_pool(self) -> Any:
        """The worker processes (started on first use, each building its pipeline once)."""
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: a forked copy of this process's ORT and OpenMP thread pools is
            # not safe to use.
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(self.spec,),
            )
        return self._pool

    def start(self) -> None:
        """Start the worker processes now, and wait until each has built its pipeline.

        Otherwise they start on the first job; call this before timing a run.
        """
        if self.parallel != "process" or self.workers == 1:
            return
        from concurrent.futures.process import BrokenProcessPool

        pool = self._process_pool()
        seen: set[int] = set()
        deadline = time.monotonic() + 600
        try:
            # Each round gives every idle worker a short task; a worker still loading takes
            # none, so rounds go on until every worker has answered once.
            while len(seen) < self.workers and time.monotonic() < deadline:
                seen.update(
                    f.result() for f in [pool.submit(_worker_ping) for _ in range(self.workers)]
                )
        except BrokenProcessPool as exc:
            self._pool = None
            raise EffOCRError(f"an inference worker process died while starting ({exc})") from exc

    def _run_here(self, chunk: Chunk) -> list[LineResult]:
        return _run_chunk(self.pipeline, chunk)

    def _submit(self, pool: Any, chunk: Chunk) -> Any:
        if self.parallel != "process":
            return pool.submit(self._run_here, chunk)
        from concurrent.futures.process import BrokenProcessPool

        try:
            return pool.submit(_worker_run, chunk)
        except BrokenProcessPool as exc:
            # A worker died between jobs: the pool refuses new work; the next job starts anew.
            self._pool = None
            raise EffOCRError(
                f"an inference worker process died ({exc}); the log above says why"
            ) from exc

    def _collect(self, future: Any) -> list[LineResult]:
        if self.parallel != "process":
            return future.result()
        from concurrent.futures.process import BrokenProcessPool

        try:
            results, seconds, glyphs = future.result()
        except BrokenProcessPool as exc:
            self._pool = None
            raise EffOCRError(
                f"an inference worker process died ({exc}); the log above says why"
            ) from exc
        self.pipeline.stats.merge(seconds, len(results), glyphs)
        return results

    def iter_run(
        self, images: Iterable[ImageInput], *, show_progress: bool = False, total: int | None = None
    ) -> Iterator[LineResult]:
        """Yield one `LineResult` per image, in input order, while workers run ahead."""
        items = list(enumerate(images))
        step = self.chunk_lines
        chunks: list[Chunk] = [items[i : i + step] for i in range(0, len(items), step)]
        bar = progress(total=total or len(items), unit="line") if show_progress else None
        # NumPy's BLAS threads (crops) would compete with the workers for the same cores.
        limits = self._blas.limit(limits=1, user_api="blas") if self._blas is not None else None
        try:
            # Starting a worker process costs about what 100 lines do: a small job runs here
            # unless the workers are already up (`start`).
            small = (
                self.parallel == "process"
                and self._pool is None
                and (len(items) < (self.small_job or SMALL_JOB_LINES) * self.workers)
            )
            if self.workers == 1 or len(chunks) <= 1 or small:
                for chunk in chunks:
                    for res in self._run_here(chunk):
                        if bar is not None:
                            bar.update(1)
                        yield res
                return
            if self.parallel == "process":
                pool = self._process_pool()
            else:
                pool = ThreadPoolExecutor(
                    max_workers=self.workers, thread_name_prefix="effocr-infer"
                )
            try:
                # Results come back in input order; a bounded window of chunks in flight keeps
                # memory flat on huge inputs.
                window = 4 * self.workers
                pending = []
                for chunk in chunks:
                    pending.append(self._submit(pool, chunk))
                    if len(pending) >= window:
                        for res in self._collect(pending.pop(0)):
                            if bar is not None:
                                bar.update(1)
                            yield res
                for fut in pending:
                    for res in self._collect(fut):
                        if bar is not None:
                            bar.update(1)
                        yield res
            finally:
                if self.parallel != "process":
                    pool.shutdown(wait=True, cancel_futures=True)
        finally:
            if limits is not None:
                limits.restore_original_limits()
            if bar is not None:
                bar.close()

    def run(self, images: Sequence[ImageInput]) -> list[LineResult]:
        """All results of a job, in input order."""
        return list(self.iter_run(images))

    def close(self) -> None:
        """Stop the worker processes, if any were started (a later job starts new ones)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------------
# Worker processes
# ---------------------------------------------------------------------------

# The pipeline of a worker process, built once by its initializer.
_WORKER_PIPELINE: Pipeline | None = None


def _worker_init(spec: PipelineSpec) -> None:
    from threadpoolctl import threadpool_limits

    global _WORKER_PIPELINE
    threadpool_limits(limits=1, user_api="blas")
    _WORKER_PIPELINE = spec.build()


def _worker_ping() -> int:
    time.sleep(0.05)
    return os.getpid()


def _worker_run(chunk: Chunk) -> tuple[list[LineResult], dict[str, float], int]:
    """One chunk in a worker process: its results, stage seconds and glyph count."""
    pipeline = _WORKER_PIPELINE
    if pipeline is None:  # the initializer failed; its exception was already reported
        raise EffOCRError("inference worker has no pipeline")
    pipeline.stats.reset()
    results = _run_chunk(pipeline, chunk)
    return results, dict(pipeline.stats.seconds), pipeline.stats.glyphs


def _run_chunk(pipeline: Pipeline, chunk: Chunk) -> list[LineResult]:
    """`Pipeline.run` on a chunk (its lines are consecutive: the first one's index names arrays)."""
    return pipeline.run([item for _, item in chunk], chunk[0][0] if chunk else 0)
