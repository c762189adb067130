"""EffOCR: OCR as character localisation plus nearest-neighbour retrieval of glyph embeddings."""

import os as _os

__version__ = "0.1.0"

# OpenMP threads (torch's, FAISS's) spin between parallel regions by default. The models
# trained here are small, so a spinning team on a machine with any other load waits a whole
# scheduler slice at every barrier: two localizer epochs on 2 threads took 108-159 s instead of
# 25-33 s on a loaded 2-core machine. Sleeping at once costs little; a user's own setting wins.
# It must be set before torch loads its OpenMP runtime, and every entry point imports effocr
# first.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
