"""Line images in, results out: what `effocr infer` and `effocr evaluate` read and write.

Inputs: `IMAGE_SUFFIXES` (the one list of line image suffixes, also `effocr.evaluate`'s),
`expand_inputs` (files, folders, glob patterns, ``@list.txt``), `glob_files`, `decode_image`
(a path or an array -> uint8 pixels, or an `EffOCRError` naming the problem), `display_name`.
Outputs: `OutputWriter` (predictions.jsonl, text/<stem>.txt, predictions_coco.json and the
page formats page/, alto/, hocr/ of `--format`, replaced together), `OUTPUT_FORMATS`,
`parse_formats`, `check_output_dir`, `check_inputs_outside`, `json_line`. A new input or output
format goes here (docs/architecture.md, "Where a new thing goes"). No ONNX Runtime, no torch.
"""

from __future__ import annotations

import fnmatch
import glob as globlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from effocr import artifacts
from effocr.suffixes import IMAGE_SUFFIXES  # re-exported: infer and evaluate name it here
from effocr.utils import EffOCRError, flatten_alpha

if TYPE_CHECKING:
    from effocr.document import Page
    from effocr.pipeline import LineResult

ImageInput = str | os.PathLike | np.ndarray

# What a run writes into its output folder; a later run replaces all of them together.
RUN_OUTPUTS = (
    artifacts.PREDICTIONS,
    artifacts.TEXT_DIR,
    artifacts.PREDICTIONS_COCO,
    "page",
    "alto",
    "hocr",
    "errors.jsonl",
    ".effocr-run.json",
)
# Lists what the last run wrote, when it wrote more than the first three outputs (which runs
# have always replaced). The others replace an existing path only when it is listed there: a
# user's own page/ folder is never taken for a previous run's.
OUTPUTS_MARKER = ".effocr-run.json"
LEGACY_OUTPUTS = (artifacts.PREDICTIONS, artifacts.TEXT_DIR, artifacts.PREDICTIONS_COCO)

# `effocr infer --format`: predictions.jsonl, or one file per image (`PAGE_FORMATS`).
OUTPUT_FORMATS = ("jsonl", "txt", "page", "alto", "hocr")
# Without --format: what a run wrote before there was a choice.
DEFAULT_FORMATS = ("jsonl", "txt")


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
        if arr.ndim == 3 and arr.shape[2] == 4 and (arr[:, :, 3] == 255).all():
            arr = arr[:, :, :3]  # opaque: nothing to composite, as in `flatten_alpha`
        elif arr.ndim == 3 and arr.shape[2] == 4:
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
# Outputs
# ---------------------------------------------------------------------------


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


def parse_formats(value: str) -> tuple[str, ...]:
    """``--format`` (comma-separated `OUTPUT_FORMATS`) as a tuple without repeats.

    Raises:
        EffOCRError: an unknown or empty name.
    """
    names = [v.strip().lower() for v in value.split(",")]
    for name in names:
        if name not in OUTPUT_FORMATS:
            raise EffOCRError(
                f"--format {value!r}: unknown format {name!r}; "
                f"choose one or more of {','.join(OUTPUT_FORMATS)} (comma-separated)"
            )
    return tuple(dict.fromkeys(names))


class OutputWriter:
    """Writes predictions.jsonl, text/<stem>.txt and (optionally) predictions_coco.json.

    `formats` (`OUTPUT_FORMATS`) chooses the files: ``jsonl`` predictions.jsonl, ``txt``
    text/<stem>.txt, ``page`` page/<stem>.xml (PAGE-XML 2019), ``alto`` alto/<stem>.xml (ALTO
    4.4), ``hocr`` hocr/<stem>.hocr, all of an image under the same stem (its file name's,
    ``__2``... added when stems repeat). Without ``jsonl``, a failed image's error record goes
    to errors.jsonl (written only when one fails).

    Everything is written into a hidden staging folder inside the output folder; when the run
    ends, the outputs of any previous run (`RUN_OUTPUTS`) are replaced by this run's, all of
    them, so a folder never mixes two runs. An interrupted or failed run (``close(complete=
    False)``) removes its staging folder and leaves the previous run's outputs as they were.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike | None,
        *,
        coco: bool = False,
        stream: TextIO | None = None,
        formats: Sequence[str] = DEFAULT_FORMATS,
    ) -> None:
        from effocr.formats.serialize import PAGE_FORMATS

        self.out_dir = check_output_dir(out_dir) if out_dir is not None else None
        self.stream = stream
        self.coco = coco
        unknown = sorted(set(formats) - set(OUTPUT_FORMATS))
        if unknown:
            raise EffOCRError(f"unknown output format(s) {unknown}; known: {OUTPUT_FORMATS}")
        self.formats = tuple(formats)
        # Formats written from a `Page` (all but jsonl), in `OUTPUT_FORMATS` order.
        self.page_formats = [
            PAGE_FORMATS[f] for f in OUTPUT_FORMATS if f in self.formats and f in PAGE_FORMATS
        ]
        self.failed_writes = 0
        self._names: set[str] = set()
        self._errors: TextIO | None = None
        self._previous: set[str] = set()
        if self.out_dir is not None:
            self._previous = previous_outputs(self.out_dir)
            may_write = [f.folder for f in self.page_formats]
            if "jsonl" not in self.formats:
                may_write.append("errors.jsonl")
            check_replaceable(self.out_dir, may_write, self._previous)
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
            for fmt in self.page_formats:
                (self._stage / fmt.folder).mkdir()
            if "jsonl" in self.formats:
                self._fh = open(self._stage / artifacts.PREDICTIONS, "w", encoding="utf-8")

    def _stem(self, image: str) -> str:
        stem = Path(image).stem or "line"
        name, n = stem, 1
        # `line.png` twice, or beside `line__2.png`: every image gets a name of its own.
        while name in self._names:
            n += 1
            name = f"{stem}__{n}"
        self._names.add(name)
        return name

    def write(self, res: LineResult) -> None:
        """Write one line's result."""
        line = json_line(res.to_dict())
        if self._fh is not None:
            self._fh.write(line)
        if self.stream is not None:
            self.stream.write(line)
        if self._stage is not None and not res.ok:
            self._record_error(res.to_dict())
        if self._stage is not None and res.ok and self.page_formats:
            from effocr.formats.results import page_from_result

            self.write_page(page_from_result(res))
        if self.coco and res.ok:
            self._add_coco(res)

    def write_page(self, page: Page) -> None:
        """Write one page (a read image) in the page formats (all of `formats` but jsonl).

        A format that cannot write this page is recorded in errors.jsonl (`failed_writes`
        counts them) and the others go on.
        """
        if self._stage is None or not self.page_formats:
            return
        if page.error is not None:
            self._record_error({"image": page.image, "text": None, "error": page.error})
            return
        stem = self._stem(page.image)
        for fmt in self.page_formats:
            folder = self.out_dir / fmt.folder
            try:
                # As kraken and Transkribus write it: the image relative to the file's folder.
                data = fmt.write(replace(page, image=_relative_to(page.image, folder)))
            except Exception as exc:  # one page's odd content must not end the run
                self.failed_writes += 1
                problem = f"cannot write {fmt.name}: {type(exc).__name__}: {exc}"
                self._record_error({"image": page.image, "format": fmt.name, "error": problem})
                continue
            (self._stage / fmt.folder / f"{stem}{fmt.suffix}").write_bytes(data)

    def _record_error(self, record: dict) -> None:
        # predictions.jsonl already holds a failed image's record.
        if self._fh is not None and "format" not in record:
            return
        if self._errors is None:
            self._errors = open(self._stage / "errors.jsonl", "w", encoding="utf-8")
        self._errors.write(json_line(record))

    def write_page_result(self, res: Any) -> None:
        """Write one input read by `effocr.pages.PagePipeline`: a page gives a predictions.jsonl
        record per line (page coordinates, reading order) and its page formats (text, PAGE,
        ALTO, hOCR: `write_page`); an input read as a line is written as `write` writes it."""
        if res.line_result is not None:
            self.write(res.line_result)
            return
        for record in res.records():
            line = json_line(record)
            if self._fh is not None:
                self._fh.write(line)
            if self.stream is not None:
                self.stream.write(line)
        if self._stage is not None and self.page_formats:
            self.write_page(res.to_document())

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
        for fh in (self._fh, self._errors):
            if fh is not None:
                fh.close()
        self._fh = self._errors = None
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
                    (stage / artifacts.PREDICTIONS_COCO).write_text(text + "\n", encoding="utf-8")
                written = [n for n in RUN_OUTPUTS if (stage / n).exists()]
                if set(written) - set(LEGACY_OUTPUTS):
                    marker = {"written_by": "effocr infer", "outputs": written}
                    (stage / OUTPUTS_MARKER).write_text(json.dumps(marker) + "\n", "utf-8")
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
            ours = name in self._previous or (stage / name).exists()
            if ours and (target.exists() or target.is_symlink()):
                os.replace(target, old / name)
        for name in RUN_OUTPUTS:
            if (stage / name).exists():
                os.replace(stage / name, self.out_dir / name)


def previous_outputs(out_dir: Path) -> set[str]:
    """The `RUN_OUTPUTS` in `out_dir` that a previous run wrote (and this run may replace).

    Runs have always written the first three (`LEGACY_OUTPUTS`); the others count only when
    the last run listed them in `OUTPUTS_MARKER`.
    """
    try:
        listed = json.loads((out_dir / OUTPUTS_MARKER).read_text("utf-8"))["outputs"]
        listed = {str(n) for n in listed}
    except (OSError, ValueError, KeyError, TypeError):
        listed = set()
    return {*LEGACY_OUTPUTS, OUTPUTS_MARKER, *(listed & set(RUN_OUTPUTS))}


def _relative_to(image: str, folder: Path) -> str:
    """`image` (a path as given) relative to `folder`, or absolute where no relative path is."""
    try:
        return os.path.relpath(os.path.abspath(image), os.path.abspath(folder))
    except ValueError:  # another drive (Windows)
        return os.path.abspath(image)


def check_replaceable(out_dir: Path, names: Iterable[str], previous: set[str]) -> None:
    """Refuse to write `names` into `out_dir` where one exists that no run wrote.

    Raises:
        EffOCRError: e.g. OUT/page/ holds the user's own PAGE files.
    """
    for name in names:
        path = out_dir / name
        if name not in previous and (path.exists() or path.is_symlink()):
            raise EffOCRError(
                f"{path}: exists and no effocr infer run wrote it (not in {OUTPUTS_MARKER}); "
                "this run would replace it: move it away or use another --output"
            )


def check_inputs_outside(images: Sequence[str], out_dir: Path) -> None:
    """Refuse inputs inside the outputs a run replaces (they would be deleted with them)."""
    owned = [(out_dir / name).resolve() for name in RUN_OUTPUTS]
    for image in images:
        path = Path(image).resolve()
        if any(path == o or o in path.parents for o in owned):
            raise EffOCRError(
                f"{display_name(image)}: an input inside {out_dir}'s run outputs "
                f"({', '.join(RUN_OUTPUTS)}), which this run replaces; use another --output"
            )
