"""Rule synth_lines: generate the synthetic demo lines (COCO JSON + images/)."""

from effocr.synth.lines import synth_lines_from_config
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
p = snakemake.params
config = {
    "language": p.language,
    "seed": p.seed,
    "synth": p.synth,
    "fonts": p.fonts,
    "render": p.render,
}
synth_lines_from_config(config, snakemake.output.coco_json)
