"""Synthetic data: charsets, fonts, glyph renders and synthetic text lines."""
