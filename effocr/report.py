"""The HTML report of a workflow run: EffOCR vs Tesseract per set, training curves, errors.

`build_report` reads only result files (the `evaluate` outputs and the trainings'
`metrics.csv`), so the report can be rebuilt without models. It writes `index.html` (self-
contained: inline CSS, plots and gallery images embedded as base64 PNG), `metrics.json` (every
set, both systems) and the plots as PNG files beside them (for `snakemake --report`).
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import logging
import math
import os
import re
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from effocr.artifacts import EVAL_OUTPUTS, REPORT_OUTPUTS
from effocr.config import DatasetSection, EvaluateSection, RunSection, section_defaults
from effocr.utils import EffOCRError, atomic_path, read_json, write_json

LOG = logging.getLogger(__name__)

_PNG_META = {"Software": None}  # no version/time stamps: same inputs, same bytes
# Bookkeeping columns of a metrics.csv (timing, throughput, counts, learning rate): not curves.
_NOT_A_CURVE = re.compile(
    r"(^|_)(time|seconds|elapsed|lr|learning_rate|images|samples|steps?|step_s|epoch_s)($|_)"
    r"|per_s(ec)?($|_)|_s$|(^|_)(n|count|num_\w+)$"
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "figure.dpi": 100})
    return plt


def _png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata=_PNG_META)
    _pyplot().close(fig)
    return buf.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


# ---------------------------------------------------------------------------
# Reading inputs
# ---------------------------------------------------------------------------


def read_training_csv(path: str | os.PathLike) -> dict[str, list[float]]:
    """Numeric columns of a training `metrics.csv` (non-numeric columns are skipped)."""
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list[float]] = {}
    for name in rows[0].keys() if rows else []:
        values = []
        for row in rows:
            try:
                values.append(float(row[name]))
            except (TypeError, ValueError):
                values.append(math.nan)
        # A column is plotted when it has at least one number.
        if any(not math.isnan(v) for v in values):
            columns[name] = values
    return columns


def read_eval_dir(path: str | os.PathLike) -> dict:
    """An `evaluate` output folder: metrics.json, lines.csv, confusions.csv, predictions.jsonl."""
    path = Path(path)
    files = {key: path / name for key, name in EVAL_OUTPUTS.items()}
    metrics_file = files["metrics"]
    if not metrics_file.is_file():
        raise EffOCRError(f"{path}: no metrics.json (is this an `effocr evaluate` output folder?)")
    out: dict[str, Any] = {"metrics": read_json(metrics_file), "lines": [], "confusions": []}
    if files["lines"].is_file():
        with open(files["lines"], encoding="utf-8", newline="") as f:
            out["lines"] = list(csv.DictReader(f))
    if files["confusions"].is_file():
        with open(files["confusions"], encoding="utf-8", newline="") as f:
            out["confusions"] = list(csv.DictReader(f))
    preds: dict[str, dict] = {}
    if files["predictions"].is_file():
        with open(files["predictions"], encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    p = json.loads(line)
                    preds[p.get("image", "")] = p
    out["predictions"] = preds
    return out


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------


def plot_training_curves(curves: dict[str, dict[str, list[float]]]) -> bytes:
    """One panel per training (recognizer pass 1, pass 2, localizer): its numeric columns.

    Columns named like a loss go on the left axis, the others (accuracy, mAP, ...) on the right,
    against `epoch` when there is such a column, else the row number.
    """
    plt = _pyplot()
    names = list(curves) or ["(none)"]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        cols = curves.get(name) or {}
        ax.set_title(name)
        if not cols:
            ax.text(0.5, 0.5, "no metrics.csv", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        x_name = next((c for c in cols if c.lower() in ("epoch", "step", "iteration")), None)
        n = max(len(v) for v in cols.values())
        x = cols[x_name] if x_name else list(range(1, n + 1))
        ax.set_xlabel(x_name or "row")
        right = None
        curves_here = [c for c in cols if c != x_name and not _NOT_A_CURVE.search(c.lower())]
        for k, col in enumerate(curves_here):
            # One colour cycle over both axes, so no two curves share a colour.
            color = plt.get_cmap("tab10")(k % 10)
            if "loss" in col.lower():
                ax.plot(x, cols[col], marker=".", color=color, label=col)
            else:
                right = right or ax.twinx()
                right.plot(x, cols[col], marker=".", linestyle="--", color=color, label=col)
        handles, labels = ax.get_legend_handles_labels()
        if right is not None:
            h2, l2 = right.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        if handles:
            ax.legend(handles, labels, fontsize=7, loc="best")
    fig.tight_layout()
    return _png_bytes(fig)


def plot_cer_per_set(sets: dict[str, dict]) -> bytes:
    """Grouped bars: CER of EffOCR and Tesseract per evaluation set."""
    plt = _pyplot()
    names = list(sets)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(names) + 2), 3.2))
    width = 0.38
    for k, (system, color) in enumerate((("effocr", "#2a6f97"), ("tesseract", "#e69500"))):
        xs, ys = [], []
        for i, name in enumerate(names):
            m = sets[name].get(system, {})
            if "cer" in m:
                xs.append(i + (k - 0.5) * width)
                ys.append(100 * m["cer"])
        bars = ax.bar(
            xs, ys, width, label="EffOCR" if system == "effocr" else "Tesseract", color=color
        )
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("CER (%)")
    ax.set_title("Character error rate per set (lower is better)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _png_bytes(fig)


def plot_cer_by_length(sets: dict[str, dict]) -> bytes:
    """CER per reference-length bucket, one line per set and system."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    buckets: list[str] = []
    for m in sets.values():
        for system in ("effocr", "tesseract"):
            for b in m.get(system, {}).get("by_length", []):
                if b["bucket"] not in buckets:
                    buckets.append(b["bucket"])

    def order(b: str) -> int:
        return int(b.split("-")[0].rstrip("+"))

    buckets.sort(key=order)
    for name, m in sets.items():
        for system, style in (("effocr", "-"), ("tesseract", ":")):
            by = {b["bucket"]: b["cer"] for b in m.get(system, {}).get("by_length", [])}
            if not by:
                continue
            xs = [i for i, b in enumerate(buckets) if b in by]
            ys = [100 * by[buckets[i]] for i in xs]
            label = f"{name} ({'EffOCR' if system == 'effocr' else 'Tesseract'})"
            ax.plot(xs, ys, style, marker="o", label=label)
    ax.set_xticks(range(len(buckets)), buckets)
    ax.set_xlabel("reference length (characters)")
    ax.set_ylabel("CER (%)")
    ax.set_title("CER by line length")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png_bytes(fig)


def draw_line(
    image_path: str | os.PathLike, prediction: dict | None, max_width: int = 900
) -> bytes:
    """The line image with EffOCR's character (red) and word (blue) boxes drawn on it."""
    from PIL import ImageDraw

    from effocr.utils import open_rgb

    img = open_rgb(image_path)
    draw = ImageDraw.Draw(img)
    pred = prediction or {}
    for word in pred.get("words") or []:
        if word.get("bbox"):
            draw.rectangle([float(v) for v in word["bbox"]], outline=(40, 90, 220), width=1)
    for char in pred.get("chars") or []:
        if char.get("bbox"):
            draw.rectangle([float(v) for v in char["bbox"]], outline=(220, 30, 30), width=1)
    scale = min(max_width / img.width, max(1.0, 48 / img.height))
    if scale != 1.0:
        # Small synthetic lines are enlarged so their boxes can be read.
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------


def _summary_table(sets: dict[str, dict]) -> str:
    rows = [
        "<table><tr><th class=l>set</th><th class=l>system</th><th>lines</th><th>CER</th>"
        "<th>WER</th><th>exact match</th><th>lines/s</th></tr>"
    ]
    for name, m in sets.items():
        e, t = m.get("effocr", {}), m.get("tesseract", {})
        for system, s in (("EffOCR", e), ("Tesseract", t)):
            cls = " class=tess" if system == "Tesseract" else ""
            if "cer" not in s:
                reason = s.get("reason", "not run")
                rows.append(
                    f"<tr{cls}><td class=l>{_esc(name)}</td><td class=l>{system}</td>"
                    f"<td colspan=5 class=na>not available: {_esc(reason)}</td></tr>"
                )
                continue
            other = t if system == "EffOCR" else e
            better = "cer" in other and s["cer"] < other["cer"]
            cer_cell = (
                f"<span class=better>{100 * s['cer']:.2f}%</span>"
                if better
                else f"{100 * s['cer']:.2f}%"
            )
            rows.append(
                f"<tr{cls}><td class=l>{_esc(name)}</td><td class=l>{system}</td>"
                f"<td>{s['lines']}</td><td>{cer_cell}</td><td>{100 * s['wer']:.2f}%</td>"
                f"<td>{100 * s['exact_match']:.1f}%</td><td>{_fmt(s.get('lines_per_second'), 1)}</td></tr>"
            )
    rows.append("</table>")
    return "\n".join(rows)


def _orientation_table(sets: dict[str, dict]) -> str:
    """CER/WER of horizontal and vertical lines apart, for the sets that have vertical lines."""
    rows = []
    for name, m in sets.items():
        systems = [
            (label, m.get(key, {}).get("by_orientation") or {})
            for key, label in (("effocr", "EffOCR"), ("tesseract", "Tesseract"))
        ]
        if not any("vertical" in by for _, by in systems):
            continue
        for label, by in systems:
            cls = " class=tess" if label == "Tesseract" else ""
            for orientation in ("horizontal", "vertical"):
                s = by.get(orientation)
                if s is None:
                    continue
                rows.append(
                    f"<tr{cls}><td class=l>{_esc(name)}</td><td class=l>{orientation}</td>"
                    f"<td class=l>{label}</td><td>{s['lines']}</td><td>{s['ref_chars']}</td>"
                    f"<td>{100 * s['cer']:.2f}%</td><td>{100 * s['wer']:.2f}%</td></tr>"
                )
    if not rows:
        return ""
    head = (
        "<h3>By line orientation</h3><p class=note>Sets with vertical lines (taller than wide): "
        "CER and WER pooled over each orientation's lines.</p><table><tr><th class=l>set</th>"
        "<th class=l>orientation</th><th class=l>system</th><th>lines</th><th>ref. chars</th>"
        "<th>CER</th><th>WER</th></tr>"
    )
    return head + "\n".join(rows) + "</table>"


def _confusion_table(confusions: list[dict], top: int) -> str:
    def show(c: str) -> str:
        if c == "":
            return "<i>(none)</i>"
        if c.isspace():
            return "<i>(space)</i>"
        return f"<code class=c>{_esc(c)}</code> <span class=note>U+{ord(c[0]):04X}</span>"

    parts = []
    for system in ("effocr", "tesseract"):
        rows = [r for r in confusions if r.get("system") == system][:top]
        if not rows:
            continue
        label = "EffOCR" if system == "effocr" else "Tesseract"
        body = "".join(
            f"<tr><td class=l>{show(r['reference'])}</td><td class=l>{show(r['hypothesis'])}</td>"
            f"<td>{_esc(r['count'])}</td></tr>"
            for r in rows
        )
        parts.append(
            f"<div style='display:inline-block;vertical-align:top;margin-right:2em'><h3>{label}</h3>"
            "<table><tr><th class=l>reference</th><th class=l>read as</th><th>count</th></tr>"
            f"{body}</table></div>"
        )
    return "".join(parts) or "<p class=note>No character errors.</p>"


def _gallery(data: dict, worst: int) -> str:
    lines = [r for r in data["lines"] if r.get("cer") not in (None, "")]
    lines.sort(key=lambda r: (-float(r["cer"]), -int(r["distance"]), r["image"]))
    lines = [r for r in lines if float(r["cer"]) > 0][:worst]
    if not lines:
        return "<p class=note>Every line is read exactly.</p>"
    out = []
    for r in lines:
        pred = data["predictions"].get(r["image"])
        try:
            img = f"<img alt='{_esc(r['image'])}' src='{_data_uri(draw_line(r['image'], pred))}'>"
        except OSError as exc:
            img = f"<p class=na>image not readable: {_esc(exc)}</p>"
        tess = ""
        if r.get("tesseract_cer"):
            tess = (
                f"<br><span class=lab>Tesseract</span><code>{_esc(r['tesseract_hypothesis'])}</code>"
                f" <span class=note>(CER {float(r['tesseract_cer']):.3f})</span>"
            )
        out.append(
            f"<div class=line><span class=note>{_esc(r['image'])}</span>{img}"
            f"<span class=lab>reference</span><code>{_esc(r['reference'])}</code><br>"
            f"<span class=lab>EffOCR</span><code>{_esc(r['hypothesis'])}</code>"
            f" <span class=note>(distance {r['distance']}, CER {float(r['cer']):.3f})</span>"
            f"{tess}</div>"
        )
    return "\n".join(out)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            flat.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        flat[prefix[:-1]] = obj
    return flat


def _key_value_table(obj: Any, limit: int = 40) -> str:
    flat = list(_flatten(obj).items())[:limit]
    if not flat:
        return "<p class=note>No numeric figures.</p>"
    body = "".join(f"<tr><td class=l>{_esc(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in flat)
    return f"<table>{body}</table>"


def _figure(png: bytes, caption: str) -> str:
    return f"<figure><img src='{_data_uri(png)}'><figcaption>{_esc(caption)}</figcaption></figure>"


OPEN_BOX = "\u2423"  # shows a space in a table cell


def _errors_table(errors: dict | None, top: int = 6) -> str:
    """Which model made EffOCR's errors (metrics.json's `errors`, `effocr.diagnose`)."""
    if not errors:
        return "<p class=note>No error attribution (evaluated before effocr.diagnose).</p>"

    def show(s: str) -> str:
        return f"<code class=c>{_esc(s.replace(' ', OPEN_BOX))}</code>" if s else "<i>-</i>"

    rows = [
        "<table><tr><th class=l>class</th><th class=l>model</th><th>errors</th><th>events</th>"
        "<th>CER part</th><th>share</th><th class=l>most frequent (reference &rarr; read)</th></tr>"
    ]
    for cls, v in errors["classes"].items():
        if not v["errors"]:
            continue
        tops = ", ".join(
            f"{show(r['reference'])}&rarr;{show(r['hypothesis'])} {r['count']}"
            for r in errors.get("top", {}).get(cls, [])[:top]
        )
        rows.append(
            f"<tr><td class=l>{_esc(cls)}</td><td class=l>{_esc(v['kind'])}</td>"
            f"<td>{v['errors']}</td><td>{v['events']}</td><td>{100 * v['rate']:.2f}%</td>"
            f"<td>{100 * v['share']:.1f}%</td><td class=l>{tops}</td></tr>"
        )
    for kind, v in errors["kinds"].items():
        if v["errors"]:
            rows.append(
                f"<tr><th class=l colspan=2>{_esc(kind)}</th><th>{v['errors']}</th><th></th>"
                f"<th>{100 * v['rate']:.2f}%</th><th>{100 * v['share']:.1f}%</th><th></th></tr>"
            )
    rows.append("</table>")
    if errors.get("chars"):
        items = ", ".join(
            f"{show(r['char'])} {r['in_errors']}/{r['count']} "
            f"({r['recognizer']} recognizer, {r['localizer']} localizer)"
            for r in errors["chars"][:12]
        )
        rows.append(
            "<p class=note>Reference characters most often in an error (in errors / "
            f"occurrences): {items}.</p>"
        )
    boxes = errors.get("boxes")
    if boxes and boxes["compare"]["chars"]:
        c = boxes["compare"]
        rows.append(
            f"<p class=note>True character boxes ({boxes['lines']} lines): the box-level "
            f"attribution gives the same class for {c['same']} of {c['chars']} characters, "
            f"{c['same_on_errors']} of the {c['error_chars']} that either method calls an error "
            "(true characters: "
            + _esc(", ".join(f"{k} {v}" for k, v in boxes["true_chars"].items()))
            + ").</p>"
        )
    return "\n".join(rows)


def read_alignment(reports: list[str | os.PathLike]) -> list[dict]:
    """One row per alignment round (`effocr.align` report.json files, round 1 first): the bundle
    that aligned, line counts, `align.min_confidence` and the commonest rejection reasons."""
    from effocr.align import rejection_reasons

    rows = []
    for number, path in enumerate(reports, 1):
        summary = read_json(path)
        rows.append(
            {
                "round": number,
                "report": str(path),
                "bundle": summary.get("bundle"),
                **{k: summary[k] for k in ("lines", "accepted", "rejected", "given")},
                "accepted_fraction": summary["accepted_fraction"],
                "min_confidence": summary["settings"]["min_confidence"],
                "rejection_reasons": dict(rejection_reasons(summary)),
            }
        )
    return rows


def _alignment_table(rounds: list[dict]) -> str:
    """The alignment rounds of `read_alignment`."""
    head = (
        "<h2>Alignment of the transcriptions</h2><p class=note>Character boxes found for the "
        "lines that had only their text (<code class=c>align</code>): each round aligns with "
        "the bundle named, round 1 with <code class=c>align.bundle</code>, each later one with "
        "the bundle trained on the lines the round before accepted. Accepted: confidence at "
        "least <code class=c>align.min_confidence</code>; lines that had boxes are kept as "
        "they are. Every line's figures and reason: each round's report.csv.</p>"
        "<table><tr><th>round</th><th class=l>bundle</th><th>lines</th><th>accepted</th>"
        "<th>rejected</th><th>had boxes</th><th>accepted share</th>"
        "<th class=l>commonest reasons to reject</th></tr>"
    )
    rows = []
    for r in rounds:
        reasons = ", ".join(f"{_esc(k)} ({v})" for k, v in r["rejection_reasons"].items())
        rows.append(
            f"<tr><td>{r['round']}</td><td class=l><code class=c>{_esc(r['bundle'])}</code></td>"
            f"<td>{r['lines']}</td><td>{r['accepted']}</td><td>{r['rejected']}</td>"
            f"<td>{r['given']}</td><td>{100 * r['accepted_fraction']:.1f}%</td>"
            f"<td class=l>{reasons or '-'}</td></tr>"
        )
    return head + "\n".join(rows) + "</table>"


def build_report(
    eval_dirs: dict[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    training: dict[str, str | os.PathLike | None] | None = None,
    localizer_eval: str | os.PathLike | None = None,
    worst_lines: int,
    top_confusions: int = 20,
    title: str = "EffOCR evaluation report",
    config: dict | None = None,
    alignment: list[str | os.PathLike] | None = None,
) -> dict:
    """Write `out_dir/index.html`, `out_dir/metrics.json` and the plots as PNG beside them.

    Args:
        eval_dirs: Evaluation set name -> `evaluate` output folder.
        out_dir: Report folder.
        training: Training name -> its `metrics.csv` (missing files are shown as missing).
        localizer_eval: The localizer's test-split evaluation JSON.
        worst_lines: Lines in the gallery per set.
        top_confusions: Rows of each confusion table.
        title: Page title.
        config: The run's config, summarised in the page (seed, language, data).
        alignment: The report.json of each alignment round, round 1 first (`align.rounds`;
            none when the lines had boxes).

    Returns:
        The `metrics.json` content.
    """
    out_dir = Path(out_dir)
    data = {name: read_eval_dir(path) for name, path in eval_dirs.items()}
    sets = {name: d["metrics"] for name, d in data.items()}
    curves: dict[str, dict[str, list[float]]] = {}
    for name, path in (training or {}).items():
        if path and Path(path).is_file():
            curves[name] = read_training_csv(path)
        else:
            LOG.warning("training metrics %s: %s not found", name, path)
            curves[name] = {}
    loc = read_json(localizer_eval) if localizer_eval and Path(localizer_eval).is_file() else None
    rounds = read_alignment(alignment or [])

    pngs = {
        "training_curves": plot_training_curves(curves),
        "cer_per_set": plot_cer_per_set(sets),
        "cer_by_length": plot_cer_by_length(sets),
    }
    for name, png in pngs.items():
        with atomic_path(out_dir / REPORT_OUTPUTS[name]) as tmp:
            tmp.write_bytes(png)

    summary = {
        "sets": {
            name: {
                "lines": m.get("lines"),
                "type": m.get("type"),
                "path": m.get("path"),
                "options": m.get("options"),
                "effocr": m.get("effocr"),
                "tesseract": m.get("tesseract"),
                "errors": m.get("errors"),
            }
            for name, m in sets.items()
        },
        "training": {
            name: {col: vals[-1] for col, vals in cols.items()} if cols else None
            for name, cols in curves.items()
        },
        "localizer_eval": loc,
        "alignment": rounds,
    }
    write_json(out_dir / REPORT_OUTPUTS["metrics"], summary)

    tess_missing = [
        (n, m["tesseract"].get("reason", ""))
        for n, m in sets.items()
        if "cer" not in m.get("tesseract", {})
    ]
    css = (resources.files("effocr") / "resources" / "report" / "style.css").read_text(
        encoding="utf-8"
    )
    cfg = config or {}
    meta = ", ".join(
        f"{k}: <code class=c>{_esc(v)}</code>"
        for k, v in (
            ("language", cfg.get("language")),
            ("seed", cfg.get("seed")),
            ("data", (cfg.get("dataset") or {}).get("coco_json")),
        )
        if v is not None
    )
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>{_esc(title)}</title><style>{css}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f"<p class=note>Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}. {meta}</p>",
        "<h2>Summary</h2>",
        "<p class=note>CER and WER are pooled over each set (total edit distance / total reference "
        "characters or words) after the normalisations listed in metrics.json; lines/s counts "
        "inference only (models loaded once), one thread each. Bold: the lower CER.</p>",
        _summary_table(sets),
        _orientation_table(sets),
    ]
    if tess_missing:
        reasons = "; ".join(f"{_esc(n)}: {_esc(r)}" for n, r in tess_missing)
        parts.append(f"<p class=warn>Tesseract baseline not shown for some sets. {reasons}</p>")
    skipped = [(n, s) for n, m in sets.items() for s in m.get("skipped_lines") or []]
    if skipped:
        items = "".join(
            f"<li>{_esc(n)}: <code class=c>{_esc(s['id'])}</code> {_esc(s['problem'])}</li>"
            for n, s in skipped
        )
        parts.append(f"<p class=warn>Lines left out of the scores:</p><ul>{items}</ul>")
    parts += [
        _figure(pngs["cer_per_set"], "CER per evaluation set, EffOCR vs Tesseract."),
        _figure(pngs["cer_by_length"], "CER by reference line length (characters)."),
        "<h2>Training</h2>",
        _figure(
            pngs["training_curves"],
            "Training curves (metrics.csv of each training; loss on the left axis, other "
            "figures dashed on the right axis).",
        ),
    ]
    if loc is not None:
        parts += ["<h3>Localizer on the test split</h3>", _key_value_table(loc)]
    if rounds:
        parts.append(_alignment_table(rounds))
    for name, d in data.items():
        parts.append(f"<h2>Set <code class=c>{_esc(name)}</code></h2>")
        m = d["metrics"]
        parts.append(
            f"<p class=note>{_esc(m.get('type'))} set <code class=c>{_esc(m.get('path'))}</code>, "
            f"{m.get('lines')} lines.</p>"
        )
        parts.append("<h3>Most frequent character confusions</h3>")
        parts.append(_confusion_table(d["confusions"], top_confusions))
        parts.append(
            "<h3>Which model made the errors</h3><p class=note>Every character error (edit "
            "operation of the CER) attributed to the localizer (missed, extra, merged or split "
            "boxes, spaces) or the recognizer (one box, wrong label); CER part = errors / "
            "reference characters, so the parts add up to the CER.</p>"
        )
        parts.append(_errors_table(m.get("errors")))
        parts.append(
            f"<h3>Worst lines (up to {worst_lines})</h3>"
            "<p class=note>EffOCR's character boxes in red, word boxes in blue.</p>"
        )
        parts.append(_gallery(d, worst_lines))
    parts.append("</body></html>")
    with atomic_path(out_dir / REPORT_OUTPUTS["index"]) as tmp:
        tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return summary


def build_report_from_config(
    eval_dirs: dict[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    training: dict[str, str | os.PathLike | None],
    localizer_eval: str | os.PathLike,
    alignment: list[str | os.PathLike],
    evaluate: EvaluateSection,
    run: RunSection,
    dataset: DatasetSection,
) -> dict:
    """`build_report` with the config sections `evaluate` (`worst_lines`), `run` and
    `dataset` (`coco_json`), the last two summarised in the page."""
    return build_report(
        eval_dirs,
        out_dir,
        training=training,
        localizer_eval=localizer_eval,
        alignment=alignment,
        worst_lines=evaluate.worst_lines,
        config={
            "language": run.language,
            "seed": run.seed,
            "dataset": {"coco_json": dataset.coco_json},
        },
    )


# ---------------------------------------------------------------------------
# Command line: effocr report
# ---------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `effocr report`."""
    parser.add_argument(
        "--eval",
        dest="evals",
        action="append",
        required=True,
        metavar="DIR",
        help="an `effocr evaluate` output folder (its name is the set's); repeat for several",
    )
    parser.add_argument(
        "--training",
        action="append",
        default=[],
        metavar="NAME=CSV",
        help="a training metrics.csv to plot, e.g. recognizer_pass1=results/recognizer/pass1/metrics.csv",
    )
    parser.add_argument("--localizer-eval", default=None, help="the localizer's evaluation JSON")
    parser.add_argument(
        "--alignment",
        action="append",
        default=[],
        metavar="JSON",
        help="an `effocr align` report.json; repeat for each round, the first round first",
    )
    parser.add_argument("--output", required=True, help="report folder (index.html, metrics.json)")
    parser.add_argument(
        "--worst-lines",
        type=int,
        default=None,
        help="worst lines shown per set (default: config's evaluate.worst_lines)",
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of `effocr report`."""
    training = {}
    for item in args.training:
        name, sep, path = item.partition("=")
        if not sep:
            raise EffOCRError(f"--training {item!r}: expected NAME=CSV")
        training[name] = path
    eval_dirs = {Path(d).name: d for d in args.evals}
    build_report(
        eval_dirs,
        args.output,
        training=training,
        localizer_eval=args.localizer_eval,
        alignment=args.alignment,
        worst_lines=(
            section_defaults("evaluate")["worst_lines"]
            if args.worst_lines is None
            else args.worst_lines
        ),
    )
    print(f"report: {Path(args.output) / 'index.html'}")
    return 0
