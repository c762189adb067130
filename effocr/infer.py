"""Inference with an exported bundle: `effocr.infer.Engine` and the `effocr infer` command.

`Engine` is the public facade: a `effocr.pipeline.Pipeline` (the ONNX sessions, the reference
index and the stages of a batch of lines: decode -> localize -> glyph crops -> recognizer ->
FAISS top-1 -> text) run by an `effocr.runner.Runner` (worker processes or threads, input
order, BLAS limits, the small-job rule). Image reading, input expansion and the output files
are `effocr.imageio`'s; ONNX Runtime sessions come from `effocr.onnx_session`. The names those
modules offer are re-exported here for existing callers.

The bundle directory is the only thing read (see `effocr.export` and docs/architecture.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any

from effocr.bundle import STANDARD_FILES, Manifest
from effocr.document import Page
from effocr.geometry import add_geometry_argument, geometry_choice
from effocr.imageio import (
    DEFAULT_FORMATS,
    IMAGE_SUFFIXES,
    OUTPUT_FORMATS,
    RUN_OUTPUTS,
    ImageInput,
    OutputWriter,
    check_inputs_outside,
    check_output_dir,
    decode_image,
    display_name,
    expand_inputs,
    glob_files,
    json_line,
    parse_formats,
)
from effocr.lm import add_lm_arguments, lm_choice
from effocr.onnx_session import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    make_session,
    select_providers,
    uses_cuda,
)
from effocr.pages import LAYOUTS, PagePipeline, PagePipelineSpec, PageResult
from effocr.pipeline import (
    STAGES,
    CharResult,
    LineResult,
    Pipeline,
    PipelineSpec,
    assemble_text,
)
from effocr.runner import Runner, resolve_parallel
from effocr.utils import EffOCRError

__all__ = [
    "BUNDLE_FILES",
    "CPU_PROVIDER",
    "CUDA_PROVIDER",
    "IMAGE_SUFFIXES",
    "RUN_OUTPUTS",
    "STAGES",
    "CharResult",
    "Engine",
    "ImageInput",
    "LineResult",
    "OutputWriter",
    "Page",
    "assemble_text",
    "check_output_dir",
    "configure_parser",
    "decode_image",
    "display_name",
    "expand_inputs",
    "glob_files",
    "json_line",
    "load_model_yaml",
    "make_session",
    "run",
    "select_providers",
    "uses_cuda",
]

LOG = logging.getLogger(__name__)

BUNDLE_FILES = STANDARD_FILES


def load_model_yaml(bundle_dir: str | os.PathLike, *, verify: bool = False) -> dict:
    """`model.yaml` of a bundle as a dict, validated by `effocr.bundle.Manifest.read`."""
    return Manifest.read(bundle_dir, verify=verify).to_dict()


# ---------------------------------------------------------------------------
# Engine
# ---------------------------------------------------------------------------


def _view(path: str, doc: str) -> property:
    """A read-only attribute that is the one at dotted `path` (as `Engine.index`)."""
    get = attrgetter(path)
    return property(get, doc=doc)


class Engine:
    """OCR of line images with an exported bundle (ONNX Runtime + FAISS).

    A `Pipeline` (`self.pipeline`) run by a `Runner` (`self.runner`).

    Args:
        bundle_dir: Directory written by `effocr export-bundle` / rule `export_bundle`.
        workers: Workers, each keeping one CPU core busy (processes or threads, see
            `parallel`; one on CUDA); default the bundle's `infer.workers`. `threads=` is its
            deprecated former name.
        device: ``auto`` (default: CUDA when ONNX Runtime offers it, i.e. onnxruntime-gpu is
            installed and sees a GPU, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: Recognizer batch size; crops of many lines are batched together; default
            the bundle's `infer.batch_size`.
        intra_op_threads: ORT threads per model call; default 1 on CPU (the pool parallelises),
            `workers` on CUDA (one worker).
        chunk_lines: Lines handed to a worker at once; default enough for ~2 full batches.
        parallel: How `workers` > 1 run on the CPU: ``process`` (worker processes,
            started by `start` or by the first job of at least 100 lines per worker, and kept
            until `close`), ``thread`` (threads of this process) or ``auto`` (processes).
        verify: Check the bundle's files against the sha256 recorded in `model.yaml` (a
            mismatch is an `EffOCRError`); False opens a bundle changed on purpose.
        lm: Re-rank the k nearest glyphs with the bundle's character language model (True),
            not (False), or as the bundle's `lm.enabled` says (None).
        lm_weight: The language model's weight instead of the bundle's `lm.weight`.
        lexicon_margin: The margin of its lexicon's rereading instead of the bundle's
            `lm.lexicon_margin` (0: no rereading).
        geometry: Decide `effocr.geometry`'s label pairs by the glyph boxes (True), not
            (False), or as the bundle's `infer.geometry` says (None).
        layout: How `iter_pages` reads an image: ``auto`` (`effocr.pages.is_page` decides),
            ``page`` (an error for a bundle without a line detector) or ``line``.

    Pages: `read_page` (one page -> `effocr.document.Page`) and `iter_pages` (any inputs ->
    `effocr.pages.PageResult`, run by `self.page_runner`, one page per chunk).
    """

    def __init__(
        self,
        bundle_dir: str | os.PathLike,
        workers: int | None = None,
        device: str = "auto",
        batch_size: int | None = None,
        *,
        threads: int | None = None,
        intra_op_threads: int | None = None,
        chunk_lines: int | None = None,
        parallel: str = "auto",
        verify: bool = True,
        lm: bool | None = None,
        lm_weight: float | None = None,
        layout: str = "auto",
        geometry: bool | None = None,
        lexicon_margin: float | None = None,
    ) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.manifest = Manifest.read(self.bundle_dir, verify=verify)
        if threads is not None:
            warnings.warn(
                "Engine(threads=...) is deprecated: it counts workers; use workers=...",
                DeprecationWarning,
                stacklevel=2,
            )
            workers = threads
        # Not given: the bundle's `infer` section (the config's at export, as `effocr infer`).
        if workers is None:
            workers = int(self.manifest.infer["workers"])
        if batch_size is None:
            batch_size = int(self.manifest.infer["batch_size"])
        if batch_size < 1 or workers < 1:
            raise EffOCRError("workers and batch_size must be at least 1")
        self.providers = select_providers(device)
        self.cuda = uses_cuda(self.providers)
        # CUDA: one worker with `workers` ORT threads; CPU: that many workers of one thread.
        self.requested_workers = int(workers)
        self.workers = 1 if self.cuda else self.requested_workers
        self.parallel = resolve_parallel(parallel, self.workers)
        self.batch_size = int(batch_size)
        self.pipeline = Pipeline.from_bundle(
            self.bundle_dir,
            self.providers,
            intra_op_threads=intra_op_threads or (self.requested_workers if self.cuda else 1),
            batch_size=self.batch_size,
            manifest=self.manifest,
            lm=lm,
            lm_weight=lm_weight,
            geometry=geometry,
            lexicon_margin=lexicon_margin,
        )
        # Enough lines per chunk to fill about two recognizer batches (lines average ~30 glyphs).
        self.chunk_lines = int(chunk_lines or max(4, (2 * self.batch_size) // 30 + 1))
        self.runner = Runner(
            self.pipeline,
            PipelineSpec(
                str(self.bundle_dir), self.batch_size, lm, lm_weight, geometry, lexicon_margin
            ),
            workers=self.workers,
            parallel=self.parallel,
            chunk_lines=self.chunk_lines,
            limit_blas=not self.cuda,
        )
        self.pages = PagePipeline.from_bundle(
            self.bundle_dir,
            self.providers,
            intra_op_threads=intra_op_threads or (self.threads if self.cuda else 1),
            layout=layout,
            manifest=self.manifest,
            lines=self.pipeline,
        )
        self.page_runner = Runner(
            self.pages,
            PagePipelineSpec(
                str(self.bundle_dir),
                self.batch_size,
                layout,
                lm,
                lm_weight,
                geometry,
                lexicon_margin,
            ),
            workers=self.workers,
            parallel=self.parallel,
            chunk_lines=1,
            limit_blas=not self.cuda,
            small_job=2,  # two pages per worker already pay for starting the processes
        )

    # What the pipeline holds, read-only: `engine.index` is `engine.pipeline.search.index`.
    meta = _view("pipeline.meta", "The bundle's `model.yaml` as a dict.")
    localizer = _view("pipeline.localizer.session", "The `LocalizerSession` (ONNX localizer).")
    recognizer = _view("pipeline.recognizer.session", "The recognizer's ORT session.")
    allows_vertical = _view(
        "pipeline.localizer.allows_vertical", "Whether vertical lines occur (profile)."
    )
    spaces = _view("pipeline.builder.spaces", "Whether the text gets spaces (profile).")
    input_size = _view("pipeline.cropper.input_size", "The recognizer's input size S.")
    crop_padding = _view("pipeline.cropper.padding", "Pixels added around each glyph box.")
    mean = _view("pipeline.recognizer.mean", "The recognizer's normalisation mean.")
    std = _view("pipeline.recognizer.std", "The recognizer's normalisation std.")
    index = _view(
        "pipeline.search.index",
        "The reference index (`ReferenceIndex`: `search(embeddings, k)`, FAISS's signature).",
    )
    chars = _view("pipeline.search.chars", "Row i of the index: its character.")
    labels = _view("pipeline.search.labels", "Row i of the index: its code-point label.")
    timings = _view("pipeline.stats.seconds", "Seconds per stage (`STAGES`), workers added.")
    lines_done = _view("pipeline.stats.lines", "Lines processed since `reset_timings`.")
    glyphs_done = _view("pipeline.stats.glyphs", "Glyphs recognised since `reset_timings`.")
    _pool = _view("runner._pool", "The worker process pool (None until started, after close).")

    @property
    def profile(self) -> Any:
        """The bundle's language profile (`effocr.profiles.Profile`)."""
        from effocr.profiles import get_profile

        return get_profile(self.meta["profile"]["name"])

    def embed(self, batch: Any) -> Any:
        """Recognizer embeddings (L2-normalised float32) of preprocessed crops (N, 3, S, S)."""
        return self.pipeline.recognizer.embed(batch)

    def reset_timings(self) -> None:
        """Zero the per-stage timings and counters."""
        self.pipeline.stats.reset()

    # -- running -------------------------------------------------------------

    def start(self) -> None:
        """Start the worker processes now, and wait until each has loaded the bundle.

        Otherwise they start on the first `infer` call; call this before timing a run.
        """
        self.runner.start()

    def iter_infer(
        self, images: Iterable[ImageInput], *, show_progress: bool = False, total: int | None = None
    ) -> Iterator[LineResult]:
        """Yield one `LineResult` per image, in input order, while workers run ahead."""
        return self.runner.iter_run(images, show_progress=show_progress, total=total)

    def infer(self, images: Sequence[ImageInput]) -> list[LineResult]:
        """OCR line images (paths or HxWx3 uint8 arrays); failed images carry `error`."""
        return list(self.iter_infer(images))

    def read(self, images: Sequence[ImageInput]) -> list[Page]:
        """OCR line images into `effocr.document.Page`s, the structure the page formats write.

        One page per image, in input order: one region holding one line that covers the image,
        its words and glyphs with boxes (line pixels) and confidences
        (`effocr.formats.results`); a failed image is a page with `error` set.
        `effocr.formats.serialize` writes a page as PAGE-XML, ALTO, hOCR or text.
        """
        from effocr.formats.results import page_from_result

        return [page_from_result(res) for res in self.iter_infer(images)]

    def iter_pages(
        self, images: Iterable[ImageInput], *, show_progress: bool = False, total: int | None = None
    ) -> Iterator[PageResult]:
        """Yield one `PageResult` per image (a page, or a line by the layout), in input order."""
        return self.page_runner.iter_run(images, show_progress=show_progress, total=total)

    def read_page(self, image: ImageInput) -> Any:
        """OCR one page image (path or array) -> `effocr.document.Page` (regions and lines in
        reading order, page pixels). A page that cannot be read has `error` set.

        Raises:
            EffOCRError: the bundle has no line detector (it reads line images only).
        """
        from effocr.pages import no_detector_message

        if self.pages.detector is None:
            raise EffOCRError(no_detector_message(self.bundle_dir))
        return self.pages.read(image, layout="page").to_document()

    def iter_segmented(
        self,
        files: Iterable[str | os.PathLike],
        *,
        image_dir: str | os.PathLike | None = None,
    ) -> Iterator[PageResult]:
        """Read pages by a given segmentation: one `PageResult` per PAGE-XML/ALTO file, in
        order (`effocr.pages.PagePipeline.read_segmented`; no line detector needed). A file
        that cannot be read, or whose image is missing, is a result with `error` and
        `segmentation` naming the file; the others go on. Pages run in this process, one
        after the other (each page's lines as one batch)."""
        from effocr.formats.segmentation import read_segmentation

        for path in files:
            try:
                source = read_segmentation(path, image_dir=image_dir)
            except EffOCRError as exc:
                yield PageResult(str(path), error=str(exc), segmentation=str(path))
                continue
            for item in source.skipped:
                LOG.warning("%s: %s left out: %s", item["file"], item["id"], item["problem"])
            yield self.pages.read_segmented(source)

    def read_segmented(
        self, path: str | os.PathLike, *, image_dir: str | os.PathLike | None = None
    ) -> Page:
        """OCR the lines of one PAGE-XML or ALTO file on the page image it names ->
        `effocr.document.Page` (the file's regions, line ids and reading order; page pixels).

        Raises:
            EffOCRError: the file cannot be read, or its page image cannot be found or read.
        """
        res = next(self.iter_segmented([path], image_dir=image_dir))
        if res.error is not None:
            raise EffOCRError(res.error)
        return res.to_document()

    def close(self) -> None:
        """Stop the worker processes, if any were started (a later call starts new ones)."""
        self.runner.close()
        self.page_runner.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr infer`."""
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="line or page image, directory, glob pattern or @list.txt (with --segmentation: "
        "none, or one folder searched last for the page images the files name)",
    )
    parser.add_argument(
        "--segmentation",
        default=None,
        metavar="FILE_OR_DIR",
        help="read the lines a PAGE-XML or ALTO file gives (a folder: its .xml files, "
        "recursively) on the page image it names, instead of finding them; reading order, "
        "line and region ids come from the file",
    )
    parser.add_argument(
        "--model", "-m", required=True, help="bundle directory (from export-bundle)"
    )
    parser.add_argument(
        "--output", "-o", default=None, help="output directory; JSON Lines to stdout when omitted"
    )
    parser.add_argument(
        "--workers",
        "-j",
        type=int,
        default=None,
        help="workers, each one core: processes on the CPU (default: the bundle's infer.workers)",
    )
    parser.add_argument("--threads", type=int, default=None, help="deprecated name of --workers")
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
        "--format",
        "-f",
        default=None,
        metavar="FORMATS",
        help=f"comma-separated output formats, any of {','.join(OUTPUT_FORMATS)}: jsonl "
        "OUT/predictions.jsonl, txt OUT/text/NAME.txt, page OUT/page/NAME.xml (PAGE-XML 2019), "
        "alto OUT/alto/NAME.xml (ALTO 4.4), hocr OUT/hocr/NAME.hocr; NAME is the image's file "
        f"stem. Default {','.join(DEFAULT_FORMATS)} (with --output; jsonl to stdout without)",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="auto",
        help="auto (default): an image whose shorter side is at least 300 px and whose longer "
        "side is at most 4 times that is a page (its lines are found, ordered and read), "
        "anything else a line; page or line: read every input so",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="open the bundle without checking its files against the sha256 in model.yaml "
        "(for bundles changed on purpose)",
    )
    add_lm_arguments(parser)
    add_geometry_argument(parser)


def bundle_workers(meta: dict) -> int:
    """The bundle's default worker count: `infer.workers` (`Manifest.read` fills it in for
    bundles exported before it)."""
    return int(meta["infer"]["workers"])


def run(args: argparse.Namespace) -> int:
    """Run `effocr infer`; returns 1 when any image failed."""
    # A bad --format is reported before anything is read.
    formats = DEFAULT_FORMATS if args.format is None else parse_formats(args.format)
    if not args.inputs and args.segmentation is None:
        raise EffOCRError("effocr infer: give at least one INPUT (or --segmentation)")
    meta = load_model_yaml(args.model)  # checksums: once, by the Engine below
    if args.threads is not None:
        LOG.warning("effocr infer: --threads is deprecated (it counts workers); use --workers")
    workers = args.workers or args.threads or bundle_workers(meta)
    batch_size = args.batch_size or int(meta["infer"]["batch_size"])
    if args.coco and not args.output:
        raise EffOCRError("--coco needs --output")
    if not args.output and set(formats) != {"jsonl"} and args.format is not None:
        raise EffOCRError(f"--format {args.format}: only jsonl can go to stdout; add --output")
    if args.output:
        check_output_dir(args.output)
    if args.segmentation is not None:
        return _run_segmented(args, meta, workers, batch_size, formats)
    images = expand_inputs(args.inputs)
    if args.output:
        check_inputs_outside(images, Path(args.output))
    engine = _engine(args, workers, batch_size, layout=args.layout)
    if args.layout != "line":
        return _run_pages(args, engine, images, formats)
    try:
        writer = OutputWriter(
            args.output,
            coco=args.coco,
            stream=None if args.output else sys.stdout,
            formats=formats,
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
                _warn_truncated(res.image, res.dropped)
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
    return _outcome(truncated, failed, len(images), writer)


def _engine(args: argparse.Namespace, workers: int, batch_size: int, **layout: str) -> Engine:
    """The `Engine` of `effocr infer`'s options (model, device, checksums, language model)."""
    return Engine(
        args.model,
        workers=workers,
        device=args.device,
        batch_size=batch_size,
        verify=not args.no_verify,
        lm=lm_choice(args.lm),
        lm_weight=args.lm_weight,
        geometry=geometry_choice(args.geometry),
        lexicon_margin=args.lexicon_margin,
        **layout,
    )


def _run_segmented(
    args: argparse.Namespace, meta: dict, workers: int, batch_size: int, formats: Sequence[str]
) -> int:
    """`effocr infer --segmentation`: one page per PAGE-XML/ALTO file, its lines as given."""
    from effocr.formats.segmentation import segmentation_files

    image_dir = None
    if args.inputs:
        if len(args.inputs) != 1 or not Path(args.inputs[0]).is_dir():
            raise EffOCRError(
                "effocr infer --segmentation: the page images are the ones the files name; "
                f"INPUT may only be one folder to search for them, got {' '.join(args.inputs)}"
            )
        image_dir = Path(args.inputs[0])
    files = segmentation_files(args.segmentation)
    if args.output:
        check_inputs_outside([str(f) for f in files], Path(args.output))
    engine = _engine(args, workers, batch_size)
    return _run_pages(
        args, engine, files, formats, engine.iter_segmented(files, image_dir=image_dir)
    )


def _run_pages(
    args: argparse.Namespace,
    engine: Engine,
    images: list,
    formats: Sequence[str],
    results: Iterable[PageResult] | None = None,
) -> int:
    """`effocr infer` with --layout auto or page: pages and lines, one result per input
    (`results`: the pages already under way, as --segmentation reads them)."""
    try:
        writer = OutputWriter(
            args.output,
            coco=args.coco,
            stream=None if args.output else sys.stdout,
            formats=formats,
        )
    except BaseException:
        engine.close()
        raise
    failed = pages = lines = truncated = 0
    start = time.perf_counter()
    complete = False
    try:
        if results is None:
            results = engine.iter_pages(images, show_progress=True)
        for res in results:
            if not res.ok:
                failed += 1
                error = res.error or (res.line_result.error if res.line_result else None)
                LOG.error("%s: %s (skipped)", display_name(res.image), error)
            read = [res.line_result] if res.line_result else [ln.result for ln in res.lines]
            for line in read:
                if line.ok and line.dropped:
                    truncated += 1
                    _warn_truncated(res.image, line.dropped)
            if res.layout == "page":
                pages += 1
                lines += len(res.lines)
                bad = [ln for ln in res.lines if not ln.result.ok]
                for ln in bad:
                    LOG.error("%s: line %s: %s", display_name(res.image), ln.id, ln.result.error)
                failed += bool(bad) and res.error is None
            else:
                lines += 1
            writer.write_page_result(res)
        complete = True
    finally:
        writer.close(complete=complete)
        engine.close()
        if not complete and args.output:
            LOG.error("run failed: nothing written; %s keeps its previous outputs", args.output)
    elapsed = time.perf_counter() - start
    LOG.info(
        "%d inputs (%d pages, %d lines, %d failed) in %.2f s with %d worker(s) on %s",
        len(images),
        pages,
        lines,
        failed,
        elapsed,
        engine.workers,
        "cuda" if engine.cuda else "cpu",
    )
    return _outcome(truncated, failed, len(images), writer)


def _warn_truncated(image: str, dropped: int) -> None:
    LOG.warning(
        "%s: %d detection(s) beyond the line's cap were dropped; its text is "
        "incomplete (raise localizer.detections_per_height or max_detections)",
        display_name(image),
        dropped,
    )


def _outcome(truncated: int, failed: int, inputs: int, writer: OutputWriter) -> int:
    """What a run tells on stderr at its end, and its exit code (1: an image or a file failed)."""
    if truncated:
        print(
            f"effocr infer: warning: {truncated} line(s) lost detections to the per-line cap "
            "(`dropped_detections` in their records)",
            file=sys.stderr,
        )
    if failed:
        print(
            f"effocr infer: {failed} of {inputs} image(s) failed (see the log)",
            file=sys.stderr,
        )
    if writer.failed_writes:
        print(
            f"effocr infer: {writer.failed_writes} output file(s) could not be written "
            "(see errors.jsonl)",
            file=sys.stderr,
        )
    return 1 if failed or writer.failed_writes else 0
