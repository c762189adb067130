"""Rule check_coco: check the raw COCO JSON; write the report only when it is valid."""

from effocr.config import step_sections
from effocr.data.validate import check_coco
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
check_coco(
    snakemake.input.coco_json,
    snakemake.output.report,
    snakemake.params.charset,
    **step_sections(snakemake.params),
)
