"""Language profiles: what differs between English and Japanese.

The original switched behaviour on directory names containing "eng" or "japan"; here the
profile is named explicitly in the config (`language`) and each field can be overridden there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from effocr.utils import EffOCRError

# Font directories scanned when the config gives none. Missing directories are skipped.
SYSTEM_FONT_DIRS = [
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "~/.local/share/fonts",
    "~/.fonts",
]


@dataclass(frozen=True)
class Profile:
    """Per-language defaults.

    Attributes:
        name: Profile name (`en`, `jp`).
        charset: Shipped charset name (see `effocr.charsets`).
        reference_fonts: Preferred reference font stems, first found wins.
        render_mode: ``ascender`` keeps the line-height position of the glyph (so `,` and `'`
            differ); ``centered`` centres the glyph in a square.
        allows_vertical: Whether vertical (top-to-bottom) lines occur in this language.
        spaces: Whether the text has spaces (inferred from word boxes).
        localizer_classes: Categories the localizer predicts.
        num_passes: Default visits per class per recognizer epoch.
        recognizer_epochs: Default `recognizer.epochs` (first pass).
        localizer_leads: The localizer's training is the longest job of this language's runs:
            the recognizer rules then leave it a core (rules/common.smk `threads_beside_one`)
            and train beside it. False: the recognizer is the longer one and takes every core.
        encoder_args: Default `recognizer.encoder_args` (timm arguments shaping the encoder).
        augment: Default render augmentation parameters.
        tesseract_lang: Tesseract language for the baseline.
        text_source: Shipped public-domain text used by `synth-lines`.
    """

    name: str
    charset: str
    reference_fonts: tuple[str, ...]
    render_mode: str
    allows_vertical: bool
    spaces: bool
    localizer_classes: tuple[str, ...]
    num_passes: int
    recognizer_epochs: int
    localizer_leads: bool
    encoder_args: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, Any] = field(default_factory=dict)
    tesseract_lang: str = "eng"
    text_source: str = "en.txt"


PROFILES: dict[str, Profile] = {
    "en": Profile(
        name="en",
        charset="en",
        reference_fonts=("NotoSerif-Regular", "DejaVuSerif", "LiberationSerif-Regular"),
        render_mode="ascender",
        allows_vertical=False,
        spaces=True,
        localizer_classes=("char", "word"),
        num_passes=10,
        # resnet10t at half its width, trained 12 epochs instead of 8: the demo's p@1 and CER
        # of the three-quarter model in less training time, and half its recognizer time per
        # glyph, which keeps EffOCR 2x tesserocr on CPUs without VNNI (config/README.md).
        recognizer_epochs=12,
        # The demo's localizer trains 156 s on one thread, its recognizer passes 140 s beside it.
        localizer_leads=True,
        encoder_args={"channels": [32, 64, 128, 256], "stem_width": 16},
        augment={
            "affine_p": 0.7,
            "translate": 0.1,
            "scale": [0.9, 1.1],
            "erode_dilate_p": 0.5,
            "color_jitter_p": 0.5,
            "noise_p": 0.25,
            "blur_p": 0.3,
            "grayscale_p": 0.2,
        },
        tesseract_lang="eng",
        text_source="en.txt",
    ),
    "jp": Profile(
        name="jp",
        charset="jp_small",
        reference_fonts=("NotoSerifCJKjp-Regular", "NotoSerifCJK-Regular", "ipam", "ipamp", "ipag"),
        render_mode="centered",
        allows_vertical=True,
        spaces=False,
        localizer_classes=("char",),
        num_passes=1,
        recognizer_epochs=8,
        # 492 classes at 48 px, whole resnet10t: the recognizer is the long job (on one thread
        # the demo's passes took 15 min; the localizer 2 min).
        localizer_leads=False,
        # Full-width resnet10t: with 492 classes the narrower one lost 1.8 points of p@1 and
        # 1.8 of CER on the Japanese demo.
        encoder_args={},
        augment={
            "affine_p": 0.7,
            "translate": 0.2,
            "scale": [0.8, 1.0],
            "erode_dilate_p": 0.0,
            "color_jitter_p": 0.5,
            "noise_p": 0.25,
            "blur_p": 0.3,
            "grayscale_p": 0.2,
        },
        tesseract_lang="jpn",
        text_source="jp.txt",
    ),
}


def get_profile(name: str) -> Profile:
    """Return the profile called `name`."""
    try:
        return PROFILES[name]
    except KeyError as exc:
        raise EffOCRError(f"unknown language profile {name!r}; known: {sorted(PROFILES)}") from exc
