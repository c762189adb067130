"""EffOCR: OCR as character localisation plus nearest-neighbour retrieval of glyph embeddings."""

__version__ = "0.1.0"
