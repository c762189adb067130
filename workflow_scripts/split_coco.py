"""Rule split_coco: train/val/test by image (ratios and seed, or user-given split files)."""

from effocr.config import step_sections
from effocr.data.coco_tools import split_coco_file
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
split_coco_file(
    snakemake.input.coco_json,
    {s: snakemake.output[s] for s in ("train", "val", "test")},
    **step_sections(snakemake.params),
)
