"""The data stage: COCO validation, splits, glyph crops and the recognizer dataset."""
