"""Rule mine_hard_negatives: the hard-negative sets from the first-pass model."""

from effocr.config import step_sections
from effocr.recognizer.hard_negatives import mine_hard_negatives
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
mine_hard_negatives(
    snakemake.input.model,
    snakemake.input.manifest,
    snakemake.output.hard_negatives,
    **step_sections(snakemake.params),
    threads=snakemake.threads,
)
