"""Rule align_lines: character boxes for transcription-only lines, with `align.bundle`."""

from pathlib import Path

from effocr.align import align_dataset
from effocr.config import step_sections
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
align_dataset(
    snakemake.params.bundle,
    snakemake.input.coco_json,
    Path(snakemake.output.coco_json).parent,
    **step_sections(snakemake.params),
    threads=snakemake.threads,
)
