"""Rule mine_hard_negatives: hard_negatives.txt from the first-pass model."""

from effocr.config import validate_config
from effocr.recognizer.hard_negatives import mine_hard_negatives
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
mine_hard_negatives(
    snakemake.input.model,
    snakemake.input.manifest,
    snakemake.output.hard_negatives,
    validate_config(snakemake.config),
    threads=snakemake.threads,
)
