"""Character sets: which characters the recognizer knows.

A charset file has one character (or multi-code-point label) per line written as code points,
``U+XXXX`` (several joined by ``_``), optionally followed by a TAB and the character itself for
readability. Lines starting with ``#`` are comments. Shipped charsets live in
``effocr/resources/charsets/<name>.txt``: ``en``, ``jp_small``, ``jp_full``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from effocr.utils import EffOCRError, codepoints_to_label, label_to_codepoints

SHIPPED = ("en", "jp_small", "jp_full")


def shipped_charset_path(name: str) -> Path:
    """Path of the shipped charset file called `name`."""
    return Path(str(resources.files("effocr") / "resources" / "charsets" / f"{name}.txt"))


def _resolve(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    if str(name_or_path) in SHIPPED:
        return shipped_charset_path(str(name_or_path))
    raise EffOCRError(
        f"charset {str(name_or_path)!r}: neither a file nor a shipped charset ({', '.join(SHIPPED)})"
    )


def parse_charset(text: str, source: str = "charset") -> list[str]:
    """Parse the text of a charset file into labels (order kept, duplicates dropped).

    Raises:
        EffOCRError: naming `source` and the line number of a malformed line.
    """
    labels: list[str] = []
    seen: set[str] = set()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        code = line.split("\t", 1)[0].strip()
        if not code.upper().startswith("U+"):
            raise EffOCRError(f"{source}: line {lineno}: expected U+XXXX code points, got {code!r}")
        try:
            label = codepoints_to_label(code)
            if not label or label_to_codepoints(label) != code.upper():
                raise ValueError(code)
        except (ValueError, OverflowError) as exc:
            raise EffOCRError(f"{source}: line {lineno}: invalid code point label {code!r}") from exc
        if label not in seen:
            seen.add(label)
            labels.append(label)
    if not labels:
        raise EffOCRError(f"{source}: the charset is empty")
    return labels


def load_charset(name_or_path: str | os.PathLike) -> list[str]:
    """Load a charset by shipped name (``en``, ``jp_small``, ``jp_full``) or file path.

    Returns:
        The labels (usually single characters) in file order, without duplicates.
    """
    path = _resolve(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EffOCRError(f"{path}: charset is not UTF-8 text") from exc
    return parse_charset(text, source=str(path))


def format_charset(labels: list[str] | str, header: str = "") -> str:
    """Text of a charset file for `labels` (``U+XXXX<TAB>char`` lines, `header` as comments)."""
    lines = [f"# {h}".rstrip() for h in header.splitlines()] if header else []
    for label in labels:
        shown = label if label.isprintable() and not label.isspace() else ""
        lines.append(f"{label_to_codepoints(label)}\t{shown}".rstrip("\t"))
    return "\n".join(lines) + "\n"


def write_charset(path: str | os.PathLike, labels: list[str] | str, header: str = "") -> Path:
    """Write `labels` as a charset file (atomically)."""
    from effocr.utils import write_text

    write_text(path, format_charset(list(labels), header))
    return Path(path)


def charset_from_text(text: str) -> list[str]:
    """The distinct non-whitespace characters of `text`, in order of first occurrence."""
    seen: dict[str, None] = {}
    for ch in text:
        if not ch.isspace():
            seen.setdefault(ch, None)
    return list(seen)
