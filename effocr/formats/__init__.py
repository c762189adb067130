"""Page formats in and out: PAGE-XML, ALTO, hOCR and line folders, to and from `effocr.document`.

Readers (ground truth in, existing segmentations) and writers (OCR results out) live in their
own modules here; every XML parse goes through one safe parser (no external entities, no
network, no entity expansion).
"""
