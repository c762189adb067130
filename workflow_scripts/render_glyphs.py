"""Rule render_glyphs: render the charset in every font; write the manifest and the charset."""

from effocr.config import step_sections
from effocr.synth.render import render_glyphs_from_config
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
render_glyphs_from_config(
    snakemake.output.renders,
    snakemake.output.manifest,
    charset_path=snakemake.output.charset,
    **step_sections(snakemake.params),
    text_source=snakemake.params.text_source,
    workers=snakemake.threads,
)
