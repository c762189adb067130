"""Rules train_recognizer / train_recognizer_hard_negatives: one recognizer training pass
(resumable)."""

from pathlib import Path

from effocr.config import step_sections
from effocr.recognizer.train import train_recognizer
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
sections = step_sections(snakemake.params)
hard_negatives = snakemake.input.get("hard_negatives")
train_recognizer(
    snakemake.input.manifest,
    Path(snakemake.output.model).parent,
    **sections,
    hard_negatives=hard_negatives,
    init_model=snakemake.input.get("pass1")
    if hard_negatives and sections["recognizer"].hard_negatives_fine_tune
    else None,
    init_from=snakemake.params.init_from,
    threads=snakemake.threads,
    pass_name="pass2" if hard_negatives else "pass1",
)
