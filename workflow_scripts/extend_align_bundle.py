"""Rule extend_align_bundle: align.bundle with the dataset's characters its index lacks."""

from effocr.config import step_sections
from effocr.recognizer.extend import extend_for_texts
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
extend_for_texts(
    snakemake.params.bundle,
    snakemake.input.coco_json,
    snakemake.output.bundle,
    **step_sections(snakemake.params),
)
