"""Rule evaluate: the bundle and the Tesseract baseline on one evaluation set."""

from pathlib import Path

from effocr.config import step_sections
from effocr.evaluate import evaluate_set_from_config
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
evaluate_set_from_config(
    snakemake.input.bundle,
    dict(snakemake.params.spec),
    Path(snakemake.output.metrics).parent,
    **step_sections(snakemake.params),
    workers=snakemake.threads,
)
