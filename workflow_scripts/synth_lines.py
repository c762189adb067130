"""Rule synth_lines: generate the synthetic demo lines (COCO JSON + images/)."""

from effocr.config import step_sections
from effocr.synth.lines import synth_lines_from_config
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
synth_lines_from_config(snakemake.output.coco_json, **step_sections(snakemake.params))
