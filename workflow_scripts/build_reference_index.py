"""Rule build_reference_index: FAISS index of the reference font renders (second-pass model)."""

from pathlib import Path

from effocr.config import step_sections
from effocr.recognizer.index import build_reference_index
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
build_reference_index(
    snakemake.input.model,
    snakemake.input.renders,
    Path(snakemake.output.index).parent,
    crops_manifest=snakemake.input.crops or None,
    **step_sections(snakemake.params),
    threads=snakemake.threads,
)
