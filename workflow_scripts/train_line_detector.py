"""Rule train_line_detector: train the line detector on synthetic pages (val each epoch)."""

from effocr.config import step_sections
from effocr.linedet.train import train_line_detector
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
train_line_detector(
    snakemake.input.train,
    snakemake.input.val,
    snakemake.params.out_dir,
    **step_sections(snakemake.params),
    threads=snakemake.threads,
)
