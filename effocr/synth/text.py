"""Text sources of synthetic lines: the shipped public-domain texts or any UTF-8 file."""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

from effocr.profiles import get_profile
from effocr.utils import EffOCRError


def shipped_text_path(language: str) -> Path:
    """Path of the public-domain text shipped for `language` (`effocr/resources/text/`)."""
    name = get_profile(language).text_source
    return Path(str(resources.files("effocr") / "resources" / "text" / name))


def read_text_source(path: str | os.PathLike) -> str:
    """A text file without its `#` comment lines, whitespace runs collapsed to one space.

    Raises:
        EffOCRError: when the file is missing, not UTF-8 or empty.
    """
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise EffOCRError(f"{path}: text source not found") from exc
    except UnicodeDecodeError as exc:
        raise EffOCRError(f"{path}: text source is not UTF-8: {exc}") from exc
    body = "\n".join(line for line in raw.splitlines() if not line.lstrip().startswith("#"))
    text = re.sub(r"\s+", " ", body).strip()
    if not text:
        raise EffOCRError(f"{path}: text source has no text")
    return text
