"""Inference with an exported bundle: `effocr.infer.Engine` and the `effocr infer` command.

Pipeline per chunk of lines: decode -> localize (ONNX) -> full-height glyph crops ->
preprocess -> recognizer (ONNX, crops of many lines batched together) -> FAISS top-1 ->
text (spaces from word boxes for English, none for Japanese).

Parallelism: chunks of lines go to `threads` workers, each with its own single-threaded ORT
sessions (intra-op threads = 1, which avoids oversubscribing the cores the pool already uses).
On the CPU the workers are processes by default: decoding, resizing and post-processing are
Python/PIL/NumPy work that holds the GIL, and with threads two workers got only 1.6x the lines/s
of one. Worker threads (``parallel="thread"``) remain for callers that cannot start processes.
On CUDA one worker feeds the GPU with large batches instead.

The bundle directory is the only thing read (see `effocr.export` and docs/architecture.md).
"""

from __future__ import annotations

import argparse
import fnmatch
import glob as globlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from threadpoolctl import ThreadpoolController

from effocr.bundle import STANDARD_FILES, Manifest
from effocr.utils import EffOCRError, flatten_alpha, label_to_codepoints, progress

LOG = logging.getLogger(__name__)

IMAGE_SUFFIXES = (
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".bmp",
    ".webp",
    ".gif",
    ".pbm",
    ".pgm",
    ".ppm",
)
BUNDLE_FILES = STANDARD_FILES
STAGES = ("decode", "localizer", "crops", "recognizer", "knn")

# Below this many lines per worker, a job does not start worker processes (see iter_infer).
SMALL_JOB_LINES = 100

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"

ImageInput = str | os.PathLike | np.ndarray


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass
class CharResult:
    """One recognised character: box in line pixels `[x0, y0, x1, y1]`, label, similarity."""

    bbox: list[float]
    codepoints: str
    char: str
    score: float

    def to_dict(self) -> dict:
        """JSON-ready dict (the `chars` entries of predictions.jsonl)."""
        return {
            "bbox": [round(float(v), 2) for v in self.bbox],
            "codepoints": self.codepoints,
            "char": self.char,
            "score": round(float(self.score), 5),
        }


@dataclass
class LineResult:
    """The OCR result of one line image (one record of predictions.jsonl)."""

    image: str
    text: str = ""
    chars: list[CharResult] = field(default_factory=list)
    words: list[list[float]] = field(default_factory=list)
    width: int = 0
    height: int = 0
    error: str | None = None
    # Boxes the localizer found but the per-line cap cut (`postprocess.detection_cap`).
    dropped: int = 0

    @property
    def ok(self) -> bool:
        """True when the line was read (no error)."""
        return self.error is None

    def to_dict(self) -> dict:
        """JSON-ready dict in the predictions.jsonl format of docs/architecture.md."""
        out: dict[str, Any] = {"image": self.image}
        if self.error is not None:
            out["text"] = None
            out["error"] = self.error
            return out
        out["text"] = self.text
        out["width"] = self.width
        out["height"] = self.height
        out["chars"] = [c.to_dict() for c in self.chars]
        out["words"] = [{"bbox": [round(float(v), 2) for v in b]} for b in self.words]
        if self.dropped:
            out["dropped_detections"] = self.dropped
        return out


# ---------------------------------------------------------------------------
# Providers
# ---------------------------------------------------------------------------


def select_providers(device: str, available: Sequence[str] | None = None) -> list[Any]:
    """ONNX Runtime execution providers for `device` (``cpu``, ``cuda``, ``cuda:N``, ``auto``).

    Args:
        device: Requested device. ``auto`` takes CUDA when ORT offers it, else the CPU.
        available: Providers ORT offers; `onnxruntime.get_available_providers()` when None.

    Returns:
        Providers in priority order (the CPU provider last, as ORT's fallback for ops the GPU
        provider lacks); a CUDA entry carries its ``device_id``.

    Raises:
        EffOCRError: CUDA was asked for but this ONNX Runtime has no CUDA provider.
    """
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    device = (device or "auto").strip().lower()
    has_cuda = CUDA_PROVIDER in available
    if device == "cpu":
        return [CPU_PROVIDER]
    if device == "auto":
        return [(CUDA_PROVIDER, {"device_id": 0}), CPU_PROVIDER] if has_cuda else [CPU_PROVIDER]
    if device == "cuda" or device.startswith("cuda:"):
        if not has_cuda:
            raise EffOCRError(
                f"device {device!r} requested but ONNX Runtime offers only {list(available)} "
                "(install onnxruntime-gpu with a matching CUDA, or use --device cpu)"
            )
        index = device.partition(":")[2] or "0"
        if not index.isdigit():
            raise EffOCRError(f"bad device {device!r}: expected cuda or cuda:N")
        return [(CUDA_PROVIDER, {"device_id": int(index)}), CPU_PROVIDER]
    raise EffOCRError(f"unknown device {device!r}: expected cpu, cuda, cuda:N or auto")


def uses_cuda(providers: Sequence[Any]) -> bool:
    """Whether a provider list (as from `select_providers`) puts CUDA first."""
    first = providers[0] if providers else CPU_PROVIDER
    return (first[0] if isinstance(first, tuple) else first) == CUDA_PROVIDER


def make_session(path: str | os.PathLike, providers: Sequence[Any], intra_op_threads: int = 1):
    """An ORT session with a fixed number of intra-op threads and no inter-op pool."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(intra_op_threads))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning worker threads burn the cores the other workers need.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))
    except Exception as exc:  # ORT raises its own exception types for bad models
        raise EffOCRError(f"{path}: cannot load ONNX model: {exc}") from exc


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def expand_inputs(inputs: Iterable[str]) -> list[str]:
    """Expand command-line INPUTs into line image paths, in a stable order.

    An INPUT is an image file, a directory (its image files, sorted, not recursive), a glob
    pattern (matches sorted; ``**`` recurses, without following symlinked directories) or
    ``@list.txt`` (one path per line, blank lines and ``#`` comments skipped; relative paths are
    relative to the list file's folder). A path that does not exist is kept, so that it is
    reported as a failed line rather than silently dropped. File names that are not UTF-8 are
    kept as Python's surrogate-escaped strings (the bytes on disk, `os.fsencode`).

    Raises:
        EffOCRError: a list file is missing, or a directory or pattern matches no image.
    """
    out: list[str] = []
    for item in inputs:
        if item.startswith("@"):
            listing = Path(item[1:])
            try:
                # A listed name that is not UTF-8 is still a file name (bytes, as on disk).
                lines = listing.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
            except OSError as exc:
                raise EffOCRError(f"{listing}: cannot read image list: {exc.strerror}") from exc
            for line in lines:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                p = Path(line)
                out.append(str(p if p.is_absolute() else listing.parent / p))
            continue
        path = Path(item)
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.is_file() and _is_image(p))
            if not found:
                raise EffOCRError(
                    f"{item}: directory contains no image files ({', '.join(IMAGE_SUFFIXES)})"
                )
            out.extend(found)
        elif path.exists() or not any(c in item for c in "*?["):
            out.append(item)
        else:
            found = sorted(p for p in glob_files(item) if Path(p).is_file())
            if not found:
                raise EffOCRError(f"{item}: pattern matches no file")
            out.extend(found)
    return out


def _match_parts(parts: Sequence[str], pattern: Sequence[str]) -> bool:
    """`glob` semantics per path component; ``**`` matches any number of components."""
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(
            _match_parts(parts[i:], rest)
            for i in range(len(parts) + 1)
            # As glob: ``**`` does not descend into hidden folders.
            if not any(p.startswith(".") for p in parts[:i])
        )
    if not parts:
        return False
    if parts[0].startswith(".") and not head.startswith("."):
        return False
    return fnmatch.fnmatchcase(parts[0], head) and _match_parts(parts[1:], rest)


def glob_files(pattern: str) -> list[str]:
    """Paths matching a glob pattern, with ``**`` recursing without following directory symlinks.

    `glob.glob(recursive=True)` follows symlinked directories, so a link to a parent folder
    makes it recurse until the path length limit (for minutes, with ever longer duplicates).
    """
    if "**" not in pattern:
        return globlib.glob(pattern)
    parts = pattern.split(os.sep)
    fixed = 0
    while fixed < len(parts) and not globlib.has_magic(parts[fixed]):
        fixed += 1
    # Matches start with the pattern's own fixed prefix ("./", "/abs/..."), as glob's do.
    prefix = os.sep.join(parts[:fixed]) + os.sep if fixed else ""
    rest = [part for part in parts[fixed:] if part]
    out = []
    for folder, dirs, files in os.walk(prefix or os.curdir, followlinks=False):
        rel = os.path.relpath(folder, prefix or os.curdir)
        rel_parts = () if rel == os.curdir else tuple(rel.split(os.sep))
        dirs.sort()
        for name in (*dirs, *files):
            if _match_parts((*rel_parts, name), rest):
                out.append(prefix + os.sep.join((*rel_parts, name)))
    return out


def display_name(name: str) -> str:
    """A file name for messages: bytes that are not UTF-8 shown as ``\\xNN``."""
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no undecodable byte produces
        return name.encode("utf-8", "backslashreplace").decode("ascii")
    return raw.decode("utf-8", "backslashreplace")


def _equal_channels(arr: np.ndarray) -> bool:
    return bool(
        np.array_equal(arr[:, :, 0], arr[:, :, 1]) and np.array_equal(arr[:, :, 1], arr[:, :, 2])
    )


def decode_image(item: ImageInput, keep_grey: bool = False) -> np.ndarray:
    """Read a line image as HxWx3 uint8 RGB; raise `EffOCRError` with the reason if it cannot.

    With `keep_grey`, a greyscale or bilevel image, or an RGB(A) one whose three channels are
    equal, comes back as HxW uint8 instead: the same pixels as every channel of the RGB copy,
    a third of the work downstream (scans usually are grey).
    """
    if isinstance(item, np.ndarray):
        arr = item
        if arr.ndim == 2 and not keep_grey:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        grey_or_colour = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))
        if not grey_or_colour or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise EffOCRError(f"array of shape {arr.shape}: expected HxW, HxWx3 or HxWx4")
        if arr.ndim == 3 and arr.shape[2] == 4:
            # The same white background as a transparent image file gets (`flatten_alpha`).
            alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
            arr = arr[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(arr)
    from PIL import Image, UnidentifiedImageError

    path = Path(item)
    try:
        with Image.open(path) as im:
            # PIL only warns between MAX_IMAGE_PIXELS and twice that, and decodes it all.
            if im.width * im.height > (Image.MAX_IMAGE_PIXELS or float("inf")):
                raise EffOCRError(
                    f"image too large: {im.width} x {im.height} pixels, more than PIL's limit of "
                    f"{Image.MAX_IMAGE_PIXELS} (a decompression bomb, or not a line image)"
                )
            im.load()
            im = flatten_alpha(im)
            # Palette/16-bit/1-bit scans all become 8-bit RGB, the recognizer's input.
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr16 = np.asarray(im, dtype=np.float32)
                top = max(float(arr16.max()), 1.0)
                grey = (arr16 * (255.0 / (65535.0 if top > 255 else 255.0))).astype(np.uint8)
                if keep_grey:
                    return np.ascontiguousarray(grey)
                return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
            if keep_grey and im.mode in ("1", "L"):
                arr = np.asarray(im.convert("L") if im.mode == "1" else im)
            else:
                arr = np.asarray(im.convert("RGB"))
                # Scans are often saved as RGB(A) with three equal channels.
                if keep_grey and _equal_channels(arr):
                    arr = np.ascontiguousarray(arr[:, :, 0])
    except FileNotFoundError as exc:
        raise EffOCRError("file not found") from exc
    except IsADirectoryError as exc:
        raise EffOCRError("is a directory, not an image") from exc
    except UnidentifiedImageError as exc:
        raise EffOCRError("not a readable image (unknown or corrupt format)") from exc
    except Image.DecompressionBombError as exc:
        raise EffOCRError(f"image too large (a decompression bomb): {exc}") from exc
    except EffOCRError:
        raise
    except Exception as exc:
        # PIL's decoders raise OSError, SyntaxError, ValueError, struct.error... on bad data,
        # MemoryError on absurd sizes: each is this image's problem, not the run's.
        raise EffOCRError(f"cannot decode image: {type(exc).__name__}: {exc}") from exc
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise EffOCRError("image has zero size")
    return arr


# ---------------------------------------------------------------------------
# Bundle
# ---------------------------------------------------------------------------


def load_model_yaml(bundle_dir: str | os.PathLike, *, verify: bool = False) -> dict:
    """`model.yaml` of a bundle as a dict, validated by `effocr.bundle.Manifest.read`."""
    return Manifest.read(bundle_dir, verify=verify).to_dict()


# ---------------------------------------------------------------------------
# Engine
# ---------------------------------------------------------------------------


class Engine:
    """OCR of line images with an exported bundle (ONNX Runtime + FAISS).

    Args:
        bundle_dir: Directory written by `effocr export-onnx` / rule `export_onnx`.
        threads: Worker threads (CPU cores kept busy).
        device: ``auto`` (default: CUDA when ONNX Runtime offers it, i.e. onnxruntime-gpu is
            installed and sees a GPU, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: Recognizer batch size; crops of many lines are batched together.
        intra_op_threads: ORT threads per model call; default 1 on CPU (the pool parallelises),
            `threads` on CUDA (one worker).
        chunk_lines: Lines handed to a worker at once; default enough for ~2 full batches.
        parallel: How `threads` > 1 workers run on the CPU: ``process`` (worker processes,
            started by `start` or by the first job of at least 100 lines per worker, and kept
            until `close`), ``thread`` (threads of this process) or ``auto`` (processes).
        verify: Check the bundle's files against the sha256 recorded in `model.yaml` (a
            mismatch is an `EffOCRError`); False opens a bundle changed on purpose.
    """

    def __init__(
        self,
        bundle_dir: str | os.PathLike,
        threads: int = 1,
        device: str = "auto",
        batch_size: int = 64,
        *,
        intra_op_threads: int | None = None,
        chunk_lines: int | None = None,
        parallel: str = "auto",
        verify: bool = True,
    ) -> None:
        from effocr.localizer.runtime import LocalizerSession
        from effocr.profiles import get_profile

        self.bundle_dir = Path(bundle_dir)
        self.manifest = Manifest.read(self.bundle_dir, verify=verify)
        self.meta = self.manifest.to_dict()
        if batch_size < 1 or threads < 1:
            raise EffOCRError("threads and batch_size must be at least 1")
        self.providers = select_providers(device)
        self.cuda = uses_cuda(self.providers)
        self.threads = int(threads)
        self.workers = 1 if self.cuda else self.threads
        if parallel not in ("auto", "process", "thread"):
            raise EffOCRError(f"parallel must be auto, process or thread, got {parallel!r}")
        if parallel == "auto":
            parallel = "process" if self.workers > 1 else "thread"
        self.parallel = parallel
        self._pool: Any = None
        # Made once: each `threadpool_limits` call otherwise re-scans the loaded libraries
        # (0.35 ms, paid on every `infer` call).
        self._blas = None if self.cuda else ThreadpoolController()
        self.batch_size = int(batch_size)
        intra = intra_op_threads or (self.threads if self.cuda else 1)
        prof = self.meta["profile"]
        self.profile = get_profile(prof["name"])
        # Whether vertical lines occur; passed to every localizer call, so an English line
        # taller than wide (one narrow glyph) is never transposed.
        self.vertical = bool(prof.get("vertical", self.profile.vertical))
        self.spaces = bool(prof.get("spaces", self.profile.spaces))
        rec = self.meta["recognizer"]
        self.input_size = int(rec["input_size"])
        self.mean = tuple(float(v) for v in rec["mean"])
        self.std = tuple(float(v) for v in rec["std"])
        self.recognizer = make_session(self.bundle_dir / rec["file"], self.providers, intra)
        if self.cuda and CUDA_PROVIDER not in self.recognizer.get_providers():
            # ORT falls back to the CPU when the CUDA provider cannot start (no GPU visible,
            # CUDA/cuDNN libraries missing): say so rather than pretend.
            LOG.warning("ONNX Runtime could not start %s; running on the CPU", CUDA_PROVIDER)
        self._rec_input = self.recognizer.get_inputs()[0].name
        self._rec_output = self.recognizer.get_outputs()[0].name
        self.localizer = LocalizerSession(
            self.bundle_dir / self.meta["localizer"]["file"],
            self.meta["localizer"]["meta"],
            threads=intra,
            providers=self.providers,
        )
        self.crop_padding = int(self.meta.get("crops", {}).get("padding", 0))
        self._load_index(intra)
        # Enough lines per chunk to fill about two recognizer batches (lines average ~30 glyphs).
        self.chunk_lines = int(chunk_lines or max(4, (2 * self.batch_size) // 30 + 1))
        self._lock = threading.Lock()
        self.timings: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.lines_done = 0
        self.glyphs_done = 0

    def _load_index(self, intra: int) -> None:
        import faiss

        from effocr.recognizer.reference import ReferenceIndex

        try:
            ref = ReferenceIndex.load(self.bundle_dir)
        except RuntimeError as exc:  # FAISS reports unreadable files as RuntimeError
            raise EffOCRError(
                f"{self.bundle_dir / 'ref.index'}: cannot read FAISS index: {exc}"
            ) from exc
        self.index = ref.index
        self.chars = list(ref.labels)
        self.labels = [label_to_codepoints(c) for c in self.chars]
        # FAISS's OpenMP threads on top of the worker pool would oversubscribe the cores.
        faiss.omp_set_num_threads(max(1, intra))

    # -- stages ------------------------------------------------------------

    def _add_time(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.timings[stage] += seconds

    def reset_timings(self) -> None:
        """Zero the per-stage timings and counters."""
        with self._lock:
            self.timings = dict.fromkeys(STAGES, 0.0)
            self.lines_done = 0
            self.glyphs_done = 0

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Recognizer embeddings (L2-normalised float32) of preprocessed crops (N, 3, S, S)."""
        out = []
        for start in range(0, len(batch), self.batch_size):
            chunk = np.ascontiguousarray(batch[start : start + self.batch_size], dtype=np.float32)
            out.append(self.recognizer.run([self._rec_output], {self._rec_input: chunk})[0])
        embs = np.concatenate(out).astype(np.float32, copy=False)
        # Normalise again: cheap, and exact cosine similarity even if an export skipped it.
        embs /= np.maximum(np.linalg.norm(embs, axis=1, keepdims=True), 1e-12)
        return embs

    def _normalize(self, squares: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (N, 3, S, S) float32, exactly as `transforms.normalize`."""
        std = np.asarray(self.std, dtype=np.float32)
        scale = 1.0 / (255.0 * std)
        shift = np.asarray(self.mean, dtype=np.float32) / std
        out = squares.astype(np.float32) * scale - shift
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))

    def _process_chunk(self, chunk: list[tuple[int, ImageInput]]) -> list[LineResult]:
        from effocr.recognizer.transforms import glyph_squares

        results: list[LineResult] = []
        crops: list[np.ndarray] = []
        owners: list[
            tuple[LineResult, list, np.ndarray | None]
        ] = []  # (result, char boxes, spaces)
        for idx, item in chunk:
            name = f"<array {idx}>" if isinstance(item, np.ndarray) else str(item)
            res = LineResult(image=name)
            results.append(res)
            t0 = time.perf_counter()
            try:
                img = decode_image(item, keep_grey=True)
            except EffOCRError as exc:
                res.error = str(exc)
                continue
            finally:
                self._add_time("decode", time.perf_counter() - t0)
            res.height, res.width = int(img.shape[0]), int(img.shape[1])
            t0 = time.perf_counter()
            try:
                det = self.localizer.detect(img, vertical=self.vertical)
            except Exception as exc:  # a line ORT cannot process must not stop the run
                res.error = f"localizer failed: {exc}"
                continue
            finally:
                self._add_time("localizer", time.perf_counter() - t0)
            t0 = time.perf_counter()
            try:
                chars = np.asarray(det.chars, dtype=np.float32).reshape(-1, 4)
                # `transforms.preprocess` split in two: pad + resize of all the line's crops at
                # once here, the normalisation once for the whole chunk below.
                squares = glyph_squares(
                    img, det.crop_boxes(self.crop_padding), self.input_size, det.vertical
                )
            except Exception as exc:  # one odd line must not lose the chunk's other lines
                res.error = f"glyph crops failed: {type(exc).__name__}: {exc}"
                continue
            finally:
                self._add_time("crops", time.perf_counter() - t0)
            res.words = np.asarray(det.words, dtype=np.float32).reshape(-1, 4).tolist()
            res.dropped = int(getattr(det, "dropped", 0))
            crops.append(np.broadcast_to(squares, squares.shape[:3] + (3,)))
            flags = np.asarray(det.spaces, dtype=bool) if self.spaces else None
            owners.append((res, chars.tolist(), flags))
        n_glyphs = sum(len(c) for c in crops)
        if n_glyphs:
            t0 = time.perf_counter()
            embs = self.embed(self._normalize(np.concatenate(crops)))
            self._add_time("recognizer", time.perf_counter() - t0)
            t0 = time.perf_counter()
            sims, ids = self.index.search(embs, 1)
            self._add_time("knn", time.perf_counter() - t0)
            pos = 0
            for res, boxes, _ in owners:
                n = len(boxes)
                for box, sim, row in zip(
                    boxes, sims[pos : pos + n, 0], ids[pos : pos + n, 0], strict=True
                ):
                    res.chars.append(
                        CharResult(list(box), self.labels[row], self.chars[row], float(sim))
                    )
                pos += n
        for res, _, flags in owners:
            res.text = assemble_text([c.char for c in res.chars], flags)
        with self._lock:
            self.lines_done += len(results)
            self.glyphs_done += n_glyphs
        return results

    # -- public API --------------------------------------------------------

    def _process_pool(self) -> Any:
        """The worker processes (started on first use, each loading the bundle once)."""
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: a forked copy of this process's ORT and OpenMP thread pools is
            # not safe to use.
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(str(self.bundle_dir), self.batch_size, self.chunk_lines),
            )
        return self._pool

    def start(self) -> None:
        """Start the worker processes now, and wait until each has loaded the bundle.

        Otherwise they start on the first `infer` call; call this before timing a run.
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

    def _submit(self, pool: Any, chunk: list[tuple[int, ImageInput]]) -> Any:
        if self.parallel != "process":
            return pool.submit(self._process_chunk, chunk)
        from concurrent.futures.process import BrokenProcessPool

        try:
            return pool.submit(_worker_process_chunk, chunk)
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
            results, timings, glyphs = future.result()
        except BrokenProcessPool as exc:
            self._pool = None
            raise EffOCRError(
                f"an inference worker process died ({exc}); the log above says why"
            ) from exc
        with self._lock:
            for stage, seconds in timings.items():
                self.timings[stage] += seconds
            self.lines_done += len(results)
            self.glyphs_done += glyphs
        return results

    def iter_infer(
        self, images: Iterable[ImageInput], *, show_progress: bool = False, total: int | None = None
    ) -> Iterator[LineResult]:
        """Yield one `LineResult` per image, in input order, while workers run ahead."""
        items = list(enumerate(images))
        chunks = [items[i : i + self.chunk_lines] for i in range(0, len(items), self.chunk_lines)]
        bar = progress(total=total or len(items), unit="line") if show_progress else None
        # NumPy's BLAS threads (crops) would compete with the workers for the same cores.
        limits = self._blas.limit(limits=1, user_api="blas") if self._blas is not None else None
        try:
            # Starting a worker process costs about what 100 lines do: a small job runs here
            # unless the workers are already up (`start`).
            small = (
                self.parallel == "process"
                and self._pool is None
                and (len(items) < SMALL_JOB_LINES * self.workers)
            )
            if self.workers == 1 or len(chunks) <= 1 or small:
                for chunk in chunks:
                    for res in self._process_chunk(chunk):
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

    def close(self) -> None:
        """Stop the worker processes, if any were started (a later call starts new ones)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def infer(self, images: Sequence[ImageInput]) -> list[LineResult]:
        """OCR line images (paths or HxWx3 uint8 arrays); failed images carry `error`."""
        return list(self.iter_infer(images))


# The engine of a worker process (`Engine(parallel="process")`), made once by its initializer.
_WORKER_ENGINE: Engine | None = None


def _worker_init(bundle_dir: str, batch_size: int, chunk_lines: int) -> None:
    from threadpoolctl import threadpool_limits

    global _WORKER_ENGINE
    threadpool_limits(limits=1, user_api="blas")
    _WORKER_ENGINE = Engine(
        bundle_dir,
        verify=False,  # the parent Engine checked the files moments ago
        threads=1,
        device="cpu",
        batch_size=batch_size,
        chunk_lines=chunk_lines,
        parallel="thread",
    )


def _worker_ping() -> int:
    time.sleep(0.05)
    return os.getpid()


def _worker_process_chunk(
    chunk: list[tuple[int, ImageInput]],
) -> tuple[list[LineResult], dict[str, float], int]:
    """One chunk in a worker process: its results, stage timings and glyph count."""
    engine = _WORKER_ENGINE
    if engine is None:  # the initializer failed; its exception was already reported
        raise EffOCRError("inference worker has no engine")
    engine.reset_timings()
    results = engine._process_chunk(chunk)
    return results, dict(engine.timings), engine.glyphs_done


def assemble_text(labels: Sequence[str], spaces: np.ndarray | None = None) -> str:
    """Join recognised characters (reading order); `spaces[i]` puts a space before char i.

    The localizer's post-processing decides the spaces (word boxes, or gaps as a fallback);
    Japanese bundles pass None and get no spaces.
    """
    if spaces is None or len(spaces) != len(labels):
        return "".join(labels)
    return "".join(
        (" " + lab) if sp and i > 0 else lab
        for i, (lab, sp) in enumerate(zip(labels, spaces, strict=True))
    )


# ---------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------


# What a run writes into its output folder; a later run replaces all of them together.
RUN_OUTPUTS = ("predictions.jsonl", "text", "predictions_coco.json")


def check_output_dir(out_dir: str | os.PathLike) -> Path:
    """Create `out_dir` if needed and make sure a run can write there, before any work.

    Raises:
        EffOCRError: the path is a file, cannot be created, or is not writable.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EffOCRError(f"{out}: output path exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EffOCRError(f"{out}: cannot create output directory: {exc.strerror}") from exc
    # os.access answers yes to root on a read-only mount; creating something is the real test.
    try:
        probe = Path(tempfile.mkdtemp(prefix=".effocr-write-test-", dir=out))
        probe.rmdir()
    except OSError as exc:
        raise EffOCRError(f"{out}: output directory is not writable: {exc.strerror}") from exc
    return out


def json_line(record: dict) -> str:
    """One JSON Lines record, UTF-8 where it can be.

    A file name that is not UTF-8 holds surrogate escapes (`expand_inputs`), which no UTF-8
    writer accepts; that record is written with ASCII escapes instead (``\\udcff``), which
    `json.loads` reads back as the same name (and `os.fsencode` as the bytes on disk).
    """
    line = json.dumps(record, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(record, ensure_ascii=True)
    return line + "\n"


class OutputWriter:
    """Writes predictions.jsonl, text/<stem>.txt and (optionally) predictions_coco.json.

    Everything is written into a hidden staging folder inside the output folder; when the run
    ends, the outputs of any previous run (`RUN_OUTPUTS`) are replaced by this run's, all of
    them, so a folder never mixes two runs. An interrupted or failed run (``close(complete=
    False)``) removes its staging folder and leaves the previous run's outputs as they were.
    """

    def __init__(
        self, out_dir: str | os.PathLike | None, *, coco: bool = False, stream: TextIO | None = None
    ) -> None:
        self.out_dir = check_output_dir(out_dir) if out_dir is not None else None
        self.stream = stream
        self.coco = coco
        self._names: set[str] = set()
        self._coco_images: list[dict] = []
        self._coco_anns: list[dict] = []
        self._fh: TextIO | None = None
        self._stage: Path | None = None
        if self.out_dir is not None:
            try:
                self._stage = Path(
                    tempfile.mkdtemp(prefix=".effocr-infer-", suffix=".tmp", dir=self.out_dir)
                )
            except OSError as exc:
                raise EffOCRError(f"{self.out_dir}: cannot write there: {exc.strerror}") from exc
            (self._stage / "text").mkdir()
            self._fh = open(self._stage / "predictions.jsonl", "w", encoding="utf-8")

    def _text_name(self, image: str) -> str:
        stem = Path(image).stem or "line"
        name, n = f"{stem}.txt", 1
        # `line.png` twice, or beside `line__2.png`: every text file gets a name of its own.
        while name in self._names:
            n += 1
            name = f"{stem}__{n}.txt"
        self._names.add(name)
        return name

    def write(self, res: LineResult) -> None:
        """Write one line's result."""
        line = json_line(res.to_dict())
        if self._fh is not None:
            self._fh.write(line)
        if self.stream is not None:
            self.stream.write(line)
        if self._stage is not None and res.ok:
            path = self._stage / "text" / self._text_name(res.image)
            path.write_text(res.text + "\n", encoding="utf-8")
        if self.coco and res.ok:
            self._add_coco(res)

    def _add_coco(self, res: LineResult) -> None:
        image_id = len(self._coco_images) + 1
        self._coco_images.append(
            {
                "id": image_id,
                "file_name": res.image,
                "width": res.width,
                "height": res.height,
                "text": res.text,
            }
        )
        for cat, items in (
            (1, [(c.bbox, c) for c in res.chars]),
            (2, [(b, None) for b in res.words]),
        ):
            for bbox, ch in items:
                x0, y0, x1, y1 = (float(v) for v in bbox)
                ann = {
                    "id": len(self._coco_anns) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                    "area": round((x1 - x0) * (y1 - y0), 2),
                    "iscrowd": 0,
                    "score": 1.0,
                }
                if ch is not None:
                    ann.update(text=ch.char, codepoints=ch.codepoints, score=round(ch.score, 5))
                self._coco_anns.append(ann)

    def close(self, *, complete: bool = True) -> None:
        """Finish the run: put its outputs in place, or (`complete=False`) discard them."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.stream is not None:
            self.stream.flush()
        stage, self._stage = self._stage, None
        if stage is None:
            return
        try:
            if complete:
                if self.coco:
                    coco = {
                        "images": self._coco_images,
                        "annotations": self._coco_anns,
                        "categories": [{"id": 1, "name": "char"}, {"id": 2, "name": "word"}],
                    }
                    text = json.dumps(coco, ensure_ascii=False)
                    try:
                        text.encode("utf-8")
                    except UnicodeEncodeError:
                        text = json.dumps(coco, ensure_ascii=True)
                    (stage / "predictions_coco.json").write_text(text + "\n", encoding="utf-8")
                self._commit(stage)
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def _commit(self, stage: Path) -> None:
        # The previous run's outputs go into the staging folder (removed with it) one rename
        # each, then this run's take their place: no moment shows a half-written file.
        old = stage / "previous"
        old.mkdir()
        for name in RUN_OUTPUTS:
            target = self.out_dir / name
            if target.exists() or target.is_symlink():
                os.replace(target, old / name)
        for name in RUN_OUTPUTS:
            if (stage / name).exists():
                os.replace(stage / name, self.out_dir / name)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr infer`."""
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="line image, directory, glob pattern or @list.txt",
    )
    parser.add_argument("--model", "-m", required=True, help="bundle directory (from export-onnx)")
    parser.add_argument(
        "--output", "-o", default=None, help="output directory; JSON Lines to stdout when omitted"
    )
    parser.add_argument(
        "--threads",
        "-j",
        type=int,
        default=None,
        help="workers, each one core: processes on the CPU (default: the bundle's infer.threads)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="recognizer batch size (default: the bundle's infer.batch_size)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto, cpu, cuda or cuda:N (default auto: CUDA when onnxruntime-gpu offers it, "
        "else cpu)",
    )
    parser.add_argument("--coco", action="store_true", help="also write OUT/predictions_coco.json")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="open the bundle without checking its files against the sha256 in model.yaml "
        "(for bundles changed on purpose)",
    )


def run(args: argparse.Namespace) -> int:
    """Run `effocr infer`; returns 1 when any image failed."""
    meta = load_model_yaml(args.model)  # checksums: once, by the Engine below
    defaults = meta.get("infer", {})
    threads = args.threads or int(defaults.get("threads", 1))
    batch_size = args.batch_size or int(defaults.get("batch_size", 64))
    if args.coco and not args.output:
        raise EffOCRError("--coco needs --output")
    if args.output:
        check_output_dir(args.output)
    images = expand_inputs(args.inputs)
    if args.output:
        _check_inputs_outside(images, Path(args.output))
    engine = Engine(
        args.model,
        threads=threads,
        device=args.device,
        batch_size=batch_size,
        verify=not args.no_verify,
    )
    try:
        writer = OutputWriter(
            args.output, coco=args.coco, stream=None if args.output else sys.stdout
        )
    except BaseException:
        engine.close()
        raise
    failed = truncated = 0
    start = time.perf_counter()
    complete = False
    try:
        for res in engine.iter_infer(images, show_progress=True):
            if not res.ok:
                failed += 1
                LOG.error("%s: %s (skipped)", display_name(res.image), res.error)
            elif res.dropped:
                truncated += 1
                LOG.warning(
                    "%s: %d detection(s) beyond the line's cap were dropped; its text is "
                    "incomplete (raise localizer.detections_per_height or max_detections)",
                    display_name(res.image),
                    res.dropped,
                )
            writer.write(res)
        complete = True
    finally:
        writer.close(complete=complete)
        engine.close()
        if not complete and args.output:
            LOG.error("run failed: nothing written; %s keeps its previous outputs", args.output)
    elapsed = time.perf_counter() - start
    LOG.info(
        "%d lines (%d failed, %d glyphs) in %.2f s: %.1f lines/s with %d worker(s) (%s) on %s",
        len(images),
        failed,
        engine.glyphs_done,
        elapsed,
        len(images) / elapsed if elapsed > 0 else 0.0,
        engine.workers,
        engine.parallel,
        "cuda" if engine.cuda else "cpu",
    )
    if truncated:
        print(
            f"effocr infer: warning: {truncated} line(s) lost detections to the per-line cap "
            "(`dropped_detections` in their records)",
            file=sys.stderr,
        )
    if failed:
        print(
            f"effocr infer: {failed} of {len(images)} image(s) failed (see the log)",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _check_inputs_outside(images: Sequence[str], out_dir: Path) -> None:
    """Refuse inputs inside the outputs a run replaces (they would be deleted with them)."""
    owned = [(out_dir / name).resolve() for name in RUN_OUTPUTS]
    for image in images:
        path = Path(image).resolve()
        if any(path == o or o in path.parents for o in owned):
            raise EffOCRError(
                f"{display_name(image)}: an input inside {out_dir}'s run outputs "
                f"({', '.join(RUN_OUTPUTS)}), which this run replaces; use another --output"
            )
