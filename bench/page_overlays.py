"""The lines a bundle finds on page scans, drawn on them in reading order, and counted.

For pages without ground truth (such as `../shared/data/pages/`): each page is read with
`Engine.read_page`; its lines are drawn (outline in red, reading-order number beside it) on a
copy of the page, shrunk to `--width` pixels, and the line count per page is printed next to
the count you made by eye (`--by-eye NAME=N`, optional) and written to JSON. Page reading time
(wall clock, one worker) is recorded too.

Usage:
    python bench/page_overlays.py [--bundle results/bundle] [PAGE ...] \
        [--out bench/results/page_overlays] [--by-eye grenzboten_p179470.tif=47 ...]
PAGE defaults to the scans of ../shared/data/pages/.
Writes OUT/NAME_lines.jpg per page and OUT/page_overlays.json, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from common import SHARED_DATA, cpu_info, cpu_line  # noqa: E402  (bench/common.py)

from effocr.infer import Engine  # noqa: E402


def overlay(path: Path, page, width: int, out: Path) -> None:
    """`page`'s lines drawn on the image at `path`, saved as JPEG at `out`."""
    from PIL import Image, ImageDraw

    from effocr.utils import open_rgb

    img = open_rgb(path)
    scale = min(1.0, width / img.width)
    if scale < 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
    draw = ImageDraw.Draw(img)
    number = 0
    for region in page.regions:
        for line in region.lines:
            number += 1
            points = [(x * scale, y * scale) for x, y in line.polygon]
            draw.polygon(points, outline=(220, 30, 30), width=2)
            x0, y0 = min(p[0] for p in points), min(p[1] for p in points)
            draw.text((max(0, x0 - 22), y0), str(number), fill=(220, 30, 30))
    img.save(out, quality=70)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(HERE.parent / "results" / "bundle"))
    parser.add_argument(
        "pages",
        nargs="*",
        help="page images (default: the scans in ../shared/data/pages/, beside the checkout)",
    )
    parser.add_argument("--out", default=str(HERE / "results" / "page_overlays"))
    parser.add_argument("--width", type=int, default=900, help="overlay width in pixels")
    parser.add_argument(
        "--by-eye", action="append", default=[], metavar="NAME=N", help="a count made by eye"
    )
    args = parser.parse_args(argv)
    by_eye = {k: int(v) for k, v in (item.split("=", 1) for item in args.by_eye)}
    pages = args.pages or sorted(str(p) for p in (SHARED_DATA / "pages").glob("*.tif"))
    if not pages:
        parser.error(f"no page images given, and none in {SHARED_DATA / 'pages'}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with Engine(args.bundle, workers=1, device="cpu") as engine:
        for name in pages:
            path = Path(name)
            t0 = time.perf_counter()
            page = engine.read_page(path)
            seconds = time.perf_counter() - t0
            if page.error:
                rows.append({"page": path.name, "error": page.error})
                continue
            lines = [ln for region in page.regions for ln in region.lines]
            image = out / f"{path.stem}_lines.jpg"
            overlay(path, page, args.width, image)
            rows.append(
                {
                    "page": path.name,
                    "width": page.width,
                    "height": page.height,
                    "lines_found": len(lines),
                    "lines_by_eye": by_eye.get(path.name),
                    "regions": len(page.regions),
                    "characters": sum(len(ln.text) for ln in lines),
                    "seconds": round(seconds, 2),
                    "overlay": str(image),
                }
            )
    result = {"bundle": str(args.bundle), "cpu": cpu_info(), "pages": rows}
    (out / "page_overlays.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(cpu_line(result["cpu"]))
    print(f"{'page':40s} {'size':>11s} {'found':>6s} {'by eye':>7s} {'regions':>8s} {'s':>6s}")
    for r in rows:
        if "error" in r:
            print(f"{r['page']:40s} error: {r['error']}")
            continue
        eye = "-" if r["lines_by_eye"] is None else str(r["lines_by_eye"])
        size = f"{r['width']}x{r['height']}"
        print(
            f"{r['page']:40s} {size:>11s} {r['lines_found']:6d} {eye:>7s} "
            f"{r['regions']:8d} {r['seconds']:6.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
