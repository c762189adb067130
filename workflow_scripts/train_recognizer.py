"""Rules train_recognizer / train_recognizer_hn: one recognizer training pass (resumable)."""

from pathlib import Path

from effocr.config import validate_config
from effocr.recognizer.train import train_recognizer
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
config = validate_config(snakemake.config)
hns = snakemake.input.get("hns")
train_recognizer(
    snakemake.input.manifest,
    Path(snakemake.output.model).parent,
    config,
    hns=hns,
    init_model=snakemake.input.get("pass1")
    if hns and config["recognizer"]["hn_fine_tune"]
    else None,
    threads=snakemake.threads,
    pass_name="pass2" if hns else "pass1",
)
