"""Rule synth_pages: synthetic pages of one split (COCO JSON of line boxes + images/)."""

from effocr.synth.pages import synth_pages_from_config
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
p = snakemake.params
config = {
    "language": p.language,
    "seed": p.seed,
    "line_detector": p.line_detector,
    "synth": p.synth,
    "fonts": p.fonts,
    "render": p.render,
}
synth_pages_from_config(config, snakemake.output.coco_json, p.n_pages, p.first_index)
