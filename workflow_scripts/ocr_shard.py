"""Rule ocr_shard: OCR one shard of the corpus (its pages' files, then its shard record)."""

from effocr.config import step_sections
from effocr.corpus import CorpusPage, run_shard
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
run_shard(
    snakemake.input.bundle,
    snakemake.wildcards.shard,
    [CorpusPage(image, name) for image, name in snakemake.params.pages],
    snakemake.params.out_dir,
    **step_sections(snakemake.params),
    threads=snakemake.threads,
)
