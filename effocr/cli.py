"""The `effocr` command line: one subcommand per workflow step.

Subcommands are registered by name with the module that implements them. Each module has
``configure_parser(parser)`` and ``run(args) -> int``; modules are imported only when their
subcommand runs, so `effocr --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from effocr import __version__
from effocr.utils import EffOCRError, setup_logging

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "import": (
        "effocr.importer",
        "PAGE-XML, ALTO or .gt.txt line folders -> raw COCO lines.json + line images",
    ),
    "validate": ("effocr.data.validate", "check a raw COCO JSON (boxes, text, images, charset)"),
    "coco": ("effocr.data.coco_tools", "merge, split or subset COCO JSON files"),
    "synth-lines": ("effocr.synth.lines", "generate synthetic line images with char/word boxes"),
    "render-glyphs": ("effocr.synth.render", "render every charset character in every font"),
    "crop-glyphs": ("effocr.data.crops", "cut real glyph crops from annotated lines"),
    "build-recognizer-dataset": (
        "effocr.data.recognizer_dataset",
        "merge renders and crops into the recognizer dataset manifest",
    ),
    "train-recognizer": (
        "effocr.recognizer.train",
        "train the recognizer (first or hard-negative pass)",
    ),
    "mine-hard-negatives": (
        "effocr.recognizer.hard_negatives",
        "write hard_negatives.txt from a trained recognizer",
    ),
    "build-reference-index": ("effocr.recognizer.index", "build the FAISS reference index"),
    "train-localizer": ("effocr.localizer.train", "train the character/word localizer"),
    "synth-pages": ("effocr.synth.pages", "generate synthetic page images with line boxes"),
    "train-line-detector": ("effocr.linedet.train", "train the line detector on synthetic pages"),
    "evaluate-pages": (
        "effocr.linedet.evaluate",
        "line detection F1, page vs line CER and speed of a bundle on annotated pages",
    ),
    "evaluate-localizer": (
        "effocr.localizer.evaluate",
        "COCO mAP and char/word P/R/F1 of a localizer",
    ),
    "export-bundle": (
        "effocr.export",
        "export both models to an ONNX bundle, checked against PyTorch",
    ),
    "extend-index": (
        "effocr.recognizer.extend",
        "add characters to a bundle's reference index without retraining",
    ),
    "align": (
        "effocr.align",
        "character boxes for lines that have only a transcription, with a bundle",
    ),
    "train-lm": ("effocr.lm", "train the character language model (lm.json) on line texts"),
    "infer": ("effocr.infer", "OCR line images with an exported bundle"),
    "calibrate-confidence": (
        "effocr.confidence",
        "fit a bundle's word and line confidence calibration on held-out lines (into a copy)",
    ),
    "evaluate": ("effocr.evaluate", "CER/WER of a bundle (and Tesseract) on evaluation sets"),
    "report": ("effocr.report", "build the HTML report from evaluation results"),
}


# Former subcommand names: still run, with a deprecation message.
RENAMED_COMMANDS = {"export-onnx": "export-bundle"}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand (modules not yet imported)."""
    parser = argparse.ArgumentParser(
        prog="effocr",
        description="EffOCR: train and run retrieval-based OCR on your own documents.",
    )
    parser.add_argument("--version", action="version", version=f"effocr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log", default=None, help="write the log to this file instead of stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `effocr` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    i = 0
    while i < len(argv):  # the subcommand: the first word that is no top-level option
        if argv[i] == "--log":
            i += 2
        elif argv[i].startswith("-"):
            i += 1
        else:
            if argv[i] in RENAMED_COMMANDS:
                old, argv[i] = argv[i], RENAMED_COMMANDS[argv[i]]
                print(f"effocr {old} is deprecated; use effocr {argv[i]}", file=sys.stderr)
            break
    parser = build_parser()
    top, rest = parser.parse_known_args(argv)
    if not top.command:
        parser.print_help()
        return 2
    module_name, help_text = COMMANDS[top.command]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"effocr {top.command}", description=help_text)
    module.configure_parser(sub)
    args = sub.parse_args(rest)
    setup_logging(top.log, logging.DEBUG if top.verbose else logging.INFO)
    try:
        return int(module.run(args) or 0)
    except EffOCRError as exc:
        print(f"effocr {top.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
