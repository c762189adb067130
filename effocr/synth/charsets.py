"""Character sets: which characters the recognizer knows.

A charset file has one character (or multi-code-point label) per line written as code points,
``U+XXXX`` (several joined by ``_``), optionally followed by a TAB and the character itself for
readability. Lines starting with ``#`` are comments. Shipped charsets live in
``effocr/resources/charsets/<name>.txt``: ``en``, ``jp_small``, ``jp_full``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from effocr.profiles import get_profile
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
            raise EffOCRError(
                f"{source}: line {lineno}: invalid code point label {code!r}"
            ) from exc
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


# ---------------------------------------------------------------------------
# How the shipped Japanese charsets are made (kept here so `jp_full` can be regenerated and
# checked by the tests; `jp_small` needs the jōyō list, taken once from a package, see its header).
# ---------------------------------------------------------------------------

ASCII_CHARS = [chr(c) for c in range(0x21, 0x7F)]

HIRAGANA = [chr(c) for c in range(0x3041, 0x3097)] + ["ゝ", "ゞ"]
KATAKANA = [chr(c) for c in range(0x30A1, 0x30FB)] + ["ー", "ヽ", "ヾ"]
# Punctuation and signs of ordinary Japanese print (full-width forms and CJK symbols).
JP_PUNCTUATION = list(
    "、。，．・：；？！゛゜´｀¨＾￣＿〃仝々〆〇―‐／＼～∥｜…‥‘’“”（）〔〕［］｛｝〈〉《》「」『』【】＋－±×÷＝≠＜＞≦≧∞∴♂♀°′″℃￥＄￠￡％＃＆＊＠§☆★○●◎◇◆□■△▲▽▼※〒→←↑↓〓"
)


def _decodable(codec: str, byte_seqs) -> set[str]:
    out: set[str] = set()
    for seq in byte_seqs:
        try:
            text = bytes(seq).decode(codec)
        except UnicodeDecodeError:
            continue
        out.add(text)
    return out


def jis_characters() -> list[str]:
    """Every single character decodable by the ``shift_jis_2004``, ``euc_jis_2004`` and
    ``cp932`` codecs, plus printable ASCII, sorted by code point.

    This approximates Adobe-Japan1 + JIS X 0213 (levels 1-4, plane 1 and 2) + the Windows
    extensions of CP932. Dropped: sequences that decode to several code points (JIS X 0213
    combining kana/accents), whitespace, control characters and the private use area.
    """
    lead = list(range(0x81, 0xA0)) + list(range(0xE0, 0xFD))
    trail = list(range(0x40, 0x7F)) + list(range(0x80, 0xFD))
    sjis = [(a, b) for a in lead for b in trail] + [(a,) for a in range(0x20, 0xE0)]
    euc_rows = range(0xA1, 0xFF)
    euc = [(a, b) for a in euc_rows for b in euc_rows]
    euc += [(0x8F, a, b) for a in euc_rows for b in euc_rows] + [
        (0x8E, b) for b in range(0xA1, 0xE0)
    ]
    chars = _decodable("shift_jis_2004", sjis) | _decodable("cp932", sjis)
    chars |= _decodable("euc_jis_2004", euc)
    chars |= set(ASCII_CHARS)
    keep = {
        c
        for c in chars
        if len(c) == 1 and c.isprintable() and not c.isspace() and not (0xE000 <= ord(c) <= 0xF8FF)
    }
    return sorted(keep)


def jp_small_characters(joyo_kanji: list[str] | set[str]) -> list[str]:
    """The `jp_small` charset: ASCII, kana, common Japanese punctuation and the jōyō kanji."""
    out: dict[str, None] = {}
    for c in ASCII_CHARS + JP_PUNCTUATION + HIRAGANA + KATAKANA + sorted(joyo_kanji):
        out.setdefault(c, None)
    return list(out)


# ---------------------------------------------------------------------------
# Characters of synthetic lines, and the render charset of a workflow config
# ---------------------------------------------------------------------------


def token_symbols(language: str) -> list[str]:
    """Characters of the random tokens mixed into synthetic lines (so rare characters occur)."""
    profile = get_profile(language)
    if profile.spaces:
        return [c for c in load_charset(profile.charset) if c.isascii()]
    return HIRAGANA + KATAKANA + list("0123456789")


def line_characters(language: str, text_source: str | os.PathLike | None = None) -> list[str]:
    """Every character a synthetic line can contain: the text's, then the token symbols.

    `render.charset_from_text` keeps the render charset to these (small demos).
    """
    from effocr.synth.text import read_text_source, shipped_text_path

    text = read_text_source(text_source or shipped_text_path(language))
    out: dict[str, None] = {}
    for c in list(text) + token_symbols(language):
        if not c.isspace():
            out.setdefault(c, None)
    return list(out)


def resolve_charset(
    charset: str | None,
    charset_from_text: bool,
    language: str,
    text_source: str | None,
    ligatures: Sequence[str],
) -> list[str]:
    """The render charset (config `render.charset`, `render.charset_from_text`, `language`,
    `synth.text_source`, `render.ligatures`).

    `charset` (shipped name or file), else the language profile's charset; with
    `charset_from_text`, only those of its characters that synthetic lines can contain
    (`line_characters(language, text_source)`, in order of first occurrence). Then the
    `ligatures` (`add_ligatures`). Synthetic lines draw single characters, so their charset
    (`effocr.synth.lines.line_charset`) is resolved without ligatures.
    """
    base = load_charset(charset or get_profile(language).charset)
    if charset_from_text:
        allowed = set(base)
        base = [c for c in line_characters(language, text_source) if c in allowed]
        if not base:
            raise EffOCRError(
                "render.charset_from_text: no character of the text source is in the charset"
            )
    return add_ligatures(base, ligatures)


def add_ligatures(charset: Sequence[str], ligatures: Sequence[str]) -> list[str]:
    """`charset` with the multi-character labels `ligatures` appended (those it lacks).

    A ligature class is read where print joins letters into one glyph (fi, fl, ffi in roman
    type; ch, ck, tz, ſt in Fraktur) and the localizer draws one box around it: its label gives
    all the letters back. Each of its letters must be in the charset too.

    Raises:
        EffOCRError: for a ligature of fewer than two characters, with a space, or with a
            letter the charset lacks (all named).
    """
    out = list(charset)
    have = set(out)
    problems = []
    for lig in ligatures:
        if len(lig) < 2 or any(c.isspace() for c in lig):
            problems.append(f"{lig!r} is not two or more characters without spaces")
        elif missing := [c for c in lig if c not in have]:
            problems.append(f"{lig!r} has {''.join(dict.fromkeys(missing))!r}, not in the charset")
        elif lig not in have:
            out.append(lig)
            have.add(lig)
    if problems:
        raise EffOCRError("render.ligatures: " + "; ".join(problems))
    return out
