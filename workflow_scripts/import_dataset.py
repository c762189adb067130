"""Rule import_dataset: PAGE-XML / ALTO / line folders -> the raw COCO lines.json + images/."""

from effocr.importer import ImportOptions, import_dataset
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
import_dataset(
    snakemake.params.format,
    list(snakemake.params.paths),
    snakemake.params.out_dir,
    ImportOptions.from_config(dict(snakemake.params.options)),
)
