"""Lines/s and CER of `effocr infer` against Tesseract 5 on the same line images and cores.

Sets: (a) the demo test split (COCO JSON with image `text`), (b) any directory of line images
with `.gt.txt` files (e.g. UW3 lines). For each set and for 1 and 2 cores (pinned with
`taskset` where available):

* effocr CLI: `effocr infer --workers N` end to end (process start and model load included);
* effocr Engine: steady-state lines/s of `effocr.infer.Engine` (model loaded), with the time
  per stage (decode, localizer, crops, recognizer, kNN);
* Tesseract CLI: `tesseract IMG - --psm 7`, OMP_THREAD_LIMIT=1, one process per line, N in
  parallel;
* tesserocr (if installed, `pip install effocr[tesseract]`): one API per worker thread.

The machine may be shared: the Engine (for each `--lm` setting) and tesserocr take turns,
`--rounds` times, and the table gives the median lines/s of each and the median of the
per-round ratios, so both systems see the same load; the load average of each round is in the
JSON. `x CPU-s` is the same ratio of lines per CPU-second (user + system time of the Engine's
process and workers, of the tesserocr process), which other jobs on the machine change least. `--avx2-only` runs everything (EffOCR, Tesseract, tesserocr) as on a CPU with AVX2 but no
AVX-512, VNNI or AMX (bench/avx2_only.c: CPUID masked, so ONNX Runtime and Tesseract dispatch
their AVX2 kernels; needs gcc and the `cpuid_fault` CPU flag).

CER = total Levenshtein distance / total reference characters, on `effocr.metrics.normalize`d
text. Writes bench/results/infer_throughput.json and prints a table.

    .venv/bin/python bench/infer_throughput.py --bundle results/bundle \
        --test-split results/data/splits/test.json --gt-dir /work/shared/data/uw3-50lines \
        --lm on off --rounds 5 [--avx2-only]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rapidfuzz.distance import Levenshtein

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import (  # noqa: E402  (bench/common.py)
    avx2_only_active,
    cpu_info,
    cpu_line,
    reexec_avx2_only,
)

from effocr.metrics import normalize  # noqa: E402


def cer(refs: list[str], hyps: list[str | None]) -> float:
    """Pooled CER of normalised texts."""
    dist = sum(
        Levenshtein.distance(normalize(r), normalize(h)) for r, h in zip(refs, hyps, strict=True)
    )
    total = sum(len(normalize(r)) for r in refs)
    return dist / max(total, 1)


def load_coco_set(test_json: Path, image_dir: Path) -> list[tuple[str, str]]:
    coco = json.loads(test_json.read_text(encoding="utf-8"))
    return [
        (str(image_dir / im["file_name"]), im.get("text", ""))
        for im in sorted(coco["images"], key=lambda i: i["id"])
    ]


def load_gt_dir(gt_dir: Path) -> list[tuple[str, str]]:
    out = []
    for gt in sorted(gt_dir.glob("*.gt.txt")):
        stem = gt.name[: -len(".gt.txt")]
        imgs = [p for p in gt_dir.glob(stem + ".*") if not p.name.endswith(".txt")]
        if imgs:
            out.append((str(sorted(imgs)[0]), gt.read_text(encoding="utf-8").strip()))
    return out


def _pin(cores: int) -> list[str]:
    return (
        ["taskset", "-c", ",".join(str(i) for i in range(cores))] if shutil.which("taskset") else []
    )


def run_effocr_cli(
    bundle: Path, images: list[str], cores: int, batch_size: int, lm: str | None = None
) -> tuple[float, list[str | None]]:
    with tempfile.TemporaryDirectory(prefix="effocr-bench-") as tmp:
        listing = Path(tmp) / "list.txt"
        listing.write_text("".join(str(Path(p).resolve()) + "\n" for p in images), encoding="utf-8")
        cmd = [
            *_pin(cores),
            sys.executable,
            "-m",
            "effocr.cli",
            "infer",
            "--model",
            str(bundle),
            "--output",
            str(Path(tmp) / "out"),
            "--workers",
            str(cores),
            "--batch-size",
            str(batch_size),
            *(["--lm", lm] if lm else []),
            f"@{listing}",
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(cores)}
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"effocr infer failed: {proc.stderr[-2000:]}")
        recs = [
            json.loads(ln)
            for ln in (Path(tmp) / "out" / "predictions.jsonl").read_text().splitlines()
        ]
    return seconds, [r.get("text") for r in recs]


def _proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (/proc/PID/stat; 0 where unreadable)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class EngineRun:
    """An `effocr.infer.Engine` kept open (workers started, warmed up) for timed passes."""

    def __init__(self, bundle: Path, cores: int, batch_size: int, lm: str | None) -> None:
        from effocr.infer import Engine
        from effocr.lm import lm_choice

        self.engine = Engine(
            bundle, workers=cores, device="cpu", batch_size=batch_size, lm=lm_choice(lm)
        )
        self.engine.start()
        self.passes = 0

    def warm_up(self, images: list[str]) -> None:
        """A first, untimed pass (first ORT runs allocate), then zeroed stage timings."""
        self.engine.infer(images)
        self.engine.reset_timings()

    def _cpu_seconds(self) -> float:
        """CPU seconds of this process and of the Engine's worker processes so far."""
        pool = self.engine.runner._pool
        pids = list(getattr(pool, "_processes", None) or {}) if pool is not None else []
        return time.process_time() + sum(_proc_cpu_seconds(pid) for pid in pids)

    def timed_pass(self, images: list[str]) -> tuple[float, list[str | None], float]:
        """Seconds, texts and CPU seconds (this process and the workers) of one pass."""
        start, cpu = time.perf_counter(), self._cpu_seconds()
        results = self.engine.infer(images)
        self.passes += 1
        seconds = time.perf_counter() - start
        texts = [r.text if r.ok else None for r in results]
        return seconds, texts, self._cpu_seconds() - cpu

    def summary(self) -> dict:
        eng = self.engine
        return {
            "glyphs_per_line": eng.glyphs_done / max(eng.lines_done, 1),
            "parallel": eng.parallel,
            "stage_seconds_per_line": {
                k: v / max(eng.lines_done, 1) for k, v in eng.timings.items()
            },
        }

    def close(self) -> None:
        self.engine.close()


def run_tesseract_cli(images: list[str], cores: int, lang: str) -> tuple[float, list[str]]:
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}

    def one(path: str) -> str:
        proc = subprocess.run(
            ["tesseract", path, "-", "--psm", "7", "-l", lang],
            capture_output=True,
            text=True,
            env=env,
        )
        return proc.stdout.replace("\f", "").strip()

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=cores) as pool:
        texts = list(pool.map(one, images))
    return time.perf_counter() - start, texts


def run_tesserocr(
    images: list[str], cores: int, lang: str
) -> tuple[float, list[str], float] | None:
    """Seconds, texts and CPU seconds (all threads) of one timed pass."""
    try:
        import tesserocr
    except ImportError:
        return None
    import threading

    from PIL import Image

    tessdata = next(
        (str(p) + "/" for p in sorted(Path("/usr/share/tesseract-ocr").glob("*/tessdata"))), None
    )
    local = threading.local()

    def one(path: str) -> str:
        if not hasattr(local, "api"):
            kw = {"path": tessdata} if tessdata else {}
            local.api = tesserocr.PyTessBaseAPI(lang=lang, psm=tesserocr.PSM.SINGLE_LINE, **kw)
        with Image.open(path) as im:
            local.api.SetImage(im.convert("RGB"))
            return local.api.GetUTF8Text().strip()

    os.environ["OMP_THREAD_LIMIT"] = "1"
    with ThreadPoolExecutor(max_workers=cores) as pool:
        list(pool.map(one, images[:2]))  # load the language model in each worker first
        start, cpu = time.perf_counter(), time.process_time()
        texts = list(pool.map(one, images))
    return time.perf_counter() - start, texts, time.process_time() - cpu


def run_tesserocr_isolated(
    images: list[str], cores: int, lang: str
) -> tuple[float, list[str], float] | None:
    """`run_tesserocr` in a child process: tesserocr left in this process stalls later ORT runs."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import infer_throughput as b; "
        "r = b.run_tesserocr(json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]); "
        "print(json.dumps(r))"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(Path(__file__).parent),
            json.dumps(images),
            str(cores),
            lang,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        print(f"tesserocr failed: {proc.stderr[-500:]}", file=sys.stderr)
        return None
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return None if out is None else (out[0], out[1], out[2])


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def bench_set(name: str, lines: list[tuple[str, str]], args: argparse.Namespace) -> dict:
    images = [p for p, _ in lines]
    refs = [t for _, t in lines]
    out: dict = {"set": name, "n_lines": len(images), "runs": []}
    lms: list[str | None] = list(args.lm) if args.lm else [None]
    tesseract = not args.no_tesseract and shutil.which("tesseract") is not None
    for cores in args.cores:
        # Inherited by the Engine's worker processes and the tesserocr child alike.
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, set(range(cores)))
        engines = {lm: EngineRun(args.bundle, cores, args.batch_size, lm) for lm in lms}
        rounds: list[dict] = []
        texts: dict = {}
        try:
            for run in engines.values():
                run.warm_up(images)
            for _ in range(args.rounds):
                rnd: dict = {
                    "loadavg_1min": os.getloadavg()[0],
                    "effocr_lines_per_s": {},
                    "effocr_lines_per_cpu_s": {},
                }
                for lm, run in engines.items():
                    secs, texts[lm], cpu = run.timed_pass(images)
                    rnd["effocr_lines_per_s"][str(lm)] = len(images) / secs
                    rnd["effocr_lines_per_cpu_s"][str(lm)] = len(images) / max(cpu, 1e-9)
                if tesseract:
                    tr = run_tesserocr_isolated(images, cores, args.tesseract_lang)
                    if tr is not None:
                        rnd["tesserocr_lines_per_s"] = len(images) / tr[0]
                        rnd["tesserocr_lines_per_cpu_s"] = len(images) / max(tr[2], 1e-9)
                        texts["tesserocr"] = tr[1]
                rounds.append(rnd)
            summaries = {lm: run.summary() for lm, run in engines.items()}
        finally:
            for run in engines.values():
                run.close()
        tess_cli = run_tesseract_cli(images, cores, args.tesseract_lang) if tesseract else None
        tessocr = [r["tesserocr_lines_per_s"] for r in rounds if "tesserocr_lines_per_s" in r]
        for lm in lms:
            effocr = [r["effocr_lines_per_s"][str(lm)] for r in rounds]
            effocr_cpu = [r["effocr_lines_per_cpu_s"][str(lm)] for r in rounds]
            row: dict = {
                "cores": cores,
                "lm": lm or "bundle",
                "rounds": len(rounds),
                "effocr_engine_lines_per_s": _median(effocr),
                "effocr_engine_lines_per_s_rounds": effocr,
                # Lines per CPU-second: what a busy machine changes least.
                "effocr_engine_lines_per_cpu_s": _median(effocr_cpu),
                "effocr_cer": cer(refs, texts[lm]),
                "loadavg_1min_rounds": [r["loadavg_1min"] for r in rounds],
                **summaries[lm],
            }
            secs, cli_texts = run_effocr_cli(args.bundle, images, cores, args.batch_size, lm)
            row["effocr_cli_lines_per_s"] = len(images) / secs
            row["effocr_cli_cer"] = cer(refs, cli_texts)
            if tess_cli is not None:
                row["tesseract_cli_lines_per_s"] = len(images) / tess_cli[0]
                row["tesseract_cer"] = cer(refs, tess_cli[1])
                row["speedup_vs_tesseract_cli"] = (
                    row["effocr_engine_lines_per_s"] / row["tesseract_cli_lines_per_s"]
                )
            if len(tessocr) == len(rounds):
                row["tesserocr_lines_per_s"] = _median(tessocr)
                row["tesserocr_lines_per_s_rounds"] = tessocr
                row["tesserocr_cer"] = cer(refs, texts["tesserocr"])
                # Each round's two figures saw the same load: the median of their ratios.
                row["speedup_vs_tesserocr"] = _median(
                    [e / t for e, t in zip(effocr, tessocr, strict=True)]
                )
                tess_cpu = [r["tesserocr_lines_per_cpu_s"] for r in rounds]
                row["tesserocr_lines_per_cpu_s"] = _median(tess_cpu)
                row["speedup_vs_tesserocr_cpu"] = _median(
                    [e / t for e, t in zip(effocr_cpu, tess_cpu, strict=True)]
                )
            out["runs"].append(row)
    return out


def print_table(results: list[dict]) -> None:
    cols = [
        ("set", 14),
        ("cores", 5),
        ("lm", 6),
        ("engine l/s", 10),
        ("cli l/s", 8),
        ("tess l/s", 8),
        ("tessocr l/s", 11),
        ("x tess", 7),
        ("x tessocr", 9),
        ("x CPU-s", 7),
        ("CER effocr", 10),
        ("CER tess", 8),
    ]
    print(" | ".join(f"{c:>{w}}" for c, w in cols))
    for res in results:
        for r in res["runs"]:
            vals = [
                res["set"][:14],
                r["cores"],
                r["lm"],
                r.get("effocr_engine_lines_per_s"),
                r.get("effocr_cli_lines_per_s"),
                r.get("tesseract_cli_lines_per_s"),
                r.get("tesserocr_lines_per_s"),
                r.get("speedup_vs_tesseract_cli"),
                r.get("speedup_vs_tesserocr"),
                r.get("speedup_vs_tesserocr_cpu"),
                r.get("effocr_cer"),
                r.get("tesseract_cer"),
            ]
            cells = []
            for v, (_, w) in zip(vals, cols, strict=True):
                cells.append(
                    f"{v:>{w}.3f}" if isinstance(v, float) else f"{'-' if v is None else v!s:>{w}}"
                )
            print(" | ".join(cells))
    print("\nms per line by stage (Engine, summed over the workers):")
    for res in results:
        for r in res["runs"]:
            st = " ".join(f"{k} {v * 1000:.2f}" for k, v in r["stage_seconds_per_line"].items())
            print(
                f"  {res['set']} cores={r['cores']} lm={r['lm']} "
                f"glyphs/line={r['glyphs_per_line']:.1f}: {st}"
            )
    print("\nper round (lines/s EffOCR / tesserocr, 1-min load average):")
    for res in results:
        for r in res["runs"]:
            per = zip(
                r["effocr_engine_lines_per_s_rounds"],
                r.get("tesserocr_lines_per_s_rounds") or [None] * r["rounds"],
                r["loadavg_1min_rounds"],
                strict=True,
            )
            cells = [
                f"{e:.1f}/{'-' if t is None else f'{t:.1f}'} (load {a:.1f})" for e, t, a in per
            ]
            print(f"  {res['set']} cores={r['cores']} lm={r['lm']}: {', '.join(cells)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=REPO / "results" / "bundle")
    ap.add_argument(
        "--test-split", type=Path, default=REPO / "results" / "data" / "splits" / "test.json"
    )
    ap.add_argument(
        "--image-dir",
        type=Path,
        default=None,
        help="default: dataset.image_dir of config/config.yaml",
    )
    ap.add_argument(
        "--gt-dir", type=Path, default=None, help="directory of line images with .gt.txt files"
    )
    ap.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="timed passes of each system, taking turns (medians are reported)",
    )
    ap.add_argument(
        "--lm",
        nargs="+",
        choices=("on", "off"),
        default=None,
        help="EffOCR with the bundle's language model on and/or off (default: as the bundle says)",
    )
    ap.add_argument(
        "--avx2-only",
        action="store_true",
        help="run as on an AVX2 CPU without AVX-512/VNNI/AMX (bench/avx2_only.c)",
    )
    ap.add_argument("--max-lines", type=int, default=None)
    ap.add_argument("--tesseract-lang", default="eng")
    ap.add_argument("--no-tesseract", action="store_true")
    ap.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "infer_throughput.json"
    )
    args = ap.parse_args()
    if args.avx2_only and not avx2_only_active():
        return reexec_avx2_only()
    cpu = cpu_info()  # before the runs pin this process to fewer cores
    sets = []
    if args.test_split and args.test_split.exists():
        image_dir = args.image_dir
        if image_dir is None:
            from effocr.config import load_config

            image_dir = Path(load_config(REPO / "config" / "config.yaml")["dataset"]["image_dir"])
            image_dir = image_dir if image_dir.is_absolute() else REPO / image_dir
        sets.append(("demo-test", load_coco_set(args.test_split, image_dir)))
    if args.gt_dir:
        sets.append((args.gt_dir.name, load_gt_dir(args.gt_dir)))
    if not sets:
        ap.error("no set: give --test-split (existing) and/or --gt-dir")
    results = []
    for name, lines in sets:
        if args.max_lines:
            lines = lines[: args.max_lines]
        print(f"[{name}] {len(lines)} lines", file=sys.stderr)
        results.append(bench_set(name, lines, args))
    import onnxruntime

    payload = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "onnxruntime": onnxruntime.__version__,
        },
        "cpu": cpu,
        "avx2_only": avx2_only_active(),
        "bundle": str(args.bundle),
        "batch_size": args.batch_size,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(cpu_line(payload["cpu"]))
    print_table(results)
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
