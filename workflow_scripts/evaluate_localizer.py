"""Rule evaluate_localizer: COCO mAP and char/word P/R/F1 of the localizer on the test split."""

from effocr.localizer.evaluate import evaluate_localizer
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
evaluate_localizer(
    snakemake.input.model,
    snakemake.input.test,
    snakemake.params.image_dir,
    snakemake.output.metrics,
    char_category=snakemake.params.char_category,
    word_category=snakemake.params.word_category,
    layout=snakemake.params.layout,
    input_height=snakemake.params.input_height,
    thresholds=snakemake.params.thresholds,
    threads=snakemake.threads,
)
