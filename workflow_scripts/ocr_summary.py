"""Rule ocr: the corpus's summary (summary.json and the table, also printed) from its shards."""

import sys

from effocr.corpus import summary_table, write_summary
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
summary = write_summary(
    snakemake.input.records,
    snakemake.params.problems,
    snakemake.output.summary,
    snakemake.output.table,
)
print(summary_table(summary), end="", file=sys.stderr)
