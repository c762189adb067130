"""Pages/s and lines/s on ONE core, and the share of line detection in a page's time.

Reads the pages of a COCO JSON of synthetic pages (`effocr synth-pages`, or the workflow's
results/line_detector/pages/test/pages.json) with a bundle that has a line detector, in one
process on one ONNX Runtime thread (`PagePipeline.read`, what each `effocr infer` worker does
per page). Both wall-clock and CPU seconds (`time.process_time`) are recorded: on a shared
machine the CPU figures are the per-core ones. The line detection share is the detector's CPU
time (measured on its own, page by page) over the page's whole CPU time.

Usage:
    python bench/page_throughput.py --bundle results/bundle \
        --pages results/line_detector/pages/test/pages.json [--max-pages 8]
Writes bench/results/page_throughput.json (or --output) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from common import cpu_info, cpu_line  # noqa: E402  (bench/common.py)

from effocr.imageio import decode_image  # noqa: E402
from effocr.infer import Engine  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(HERE.parent / "results" / "bundle"))
    parser.add_argument(
        "--pages",
        default=str(HERE.parent / "results" / "line_detector" / "pages" / "test" / "pages.json"),
        help="COCO JSON of pages (images/ beside it); default: the demo's test pages",
    )
    parser.add_argument("--max-pages", type=int, default=None)
    parser.add_argument("--output", default=str(HERE / "results" / "page_throughput.json"))
    args = parser.parse_args(argv)
    coco = json.loads(Path(args.pages).read_text(encoding="utf-8"))
    images = coco["images"][: args.max_pages] if args.max_pages else coco["images"]
    paths = [Path(args.pages).parent / "images" / im["file_name"] for im in images]
    with Engine(args.bundle, workers=1, parallel="thread") as engine:
        pages = engine.pages
        if pages.detector is None:
            raise SystemExit(f"{args.bundle}: no line detector in this bundle")
        pages.read(str(paths[0]), layout="page")  # warm-up: sessions, FAISS, caches
        engine.reset_timings()
        wall = cpu = detect_cpu = detect_wall = 0.0
        n_lines = 0
        per_page = []
        for path in paths:
            w0, c0 = time.perf_counter(), time.process_time()
            res = pages.read(str(path), layout="page")
            pw, pc = time.perf_counter() - w0, time.process_time() - c0
            img = decode_image(str(path), keep_grey=True)
            w0, c0 = time.perf_counter(), time.process_time()
            pages.detector(img)
            dw, dc = time.perf_counter() - w0, time.process_time() - c0
            wall, cpu, detect_wall, detect_cpu = (
                wall + pw,
                cpu + pc,
                detect_wall + dw,
                detect_cpu + dc,
            )
            n_lines += len(res.lines)
            per_page.append(
                {
                    "page": path.name,
                    "size": [img.shape[1], img.shape[0]],
                    "lines": len(res.lines),
                    "cpu_s": round(pc, 3),
                    "detect_cpu_s": round(dc, 3),
                }
            )
        timings = dict(engine.timings)
    report = {
        "cpu": cpu_info(),
        "bundle": args.bundle,
        "pages_json": args.pages,
        "pages": len(paths),
        "lines": n_lines,
        "cpu_seconds": round(cpu, 3),
        "wall_seconds": round(wall, 3),
        "pages_per_cpu_s": len(paths) / cpu,
        "lines_per_cpu_s": n_lines / cpu,
        "pages_per_wall_s": len(paths) / wall,
        "lines_per_wall_s": n_lines / wall,
        "line_detection_cpu_share": detect_cpu / cpu,
        "line_detection_wall_share": timings.get("line_detection", 0.0) / wall,
        "stage_wall_seconds": {k: round(v, 4) for k, v in timings.items()},
        "per_page": per_page,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(cpu_line(report["cpu"]))
    print(
        f"{len(paths)} pages, {n_lines} lines: {report['pages_per_cpu_s']:.3f} pages/s and "
        f"{report['lines_per_cpu_s']:.1f} lines/s per core (CPU time); wall "
        f"{report['pages_per_wall_s']:.3f} pages/s; line detection "
        f"{100 * report['line_detection_cpu_share']:.1f} % of the page's CPU time"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
