"""Evaluate an exported bundle (and Tesseract) on sets of transcribed line images.

An evaluation set is one of:

* ``coco``: a COCO JSON whose `images` carry the line `text` (boxes are not needed), with the
  folder its `file_name`s are relative to;
* ``gt_dir``: a folder of line images with transcriptions beside them, the OCR-D / Calamari /
  kraken convention: ``NAME.png`` (or ``NAME.bin.png``, ``.nrm.png``, ``.jpg``, ``.tif``...)
  plus ``NAME.gt.txt``;
* ``page``: PAGE-XML files (one file or a folder); each `TextLine` is cropped to the bounding
  box of its `Coords` polygon and scored against its `TextEquiv/Unicode`.

`evaluate_set` writes into its output folder: `metrics.json` (both systems, pooled over the
set and per line orientation), `lines.csv` (per line: image, reference, hypothesis, distance,
cer, and Tesseract's), `confusions.csv` and `predictions.jsonl` (EffOCR's characters with
boxes, for the report's gallery).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from effocr.artifacts import EVAL_OUTPUTS
from effocr.config import EvaluateSection, RunSection, section_defaults
from effocr.formats.lines import (
    GT_IMAGE_SUFFIXES,
    GT_SUFFIX,
    NO_IMAGE,
    gt_files,
    gt_image,
    read_gt_text,
)
from effocr.formats.page import page_files, read_page
from effocr.formats.source import UNTRANSCRIBED
from effocr.geometry import add_geometry_argument, geometry_choice
from effocr.lm import add_lm_arguments, lm_choice
from effocr.metrics import LineScore, ScoreOptions, confusions, pool, score_line
from effocr.metrics import cer as cer  # re-exported: docs/architecture.md names them here
from effocr.metrics import wer as wer
from effocr.profiles import get_profile
from effocr.tesseract import run_tesseract, tesseract_status
from effocr.utils import EffOCRError, atomic_path, open_rgb, read_json, write_json

LOG = logging.getLogger(__name__)

SET_TYPES = ("coco", "gt_dir", "page")


@dataclass(frozen=True)
class EvalLine:
    """One transcribed line: an image file and its reference text."""

    id: str
    image: Path
    reference: str
    # True character boxes `(char, (x0, y0, x1, y1))` in reading order, where the set has them
    # (COCO): `effocr.diagnose` then attributes errors from the boxes too.
    char_boxes: tuple | None = None


@dataclass
class EvalSet:
    """A loaded evaluation set; `skipped` lists lines left out and why (``{id, image, problem}``)."""

    name: str
    type: str
    path: Path
    lines: list[EvalLine]
    skipped: list[dict] = field(default_factory=list)


EMPTY_REFERENCE = "empty transcription: nothing to score against (line skipped)"


def _skip(skipped: list[dict] | None, line_id: str, image: Path, problem: str) -> None:
    # An empty reference would score any output as 100 % wrong (or CER 0 for an empty set);
    # Calamari and dinglehopper leave such lines out, and so do we, saying which.
    LOG.warning("%s (%s): %s", line_id, image, problem)
    if skipped is not None:
        skipped.append({"id": line_id, "image": str(image), "problem": problem})


# ---------------------------------------------------------------------------
# Set specifications and loaders
# ---------------------------------------------------------------------------


def infer_set_type(path: str | os.PathLike) -> str:
    """Guess a set's type: `.json` -> coco, `.xml` or a folder of XML -> page, else gt_dir."""
    p = Path(path)
    if p.suffix.lower() == ".json":
        return "coco"
    if p.suffix.lower() == ".xml":
        return "page"
    if p.is_dir() and not any(p.glob(f"*{GT_SUFFIX}")) and any(p.glob("*.xml")):
        return "page"
    return "gt_dir"


def parse_set_spec(text: str) -> dict:
    """Parse the command line's ``NAME=PATH[:TYPE[:IMAGE_DIR]]`` into a set spec dict."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise EffOCRError(f"--set {text!r}: expected NAME=PATH[:TYPE[:IMAGE_DIR]]")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise EffOCRError(f"--set {text!r}: the name may use only letters, digits, '_', '.', '-'")
    parts = rest.split(":")
    spec: dict[str, Any] = {"name": name, "path": parts[0]}
    if len(parts) > 1 and parts[1]:
        spec["type"] = parts[1]
    if len(parts) > 2 and parts[2]:
        spec["image_dir"] = ":".join(parts[2:])
    return spec


def load_coco_set(
    json_path: str | os.PathLike, image_dir: str | os.PathLike | None
) -> list[EvalLine]:
    """Lines of a COCO JSON whose images have `text` (annotations are not needed).

    Args:
        json_path: The COCO JSON.
        image_dir: Folder the `file_name`s are relative to; None uses `images/` beside the
            JSON when it exists, else the JSON's folder.
    """
    json_path = Path(json_path)
    coco = read_json(json_path)
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise EffOCRError(f"{json_path}: a COCO JSON with an `images` list is required")
    if image_dir is None:
        image_dir = json_path.parent / "images"
        if not image_dir.is_dir():
            image_dir = json_path.parent
    image_dir = Path(image_dir)
    boxes = _coco_char_boxes(coco)
    lines = []
    for i, img in enumerate(coco["images"]):
        if not isinstance(img, dict) or "file_name" not in img:
            raise EffOCRError(f"{json_path}: images[{i}] has no `file_name`")
        text = img.get("text")
        if not isinstance(text, str):
            raise EffOCRError(
                f"{json_path}: image {img.get('id', i)} ({img['file_name']}) has no `text` "
                "transcription"
            )
        path = image_dir / img["file_name"]
        if not path.is_file():
            raise EffOCRError(f"{json_path}: image {img.get('id', i)}: {path} does not exist")
        lines.append(
            EvalLine(
                id=str(img["file_name"]),
                image=path,
                reference=text,
                char_boxes=boxes.get(img.get("id")),
            )
        )
    return lines


def _coco_char_boxes(coco: dict) -> dict:
    """``{image id: true char boxes}`` for the images whose char boxes match their text.

    Boxes are optional in an evaluation set: a set without a char category, or an image whose
    box count differs from its text, is scored all the same, only without box-level diagnosis.
    """
    from effocr.data.coco import index_coco, line_chars

    # An evaluation set is no `dataset`: its COCO is read with the schema's category names.
    dataset = section_defaults("dataset")
    try:
        index = index_coco(coco, dataset["char_category"], dataset["word_category"])
    except (EffOCRError, KeyError, TypeError, ValueError):
        return {}
    out = {}
    for image in index.images.values():
        try:
            chars = line_chars(index, image)
        except (EffOCRError, KeyError, TypeError, ValueError):
            continue
        out[image["id"]] = tuple(
            (
                c,
                (
                    a["bbox"][0],
                    a["bbox"][1],
                    a["bbox"][0] + a["bbox"][2],
                    a["bbox"][1] + a["bbox"][3],
                ),
            )
            for c, a in chars
        )
    return out


def load_gt_dir(folder: str | os.PathLike, skipped: list[dict] | None = None) -> list[EvalLine]:
    """Lines of a folder of ``NAME.<image>`` + ``NAME.gt.txt`` pairs (searched recursively).

    Read by `effocr.formats.lines`, the importer's reader. A ``.gt.txt`` that is empty (or only
    whitespace) is no line of the set: it is left out and, when `skipped` is given, appended
    to it as ``{id, image, problem}``.
    """
    folder = Path(folder)
    lines = []
    for gt in gt_files(folder):
        image = gt_image(gt)
        if image is None:
            raise EffOCRError(f"{gt}: {NO_IMAGE} (tried {', '.join(GT_IMAGE_SUFFIXES)})")
        text = read_gt_text(gt)
        line_id = str(gt.relative_to(folder))[: -len(GT_SUFFIX)]
        if not text.strip():
            _skip(skipped, line_id, image, EMPTY_REFERENCE)
            continue
        lines.append(EvalLine(id=line_id, image=image, reference=text))
    return lines


def _crop_name(number: int, xml_name: str, line_id: str) -> str:
    """A crop's file name: unique by its running number, readable by the rest.

    Line ids are only unique within a file (if that), the same file name occurs in several
    folders, and an id may hold ``/`` or other characters a file name cannot.
    """
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{Path(xml_name).stem}_{line_id}")[:80]
    return f"{number:06d}_{readable}.png"


def load_page_xml(
    path: str | os.PathLike, crop_dir: str | os.PathLike, skipped: list[dict] | None = None
) -> list[EvalLine]:
    """Lines of PAGE-XML file(s): each TextLine cropped to its polygon's bounding box.

    Read by `effocr.formats.page` (the importer's reader: safe XML, the TextEquiv with the
    lowest @index); lines without any TextEquiv are not scored. Any other problem of a file
    or line is an error: an evaluation set is scored whole or not at all.

    Args:
        path: A PAGE-XML file or a folder of them.
        crop_dir: Where the line crops are written (PNG, `_crop_name`); it is emptied first so
            that no crop of an earlier run remains. The source images are not modified.
        skipped: Receives ``{id, image, problem}`` for lines whose ground truth is empty.
    """
    path, crop_dir = Path(path), Path(crop_dir)
    files = page_files(path)
    if crop_dir.exists():
        shutil.rmtree(crop_dir)
    crop_dir.mkdir(parents=True, exist_ok=True)
    lines: list[EvalLine] = []
    for xml in files:
        xml_name = str(xml.relative_to(path)) if path.is_dir() else xml.name
        sp = read_page(xml, alternative_images=False)
        if sp.page.error is not None:
            raise EffOCRError(sp.page.error)
        for s in sp.skipped:
            if s["reason"] != UNTRANSCRIBED:
                raise EffOCRError(f"{xml}: TextLine {s['id']}: {s['problem']}")
        page_img = open_rgb(sp.image)
        for line in sp.page.lines():
            x0, y0, x1, y1 = line.bbox
            box = (
                max(int(x0), 0),
                max(int(y0), 0),
                min(int(x1) + 1, page_img.width),
                min(int(y1) + 1, page_img.height),
            )
            if box[2] <= box[0] or box[3] <= box[1]:
                raise EffOCRError(f"{xml}: TextLine {line.id}: empty box {box}")
            if not line.text.strip():
                _skip(skipped, f"{xml_name}#{line.id}", xml, EMPTY_REFERENCE)
                continue
            crop = crop_dir / _crop_name(len(lines) + 1, xml_name, line.id)
            page_img.crop(box).save(crop)
            lines.append(EvalLine(id=f"{xml_name}#{line.id}", image=crop, reference=line.text))
    if not lines:
        raise EffOCRError(f"{path}: no TextLine with TextEquiv/Unicode ground truth")
    return lines


def load_eval_set(spec: dict, work_dir: str | os.PathLike) -> EvalSet:
    """Load a set from its spec ``{name, path, type?, image_dir?}``.

    Args:
        spec: The set spec (config `evaluate.sets` entry or `parse_set_spec` output).
        work_dir: Scratch folder (PAGE-XML line crops go under it).
    """
    path = Path(spec["path"])
    if not path.exists():
        raise EffOCRError(f"evaluation set {spec['name']!r}: {path} does not exist")
    kind = spec.get("type") or infer_set_type(path)
    if kind not in SET_TYPES:
        raise EffOCRError(
            f"evaluation set {spec['name']!r}: unknown type {kind!r} (one of {', '.join(SET_TYPES)})"
        )
    skipped: list[dict] = []
    if kind == "coco":
        lines = load_coco_set(path, spec.get("image_dir"))
    elif kind == "gt_dir":
        lines = load_gt_dir(path, skipped)
    else:
        lines = load_page_xml(path, Path(work_dir) / "line_images", skipped)
    if not lines:
        why = f" ({len(skipped)} skipped: {skipped[0]['problem']})" if skipped else ""
        raise EffOCRError(f"evaluation set {spec['name']!r}: {path} has no lines{why}")
    return EvalSet(name=spec["name"], type=kind, path=path, lines=lines, skipped=skipped)


def workflow_set_spec(name: str, evaluate_config: dict, test_json: str, image_dir: str) -> dict:
    """The spec of evaluation set `name` in the workflow: "test" is the test split.

    Args:
        name: Set name (the `evaluate` rule's wildcard).
        evaluate_config: The config's `evaluate` section (its `sets`).
        test_json: The test split's COCO JSON.
        image_dir: The dataset's image folder (the split's `file_name`s are relative to it).
    """
    if name == "test":
        if any(spec["name"] == "test" for spec in evaluate_config["sets"]):
            raise EffOCRError("evaluate.sets: the name 'test' is taken by the test split")
        return {"name": "test", "path": test_json, "type": "coco", "image_dir": image_dir}
    for spec in evaluate_config["sets"]:
        if spec["name"] == name:
            return dict(spec)
    raise EffOCRError(f"unknown evaluation set {name!r}")


def set_input_files(spec: dict) -> list[str]:
    """The files of a set, as workflow inputs: adding or editing a line reruns its evaluation.

    A folder (gt_dir, PAGE-XML) lists every file under it; a COCO set is its JSON.
    """
    path = Path(spec["path"])
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*") if p.is_file())
    return [str(path)]


# ---------------------------------------------------------------------------
# Running the systems
# ---------------------------------------------------------------------------


def run_effocr(
    bundle_dir: str | os.PathLike,
    images: list[Path],
    *,
    workers: int | None = None,
    device: str = "cpu",
    batch_size: int | None = None,
    verify: bool = True,
    lm: bool | None = None,
    lm_weight: float | None = None,
    geometry: bool | None = None,
    lexicon_margin: float | None = None,
) -> tuple[list[dict], float]:
    """Run the bundle on line images, as `effocr infer` does; returns dict results and seconds.

    The seconds cover inference only (images read, localised, recognised), not model loading.
    `verify`: check the bundle's files against model.yaml's sha256 (`Engine(verify=...)`).
    `lm`, `lm_weight`, `lexicon_margin`: the language model re-ranking and its lexicon
    (`Engine(lm=..., lm_weight=..., lexicon_margin=...)`); `geometry`: `Engine(geometry=...)`.
    """
    from effocr.infer import Engine

    kwargs: dict[str, Any] = {
        "workers": workers,
        "device": device,
        "verify": verify,
        "lm": lm,
        "lm_weight": lm_weight,
        "geometry": geometry,
        "lexicon_margin": lexicon_margin,
    }
    if batch_size:
        kwargs["batch_size"] = batch_size
    with Engine(bundle_dir, **kwargs) as engine:
        engine.start()  # worker processes load the bundle before the clock starts
        start = time.perf_counter()
        results = engine.infer([str(p) for p in images])
        seconds = time.perf_counter() - start
    out = []
    for image, res in zip(images, results, strict=True):
        d = res.to_dict()
        d["image"] = str(image)
        out.append(d)
    return out, seconds


def geometry_used(bundle_dir: str | os.PathLike, geometry: bool | None) -> bool:
    """Whether the run decided `effocr.geometry`'s label pairs by the glyph boxes."""
    from effocr.bundle import Manifest
    from effocr.pipeline import geometry_enabled

    return geometry_enabled(Manifest.read(bundle_dir, verify=False).to_dict(), geometry)


def lm_used(
    bundle_dir: str | os.PathLike,
    lm: bool | None,
    lm_weight: float | None,
    lexicon_margin: float | None = None,
) -> dict:
    """Whether the run re-ranked with the bundle's language model, and its settings."""
    from effocr.bundle import Manifest
    from effocr.lm import lm_settings

    section = Manifest.read(bundle_dir, verify=False).lm
    settings = lm_settings(
        section, lm, lm_weight, source=str(bundle_dir), lexicon_margin=lexicon_margin
    )
    return {"enabled": False} if settings is None else {"enabled": True, **settings}


def bundle_language(bundle_dir: str | os.PathLike) -> str | None:
    """The language profile name written in the bundle's `model.yaml`, if any.

    Raises:
        EffOCRError: for a `model.yaml` that is there but not a valid manifest.
    """
    from effocr.bundle import MANIFEST, Manifest

    if not (Path(bundle_dir) / MANIFEST).is_file():
        return None
    return Manifest.read(bundle_dir, verify=False).language


def _is_vertical(image: Path, allows_vertical: bool | None = None) -> bool:
    """Whether a line image is read top to bottom (`effocr.data.coco.line_is_vertical`).

    `allows_vertical` is whether vertical lines occur (the profile's): False rules them out.
    """
    from PIL import Image

    from effocr.data.coco import line_is_vertical

    with Image.open(image) as im:
        return line_is_vertical(im.height, im.width, allows_vertical)


def tesseract_baseline(
    lines: list[EvalLine],
    lang: str,
    enabled: bool,
    *,
    keep_spaces: bool = True,
    allows_vertical: bool | None = None,
) -> dict:
    """Tesseract's texts and timing on `lines`, or why it could not run.

    Horizontal lines use ``--psm 7`` (one text line); vertical ones (taller than wide) use
    ``--psm 5`` (one vertical block) and the ``<lang>_vert`` model when it is installed.
    With `allows_vertical` False (the profile has no vertical text, e.g. English) every line is
    horizontal: a one-letter line taller than wide is still one text line.
    With `keep_spaces` False (languages written without spaces, e.g. Japanese) whitespace is
    removed from Tesseract's output, which puts spaces between CJK characters.
    """
    if not enabled:
        return {
            "status": {
                "available": False,
                "reason": "disabled in the configuration (evaluate.tesseract: false)",
                "lang": lang,
            }
        }
    status = tesseract_status(lang)
    if not status.available:
        LOG.warning("Tesseract baseline skipped: %s", status.reason)
        return {"status": status.to_dict()}
    texts: list[str | None] = [None] * len(lines)
    errors: dict[int, str] = {}
    seconds = 0.0
    flags: list[bool | None] = []
    for i, line in enumerate(lines):
        try:
            flags.append(_is_vertical(line.image, allows_vertical))
        except Exception as exc:  # noqa: BLE001 - whatever PIL raises, it is this line's problem
            # Not given to Tesseract (which would fail the whole batch); scored as no output.
            errors[i] = f"cannot read the line image: {type(exc).__name__}: {exc}"
            LOG.warning("Tesseract baseline: %s (%s): %s", line.id, line.image, errors[i])
            flags.append(None)
    for flag, psm in ((False, 7), (True, 5)):
        idx = [i for i, v in enumerate(flags) if v == flag]
        if not idx:
            continue
        run_lang = lang
        if flag and tesseract_status(f"{lang}_vert").available:
            run_lang = f"{lang}_vert"  # e.g. jpn_vert: Tesseract's model for vertical text
        got, secs = run_tesseract([lines[i].image for i in idx], run_lang, psm=psm)
        seconds += secs
        for i, text in zip(idx, got, strict=True):
            texts[i] = text if keep_spaces else re.sub(r"\s+", "", text)
    out = {"status": status.to_dict(), "texts": texts, "seconds": seconds}
    if errors:
        out["errors"] = {lines[i].id: msg for i, msg in errors.items()}
    return out


# ---------------------------------------------------------------------------
# Scoring and writing
# ---------------------------------------------------------------------------


ORIENTATIONS = ("horizontal", "vertical")


def line_orientations(
    lines: list[EvalLine], allows_vertical: bool | None = None
) -> list[str | None]:
    """``horizontal`` or ``allows_vertical`` per line (see `_is_vertical`); None when unreadable."""
    out: list[str | None] = []
    for line in lines:
        try:
            out.append(ORIENTATIONS[_is_vertical(line.image, allows_vertical)])
        except Exception:  # noqa: BLE001 - an unreadable image has no orientation (OCR failed too)
            out.append(None)
    return out


def by_orientation(scores: list[LineScore], orientations: list[str | None]) -> dict:
    """Pooled lines, ref_chars, char_errors, CER and WER per orientation that occurs."""
    out = {}
    for name in ORIENTATIONS:
        group = [s for s, o in zip(scores, orientations, strict=True) if o == name]
        if group:
            p = pool(group)
            out[name] = {
                "lines": p.lines,
                "ref_chars": p.ref_chars,
                "char_errors": p.char_errors,
                "cer": p.cer,
                "wer": p.wer,
            }
    return out


def _system_metrics(
    scores: list[LineScore], seconds: float | None, orientations: list[str | None]
) -> dict:
    m = pool(scores).to_dict()
    m["by_orientation"] = by_orientation(scores, orientations)
    if seconds is not None:
        m["seconds"] = round(seconds, 4)
        m["lines_per_second"] = round(len(scores) / seconds, 3) if seconds > 0 else None
    return m


def write_results(
    eval_set: EvalSet,
    hypotheses: list[str | None],
    out_dir: str | os.PathLike,
    *,
    options: ScoreOptions | None = None,
    seconds: float | None = None,
    predictions: list[dict] | None = None,
    tesseract: dict | None = None,
    extra: dict | None = None,
    allows_vertical: bool | None = None,
    diagnose: bool = False,
) -> dict:
    """Score EffOCR's (and Tesseract's) texts on a set and write the result files.

    With `predictions`, metrics.json's `errors` section attributes EffOCR's errors to the
    localizer or the recognizer (`effocr.diagnose`); `diagnose` also writes them one per row
    to `errors.csv`.

    Each system's metrics carry `by_orientation`: the pooled figures of the horizontal and
    the vertical (taller than wide) lines, for the orientations that occur. `allows_vertical` is
    whether vertical lines occur at all (the profile's; False: every line is horizontal).

    Returns:
        The `metrics.json` content.
    """
    options = options or ScoreOptions()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    orientations = line_orientations(eval_set.lines, allows_vertical)
    refs = [line.reference for line in eval_set.lines]
    scores = [score_line(r, h, options) for r, h in zip(refs, hypotheses, strict=True)]
    tess = tesseract or {"status": {"available": False, "reason": "not run"}}
    tess_texts = tess.get("texts")
    tess_scores = (
        [score_line(r, h, options) for r, h in zip(refs, tess_texts, strict=True)]
        if tess_texts is not None
        else None
    )

    with atomic_path(out_dir / EVAL_OUTPUTS["lines"]) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(
                ["image", "reference", "hypothesis", "distance", "cer"]
                + ["tesseract_hypothesis", "tesseract_distance", "tesseract_cer"]
            )
            for i, (line, s) in enumerate(zip(eval_set.lines, scores, strict=True)):
                row = [str(line.image), line.reference, hypotheses[i] or "", s.distance]
                row.append(f"{s.cer:.4f}")
                if tess_scores is not None:
                    t = tess_scores[i]
                    row += [tess_texts[i] or "", t.distance, f"{t.cer:.4f}"]
                else:
                    row += ["", "", ""]
                w.writerow(row)

    with atomic_path(out_dir / EVAL_OUTPUTS["confusions"]) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["system", "reference", "hypothesis", "count"])
            for system, sc in (("effocr", scores), ("tesseract", tess_scores)):
                if sc is None:
                    continue
                ranked = sorted(confusions(sc).items(), key=lambda kv: (-kv[1], kv[0]))
                for (ref_c, hyp_c), n in ranked:
                    w.writerow([system, ref_c, hyp_c, n])

    with atomic_path(out_dir / EVAL_OUTPUTS["predictions"]) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for i, line in enumerate(eval_set.lines):
                pred = dict(predictions[i]) if predictions else {"text": hypotheses[i]}
                pred["image"] = str(line.image)
                pred["id"] = line.id
                f.write(json.dumps(pred, ensure_ascii=False) + "\n")

    metrics: dict[str, Any] = {
        "set": eval_set.name,
        "type": eval_set.type,
        "path": str(eval_set.path),
        "lines": len(eval_set.lines),
        "options": asdict(options),
        "effocr": _system_metrics(scores, seconds, orientations),
    }
    if predictions:
        metrics["effocr"]["failed_lines"] = sum(1 for p in predictions if p.get("error"))
        # Lines whose text is incomplete because the localizer's cap cut boxes (see infer).
        metrics["effocr"]["truncated_lines"] = sum(
            1 for p in predictions if p.get("dropped_detections")
        )
    tess_out = dict(tess["status"])
    if tess_scores is not None:
        tess_out.update(_system_metrics(tess_scores, tess.get("seconds"), orientations))
        tess_out["failed_lines"] = len(tess.get("errors") or {})
        if tess.get("errors"):
            tess_out["errors"] = tess["errors"]
    metrics["tesseract"] = tess_out
    metrics["skipped_lines"] = list(eval_set.skipped)
    if predictions:
        metrics["errors"] = _diagnose(
            eval_set, predictions, orientations, options, out_dir if diagnose else None
        )
    if extra:
        metrics.update(extra)
    write_json(out_dir / EVAL_OUTPUTS["metrics"], metrics)
    return metrics


def _diagnose(
    eval_set: EvalSet,
    predictions: list[dict],
    orientations: list[str | None],
    options: ScoreOptions,
    csv_dir: Path | None,
) -> dict:
    """The `errors` section (`effocr.diagnose.diagnose_set`); `errors.csv` into `csv_dir`."""
    from effocr.diagnose import ERRORS_CSV, LineInput, diagnose_set, write_errors_csv

    inputs = [
        LineInput(
            reference=line.reference,
            prediction=pred,
            vertical=orientation == "vertical",
            true_chars=[(c, list(b)) for c, b in line.char_boxes]
            if line.char_boxes is not None
            else None,
        )
        for line, pred, orientation in zip(eval_set.lines, predictions, orientations, strict=True)
    ]
    diags, summary = diagnose_set(inputs, options)
    if csv_dir is not None:
        write_errors_csv(
            csv_dir / ERRORS_CSV, [line.id for line in eval_set.lines], diags, predictions
        )
    return summary


def evaluate_set(
    bundle_dir: str | os.PathLike,
    set_spec: dict,
    out_dir: str | os.PathLike,
    options: Mapping,
    *,
    workers: int | None = None,
    device: str = "cpu",
    language: str | None = None,
    verify: bool = True,
    diagnose: bool = False,
    lm: bool | None = None,
    lm_weight: float | None = None,
    geometry: bool | None = None,
    lexicon_margin: float | None = None,
) -> dict:
    """Run the bundle and the Tesseract baseline on one evaluation set and write the results.

    Args:
        bundle_dir: The exported bundle (`export_bundle` output).
        set_spec: ``{name, path, type?, image_dir?}``.
        out_dir: Receives metrics.json, lines.csv, confusions.csv, predictions.jsonl.
        options: The validated `evaluate` config section, or the part of it that changes
            the scores (`normalize_quotes`, `ignore_case`, `ignore_spaces`, `tesseract`).
        workers: Inference workers (`effocr.infer.Engine`; default the bundle's
            `infer.workers`).
        device: Inference device.
        language: Profile whose `tesseract_lang` the baseline uses; None reads the bundle's.
        verify: Check the bundle's files against the sha256 in its model.yaml.
        diagnose: Also write `errors.csv`, EffOCR's attributed errors one per row (metrics.json
            has their summary, the `errors` section, either way).
        lm: Language model re-ranking on/off (None: the bundle's `lm.enabled`).
        lm_weight: Its weight (None: the bundle's `lm.weight`).
        geometry: `effocr.geometry`'s label pairs decided by the boxes on/off (None: the
            bundle's `infer.geometry`).
        lexicon_margin: The LM lexicon's margin (None: the bundle's `lm.lexicon_margin`).

    Returns:
        The metrics written to `out_dir/metrics.json`.
    """
    score_options = ScoreOptions.from_config(options)
    out_dir = Path(out_dir)
    eval_set = load_eval_set(set_spec, out_dir)
    if workers is None:  # resolved here: metrics.json records the count used
        from effocr.bundle import Manifest

        workers = int(Manifest.read(bundle_dir, verify=False).infer["workers"])
    LOG.info("evaluating %s: %d lines from %s", eval_set.name, len(eval_set.lines), eval_set.path)
    images = [line.image for line in eval_set.lines]
    predictions, seconds = run_effocr(
        bundle_dir,
        images,
        workers=workers,
        device=device,
        verify=verify,
        lm=lm,
        lm_weight=lm_weight,
        geometry=geometry,
        lexicon_margin=lexicon_margin,
    )
    hypotheses = [None if p.get("error") else p.get("text") for p in predictions]
    language = language or bundle_language(bundle_dir) or "en"
    profile = get_profile(language)
    tess = tesseract_baseline(
        eval_set.lines,
        profile.tesseract_lang,
        enabled=bool(options["tesseract"]),
        keep_spaces=profile.spaces,
        allows_vertical=profile.allows_vertical,
    )
    metrics = write_results(
        eval_set,
        hypotheses,
        out_dir,
        options=score_options,
        seconds=seconds,
        predictions=predictions,
        tesseract=tess,
        extra={
            "bundle": str(bundle_dir),
            "language": language,
            "workers": workers,
            "lm": lm_used(bundle_dir, lm, lm_weight, lexicon_margin),
            "geometry": geometry_used(bundle_dir, geometry),
        },
        allows_vertical=profile.allows_vertical,
        diagnose=diagnose,
    )
    LOG.info(
        "%s: EffOCR CER %.4f, Tesseract %s",
        eval_set.name,
        metrics["effocr"]["cer"],
        metrics["tesseract"].get("cer", metrics["tesseract"].get("reason")),
    )
    return metrics


def evaluate_set_from_config(
    bundle_dir: str | os.PathLike,
    set_spec: dict,
    out_dir: str | os.PathLike,
    *,
    evaluate: EvaluateSection,
    run: RunSection,
    workers: int,
) -> dict:
    """`evaluate_set` with the config sections `evaluate` (the scoring options and
    `tesseract`) and `run` (`language`: the baseline's Tesseract language)."""
    return evaluate_set(
        bundle_dir, set_spec, out_dir, evaluate.as_dict(), workers=workers, language=run.language
    )


# ---------------------------------------------------------------------------
# Command line: effocr evaluate
# ---------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr evaluate`."""
    parser.add_argument("--model", required=True, help="exported bundle folder")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        required=True,
        metavar="NAME=PATH[:TYPE[:IMAGE_DIR]]",
        help="an evaluation set; TYPE is coco, gt_dir or page (guessed when left out); "
        "repeat for several",
    )
    parser.add_argument("--output", required=True, help="results go to OUTPUT/NAME/")
    parser.add_argument(
        "--config", default=None, help="config YAML whose `evaluate` section applies"
    )
    parser.add_argument(
        "--language", default=None, help="profile for Tesseract (default: the bundle's)"
    )
    parser.add_argument(
        "--workers",
        "--threads",
        type=int,
        default=None,
        help="inference workers (default: the bundle's infer.workers)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="ONNX Runtime device: cpu (default, so that speeds compare), auto, cuda or cuda:N",
    )
    parser.add_argument("--no-tesseract", action="store_true", help="skip the Tesseract baseline")
    parser.add_argument("--ignore-case", action="store_true", default=None)
    parser.add_argument("--ignore-spaces", action="store_true", default=None)
    parser.add_argument(
        "--keep-quotes", action="store_true", help="do not normalise curly quotes before scoring"
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="open the bundle without checking its files against the sha256 in model.yaml",
    )
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="print which model made each error (localizer or recognizer: classes, top "
        "confusions) and write them one per row to OUTPUT/NAME/errors.csv",
    )
    add_lm_arguments(parser)
    add_geometry_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Entry point of `effocr evaluate`."""
    from effocr.config import load_config

    options = dict(load_config(args.config)["evaluate"])
    if args.no_tesseract:
        options["tesseract"] = False
    if args.ignore_case:
        options["ignore_case"] = True
    if args.ignore_spaces:
        options["ignore_spaces"] = True
    if args.keep_quotes:
        options["normalize_quotes"] = False
    rows = []
    for text in args.sets:
        spec = parse_set_spec(text)
        m = evaluate_set(
            args.model,
            spec,
            Path(args.output) / spec["name"],
            options,
            workers=args.workers,
            device=args.device,
            language=args.language,
            verify=not args.no_verify,
            diagnose=args.diagnose,
            lm=lm_choice(args.lm),
            lm_weight=args.lm_weight,
            geometry=geometry_choice(args.geometry),
            lexicon_margin=args.lexicon_margin,
        )
        rows.append(m)
    print(format_table(rows))
    if args.diagnose:
        from effocr.diagnose import format_errors_table

        for m in rows:
            print()
            print(format_errors_table(m["errors"], m["set"]))
    return 0


def format_table(metrics: list[dict]) -> str:
    """A plain-text table of CER/WER/exact match/lines per second per set and system."""
    head = (
        f"{'set':<16} {'system':<10} {'lines':>6} {'CER':>8} {'WER':>8} {'exact':>7} {'lines/s':>9}"
    )
    out = [head, "-" * len(head)]
    for m in metrics:
        for system in ("effocr", "tesseract"):
            s = m.get(system, {})
            if "cer" not in s:
                out.append(f"{m['set']:<16} {system:<10} {'-':>6}  {s.get('reason', 'n/a')}")
                continue
            lps = s.get("lines_per_second")
            out.append(
                f"{m['set']:<16} {system:<10} {s['lines']:>6} {s['cer']:>8.4f} {s['wer']:>8.4f} "
                f"{s['exact_match']:>7.3f} {lps if lps is not None else '-':>9}"
            )
    return "\n".join(out)
