"""Import ground truth (PAGE-XML, ALTO, line folders) into the raw COCO format.

`import_dataset(format, inputs, out_dir, options)` writes, replacing them together:

* ``OUT/lines.json``: the raw COCO JSON (docs/architecture.md): one image per line with its
  `text`; `char` boxes where the source has one glyph box per non-space character, `word`
  boxes where it has words;
* ``OUT/images/``: the line images, cut from the page by the line's polygon (pixels outside
  the polygon, its word and glyph boxes and `margin` pixels around them painted white), turned
  upright by the source's orientation; vertical lines stay vertical;
* ``OUT/import_report.json``: counts, the lines and files left out (file, element id,
  problem), lines clipped to the page, where unit conversions took their resolution.

A file or line that cannot be used is recorded and the rest go on; only when nothing
importable remains does the import fail (and then writes nothing). The inputs are only read.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from effocr.config import DatasetSection
from effocr.data.coco import load_coco
from effocr.document import Box, Page
from effocr.formats.alto import alto_files, read_alto
from effocr.formats.lines import read_line_folder
from effocr.formats.page import page_files, read_mets, read_page
from effocr.formats.source import INVALID, UNTRANSCRIBED, SourceLine, SourcePage
from effocr.utils import EffOCRError, atomic_path, open_rgb

LOG = logging.getLogger(__name__)

FORMATS = ("page", "alto", "lines")
LINES_JSON = "lines.json"
IMAGES_DIR = "images"
REPORT_JSON = "import_report.json"
CATEGORIES = [
    {"id": 1, "name": "char", "supercategory": "text"},
    {"id": 2, "name": "word", "supercategory": "text"},
]
WITHOUT_CHARS = ("keep", "skip")
WHITE = (255, 255, 255)
# What PIL raises for a file that is not a decodable image of a sane size.
IMAGE_ERRORS = (OSError, ValueError, Image.DecompressionBombError)


@dataclass(frozen=True)
class ImportOptions:
    """How sources are read and lines cut (config `dataset.import`, `effocr import` flags)."""

    margin: int
    mask: bool
    text_index: int | None
    alternative_images: bool
    image_dir: str | None
    file_grp: str | None
    dpi: float | None
    without_chars: str

    @classmethod
    def from_config(cls, section: Mapping) -> ImportOptions:
        """From the validated config's `dataset.import` section."""
        return cls(**{k: section[k] for k in cls.__dataclass_fields__})


# ---------------------------------------------------------------------------
# Reading the sources
# ---------------------------------------------------------------------------


def _failed(path: Path, problem: str) -> SourcePage:
    sp = SourcePage(source=path, page=Page(image="", width=0, height=0, error=problem), image=None)
    sp.skip("", problem)
    return sp


def _page_inputs(path: Path, options: ImportOptions) -> tuple[list[Path], Path | None]:
    mets = path / "mets.xml" if path.is_dir() else path
    if options.file_grp is not None:
        if not mets.is_file():
            raise EffOCRError(f"{path}: --file-grp needs a mets.xml (or a folder holding one)")
        return read_mets(mets, options.file_grp)
    if path.is_file() and path.name == "mets.xml":
        raise EffOCRError(f"{path}: a METS file needs --file-grp (e.g. OCR-D-GT-SEG-LINE)")
    return page_files(path), None


def read_sources(
    fmt: str, inputs: list[str | os.PathLike], options: ImportOptions
) -> Iterator[SourcePage]:
    """Every page of the inputs; a file that cannot be read comes back as a failed page.

    Raises:
        EffOCRError: an input that does not exist, an unknown format, a METS without the group.
    """
    if fmt not in FORMATS:
        raise EffOCRError(f"unknown import format {fmt!r} (one of {', '.join(FORMATS)})")
    for given in inputs:
        path = Path(given)
        if not path.exists():
            raise EffOCRError(f"{path}: no such file or folder")
        if fmt == "lines":
            yield from read_line_folder(path)
            continue
        if fmt == "page":
            files, workspace = _page_inputs(path, options)
        else:
            files, workspace = alto_files(path), None
        for f in files:
            try:
                if fmt == "page":
                    yield read_page(
                        f,
                        text_index=options.text_index,
                        image_dir=options.image_dir,
                        workspace=workspace,
                        alternative_images=options.alternative_images,
                    )
                else:
                    yield read_alto(f, dpi=options.dpi, image_dir=options.image_dir)
            except EffOCRError as exc:
                LOG.warning("%s", exc)
                yield _failed(f, str(exc))
            except IMAGE_ERRORS as exc:  # the page image named by the file does not decode
                LOG.warning("%s: %s", f, exc)
                yield _failed(f, f"{f}: page image does not decode: {exc}")


def dataset_lines(dataset: Mapping, stop_at: int) -> int | None:
    """The number of lines of config `dataset`, counted up to `stop_at` (enough to compare).

    A COCO dataset counts its images; ground truth to import (`dataset.format` page, alto,
    lines) counts the lines its readers find, reading files only until `stop_at`. None when
    the dataset is not there (the rule that reads it reports that).
    """
    if dataset["format"] == "coco":
        path = Path(dataset["coco_json"])
        if not path.is_file():
            return None
        return len(load_coco(path).get("images", []))
    inputs = dataset["path"]
    inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
    if not inputs or not all(Path(p).exists() for p in inputs):
        return None
    n = 0
    for source in read_sources(
        dataset["format"], inputs, ImportOptions.from_config(dataset["import"])
    ):
        n += sum(1 for _ in source.page.lines())
        if n >= stop_at:
            break
    return n


# ---------------------------------------------------------------------------
# Cutting lines
# ---------------------------------------------------------------------------


def _union_box(boxes: list[Box]) -> Box:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _rotate_point(x, y, w, h, nw, nh, cos, sin):
    dx, dy = x - w / 2, y - h / 2
    return (nw / 2 + dx * cos - dy * sin, nh / 2 + dx * sin + dy * cos)


@dataclass
class LineCut:
    """A cut line: its image and its glyph and word boxes in the image's pixels."""

    image: Image.Image
    chars: list[Box]
    words: list[Box]
    clipped: bool


def cut_line(page_image: Image.Image, line: SourceLine, margin: int, mask: bool) -> LineCut:
    """Cut `line` out of `page_image` (or take its own image) and make it upright.

    Raises:
        ValueError: the line lies outside the page image (nothing of it is on the page).
    """
    glyph_boxes = [g.bbox for g in line.glyphs]
    word_boxes = [w.bbox for w in line.words]
    outline = _union_box([line.bbox, *glyph_boxes, *word_boxes])
    if line.image is not None:
        # Its own image starts at the top left of the polygon's bounding box (OCR-D).
        with Image.open(line.image) as im:
            im.load()
            source = im.convert("RGB")
        ox, oy = math.floor(line.bbox[0]), math.floor(line.bbox[1])
        x0, y0, x1, y1 = ox, oy, ox + source.width, oy + source.height
        crop = source
        clipped = False
    else:
        W, H = page_image.size
        # The slack keeps a unit conversion's 900.0000001 from widening the crop by a pixel.
        x0 = max(math.floor(outline[0] + 1e-6) - margin, 0)
        y0 = max(math.floor(outline[1] + 1e-6) - margin, 0)
        x1 = min(math.ceil(outline[2] - 1e-6) + 1 + margin, W)
        y1 = min(math.ceil(outline[3] - 1e-6) + 1 + margin, H)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"polygon {_fmt_box(line.bbox)} lies outside the {W}x{H} page image")
        clipped = outline[0] < 0 or outline[1] < 0 or outline[2] > W or outline[3] > H
        crop = page_image.crop((x0, y0, x1, y1))
    if mask:
        keep = Image.new("L", crop.size, 0)
        draw = ImageDraw.Draw(keep)
        shifted = [(x - x0, y - y0) for x, y in line.polygon]
        if len(shifted) >= 3:
            draw.polygon(shifted, fill=255, outline=255)
        else:
            draw.rectangle(_shift(line.bbox, x0, y0), fill=255)
        for b in glyph_boxes + word_boxes:
            draw.rectangle(_shift(b, x0, y0), fill=255)
        if margin > 0:
            keep = keep.filter(ImageFilter.MaxFilter(2 * margin + 1))
        crop = Image.composite(crop, Image.new("RGB", crop.size, WHITE), keep)
    w, h = crop.size
    chars = [_clip(_shift(b, x0, y0), w, h) for b in glyph_boxes]
    words = [_clip(_shift(b, x0, y0), w, h) for b in word_boxes]
    angle = line.orientation % 360
    if angle and not line.vertical:
        # PAGE's orientation is the clockwise turn that makes the content upright; PIL's
        # rotate turns counter-clockwise (multiples of 90 degrees are exact transposes).
        crop = crop.rotate(-angle, expand=True, fillcolor=WHITE, resample=Image.BICUBIC)
        nw, nh = crop.size
        cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))

        def turn(b):
            if b is None:
                return None
            pts = [_rotate_point(x, y, w, h, nw, nh, cos, sin) for x, y in _corners(b)]
            return _clip(_union_box([(p[0], p[1], p[0], p[1]) for p in pts]), nw, nh)

        chars, words = [turn(b) for b in chars], [turn(b) for b in words]
    return LineCut(crop, chars, words, clipped)


def _corners(b: Box) -> list[tuple[float, float]]:
    return [(b[0], b[1]), (b[2], b[1]), (b[2], b[3]), (b[0], b[3])]


def _shift(b: Box, dx: float, dy: float) -> Box:
    return (b[0] - dx, b[1] - dy, b[2] - dx, b[3] - dy)


def _clip(b: Box, w: int, h: int) -> Box | None:
    out = (max(b[0], 0.0), max(b[1], 0.0), min(b[2], float(w)), min(b[3], float(h)))
    return out if out[2] > out[0] and out[3] > out[1] else None


def _fmt_box(b: Box) -> str:
    return "[" + ", ".join(f"{v:g}" for v in b) + "]"


def _check_size(image: Image.Image, sp: SourcePage) -> None:
    """Coordinates are only meaningful on the image they were drawn on (not a resized copy)."""
    declared = (sp.page.width, sp.page.height)
    if declared != (0, 0) and image.size != declared:
        raise ValueError(
            f"image {sp.image} is {image.width}x{image.height} but the file's coordinates are "
            f"for {declared[0]}x{declared[1]}"
        )


def line_file_name(number: int, source: Path, line_id: str) -> str:
    """A line image's file name: unique by its running number, readable by the rest."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{source.name.split('.')[0]}_{line_id}")[:80]
    return f"{number:06d}_{readable}.png"


# ---------------------------------------------------------------------------
# Writing the dataset
# ---------------------------------------------------------------------------


def _char_boxes(line: SourceLine, cut: LineCut) -> tuple[list[Box] | None, str | None]:
    """The char boxes of a line, or None and why they were left out."""
    if not line.glyphs:
        return None, None
    n_text = sum(1 for c in line.text if not c.isspace())
    glyphs = [(g, b) for g, b in zip(line.glyphs, cut.chars, strict=True) if not g.text.isspace()]
    if len(glyphs) != n_text:
        return None, (
            f"{len(glyphs)} Glyph boxes for {n_text} non-space characters of the text: "
            "char boxes left out"
        )
    if any(b is None for _, b in glyphs):
        return None, "a Glyph box lies outside the line image: char boxes left out"
    return [b for _, b in glyphs], None


def _ann(ann_id: int, image_id: int, cat: int, box: Box, text: str) -> dict:
    x0, y0, x1, y1 = (round(v, 2) for v in box)
    w, h = round(x1 - x0, 2), round(y1 - y0, 2)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat,
        "bbox": [x0, y0, w, h],
        "area": round(w * h, 2),
        "iscrowd": 0,
        "text": text,
    }


def import_pages(
    pages: Iterator[SourcePage],
    out_dir: str | os.PathLike,
    options: ImportOptions,
    *,
    fmt: str = "",
    inputs: list[str] | None = None,
) -> dict:
    """Cut every line of `pages` into ``OUT/images`` and write ``OUT/lines.json`` and the report.

    Returns:
        The report (also written as ``OUT/import_report.json``).

    Raises:
        EffOCRError: when no line could be imported (every problem summarised; nothing written).
    """
    out_dir = Path(out_dir)
    images: list[dict] = []
    anns: list[dict] = []
    skipped: list[dict] = []
    clipped: list[dict] = []
    notes: list[dict] = []
    units: dict[str, str] = {}
    n_files = n_with_chars = 0
    with atomic_path(out_dir, is_dir=True) as tmp:
        img_dir = tmp / IMAGES_DIR
        img_dir.mkdir()
        for sp in pages:
            n_files += 1
            skipped += sp.skipped
            notes += sp.notes
            if sp.units:
                units[str(sp.source)] = sp.units
            if sp.page.error is not None or sp.image is None:
                continue
            page_image = None
            try:
                if any(line.image is None for line in sp.page.lines()):
                    page_image = open_rgb(sp.image)
                    _check_size(page_image, sp)
            except IMAGE_ERRORS as exc:
                skipped.append(
                    {"file": str(sp.source), "id": "", "problem": str(exc), "reason": INVALID}
                )
                continue
            for line in sp.page.lines():
                where = {"file": str(sp.source), "id": line.id}
                if not line.text.strip():
                    skipped.append(
                        {**where, "problem": "empty transcription", "reason": UNTRANSCRIBED}
                    )
                    continue
                try:
                    cut = cut_line(page_image, line, options.margin, options.mask)
                except IMAGE_ERRORS as exc:
                    skipped.append({**where, "problem": str(exc), "reason": INVALID})
                    continue
                chars, why = _char_boxes(line, cut)
                if why:
                    notes.append({**where, "problem": why})
                if chars is None and options.without_chars == "skip":
                    skipped.append(
                        {
                            **where,
                            "problem": why or "no Glyph boxes (a transcription only)",
                            "reason": INVALID,
                        }
                    )
                    continue
                if cut.clipped:
                    clipped.append(
                        {**where, "problem": "polygon partly outside the page image: clipped"}
                    )
                image_id = len(images) + 1
                name = line_file_name(image_id, sp.source, line.id)
                cut.image.save(img_dir / name, format="PNG")
                images.append(
                    {
                        "id": image_id,
                        "file_name": name,
                        "width": cut.image.width,
                        "height": cut.image.height,
                        "text": line.text,
                        "source": {"file": str(sp.source), "id": line.id},
                    }
                )
                if chars is not None:
                    n_with_chars += 1
                    texts = [g.text for g in line.glyphs if not g.text.isspace()]
                    for box, text in zip(chars, texts, strict=True):
                        anns.append(_ann(len(anns) + 1, image_id, 1, box, text))
                for word, box in zip(line.words, cut.words, strict=True):
                    if box is not None:
                        anns.append(_ann(len(anns) + 1, image_id, 2, box, word.text))
        if not images:
            first = "; ".join(f"{s['file']} {s['id']}: {s['problem']}" for s in skipped[:5])
            raise EffOCRError(
                f"nothing to import from {n_files} file(s)"
                + (f": {len(skipped)} element(s) left out, e.g. {first}" if skipped else "")
            )
        coco = {"images": images, "annotations": anns, "categories": CATEGORIES}
        (tmp / LINES_JSON).write_text(json.dumps(coco, ensure_ascii=False) + "\n", encoding="utf-8")
        report = {
            "format": fmt,
            "inputs": [str(p) for p in inputs or []],
            "files": n_files,
            "lines": len(images),
            "lines_with_char_boxes": n_with_chars,
            "lines_without_char_boxes": len(images) - n_with_chars,
            "char_boxes": sum(1 for a in anns if a["category_id"] == 1),
            "word_boxes": sum(1 for a in anns if a["category_id"] == 2),
            "skipped": skipped,
            "clipped": clipped,
            "notes": notes,
            "units": units,
            "options": {k: getattr(options, k) for k in ImportOptions.__dataclass_fields__},
        }
        (tmp / REPORT_JSON).write_text(
            json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    for s in skipped:
        if s.get("reason") != UNTRANSCRIBED:
            LOG.warning("left out: %s %s: %s", s["file"], s["id"], s["problem"])
    LOG.info(
        "imported %d lines (%d with char boxes) from %d file(s) into %s; %d left out",
        len(images),
        n_with_chars,
        n_files,
        out_dir,
        len(skipped),
    )
    return report


def import_dataset(
    fmt: str, inputs: list[str | os.PathLike], out_dir: str | os.PathLike, options: ImportOptions
) -> dict:
    """Read `inputs` as `fmt` (page, alto, lines) and write the raw COCO dataset to `out_dir`."""
    out = Path(out_dir).resolve()
    for given in inputs:
        src = Path(given).resolve()
        if src == out or out in src.parents:
            raise EffOCRError(
                f"{given}: lies inside the output {out_dir}, which the import replaces"
            )
    return import_pages(
        read_sources(fmt, inputs, options),
        out_dir,
        options,
        fmt=fmt,
        inputs=[str(p) for p in inputs],
    )


def import_dataset_from_config(out_dir: str | os.PathLike, *, dataset: DatasetSection) -> dict:
    """`import_dataset` of the config section `dataset`: `path` (a file or folder, or a list
    of them) read as `format` with the options of `import`."""
    paths = dataset.path
    inputs = [paths] if isinstance(paths, str) else list(paths or [])
    return import_dataset(
        dataset.format, inputs, out_dir, ImportOptions.from_config(dataset.import_)
    )


# ---------------------------------------------------------------------------
# Command line: effocr import
# ---------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr import`; defaults are the config schema's `dataset.import`."""
    from effocr.config import load_config

    d = load_config(None)["dataset"]["import"]
    parser.add_argument("format", choices=FORMATS, help="what the inputs are")
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="files or folders (page: .xml files, folders of them, or a mets.xml with "
        "--file-grp; alto: .xml files or folders; lines: folders of NAME.png + NAME.gt.txt)",
    )
    parser.add_argument(
        "--output", required=True, help="folder for lines.json, images/ and the report"
    )
    parser.add_argument(
        "--image-dir", default=d["image_dir"], help="last folder searched for page images"
    )
    parser.add_argument(
        "--file-grp", default=d["file_grp"], help="METS file group of the PAGE files"
    )
    parser.add_argument(
        "--text-index",
        type=int,
        default=d["text_index"],
        help="PAGE TextEquiv @index that is the ground truth (default: the lowest, or the first)",
    )
    parser.add_argument(
        "--dpi",
        type=float,
        default=d["dpi"],
        help="image resolution for ALTO mm10/inch1200 (default: the image's own)",
    )
    parser.add_argument(
        "--margin", type=int, default=d["margin"], help="pixels kept around the line polygon"
    )
    parser.add_argument(
        "--no-mask",
        dest="mask",
        action="store_false",
        default=d["mask"],
        help="keep the pixels outside the line polygon",
    )
    parser.add_argument(
        "--no-alternative-images",
        dest="alternative_images",
        action="store_false",
        default=d["alternative_images"],
        help="cut lines from the original page image even where PAGE names an AlternativeImage",
    )
    parser.add_argument(
        "--without-chars",
        choices=WITHOUT_CHARS,
        default=d["without_chars"],
        help="lines without char boxes: keep them (text only) or leave them out",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when any line or file was left out (the output is still written)",
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of `effocr import`."""
    options = ImportOptions(
        margin=args.margin,
        mask=args.mask,
        text_index=args.text_index,
        alternative_images=args.alternative_images,
        image_dir=args.image_dir,
        file_grp=args.file_grp,
        dpi=args.dpi,
        without_chars=args.without_chars,
    )
    if options.margin < 0:
        raise EffOCRError(f"--margin {options.margin}: must be 0 or more")
    report = import_dataset(args.format, args.inputs, args.output, options)
    bad = [s for s in report["skipped"] if s.get("reason") != UNTRANSCRIBED]
    print(
        f"{args.output}: {report['lines']} lines ({report['lines_with_char_boxes']} with char "
        f"boxes) from {report['files']} file(s); {len(report['skipped'])} left out "
        f"({len(bad)} with problems), see {Path(args.output) / REPORT_JSON}"
    )
    return 1 if args.strict and bad else 0
