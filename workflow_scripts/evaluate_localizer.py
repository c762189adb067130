"""Rule evaluate_localizer: COCO mAP and char/word P/R/F1 of the localizer on the test split."""

from effocr.config import step_sections
from effocr.localizer.evaluate import evaluate_localizer_from_config
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
evaluate_localizer_from_config(
    snakemake.input.model,
    snakemake.input.test,
    snakemake.output.metrics,
    **step_sections(snakemake.params),
    threads=snakemake.threads,
)
