"""Rule crop_glyphs: real glyph crops of every split, plus their manifest."""

from effocr.config import step_sections
from effocr.data.crops import crop_glyphs_from_config
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
crop_glyphs_from_config(
    {s: snakemake.input[s] for s in ("train", "val", "test")},
    snakemake.output.crops,
    snakemake.output.manifest,
    **step_sections(snakemake.params),
)
