"""The line detector: finds text lines on page images (model, training, decoding)."""
