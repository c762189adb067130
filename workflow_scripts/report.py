"""Rule report: results/report/index.html and metrics.json from the evaluation outputs."""

from pathlib import Path

from effocr.config import step_sections
from effocr.report import build_report_from_config
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
# Each evaluation set's folder is named after the set.
eval_dirs = {Path(m).parent.name: Path(m).parent for m in snakemake.input.metrics}
build_report_from_config(
    eval_dirs,
    Path(snakemake.output.index).parent,
    training={
        "recognizer pass 1": snakemake.input.recognizer_pass1,
        "recognizer pass 2": snakemake.input.recognizer_pass2,
        # Empty when an external ONNX localizer is used: the plot then says so.
        "localizer": str(snakemake.input.localizer) if snakemake.input.localizer else None,
    },
    localizer_eval=snakemake.input.localizer_eval,
    alignment=list(snakemake.input.alignment),
    **step_sections(snakemake.params),
)
