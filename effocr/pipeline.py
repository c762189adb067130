"""The line pipeline of a bundle: `Pipeline.run(images) -> list[LineResult]`, no parallelism.

A `Pipeline` is assembled from stage objects, each with one input and one output:

    decode (`effocr.imageio.decode_image`): path or array -> uint8 pixels
    localizer (`LocalizerStage`): pixels -> `Detections` (char and word boxes, spaces)
    crops (`GlyphCropper`): pixels + detections -> (N, S, S, C) uint8 glyph squares
    recognizer (`RecognizerStage`): glyph squares of many lines -> L2-normalised embeddings
    knn (`ReferenceSearch`): embeddings -> (similarity, reference row) of the nearest glyph
        (the k nearest when a language model re-ranks them)
    lm (`effocr.lm.LMDecoder`, optional): a line's k nearest per glyph -> the class of each,
        by cosine and a character language model (bundles with `lm.json`, when enabled); with
        its lexicon on, two overlapping boxes inside a word it does not hold may become one
        glyph (`Pipeline.pair_knn` crops and searches the pair: `nn` -> `m`)
    geometry (`GeometryCheck`, optional): the labels of a horizontal line whose pairs differ
        only in size or placement (`,`/`.`, `S`/`s`) decided by their boxes
        (`effocr.geometry`; the bundle's `infer.geometry`)
    text (`TextBuilder`): labels + space flags -> the line's `LineResult`

The first three run per line (`Pipeline.prepare`), the recognizer and the search once for the
crops of a whole batch of lines (`Pipeline.recognize`). `StageTimings` adds up the seconds of
each stage (`STAGES`). How batches are spread over workers is `effocr.runner`'s business;
`effocr.infer.Engine` puts the two together. A stage in front of the line pipeline (line
detection on pages) produces line images and hands them to `Pipeline.run`
(docs/architecture.md, "Where a new thing goes").

The bundle directory is the only thing read (see `effocr.export` and docs/architecture.md).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from effocr.bundle import Manifest
from effocr.confidence import apply_calibration
from effocr.imageio import ImageInput, decode_image
from effocr.onnx_session import CPU_PROVIDER, CUDA_PROVIDER, make_session, uses_cuda
from effocr.utils import EffOCRError, label_to_codepoints

LOG = logging.getLogger(__name__)

STAGES = ("decode", "localizer", "crops", "recognizer", "knn", "lm", "geometry")


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
    # The score minus that of the best reference of another label (the score itself when
    # the index has no other): a confidence feature (effocr.confidence), not written out.
    margin: float = 0.0

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
    # Read top to bottom (a vertical Japanese line); not in predictions.jsonl.
    vertical: bool = False
    # Calibrated P(read exactly right) of the line and of its words (`word_groups` order),
    # set by the pipeline when the bundle has a calibration (effocr.confidence).
    confidence: float | None = None
    word_confidences: list[float] | None = None

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
        out.update(confidence_fields(self))
        if self.dropped:
            out["dropped_detections"] = self.dropped
        return out


def confidence_fields(res: LineResult) -> dict:
    """predictions.jsonl's confidences of a read line: `confidence` and `word_confidences`
    (the text's words, split at spaces), calibrated probabilities when
    `confidence_calibrated`, else mean cosines; `cosine`, the mean cosine of its glyphs."""
    from effocr.formats.results import unit_confidences

    line, words, calibrated = unit_confidences(res)
    scores = [c.score for c in res.chars]

    def r(v: float | None) -> float | None:
        return None if v is None else round(float(v), 5)

    return {
        "confidence": r(line),
        "word_confidences": [r(w) for w in words],
        "confidence_calibrated": calibrated,
        "cosine": r(sum(scores) / len(scores)) if scores else None,
    }


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
# Stage timings
# ---------------------------------------------------------------------------


class StageTimings:
    """Seconds per stage (`STAGES`), lines and glyphs done; safe to add to from threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Zero the timings and counters."""
        with self._lock:
            self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
            self.lines = 0
            self.glyphs = 0

    def add(self, stage: str, seconds: float) -> None:
        """Add `seconds` to one stage (a stage beyond `STAGES` gets an entry of its own)."""
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def merge(self, seconds: dict[str, float], lines: int, glyphs: int) -> None:
        """Add another pipeline's figures (a worker process's batch)."""
        with self._lock:
            for stage, value in seconds.items():
                self.seconds[stage] = self.seconds.get(stage, 0.0) + value
            self.lines += lines
            self.glyphs += glyphs


# ---------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------


class LocalizerStage:
    """Pixels -> `Detections`: the bundle's ONNX localizer with the profile's `allows_vertical`."""

    def __init__(self, session: Any, allows_vertical: bool) -> None:
        self.session = session  # an `effocr.localizer.runtime.LocalizerSession`
        # Passed to every call, so an English line taller than wide (one narrow glyph) is
        # never transposed.
        self.allows_vertical = allows_vertical

    def __call__(self, img: np.ndarray) -> Any:
        return self.session.detect(img, allows_vertical=self.allows_vertical)


class GlyphCropper:
    """Pixels + detections -> (N, S, S, C) uint8 glyph squares (S: the recognizer's input; C: 1
    for a grey line, 3 for a colour one).

    `transforms.preprocess` split in two: the pad + resize of all crops of a line here, the
    normalisation once for a whole batch of lines (`RecognizerStage.normalize`).
    """

    def __init__(self, input_size: int, padding: int) -> None:
        self.input_size = input_size
        self.padding = padding

    def __call__(self, img: np.ndarray, det: Any) -> np.ndarray:
        from effocr.recognizer.transforms import glyph_squares

        # A grey line gives (N, S, S, 1): `RecognizerStage.normalize` writes its one channel
        # into all three, so the three equal copies are never made in uint8.
        return glyph_squares(img, det.crop_boxes(self.padding), self.input_size, det.vertical)

    def of_boxes(self, img: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """The squares of glyph boxes (x0, y0, x1, y1) of a horizontal line, cropped as the
        localizer's are."""
        from effocr.localizer.postprocess import glyph_crop_boxes
        from effocr.recognizer.transforms import glyph_squares

        crops = glyph_crop_boxes(boxes, img.shape[:2], False, self.padding)
        return glyph_squares(img, crops, self.input_size)


class RecognizerStage:
    """Glyph squares -> L2-normalised float32 embeddings (the bundle's ONNX recognizer)."""

    def __init__(
        self,
        session: Any,
        mean: Sequence[float],
        std: Sequence[float],
        batch_size: int,
    ) -> None:
        self.session = session
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.batch_size = int(batch_size)
        self._input = session.get_inputs()[0].name
        self._output = session.get_outputs()[0].name

    def normalize(self, squares: np.ndarray) -> np.ndarray:
        """(N, S, S, C) uint8 -> (N, 3, S, S) float32, exactly as `transforms.normalize`.

        C = 1 (a grey line) stands for three equal channels. Each output plane is written once,
        straight from its input channel (no float copy of the whole batch, no transpose): this
        stage is pure overhead next to the network, paid on every glyph.
        """
        n, height, width, channels = squares.shape
        if channels not in (1, 3):
            raise ValueError(f"glyph squares must have 1 or 3 channels, not {channels}")
        std = np.asarray(self.std, dtype=np.float32)
        scale = np.float32(1.0) / (np.float32(255.0) * std)
        shift = np.asarray(self.mean, dtype=np.float32) / std
        out = np.empty((n, 3, height, width), np.float32)
        grey = squares[..., 0].astype(np.float32) if channels == 1 else None
        for c in range(3):
            plane = out[:, c]
            src = grey if grey is not None else squares[..., c]
            np.multiply(src, scale[c], out=plane, dtype=np.float32)
            np.subtract(plane, shift[c], out=plane)
        return out

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embeddings of preprocessed crops (N, 3, S, S), `batch_size` crops per model call."""
        out = []
        for start in range(0, len(batch), self.batch_size):
            chunk = np.ascontiguousarray(batch[start : start + self.batch_size], dtype=np.float32)
            out.append(self.session.run([self._output], {self._input: chunk})[0])
        embs = np.concatenate(out).astype(np.float32, copy=False)
        # Normalise again: cheap, and exact cosine similarity even if an export skipped it.
        embs /= np.maximum(np.linalg.norm(embs, axis=1, keepdims=True), 1e-12)
        return embs

    def __call__(self, squares: np.ndarray) -> np.ndarray:
        return self.embed(self.normalize(squares))


class ReferenceSearch:
    """Embeddings -> (similarities, rows) of the k nearest reference glyphs (`ReferenceIndex`:
    FAISS, and the classes' prototypes where the index has them)."""

    def __init__(self, index: Any, chars: Sequence[str]) -> None:
        self.index = index
        self.chars = list(chars)
        self.labels = [label_to_codepoints(c) for c in self.chars]

    @classmethod
    def load(cls, bundle_dir: Path, omp_threads: int = 1) -> ReferenceSearch:
        """The bundle's `ref.index`, `ref_labels.txt` and `ref_prototypes.npz` if it has one."""
        import faiss

        from effocr.recognizer.reference import ReferenceIndex

        try:
            ref = ReferenceIndex.load(bundle_dir)
        except RuntimeError as exc:  # FAISS reports unreadable files as RuntimeError
            raise EffOCRError(
                f"{bundle_dir / 'ref.index'}: cannot read FAISS index: {exc}"
            ) from exc
        # FAISS's OpenMP threads on top of the worker pool would oversubscribe the cores.
        faiss.omp_set_num_threads(max(1, omp_threads))
        return cls(ref, ref.labels)

    def __call__(self, embs: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(N, k) similarities and rows, best first."""
        return self.index.knn(embs, k)


class GeometryCheck:
    """Chosen reference rows of a horizontal line -> the same, with `effocr.geometry`'s pairs
    decided by the glyph boxes (a label the index lacks is left as read)."""

    def __init__(self, chars: Sequence[str]) -> None:
        self.chars = list(chars)
        self.row_of: dict[str, int] = {}
        for row, char in enumerate(self.chars):
            self.row_of.setdefault(char, row)

    def __call__(
        self,
        boxes: Sequence,
        sims: np.ndarray,
        rows: np.ndarray,
        k_sims: np.ndarray,
        k_rows: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, rows) of the line's glyphs; a changed glyph takes its new label's
        similarity from its k nearest when it is among them, else keeps the old one."""
        from effocr.geometry import geometry_labels

        labels = [self.chars[r] for r in rows]
        fixed = geometry_labels(np.asarray(boxes, np.float64).reshape(-1, 4), labels)
        sims, rows = sims.copy(), rows.copy()
        for i, (old, new) in enumerate(zip(labels, fixed, strict=True)):
            if new == old or new not in self.row_of:
                continue
            rows[i] = self.row_of[new]
            hits = np.flatnonzero(k_rows[i] == rows[i])
            if len(hits):
                sims[i] = k_sims[i, hits[0]]
        return sims, rows


class TextBuilder:
    """Labels of a line's glyphs -> its `chars` and `text` (spaces only where the profile has)."""

    def __init__(self, chars: Sequence[str], labels: Sequence[str], spaces: bool) -> None:
        self.chars = chars
        self.labels = labels
        self.spaces = spaces

    def __call__(
        self,
        res: LineResult,
        boxes: list,
        sims: np.ndarray,
        rows: np.ndarray,
        space_flags: np.ndarray | None,
        margins: np.ndarray,
    ) -> None:
        for box, sim, row, margin in zip(boxes, sims, rows, margins, strict=True):
            res.chars.append(
                CharResult(list(box), self.labels[row], self.chars[row], float(sim), float(margin))
            )
        flags = space_flags if self.spaces else None
        res.text = assemble_text([c.char for c in res.chars], flags)


def stack_squares(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The glyph squares of several lines as one (N, S, S, C) array; grey lines (C = 1) are
    widened to three channels only when a colour line is in the same batch."""
    channels = {p.shape[3] for p in parts}
    if len(channels) > 1:
        parts = [np.broadcast_to(p, p.shape[:3] + (3,)) for p in parts]
    return np.concatenate(parts)


@dataclass
class PreparedLine:
    """One line after the per-line stages: its result so far, glyph boxes, squares, spaces."""

    result: LineResult
    boxes: list
    squares: np.ndarray
    spaces: np.ndarray | None
    # The line's pixels, kept for crops the LM stage may ask for (`Pipeline.pair_knn`).
    image: np.ndarray | None = None


# ---------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------


class Pipeline:
    """The stages of a bundle, run on one batch of lines in the calling thread.

    Args:
        localizer: `LocalizerStage`.
        cropper: `GlyphCropper`.
        recognizer: `RecognizerStage`.
        search: `ReferenceSearch`.
        builder: `TextBuilder`.
        meta: The bundle's `model.yaml` as a dict (None: empty).
        decoder: `effocr.lm.LMDecoder` re-ranking the k nearest glyphs (None: top-1).
        calibration: `effocr.confidence.Calibration` setting each line's calibrated
            confidences (None: the outputs give mean cosines).
        geometry: `GeometryCheck` of horizontal lines (None: labels as recognised).
    """

    def __init__(
        self,
        localizer: LocalizerStage,
        cropper: GlyphCropper,
        recognizer: RecognizerStage,
        search: ReferenceSearch,
        builder: TextBuilder,
        meta: dict | None = None,
        decoder: Any = None,
        calibration: Any = None,
        geometry: GeometryCheck | None = None,
    ) -> None:
        self.localizer = localizer
        self.cropper = cropper
        self.recognizer = recognizer
        self.search = search
        self.builder = builder
        self.meta = meta or {}
        # Only a decoder that can change a label is run; otherwise the top-1 path, unchanged.
        self.decoder = decoder if decoder is not None and decoder.active else None
        self.calibration = calibration
        self.geometry = geometry
        self.stats = StageTimings()

    @classmethod
    def from_bundle(
        cls,
        bundle_dir: str | os.PathLike,
        providers: Sequence[Any] | None = None,
        *,
        intra_op_threads: int = 1,
        batch_size: int | None = None,
        verify: bool = True,
        manifest: Manifest | None = None,
        lm: bool | None = None,
        lm_weight: float | None = None,
        geometry: bool | None = None,
        lexicon_margin: float | None = None,
    ) -> Pipeline:
        """The pipeline of an exported bundle.

        Args:
            bundle_dir: Directory written by `effocr export-bundle` / rule `export_bundle`.
            providers: ORT providers (`effocr.onnx_session.select_providers`); CPU when None.
            intra_op_threads: ORT threads per model call, also FAISS's OpenMP threads.
            batch_size: Recognizer batch size; default the bundle's `infer.batch_size`.
            verify: Check the files against `model.yaml`'s sha256 (when `manifest` is None).
            manifest: The bundle's manifest, already read.
            lm: Re-rank with the bundle's language model (`lm.json`); None: as the bundle
                says (`lm.enabled`). True for a bundle without one is an error.
            lm_weight: The LM weight instead of the bundle's `lm.weight`.
            lexicon_margin: The lexicon's margin instead of the bundle's `lm.lexicon_margin`
                (0: no rereading).
            geometry: Decide `effocr.geometry`'s label pairs by the glyph boxes; None: as the
                bundle's `infer.geometry` says.
        """
        from effocr.confidence import Calibration
        from effocr.localizer.runtime import LocalizerSession
        from effocr.profiles import get_profile

        bundle_dir = Path(bundle_dir)
        providers = list(providers or [CPU_PROVIDER])
        if manifest is None:
            manifest = Manifest.read(bundle_dir, verify=verify)
        meta = manifest.to_dict()
        prof = meta["profile"]
        profile = get_profile(prof["name"])
        rec = meta["recognizer"]
        rec_session = make_session(bundle_dir / rec["file"], providers, intra_op_threads)
        if uses_cuda(providers) and CUDA_PROVIDER not in rec_session.get_providers():
            # ORT falls back to the CPU when the CUDA provider cannot start (no GPU visible,
            # CUDA/cuDNN libraries missing): say so rather than pretend.
            LOG.warning("ONNX Runtime could not start %s; running on the CPU", CUDA_PROVIDER)
        loc_path = bundle_dir / meta["localizer"]["file"]
        localizer = LocalizerSession(
            loc_path,
            meta["localizer"]["meta"],
            session=make_session(loc_path, providers, intra_op_threads, what="ONNX localizer"),
        )
        search = ReferenceSearch.load(bundle_dir, intra_op_threads)
        decoder = load_decoder(bundle_dir, manifest, search.chars, lm, lm_weight, lexicon_margin)
        return cls(
            # model.yaml's `profile.vertical` (format 1) is the profile's `allows_vertical`.
            LocalizerStage(localizer, bool(prof.get("vertical", profile.allows_vertical))),
            GlyphCropper(int(rec["input_size"]), int(meta["crops"]["padding"])),
            RecognizerStage(
                rec_session, rec["mean"], rec["std"], batch_size or int(meta["infer"]["batch_size"])
            ),
            search,
            TextBuilder(search.chars, search.labels, bool(prof.get("spaces", profile.spaces))),
            meta,
            decoder,
            Calibration.load(bundle_dir, manifest.confidence),
            GeometryCheck(search.chars) if geometry_enabled(meta, geometry) else None,
        )

    # -- stages --------------------------------------------------------------

    def decode(self, item: ImageInput, res: LineResult) -> np.ndarray | None:
        """Stage ``decode``: the line's pixels, or None with `res.error` set."""
        t0 = time.perf_counter()
        try:
            img = decode_image(item, keep_grey=True)
        except EffOCRError as exc:
            res.error = str(exc)
            return None
        finally:
            self.stats.add("decode", time.perf_counter() - t0)
        res.height, res.width = int(img.shape[0]), int(img.shape[1])
        return img

    def prepare(self, img: np.ndarray, res: LineResult) -> PreparedLine | None:
        """Stages ``localizer`` and ``crops`` of one line; None with `res.error` on failure."""
        t0 = time.perf_counter()
        try:
            det = self.localizer(img)
        except Exception as exc:  # a line ORT cannot process must not stop the run
            res.error = f"localizer failed: {exc}"
            return None
        finally:
            self.stats.add("localizer", time.perf_counter() - t0)
        t0 = time.perf_counter()
        try:
            boxes = np.asarray(det.chars, dtype=np.float32).reshape(-1, 4)
            squares = self.cropper(img, det)
        except Exception as exc:  # one odd line must not lose the batch's other lines
            res.error = f"glyph crops failed: {type(exc).__name__}: {exc}"
            return None
        finally:
            self.stats.add("crops", time.perf_counter() - t0)
        res.words = np.asarray(det.words, dtype=np.float32).reshape(-1, 4).tolist()
        res.dropped = int(getattr(det, "dropped", 0))
        res.vertical = bool(det.vertical)
        spaces = np.asarray(det.spaces, dtype=bool) if self.builder.spaces else None
        return PreparedLine(res, boxes.tolist(), squares, spaces, img)

    def recognize(self, lines: Sequence[PreparedLine]) -> int:
        """Stages ``recognizer``, ``knn`` and the text of prepared lines; returns the glyphs."""
        n_glyphs = sum(len(line.squares) for line in lines)
        k_pick = self.decoder.k if self.decoder is not None else 1
        # One neighbour more than the pick needs gives each glyph its margin.
        k = max(k_pick, 2)
        sims = rows = np.zeros((0, k))
        if n_glyphs:
            t0 = time.perf_counter()
            embs = self.recognizer(stack_squares([line.squares for line in lines]))
            self.stats.add("recognizer", time.perf_counter() - t0)
            t0 = time.perf_counter()
            sims, rows = self.search(embs, k)
            self.stats.add("knn", time.perf_counter() - t0)
        pos = 0
        t_lm = t_geometry = 0.0
        for line in lines:
            n = len(line.boxes)
            line_sims, line_rows = sims[pos : pos + n], rows[pos : pos + n]
            pos += n
            boxes = line.boxes
            pick = np.zeros(n, dtype=np.int64)
            spaces = line.spaces
            if self.decoder is not None and n:
                t0 = time.perf_counter()
                pick, spaces = self.decoder.read(
                    line_sims[:, :k_pick], line_rows[:, :k_pick], line.spaces
                )
                pairs: dict[str, Any] = {"seconds": 0.0}
                if (
                    self.decoder.regroups
                    and spaces is not None
                    and line.image is not None
                    and not line.result.vertical
                ):
                    pick, merged = self.decoder.regroup(
                        line_sims[:, :k_pick],
                        line_rows[:, :k_pick],
                        pick,
                        spaces,
                        overlapping(boxes),
                        functools.partial(self.pair_knn, line, k, pairs),
                    )
                    if merged:
                        boxes, line_sims, line_rows, pick, spaces = merge_glyph_pairs(
                            boxes, line_sims, line_rows, pick, spaces, merged, pairs
                        )
                        n = len(boxes)
                t_lm += time.perf_counter() - t0 - pairs["seconds"]
            at = np.arange(n)
            chosen_sims, chosen_rows = line_sims[at, pick], line_rows[at, pick]
            if self.geometry is not None and n and not line.result.vertical:
                t0 = time.perf_counter()
                chosen_sims, chosen_rows = self.geometry(
                    boxes, chosen_sims, chosen_rows, line_sims, line_rows
                )
                t_geometry += time.perf_counter() - t0
            self.builder(
                line.result,
                boxes,
                chosen_sims,
                chosen_rows,
                spaces,
                glyph_margins(line_sims, line_rows, chosen_sims, chosen_rows, self.builder.labels),
            )
            if self.calibration is not None:
                apply_calibration(line.result, self.calibration)
        self.stats.add("lm", t_lm)
        self.stats.add("geometry", t_geometry)
        return n_glyphs

    def pair_knn(
        self, line: PreparedLine, k: int, found: dict[str, Any], starts: list[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest (cosines, rows) of glyphs i and i + 1 of `line` cropped as one, for
        each i in `starts` (`effocr.lexicon.Lexicon.regroup`). Its stages' times go to
        ``crops``, ``recognizer`` and ``knn``, their sum also into ``found["seconds"]``; the
        merged boxes and neighbours into ``found`` by start (`merge_glyph_pairs`)."""
        t0 = time.perf_counter()
        boxes = np.asarray(line.boxes, dtype=np.float64)
        first, second = boxes[starts], boxes[np.asarray(starts) + 1]
        union = np.concatenate(
            [np.minimum(first[:, :2], second[:, :2]), np.maximum(first[:, 2:], second[:, 2:])],
            axis=1,
        )
        squares = self.cropper.of_boxes(line.image, union)
        t1 = time.perf_counter()
        embs = self.recognizer(squares)
        t2 = time.perf_counter()
        sims, rows = self.search(embs, k)
        t3 = time.perf_counter()
        self.stats.add("crops", t1 - t0)
        self.stats.add("recognizer", t2 - t1)
        self.stats.add("knn", t3 - t2)
        found["seconds"] += t3 - t0
        for w, i in enumerate(starts):
            found[i] = (union[w], sims[w], rows[w])
        return sims, rows

    def run(self, images: Sequence[ImageInput], first_index: int = 0) -> list[LineResult]:
        """OCR a batch of line images (paths or arrays); a failed line carries `error`.

        The crops of all the batch's lines go through the recognizer together. An array is
        named ``<array i>``, i = `first_index` + its position in `images`.
        """
        results: list[LineResult] = []
        prepared: list[PreparedLine] = []
        for i, item in enumerate(images):
            name = f"<array {first_index + i}>" if isinstance(item, np.ndarray) else str(item)
            res = LineResult(image=name)
            results.append(res)
            img = self.decode(item, res)
            if img is None:
                continue
            line = self.prepare(img, res)
            if line is not None:
                prepared.append(line)
        glyphs = self.recognize(prepared)
        self.stats.merge({}, len(results), glyphs)
        return results


def overlapping(boxes: Sequence) -> np.ndarray:
    """(n - 1,) whether each glyph's box and the next one's overlap along the line: one letter
    the localizer may have boxed twice (`nn` for `m`). Neighbouring letters of one word touch
    at most, in print; their boxes apart, two glyphs are read as two."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return boxes[1:, 0] < boxes[:-1, 2]


def merge_glyph_pairs(
    boxes: Sequence,
    sims: np.ndarray,
    rows: np.ndarray,
    picked: np.ndarray,
    spaces: np.ndarray | None,
    merged: dict[int, int],
    pairs: dict[Any, Any],
) -> tuple[list, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """A line's glyphs with each pair read as one (first glyph i -> its column, from
    `Lexicon.regroup`) made one glyph: the two boxes' union, the pair's neighbours
    (``pairs[i]``: union box, cosines, rows, from `Pipeline.pair_knn`) and its column."""
    boxes = [list(b) for b in boxes]
    sims, rows = sims.copy(), rows.copy()
    picked = np.asarray(picked, dtype=np.int64).copy()
    keep = np.ones(len(boxes), dtype=bool)
    for i, column in merged.items():
        union, pair_sims, pair_rows = pairs[i]
        boxes[i] = [float(v) for v in union]
        sims[i], rows[i], picked[i] = pair_sims, pair_rows, column
        keep[i + 1] = False
    out_boxes = [b for b, kept in zip(boxes, keep, strict=True) if kept]
    return out_boxes, sims[keep], rows[keep], picked[keep], None if spaces is None else spaces[keep]


def glyph_margins(
    sims: np.ndarray,
    rows: np.ndarray,
    chosen_sims: np.ndarray,
    chosen_rows: np.ndarray,
    labels: Sequence[str],
) -> np.ndarray:
    """Per glyph: the chosen reference's similarity minus the best one of another label among
    the k searched (`sims`, `rows`; FAISS row -1: none; no other label found: the similarity
    itself)."""
    out = np.asarray(chosen_sims, np.float64).copy()
    for i in range(len(out)):
        own = labels[chosen_rows[i]]
        for j in range(sims.shape[1]):
            r = rows[i, j]
            if r >= 0 and labels[r] != own:
                out[i] = chosen_sims[i] - sims[i, j]
                break
    return out


@dataclass(frozen=True)
class PipelineSpec:
    """What a worker process needs to build its own `Pipeline` (small, picklable).

    A worker runs one single-threaded CPU pipeline; the parent already checked the bundle.
    """

    bundle_dir: str
    batch_size: int | None = None  # None: the bundle's infer.batch_size
    lm: bool | None = None
    lm_weight: float | None = None
    geometry: bool | None = None
    lexicon_margin: float | None = None

    def build(self) -> Pipeline:
        """The worker's pipeline."""
        return Pipeline.from_bundle(
            self.bundle_dir,
            [CPU_PROVIDER],
            intra_op_threads=1,
            batch_size=self.batch_size,
            verify=False,  # the parent checked the files moments ago
            lm=self.lm,
            lm_weight=self.lm_weight,
            geometry=self.geometry,
            lexicon_margin=self.lexicon_margin,
        )


def geometry_enabled(meta: dict, geometry: bool | None) -> bool:
    """Whether a bundle's pipeline runs `GeometryCheck`: `geometry` when given, else the
    bundle's `infer.geometry` (`Manifest` fills it in bundles exported before it existed, as
    every `infer` key, from the config schema's default)."""
    if geometry is not None:
        return bool(geometry)
    return bool(meta["infer"]["geometry"])


def load_decoder(
    bundle_dir: Path,
    manifest: Manifest,
    chars: Sequence[str],
    enable: bool | None,
    weight: float | None,
    lexicon_margin: float | None = None,
) -> Any:
    """The bundle's `LMDecoder`, or None when it has no LM or the LM is switched off."""
    from effocr.lm import CharLM, LMDecoder, lm_settings

    settings = lm_settings(
        manifest.lm, enable, weight, source=str(bundle_dir), lexicon_margin=lexicon_margin
    )
    if settings is None:
        return None
    lm = CharLM.load(bundle_dir / settings["file"])
    return LMDecoder(
        lm,
        chars,
        weight=float(settings["weight"]),
        k=int(settings["k"]),
        beam=int(settings["beam"]),
        margin=float(settings["margin"]),
        lexicon_margin=float(settings["lexicon_margin"]),
    )
