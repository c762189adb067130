"""Rule export_bundle: ONNX bundle checked against PyTorch (see effocr.export.export_bundle)."""

from effocr.config import step_sections
from effocr.export import export_bundle
from effocr.utils import set_threads, setup_logging

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
export_bundle(
    recognizer_pt=snakemake.input.recognizer,
    index_dir=snakemake.params.index_dir,
    localizer_pt=snakemake.input.localizer,
    test_json=snakemake.input.test,
    out_dir=snakemake.output[0],
    **step_sections(snakemake.params),
    calibration_json=snakemake.input.calibration,
    lm_json=snakemake.input.lm,
    threads=snakemake.threads,
    line_detector_pt=snakemake.input.line_detector[0] if snakemake.input.line_detector else None,
    line_detector_pages=snakemake.input.pages[0] if snakemake.input.pages else None,
)
