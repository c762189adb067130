"""The Tesseract baseline (effocr.tesseract) on rendered line images."""

import shutil
from pathlib import Path

import matplotlib
import pytest
from PIL import Image, ImageDraw, ImageFont

from effocr.metrics import cer
from effocr.tesseract import run_tesseract, tesseract_status

FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
needs_tesseract = pytest.mark.skipif(
    shutil.which("tesseract") is None or not tesseract_status("eng").available,
    reason="Tesseract with English data is not installed (make sysdeps installs it)",
)


def render_line(text: str, path: Path, size: int = 36) -> Path:
    """A clean black-on-white line image of `text`."""
    font = ImageFont.truetype(str(FONT), size)
    x0, y0, x1, y1 = font.getbbox(text)
    img = Image.new("L", (x1 + 24, y1 - y0 + 24), 255)
    ImageDraw.Draw(img).text((12, 12 - y0), text, font=font, fill=0)
    img.save(path)
    return path


def test_missing_binary_is_explained():
    status = tesseract_status("eng", binary="no-such-tesseract-binary")
    assert not status.available
    assert "not installed" in status.reason and "no-such-tesseract-binary" in status.reason
    assert status.to_dict() == {"available": False, "reason": status.reason, "lang": "eng"}


@needs_tesseract
def test_missing_language_is_explained():
    status = tesseract_status("xqz")
    assert not status.available
    assert "xqz" in status.reason and "tesseract-ocr-xqz" in status.reason


@needs_tesseract
def test_status_available():
    status = tesseract_status("eng")
    assert status.available and status.version.startswith("tesseract")
    assert status.to_dict()["available"] is True


@needs_tesseract
def test_reads_rendered_lines_in_order(tmp_path):
    texts = ["The quick brown fox", "jumps over 13 lazy dogs", "Hello, World!"]
    paths = [render_line(t, tmp_path / f"l{i}.png") for i, t in enumerate(texts)]
    # A blank line in the middle must not shift the texts of the lines after it.
    blank = tmp_path / "blank.png"
    Image.new("L", (300, 50), 255).save(blank)
    images = [paths[0], blank, paths[1], paths[2]]
    got, seconds = run_tesseract(images, "eng")
    assert len(got) == 4 and seconds > 0
    assert cer(texts, [got[0], got[2], got[3]]) < 0.05
    assert got[1].strip() == "" or len(got[1]) < 4


def test_empty_input():
    assert run_tesseract([], "eng") == ([], 0.0)
