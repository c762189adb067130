"""The Tesseract baseline (effocr.tesseract) on rendered line images."""

from pathlib import Path

import matplotlib
import pytest
from conftest import require_ipa_fonts, require_tesseract
from PIL import Image, ImageDraw, ImageFont

from effocr.metrics import cer
from effocr.tesseract import run_tesseract, tesseract_status

FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
needs_tesseract = pytest.mark.usefixtures("needs_tesseract")


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


def _ja_font() -> Path | None:
    for d in ("/usr/share/fonts", "/usr/local/share/fonts"):
        for name in ("ipam.ttf", "ipamp.ttf", "ipag.ttf", "ipagp.ttf"):
            found = sorted(Path(d).rglob(name)) if Path(d).is_dir() else []
            if found:
                return found[0]
    return None


def test_vertical_japanese_line(tmp_path):
    require_tesseract("jpn")
    require_ipa_fonts()
    from effocr.evaluate import EvalLine, tesseract_baseline

    text = "日本語の文章です"
    font = ImageFont.truetype(str(_ja_font()), 40)
    img = Image.new("L", (70, 40 * len(text) + 30), 255)
    draw = ImageDraw.Draw(img)
    for i, c in enumerate(text):
        draw.text((15, 15 + 40 * i), c, font=font, fill=0)
    img.save(tmp_path / "v.png")
    line = EvalLine("v", tmp_path / "v.png", text)
    # Taller than wide: --psm 5 (and jpn_vert when installed); spaces dropped for Japanese.
    out = tesseract_baseline([line], "jpn", True, keep_spaces=False)
    assert cer([text], out["texts"]) <= 0.25
    assert " " not in out["texts"][0]
