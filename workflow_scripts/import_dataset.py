"""Rule import_dataset: PAGE-XML / ALTO / line folders -> the raw COCO lines.json + images/."""

from effocr.config import step_sections
from effocr.importer import import_dataset_from_config
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
import_dataset_from_config(snakemake.params.out_dir, **step_sections(snakemake.params))
