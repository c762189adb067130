"""OCR of a collection of page images in shards: the `ocr` target of the workflow (rules/ocr.smk).

A corpus is a folder of page images (searched recursively), a list file (one path per line, as
`effocr infer @list.txt`) or a METS file group. It is split into shards of `shard_size` pages,
one Snakemake job each (`run_shard`), which writes every page's files (`effocr.formats`
writers, one file per format, each replaced atomically) under the output folder and, last,
its shard record `shards/<id>.json`: a shard is done exactly when its record exists.

Shards are planned so that work already done keeps its place (`plan_shards`): the pages of the
completed shards (their records) stay in those shards, and only the other pages, sorted, are
cut into new shards, numbered from the lowest free id. So a rerun after an interruption plans
the unfinished shards again with the same pages and ids, and pages added to the folder go into
new shards: Snakemake runs only those. The plan is a pure function of the listing and the
records, computed read-only by every Snakemake process (the main one and each cluster job).

`summarize` gathers the records into `summary.json` (pages, lines, characters, failures with
their reasons, pages/s) and a printed table. A page that cannot be read (missing, undecodable,
empty, too large) is a failure with its reason; a page read without any text is reported as
such (its files are written); neither stops the shard.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from effocr.config import OcrSection
from effocr.document import Page
from effocr.formats.serialize import PAGE_FORMATS
from effocr.imageio import _relative_to, display_name
from effocr.suffixes import IMAGE_SUFFIXES
from effocr.utils import EffOCRError, atomic_path, progress

LOG = logging.getLogger(__name__)

# Under the output folder: one record per finished shard, then the run's summary.
SHARDS_DIR = "shards"
SUMMARY_JSON = "summary.json"
SUMMARY_TABLE = "summary.txt"
# Shard ids are zero-padded numbers so that they sort as they were planned.
ID_DIGITS = 5

METS_NS = "http://www.loc.gov/METS/"
XLINK_NS = "http://www.w3.org/1999/xlink"


@dataclass(frozen=True)
class CorpusPage:
    """A page of the corpus: its image (path as listed) and its output name (no suffix; may
    hold folders, mirroring the input tree: `page/<name>.xml`)."""

    image: str
    name: str


@dataclass
class ShardPlan:
    """`shards`: id -> pages, in id order; `done`: the ids whose record exists and still
    holds; `problems`: pages given no shard, as {image, error} (a duplicate output name)."""

    shards: dict[str, list[CorpusPage]] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    problems: list[dict] = field(default_factory=list)

    @property
    def pending(self) -> list[str]:
        return [s for s in self.shards if s not in self.done]


# ---------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _name(image: str, root: Path) -> str:
    """The output name of `image`: its path below `root` without the suffix, or its stem for
    an image outside `root` (a list file naming images elsewhere)."""
    rel = Path(os.path.relpath(os.path.abspath(image), os.path.abspath(root)))
    if rel.parts and rel.parts[0] != os.pardir and not rel.is_absolute():
        return rel.with_suffix("").as_posix()
    return Path(image).stem


def _mets_files(path: Path, group: str) -> list[str]:
    """The local files of METS file group `group` (`FLocat` hrefs: relative paths or file://
    URLs, relative to the METS file's folder)."""
    from urllib.parse import unquote, urlparse

    from effocr.formats.xml import parse_xml

    root = parse_xml(path)
    groups = root.findall(f".//{{{METS_NS}}}fileGrp[@USE='{group}']")
    if not groups:
        found = sorted({g.get("USE") for g in root.iter(f"{{{METS_NS}}}fileGrp")} - {None})
        raise EffOCRError(f"{path}: no METS fileGrp USE={group!r} (the file has {found})")
    out = []
    for grp in groups:
        for loc in grp.iter(f"{{{METS_NS}}}FLocat"):
            href = loc.get(f"{{{XLINK_NS}}}href")
            if not href:
                raise EffOCRError(f"{path}: mets:FLocat without xlink:href in fileGrp {group!r}")
            url = urlparse(href)
            if url.scheme not in ("", "file"):
                raise EffOCRError(
                    f"{path}: fileGrp {group!r} names {href!r}: only local files are read "
                    "(download the images and point the METS at them)"
                )
            local = Path(unquote(url.path) if url.scheme == "file" else href)
            out.append(str(local if local.is_absolute() else path.parent / local))
    return out


def list_pages(source: str | os.PathLike, *, recursive: bool, mets_group: str) -> list[CorpusPage]:
    """The corpus's pages, sorted by image path, each with its output name.

    `source`: a folder (its images, `IMAGE_SUFFIXES`; with `recursive`, in subfolders too,
    hidden ones and symlinked folders skipped), a METS file (`.xml`: the files of fileGrp
    `mets_group`) or any other file: a list, one image path per line (blank lines and `#`
    comments skipped, relative paths relative to the list's folder). Names are relative to the
    folder (the list's or the METS file's folder for those).

    Raises:
        EffOCRError: the source is missing, unreadable or lists no image.
    """
    src = Path(source)
    if src.is_dir():
        root = src
        images = []
        for folder, dirs, files in os.walk(src, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
            images.extend(
                os.path.join(folder, f) for f in files if _is_image(f) and not f.startswith(".")
            )
        if not images:
            raise EffOCRError(f"{src}: no page images ({', '.join(IMAGE_SUFFIXES)}) in it")
    elif src.is_file():
        root = src.parent
        if src.suffix.lower() == ".xml":
            images = _mets_files(src, mets_group)
        else:
            try:
                lines = src.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
            except OSError as exc:
                raise EffOCRError(f"{src}: cannot read page list: {exc.strerror}") from exc
            images = []
            for line in lines:
                line = line.strip()
                if line and not line.startswith("#"):
                    p = Path(line)
                    images.append(str(p if p.is_absolute() else src.parent / p))
        if not images:
            raise EffOCRError(f"{src}: lists no page image")
    else:
        raise EffOCRError(f"{src}: ocr.input is neither a folder nor a file (does it exist?)")
    # A page listed twice is one page.
    return [CorpusPage(img, _name(img, root)) for img in sorted(set(images))]


# ---------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------


def shard_id(number: int) -> str:
    return f"{number:0{ID_DIGITS}d}"


def record_path(out_dir: str | os.PathLike, shard: str) -> Path:
    return Path(out_dir) / SHARDS_DIR / f"{shard}.json"


def read_records(out_dir: str | os.PathLike) -> dict[str, dict]:
    """{shard id: record} of the finished shards under `out_dir` (unreadable ones left out:
    their shard is planned again)."""
    records = {}
    folder = Path(out_dir) / SHARDS_DIR
    if not folder.is_dir():
        return records
    for path in sorted(folder.glob("*.json")):
        if not path.stem.isdigit():
            continue
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            pages = [CorpusPage(p["image"], p["name"]) for p in rec["pages"]]
        except (OSError, ValueError, KeyError, TypeError):
            LOG.warning("%s: unreadable shard record, its shard is planned again", path)
            continue
        records[path.stem] = {**rec, "pages": pages}
    return records


def plan_shards(
    pages: Sequence[CorpusPage], records: dict[str, dict], shard_size: int
) -> ShardPlan:
    """Shards for `pages` that keep the finished shards (`records`) as they are.

    A finished shard stays (same id, same pages) while all its pages are still listed; the
    other pages, in order, are cut into shards of `shard_size`, given the lowest ids no kept
    shard has. Planning the same listing again after some of those shards finished gives the
    others the same pages and ids (the finished ones were whole, aligned chunks), which is
    what lets every Snakemake process (each cluster job too) plan on its own.

    A page whose output name a kept page or an earlier page already has is not planned; it is
    a problem of the plan (two images `a.png` and `a.tif` in one folder).
    """
    if shard_size < 1:
        raise EffOCRError(f"ocr.shard_size must be at least 1, not {shard_size}")
    listed = {p.image: p for p in pages}
    plan = ShardPlan()
    kept: dict[str, list[CorpusPage]] = {}
    for sid in sorted(records):
        shard_pages = records[sid]["pages"]
        if shard_pages and all(listed.get(p.image) == p for p in shard_pages):
            kept[sid] = shard_pages
    taken_images = {p.image for ps in kept.values() for p in ps}
    names = {p.name: p.image for ps in kept.values() for p in ps}
    pending = []
    for page in pages:
        if page.image in taken_images:
            continue
        other = names.get(page.name)
        if other is not None:
            plan.problems.append(
                {
                    "image": page.image,
                    "error": f"output name {page.name!r} is also that of {display_name(other)}; "
                    "rename one of them",
                }
            )
            continue
        names[page.name] = page.image
        pending.append(page)
    chunks = [pending[i : i + shard_size] for i in range(0, len(pending), shard_size)]
    number = 0
    shards = dict(kept)
    for chunk in chunks:
        while shard_id(number) in kept:
            number += 1
        shards[shard_id(number)] = chunk
        number += 1
    plan.shards = dict(sorted(shards.items()))
    plan.done = set(kept)
    return plan


def plan_corpus(ocr: dict, out_dir: str | os.PathLike) -> ShardPlan:
    """The plan of the `ocr` config section (`input`, `recursive`, `mets_group`, `shard_size`)
    against the records under `out_dir`."""
    pages = list_pages(ocr["input"], recursive=ocr["recursive"], mets_group=ocr["mets_group"])
    return plan_shards(pages, read_records(out_dir), ocr["shard_size"])


# ---------------------------------------------------------------------------
# One shard
# ---------------------------------------------------------------------------


def read_pages(engine, images: Sequence[str]) -> list[Page]:
    """The one place the corpus reads images: `effocr.document.Page`s, in input order, a
    failed image as a page with `error`. Page images are read as pages (line detection,
    reading order) when the bundle has a line detector; line images as one line
    (`Engine.iter_pages`, layout `auto`)."""
    return [res.to_document() for res in engine.iter_pages(images)]


def page_outcome(page: Page) -> dict:
    """{status, lines, chars[, error]} of a read page: ``failed`` (it could not be read),
    ``no_text`` (read, but no glyph found) or ``ok``."""
    if page.error is not None:
        return {"status": "failed", "lines": 0, "chars": 0, "error": page.error}
    lines = [ln for ln in page.lines() if ln.text.strip()]
    chars = sum(len(ln.text) - ln.text.count(" ") for ln in lines)
    if not chars:
        return {"status": "no_text", "lines": 0, "chars": 0, "error": "no text found on the page"}
    return {"status": "ok", "lines": len(lines), "chars": chars}


def page_files(out_dir: Path, name: str, formats: Iterable[str]) -> list[tuple[str, Path]]:
    """(format, file) of each output file of page `name`."""
    return [
        (f, out_dir / PAGE_FORMATS[f].folder / f"{name}{PAGE_FORMATS[f].suffix}") for f in formats
    ]


def write_page_files(page: Page, out_dir: Path, name: str, formats: Sequence[str]) -> None:
    """Write `page` in each of `formats`, each file replaced atomically; the image is named
    relative to each file's folder (as `effocr infer` writes it)."""
    for fmt, path in page_files(out_dir, name, formats):
        data = PAGE_FORMATS[fmt].write(replace(page, image=_relative_to(page.image, path.parent)))
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)


def _dump(obj) -> str:
    """JSON, UTF-8 where it can be (a non-UTF-8 file name is written with ASCII escapes)."""
    text = json.dumps(obj, ensure_ascii=False, indent=1)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, ensure_ascii=True, indent=1)
    return text + "\n"


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    unknown = [f for f in formats if f not in PAGE_FORMATS]
    if unknown or not formats:
        raise EffOCRError(
            f"ocr.formats {list(formats)}: choose one or more of {', '.join(PAGE_FORMATS)}"
        )
    return tuple(dict.fromkeys(formats))


def run_shard(
    bundle: str | os.PathLike,
    shard: str,
    pages: Sequence[CorpusPage],
    out_dir: str | os.PathLike,
    *,
    ocr: OcrSection,
    threads: int,
) -> dict:
    """OCR one shard: every page's files (the config section `ocr`'s `formats`), then its
    record (`record_path`), which is returned.

    A page that fails is recorded with its reason and its old files (of an earlier run) are
    removed; the other pages go on. Writing the record last makes the shard done only when
    all its pages are.
    """
    from effocr.infer import Engine

    formats = check_formats(ocr.formats)
    out = Path(out_dir)
    started = time.time()
    clock = time.perf_counter()
    done: list[dict] = []
    with Engine(bundle, workers=threads) as engine:
        if engine.workers > 1:
            engine.start()  # a shard is a long job: workers pay off even for few pages
        step = max(1, 4 * engine.workers * engine.chunk_lines)
        bar = progress(total=len(pages), desc=f"shard {shard}", unit="page")
        for i in range(0, len(pages), step):
            batch = pages[i : i + step]
            for cp, page in zip(batch, read_pages(engine, [p.image for p in batch]), strict=True):
                outcome = page_outcome(page)
                if outcome["status"] == "failed":
                    for _, path in page_files(out, cp.name, formats):
                        path.unlink(missing_ok=True)
                else:
                    try:
                        write_page_files(page, out, cp.name, formats)
                    except Exception as exc:  # one page's odd content must not end the shard
                        outcome = {
                            "status": "failed",
                            "lines": 0,
                            "chars": 0,
                            "error": f"cannot write its files: {type(exc).__name__}: {exc}",
                        }
                done.append({"image": cp.image, "name": cp.name, **outcome})
                LOG.info(
                    "page %d/%d %s: %s%s",
                    len(done),
                    len(pages),
                    display_name(cp.image),
                    outcome["status"],
                    f" ({outcome['error']})"
                    if "error" in outcome
                    else f", {outcome['lines']} lines, {outcome['chars']} chars",
                )
            bar.update(len(batch))
        bar.close()
        workers = engine.workers
    record = {
        "shard": shard,
        "pages": done,
        "formats": list(formats),
        "bundle": str(bundle),
        "workers": workers,
        "started": started,
        "seconds": round(time.perf_counter() - clock, 3),
    }
    with atomic_path(record_path(out, shard)) as tmp:
        tmp.write_text(_dump(record), encoding="utf-8")
    return record


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------


def summarize(record_files: Sequence[str | os.PathLike], problems: Sequence[dict]) -> dict:
    """The corpus's figures from its shard records and the plan's `problems`.

    `pages_per_s` is pages over the shards' summed reading seconds (per shard job, each with
    `workers` workers), so it does not depend on how many shards ran at once.
    """
    pages = lines = chars = 0
    seconds = 0.0
    failures: list[dict] = [{**p, "shard": None} for p in problems]
    no_text: list[dict] = []
    for path in record_files:
        rec = json.loads(Path(path).read_text(encoding="utf-8"))
        seconds += float(rec["seconds"])
        for p in rec["pages"]:
            pages += 1
            lines += p["lines"]
            chars += p["chars"]
            entry = {"image": p["image"], "shard": rec["shard"], "error": p.get("error")}
            if p["status"] == "failed":
                failures.append(entry)
            elif p["status"] == "no_text":
                no_text.append(entry)
    pages += len(problems)
    return {
        "pages": pages,
        "pages_ok": pages - len(failures) - len(no_text),
        "pages_no_text": len(no_text),
        "pages_failed": len(failures),
        "lines": lines,
        "characters": chars,
        "shards": len(record_files),
        "seconds": round(seconds, 3),
        "pages_per_s": round(pages / seconds, 3) if seconds > 0 else None,
        "failures": failures,
        "no_text": no_text,
    }


def summary_table(summary: dict) -> str:
    """The summary as a small text table, failures listed with their reasons."""
    rows = [
        ("pages", summary["pages"]),
        ("  read", summary["pages_ok"]),
        ("  no text", summary["pages_no_text"]),
        ("  failed", summary["pages_failed"]),
        ("lines", summary["lines"]),
        ("characters", summary["characters"]),
        ("shards", summary["shards"]),
        ("seconds (shards)", summary["seconds"]),
        ("pages/s per shard", summary["pages_per_s"]),
    ]
    width = max(len(k) for k, _ in rows)
    out = [f"{k:<{width}}  {v}" for k, v in rows]
    for title, items in (("failed pages", summary["failures"]), ("no text", summary["no_text"])):
        if items:
            out.append(f"{title}:")
            out.extend(f"  {display_name(f['image'])}: {f['error']}" for f in items)
    return "\n".join(out) + "\n"


def write_summary(
    record_files: Sequence[str | os.PathLike],
    problems: Sequence[dict],
    summary_json: str | os.PathLike,
    summary_txt: str | os.PathLike,
) -> dict:
    """`summarize`, written as JSON and as the table (both atomically); returns the summary."""
    summary = summarize(record_files, problems)
    with atomic_path(summary_json) as tmp:
        tmp.write_text(_dump(summary), encoding="utf-8")
    with atomic_path(summary_txt) as tmp:
        tmp.write_text(summary_table(summary), encoding="utf-8")
    return summary
