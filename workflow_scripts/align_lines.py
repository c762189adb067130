"""Rule align_lines: character boxes for transcription-only lines, with `align.bundle`."""

from pathlib import Path

from effocr.align import Aligner, AlignSettings, align_coco, require_training_lines
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
aligner = Aligner.from_bundle(
    snakemake.params.bundle,
    AlignSettings.from_config(dict(snakemake.params.align)),
    threads=snakemake.threads,
)
summary = align_coco(
    aligner,
    snakemake.input.coco_json,
    snakemake.params.image_dir,
    Path(snakemake.output.coco_json).parent,
)
# Fail here, with the reasons, rather than in the data stage with "the dataset is empty".
require_training_lines(summary)
