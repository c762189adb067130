"""Hard-negative mining: which classes the first-pass model confuses, written to `hard_negatives.txt`.

Format (docs/architecture.md): UTF-8; `#` lines are comments (the header gives k and the
model); every other line is one hard-negative set of labels in code-point form separated by
single spaces, the query's own class first, then its k-1 nearest other classes. Labels never
contain spaces in that form, so whitespace characters (U+0020, U+3000, tab) and non-BMP
characters round-trip, which the original's concatenated characters did not.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np

from effocr.config import FontsSection, RecognizerSection, RunSection
from effocr.recognizer.dataset import (
    CODEPOINTS_RE,
    read_manifest,
    reference_groups,
    resolve_reference_fonts,
)
from effocr.recognizer.index import ReferenceIndex, _loader_workers, class_embeddings, embed_paths
from effocr.recognizer.model import load_recognizer
from effocr.utils import (
    EffOCRError,
    codepoints_to_label,
    label_to_codepoints,
    select_device,
    set_threads,
    write_text,
)

LOG = logging.getLogger(__name__)


def write_hard_negatives(
    path: str | Path, sets: Sequence[Sequence[str]], k: int, model: str = ""
) -> Path:
    """Write hard-negative sets (lists of labels, own class first) to `hard_negatives.txt` atomically."""
    lines = [
        f"# effocr hard negatives: k={k} model={model}",
        "# one set per line: the query's own class first, then its k-1 nearest other classes,",
        "# each label as code points (U+XXXX, several joined by _), separated by single spaces",
    ]
    for s in sets:
        if not s:
            raise ValueError("empty hard-negative set")
        lines.append(" ".join(label_to_codepoints(label) for label in s))
    write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def read_hard_negatives(path: str | Path) -> list[list[str]]:
    """Read `hard_negatives.txt`: a list of hard-negative sets, each a list of labels (own class first).

    Raises:
        EffOCRError: naming the file and line of an invalid label or a one-class set.
    """
    path = Path(path)
    if not path.exists():
        raise EffOCRError(f"{path}: hard-negative file not found")
    sets: list[list[str]] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            labels = []
            for token in line.split(" "):
                if not token:
                    continue
                if not CODEPOINTS_RE.match(token):
                    raise EffOCRError(f"{path}: line {line_no}: not a code-point label: {token!r}")
                labels.append(codepoints_to_label(token))
            if len(labels) < 2:
                raise EffOCRError(f"{path}: line {line_no}: a set needs at least 2 classes")
            sets.append(labels)
    if not sets:
        raise EffOCRError(f"{path}: no hard-negative sets")
    return sets


def nearest_other_classes(own: Sequence[int], rows: np.ndarray, k: int) -> list[list[int]]:
    """For each query: its own class row, then the first k-1 other rows in neighbour order."""
    out = []
    for o, row in zip(own, rows, strict=True):
        others = [int(r) for r in row if r != o and r >= 0][: k - 1]
        out.append([int(o), *others])
    return out


def mine_hard_negatives(
    model_pt: str | Path,
    manifest: str | Path,
    out_path: str | Path,
    *,
    recognizer: RecognizerSection,
    fonts: FontsSection,
    run: RunSection,
    threads: int = 1,
    batch_size: int = 256,
) -> Path:
    """Query real training crops (or one render per class) against the first-pass index.

    The index is built in memory from the reference font renders in `manifest` with the
    first-pass weights, as the original did at the end of run 1.

    Args:
        model_pt: First-pass `model.pt`.
        manifest: Recognizer dataset manifest.
        out_path: `hard_negatives.txt` to write.
        recognizer: `hard_negatives_k`, `device`.
        fonts: `reference`.
        run: `language` (its profile's reference fonts when `fonts.reference` is null).
        threads: CPU threads.
        batch_size: Images per forward pass.
    """
    from effocr.profiles import get_profile

    start = time.perf_counter()
    k = recognizer.hard_negatives_k
    set_threads(threads)
    faiss.omp_set_num_threads(max(1, int(threads)))
    device = select_device(recognizer.device)
    workers = _loader_workers(threads, device)
    model = load_recognizer(model_pt, device=device)
    records = read_manifest(manifest)
    renders = [r for r in records if r.source == "render"]
    if not renders:
        raise EffOCRError(f"{manifest}: no render rows to build the first-pass index from")
    stems = resolve_reference_fonts(
        (r.origin for r in renders),
        fonts.reference,
        get_profile(run.language).reference_fonts,
    )
    labels, ref_embs = class_embeddings(
        model, reference_groups(renders, stems), batch_size, device, workers
    )
    index = ReferenceIndex.build(ref_embs, labels)
    if len(index) < 2:
        raise EffOCRError(f"{manifest}: hard-negative mining needs at least 2 classes")
    row_of = {label: i for i, label in enumerate(labels)}
    k_eff = min(k, len(index))
    if k_eff < k:
        LOG.warning(
            "only %d classes: hard-negative sets have %d classes, not %d", len(index), k_eff, k
        )

    queries = [r for r in records if r.source == "real" and r.split == "train"]
    if queries:
        known = [r for r in queries if r.label in row_of]
        if len(known) < len(queries):
            LOG.warning(
                "%d real crops have a class missing from the reference renders; skipped",
                len(queries) - len(known),
            )
        q_embs = embed_paths(model, [r.path for r in known], batch_size, device, workers, "queries")
        own = [row_of[r.label] for r in known]
        what = f"{len(known)} real training crops"
    else:
        # One render per class: the class's reference embedding itself.
        q_embs = ref_embs
        own = list(range(len(labels)))
        what = f"one render per class ({len(labels)})"
    # One neighbour more than needed, so that k-1 others remain when the own class is among them.
    _, rows = index.search(q_embs, min(k_eff + 1, len(index)))
    sets = [[labels[r] for r in s] for s in nearest_other_classes(own, rows, k_eff)]
    write_hard_negatives(out_path, sets, k_eff, model=str(model_pt))
    LOG.info(
        "hard negatives: %d sets of %d classes from %s, %.1f s",
        len(sets),
        k_eff,
        what,
        time.perf_counter() - start,
    )
    return Path(out_path)


# ---------------------------------------------------------------------------
# Command line: effocr mine-hard-negatives
# ---------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr mine-hard-negatives`."""
    parser.add_argument("--model", required=True, help="first-pass recognizer model.pt")
    parser.add_argument("--manifest", required=True, help="recognizer dataset manifest (CSV)")
    parser.add_argument("--out", required=True, help="hard_negatives.txt to write")
    parser.add_argument("--config", default=None, help="workflow config YAML")
    parser.add_argument("--k", type=int, default=None, help="override recognizer.hard_negatives_k")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)


def run(args: argparse.Namespace) -> int:
    """Mine hard negatives and write hard_negatives.txt."""
    from effocr.config import config_sections, load_config

    overrides = {"recognizer": {"hard_negatives_k": args.k}} if args.k else None
    sections = config_sections(load_config(args.config, overrides))
    mine_hard_negatives(
        args.model,
        args.manifest,
        args.out,
        **sections.pick("recognizer", "fonts", "run"),
        threads=args.threads,
        batch_size=args.batch_size,
    )
    print(f"wrote {args.out}")
    return 0
