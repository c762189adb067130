"""Rule render_glyphs: render the charset in every font; write the manifest and the charset."""

from effocr.synth.render import render_glyphs_from_config
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
p = snakemake.params
config = {
    "language": p.language,
    "seed": p.seed,
    "fonts": p.fonts,
    "render": p.render,
    "synth": {"text_source": p.text_source},
}
render_glyphs_from_config(
    config,
    snakemake.output.renders,
    snakemake.output.manifest,
    charset_path=snakemake.output.charset,
    workers=snakemake.threads,
)
