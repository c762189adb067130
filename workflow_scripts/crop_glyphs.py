"""Rule crop_glyphs: real glyph crops of every split, plus their manifest."""

from effocr.data.crops import crop_glyphs
from effocr.utils import setup_logging

setup_logging(snakemake.log[0])
crop_glyphs(
    {s: snakemake.input[s] for s in ("train", "val", "test")},
    snakemake.params.image_dir,
    snakemake.output.crops,
    snakemake.output.manifest,
    full_height=snakemake.params.full_height,
    padding=snakemake.params.padding,
    char_category=snakemake.params.char_category,
    word_category=snakemake.params.word_category,
    allows_vertical=snakemake.params.allows_vertical,
)
