"""Rule train_lm: the character n-gram language model (see effocr.lm.train_lm_file)."""

from effocr.config import step_sections
from effocr.lm import train_lm_file
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
train_lm_file(
    [snakemake.input.train],
    list(snakemake.input.text),
    snakemake.output[0],
    word_lists=list(snakemake.input.lexicon),
    **step_sections(snakemake.params),
)
