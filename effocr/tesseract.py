"""Tesseract as the baseline: the same line images through `tesseract IMG - --psm 7 -l LANG`.

Tesseract is optional. `tesseract_status` says plainly why it cannot run (binary or language
data missing) so the report can show that instead of a number.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

LOG = logging.getLogger(__name__)

# Tesseract writes this between the pages of a multi-image run.
_PAGE_SEPARATOR = "\f"


@dataclass(frozen=True)
class TesseractStatus:
    """Whether the baseline can run, and if not, why."""

    available: bool
    reason: str = ""
    version: str = ""
    lang: str = ""
    binary: str = ""

    def to_dict(self) -> dict:
        """JSON-ready dict: `available` plus `reason` or `version`/`lang`."""
        if not self.available:
            return {"available": False, "reason": self.reason, "lang": self.lang}
        return {"available": True, "version": self.version, "lang": self.lang}


def _env() -> dict[str, str]:
    # One thread per process: Tesseract's OpenMP otherwise competes with everything else.
    return {**os.environ, "OMP_THREAD_LIMIT": "1"}


def tesseract_status(lang: str, binary: str = "tesseract") -> TesseractStatus:
    """Check that the `tesseract` binary runs and has the language data `lang` (e.g. ``eng``)."""
    path = shutil.which(binary)
    if path is None:
        return TesseractStatus(
            False,
            f"the '{binary}' program is not installed (Debian: apt-get install tesseract-ocr)",
            lang=lang,
        )
    try:
        version = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=60, env=_env()
        )
        langs = subprocess.run(
            [path, "--list-langs"], capture_output=True, text=True, timeout=60, env=_env()
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return TesseractStatus(False, f"'{path}' does not run: {exc}", lang=lang)
    first = (version.stdout or version.stderr).strip().splitlines()
    version_text = first[0] if first else "unknown"
    # --list-langs prints a header line, then one language per line.
    known = {ln.strip() for ln in langs.stdout.splitlines()[1:] if ln.strip()}
    missing = [part for part in lang.split("+") if part not in known]
    if missing:
        pkg = " ".join(f"tesseract-ocr-{m.replace('_', '-')}" for m in missing)
        return TesseractStatus(
            False,
            f"Tesseract language data {'+'.join(missing)!s} is not installed "
            f"(have: {', '.join(sorted(known)) or 'none'}; Debian: apt-get install {pkg})",
            lang=lang,
            binary=path,
        )
    return TesseractStatus(True, version=version_text, lang=lang, binary=path)


def _run_one(binary: str, image: Path, lang: str, psm: int) -> str:
    proc = subprocess.run(
        [binary, str(image), "-", "--psm", str(psm), "-l", lang],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    if proc.returncode != 0:
        LOG.warning("tesseract failed on %s: %s", image, proc.stderr.strip()[-300:])
        return ""
    return proc.stdout.replace(_PAGE_SEPARATOR, "").strip()


def run_tesseract(
    images: list[str | os.PathLike],
    lang: str,
    *,
    psm: int = 7,
    binary: str = "tesseract",
) -> tuple[list[str], float]:
    """OCR line images with Tesseract; returns one text per image and the seconds it took.

    All images go through one Tesseract process (an image list file), so the language model
    is loaded once, as a fair lines/s comparison needs. If the page count of that output does
    not match, each image is run on its own.
    """
    path = shutil.which(binary) or binary
    if not images:
        return [], 0.0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="effocr-tess-") as tmp:
        listing = Path(tmp) / "images.txt"
        listing.write_text("".join(f"{Path(p).resolve()}\n" for p in images), encoding="utf-8")
        proc = subprocess.run(
            [path, str(listing), "-", "--psm", str(psm), "-l", lang],
            capture_output=True,
            text=True,
            timeout=60 + 10 * len(images),
            env=_env(),
        )
    pages = proc.stdout.split(_PAGE_SEPARATOR)
    if pages and not pages[-1].strip() and len(pages) == len(images) + 1:
        pages = pages[:-1]
    if proc.returncode == 0 and len(pages) == len(images):
        texts = [p.strip() for p in pages]
    else:
        LOG.warning(
            "tesseract batch run gave %d pages for %d images (rc %d); running one by one",
            len(pages),
            len(images),
            proc.returncode,
        )
        start = time.perf_counter()
        texts = [_run_one(path, Path(p), lang, psm) for p in images]
    return texts, time.perf_counter() - start
