"""Small shared helpers: atomic outputs, labels as code points, seeding, devices, logging."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

LOG = logging.getLogger("effocr")


class EffOCRError(Exception):
    """An error caused by the user's input, reported without a traceback by the CLI."""


# ---------------------------------------------------------------------------
# Labels. A label is a string of one or more characters; on disk it is written as
# code points ("U+0041", "U+0041_U+0301") so that whitespace, combining marks and
# non-BMP characters survive every file format and file system.
# ---------------------------------------------------------------------------


# A label in code-point form: U+XXXX, several joined by "_" (see `label_to_codepoints`).
CODEPOINTS_RE = re.compile(r"^U\+[0-9A-Fa-f]{4,6}(?:_U\+[0-9A-Fa-f]{4,6})*$")


def label_to_codepoints(label: str) -> str:
    """Encode a label as `U+XXXX` code points joined by `_` (e.g. ``"A"`` -> ``"U+0041"``)."""
    if not label:
        raise ValueError("empty label")
    return "_".join(f"U+{ord(c):04X}" for c in label)


def codepoints_to_label(code: str) -> str:
    """Decode `label_to_codepoints` output back to the label string."""
    parts = code.strip().split("_")
    try:
        return "".join(chr(int(p[2:], 16)) for p in parts if p.upper().startswith("U+"))
    except ValueError as exc:
        raise ValueError(f"not a code-point label: {code!r}") from exc


# ---------------------------------------------------------------------------
# Atomic outputs: write into a temporary sibling, rename into place on success.
# A failed or interrupted step therefore never leaves something that looks complete.
# ---------------------------------------------------------------------------


# Written into every directory `atomic_path` creates. Only a directory carrying it (or an
# empty one) is replaced: a mistyped output path must never make us delete someone's folder.
OUTPUT_MARKER = ".effocr-output"


def _replaceable(path: Path) -> bool:
    return (path / OUTPUT_MARKER).is_file() or (path.is_dir() and not any(path.iterdir()))


def _make_temp_dir(parent: Path, name: str) -> Path:
    # Not tempfile.mkdtemp: its mode 0700 would survive the rename, and a bundle shared on a
    # cluster would be unreadable to colleagues. os.mkdir applies the user's umask.
    for _ in range(100):
        tmp = parent / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            tmp.mkdir(mode=0o777)
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{parent}: cannot create a temporary directory for {name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path`; move it onto `path` when the block succeeds.

    With `is_dir`, an existing directory at `path` is replaced only when an earlier
    `atomic_path` wrote it (it carries `OUTPUT_MARKER`) or it is empty; anything else is an
    `EffOCRError`, raised before the block runs, and the directory is left as it is.
    """
    path = Path(path)
    if is_dir and path.exists() and not (path.is_dir() and _replaceable(path)):
        raise EffOCRError(
            f"{path}: exists and was not written by effocr (no {OUTPUT_MARKER} in it); "
            "refusing to replace it: remove it yourself or choose another output path"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _make_temp_dir(path.parent, path.name)
    target = tmp if is_dir else tmp / path.name
    try:
        yield target
        if is_dir:
            (tmp / OUTPUT_MARKER).write_text(
                "Written by effocr; replaced as a whole when its step runs again.\n",
                encoding="utf-8",
            )
            if path.exists():
                if not _replaceable(path):  # appeared while the block ran
                    raise EffOCRError(f"{path}: exists and was not written by effocr")
                shutil.rmtree(path)
            os.replace(tmp, path)
        else:
            os.replace(target, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """Write JSON atomically (UTF-8, non-ASCII kept readable)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON, turning a parse error into an `EffOCRError` that names the file and position."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as exc:
        raise EffOCRError(f"{path}: file not found") from exc
    except json.JSONDecodeError as exc:
        raise EffOCRError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc


# ---------------------------------------------------------------------------
# Images: every line or glyph image is read through here, so transparency means the same
# thing in training, evaluation and inference.
# ---------------------------------------------------------------------------

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def flatten_alpha(im):
    """A PIL image without transparency: transparent pixels composited onto white.

    Text saved as ink in the alpha channel over black (or any) colour would otherwise read as
    a black image; a page is white where nothing is drawn. Images without transparency come
    back unchanged.
    """
    from PIL import Image

    if im.mode not in _ALPHA_MODES and "transparency" not in im.info:
        return im
    # Scans are often saved as RGBA with an opaque alpha: nothing to composite, and skipping
    # it saves a third of a UW3 line's decoding time.
    if "transparency" not in im.info and im.getchannel("A").getextrema() == (255, 255):
        return im
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def to_rgb(im):
    """A PIL image as 8-bit RGB, transparency composited onto white (`flatten_alpha`)."""
    return flatten_alpha(im).convert("RGB")


def open_rgb(path: str | os.PathLike):
    """Open an image file fully decoded as 8-bit RGB, transparency on white.

    PIL's errors (OSError, `PIL.Image.DecompressionBombError`, ...) propagate to the caller,
    which knows which record the file belongs to.
    """
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return to_rgb(im)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex SHA-256 of an object's canonical JSON form (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


# ---------------------------------------------------------------------------
# Determinism and devices
# ---------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (if imported) so CPU runs repeat exactly."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


def select_device(requested: str = "auto") -> str:
    """Resolve ``auto``/``cpu``/``cuda``/``cuda:N`` to a torch device string.

    ``auto`` picks CUDA when torch sees a GPU, else the CPU. Asking for CUDA where there is
    none is an error rather than a silent fallback, so a cluster job on the wrong node fails loudly.
    """
    import torch

    if requested in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise EffOCRError(f"device {requested!r} requested but torch sees no CUDA device")
    return requested


def optimizer_step(loss, optimizer, scaler=None) -> None:
    """Backpropagate `loss` and step `optimizer`, through a `torch.amp.GradScaler` when given."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


def load_checkpoint(path: str | os.PathLike, what: str, device: str = "cpu") -> Any:
    """`torch.load` of a `.pt` file restricted to tensors and plain Python data.

    `weights_only=True`: unpickling arbitrary objects would run whatever code a crafted file
    names (`__reduce__`), and model files travel between people. EffOCR's own checkpoints hold
    only tensors, numbers, strings, lists, tuples and dicts (`save_checkpoint`).

    Raises:
        EffOCRError: naming the file, when it is missing, unreadable or holds other objects.
    """
    import pickle

    import torch

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError as exc:
        raise EffOCRError(f"{path}: {what} not found") from exc
    except IsADirectoryError as exc:
        raise EffOCRError(f"{path}: {what} is a directory, not a .pt file") from exc
    except pickle.UnpicklingError as exc:
        # torch reports refused globals (and garbage) as UnpicklingError; its text is long.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EffOCRError(
            f"{path}: refused to load {what}: it holds objects other than tensors and plain "
            f"data (only those are loaded, so that a crafted file cannot run code): {first}"
        ) from exc
    except Exception as exc:  # torch raises RuntimeError, EOFError, zipfile errors, ...
        raise EffOCRError(f"{path}: cannot read {what}: {exc}") from exc


def plain_data(obj: Any) -> Any:
    """`obj` with NumPy values and paths turned into the plain types `load_checkpoint` accepts.

    Raises:
        TypeError: for any other object (a bug: it could not be loaded back).
    """
    import torch

    # Before the scalar types: np.float64 is a float subclass, but pickles as a NumPy object.
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or type(obj) in (bool, int, float, str) or isinstance(obj, torch.Tensor):
        return obj
    for plain in (str, int, float):  # subclasses, e.g. torch's version string
        if isinstance(obj, plain):
            return plain(obj)
    if isinstance(obj, dict):
        return {plain_data(k): plain_data(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(plain_data(v) for v in obj)
    if isinstance(obj, list):
        return [plain_data(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} cannot go into a checkpoint (plain data only)")


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """`torch.save` atomically, of plain data only, so that `load_checkpoint` reads it back."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(plain_data(obj), tmp)


def resume_training(
    path: Path, config_hash: str, model, optimizer, scheduler, scaler=None
) -> dict | None:
    """Load a training checkpoint into the training objects when it belongs to this run.

    Returns the checkpoint dict (for epoch, metrics, best) when its `config_hash` matches; None
    when there is none, it cannot be read, or it was written for another config, inputs or code
    (then training starts from scratch, with the reason logged).
    """
    if not path.exists():
        return None
    try:
        # On CPU: states kept in the checkpoint (the best weights) stay there;
        # load_state_dict moves the rest to the model's device.
        ckpt = load_checkpoint(path, "training checkpoint")
    except EffOCRError as exc:  # a torn file cannot happen (atomic writes), but a foreign one can
        LOG.warning("%s; starting from scratch", exc)
        return None
    if not isinstance(ckpt, dict) or ckpt.get("config_hash") != config_hash:
        LOG.info("%s: config, inputs or code changed (config_hash differs); not resumed", path)
        return None
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    return ckpt


def set_threads(threads: int | None) -> None:
    """Limit torch intra-op threads (Snakemake passes the rule's `threads`)."""
    if threads and threads > 0:
        import torch

        torch.set_num_threads(int(threads))


def setup_logging(log_file: str | os.PathLike | None = None, level: int = logging.INFO) -> None:
    """Log to stderr, or to `log_file` when given (Snakemake's `log:`)."""
    handlers: list[logging.Handler] = []
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w", encoding="utf-8"))
    else:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


def progress(iterable=None, **kwargs):
    """A tqdm progress bar when stderr is a terminal; plain iteration in logs and CI."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", not sys.stderr.isatty())
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
