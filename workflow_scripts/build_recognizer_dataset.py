"""Rule build_recognizer_dataset: renders (train) plus real crops (their line's split)."""

from effocr.data.recognizer_dataset import build_recognizer_dataset
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
build_recognizer_dataset(
    snakemake.input.renders,
    snakemake.input.crops,
    snakemake.output.manifest,
    snakemake.output.summary,
)
