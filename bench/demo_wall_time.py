"""Wall time of a full demo workflow run, and of the incremental rerun after adding one line.

The raw COCO JSON is treated as user data (generated once by `effocr synth-lines`, then the
workflow is pointed at it), as a user who annotates lines would have it. Steps:

1. generate N+1 synthetic lines; write a raw JSON holding the first N;
2. `snakemake --cores C` on it (full run, timed);
3. add the last line to the raw JSON and rerun (incremental run, timed), listing the jobs.

Usage: python bench/demo_wall_time.py [--lines 240] [--cores 2] [--language en] [--workdir DIR]
Writes bench/results/demo_wall_time.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_info, cpu_line  # bench/common.py (this script's folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "demo_wall_time.json"


def snakemake(workdir: Path, cores: int, configfile: Path, *extra: str) -> tuple[float, str]:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--cores",
        str(cores),
        "--workflow-profile",
        str(REPO / "profiles" / "default"),
        *extra,
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise SystemExit(f"snakemake failed (exit {proc.returncode})")
    return elapsed, proc.stdout + proc.stderr


def jobs_run(log: str) -> dict[str, int]:
    """Count the jobs Snakemake ran per rule, from its log."""
    counts: dict[str, int] = {}
    for rule in re.findall(r"^(?:localrule|rule) (\w+):", log, flags=re.M):
        counts[rule] = counts.get(rule, 0) + 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=240)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--language", default="en", choices=["en", "jp"])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    from effocr.synth.lines import synth_lines

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="effocr-demo-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    full_json = workdir / "generated" / "lines.json"
    base = REPO / "config" / ("config.yaml" if args.language == "en" else "demo-jp.yaml")
    import yaml

    from effocr.config import config_sections, section_defaults

    config = yaml.safe_load(base.read_text(encoding="utf-8"))
    sections = config_sections(config)
    # The config's seed, vertical fraction and line length; the schema's font sizes, degrading
    # and style (as this bench always drew them).
    default = section_defaults("synth")
    t0 = time.perf_counter()
    synth_lines(
        full_json,
        args.lines + 1,
        language=args.language,
        seed=sections.run.seed,
        vertical_fraction=sections.synth.vertical_fraction,
        max_chars=sections.synth.max_chars,
        font_sizes=default["font_sizes"],
        degrade=default["degrade"],
        style=default["style"],
    )
    synth_s = time.perf_counter() - t0
    coco = json.loads(full_json.read_text(encoding="utf-8"))
    last = coco["images"][-1]

    def write_raw(with_last: bool) -> None:
        images = coco["images"] if with_last else coco["images"][:-1]
        keep = {im["id"] for im in images}
        raw = dict(coco, images=images)
        raw["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
        (workdir / "raw.json").write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")

    write_raw(False)
    config["dataset"] = {"coco_json": "raw.json", "image_dir": "generated/images"}
    config["results_dir"] = "results"
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")

    full_s, full_log = snakemake(workdir, args.cores, configfile)
    write_raw(True)
    incr_s, incr_log = snakemake(workdir, args.cores, configfile)

    result = {
        "language": args.language,
        "lines": args.lines,
        "cores": args.cores,
        "synth_lines_s": round(synth_s, 1),
        "full_run_s": round(full_s, 1),
        "incremental_run_s": round(incr_s, 1),
        "added_line": last["file_name"],
        "full_run_jobs": jobs_run(full_log),
        "incremental_run_jobs": jobs_run(incr_log),
        "workdir": str(workdir),
        "cpu": cpu_info(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(cpu_line(result["cpu"]))
    print(f"{'step':<28}{'seconds':>10}")
    for key in ("synth_lines_s", "full_run_s", "incremental_run_s"):
        print(f"{key:<28}{result[key]:>10}")
    print(
        "incremental jobs:",
        ", ".join(f"{k}×{v}" for k, v in result["incremental_run_jobs"].items()),
    )
    print(f"written {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
