"""Rule evaluate: the bundle and the Tesseract baseline on one evaluation set."""

from pathlib import Path

from effocr.evaluate import evaluate_set
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
evaluate_set(
    snakemake.input.bundle,
    dict(snakemake.params.spec),
    Path(snakemake.output.metrics).parent,
    dict(snakemake.params.options),
    workers=snakemake.threads,
    language=snakemake.params.language,
)
