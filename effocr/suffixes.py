"""The file suffixes of line and page images that effocr reads (no imports, no I/O).

One list for `effocr infer` and `effocr evaluate` (re-exported by `effocr.imageio`) and the
ground-truth readers (`effocr.formats`), kept apart from `effocr.imageio` so that the import
rule's code (and environment) does not reach the inference pipeline.
"""

IMAGE_SUFFIXES = (
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".bmp",
    ".webp",
    ".gif",
    ".pbm",
    ".pgm",
    ".ppm",
)
