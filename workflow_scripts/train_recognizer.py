"""Rules train_recognizer / train_recognizer_hard_negatives: one recognizer training pass (resumable)."""

from pathlib import Path

from effocr.config import validate_config
from effocr.recognizer.train import train_recognizer
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
config = validate_config(snakemake.config)
hard_negatives = snakemake.input.get("hard_negatives")
train_recognizer(
    snakemake.input.manifest,
    Path(snakemake.output.model).parent,
    config,
    hard_negatives=hard_negatives,
    init_model=snakemake.input.get("pass1")
    if hard_negatives and config["recognizer"]["hard_negatives_fine_tune"]
    else None,
    threads=snakemake.threads,
    pass_name="pass2" if hard_negatives else "pass1",
)
