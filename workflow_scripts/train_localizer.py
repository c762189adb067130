"""Rule train_localizer: train the char/word localizer on the train split (val each epoch)."""

from effocr.config import step_sections
from effocr.localizer.train import train_localizer
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
train_localizer(
    snakemake.input.train,
    snakemake.input.val,
    snakemake.params.out_dir,
    **step_sections(snakemake.params),
    init_from=snakemake.params.init_from,
    threads=snakemake.threads,
)
