"""Rule synth_pages: synthetic pages of one split (COCO JSON of line boxes + images/)."""

from effocr.config import step_sections
from effocr.synth.pages import synth_pages_from_config
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
synth_pages_from_config(
    snakemake.output.coco_json,
    snakemake.params.n_pages,
    snakemake.params.first_index,
    **step_sections(snakemake.params),
)
