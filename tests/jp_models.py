"""Tiny Japanese models for end-to-end tests, trained once per session (conftest's `jp_models`).

Renders a handful of classes (kana, two kanji and, when an installed font draws one, a non-BMP
kanji) in the installed Japanese fonts, trains a tiny recognizer on those renders
(`train_recognizer`, the settings of test_recognizer_train), builds the reference index, trains
a tiny localizer (language jp: vertical, characters only) on synthetic horizontal and vertical
lines and exports the bundle. test_japanese reads unseen lines with it; test_localizer_train
checks the localizer on its training lines.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import missing_dependency, require_ipa_fonts
from schema_defaults import at_images

KANA_KANJI = "あいうかきくアイウ日本"
# Non-BMP (CJK Extension B) kanji the IPA fonts draw: 𠮟 (a Jōyō form), 𠀋.
NON_BMP_CANDIDATES = ("\U00020b9f", "\U0002000b")


def fonts_and_classes() -> tuple[list[Path], str, str | None]:
    """Up to four installed Japanese fonts that draw `KANA_KANJI`, the classes, the non-BMP one."""
    from effocr.synth.fonts import usable_chars
    from effocr.synth.lines import default_line_fonts
    from effocr.utils import EffOCRError

    require_ipa_fonts()
    try:
        fonts = default_line_fonts("jp")
    except EffOCRError as exc:
        missing_dependency(f"no Japanese font installed: {exc}")
    fonts = [f for f in fonts if set(KANA_KANJI) <= usable_chars(f, KANA_KANJI)][:4]
    if not fonts:
        missing_dependency(f"no installed Japanese font draws all of {KANA_KANJI}")
    non_bmp = next(
        (c for c in NON_BMP_CANDIDATES if all(c in usable_chars(f, [c]) for f in fonts)), None
    )
    return fonts, KANA_KANJI + (non_bmp or ""), non_bmp


def build_jp_models(factory: Callable, root: Path) -> dict:
    """Fonts, classes, synthetic lines, tiny trained models and the exported bundle, under
    `root`; `factory` is conftest's `tiny_coco_factory`.

    Keys: classes, non_bmp, fonts, reference (the reference font's stem), renders (manifest),
    lines ((json, image dir) of the 16 training lines, half vertical), localizer (`.pt`),
    bundle, fresh ({"vertical", "horizontal"}: (json, image dir) of 4 unseen lines each).
    """
    import torch
    from conftest import export_sections
    from test_recognizer_train import ENC

    from effocr.config import config_sections, load_config
    from effocr.export import export_bundle
    from effocr.localizer.train import train_localizer
    from effocr.profiles import get_profile
    from effocr.recognizer.index import build_reference_index
    from effocr.recognizer.train import train_recognizer
    from effocr.synth.render import render_glyphs

    torch.set_num_threads(1)
    fonts, classes, non_bmp = fonts_and_classes()
    text = root / "text.txt"
    text.write_text(("あいう日本かきく" + (non_bmp or "") + "アイウ") * 4, encoding="utf-8")
    profile = get_profile("jp")
    reference = next((f.stem for f in fonts if f.stem in profile.reference_fonts), fonts[0].stem)
    config = load_config(
        None,
        {
            "seed": 7,
            "language": "jp",
            "fonts": {"reference": [reference]},
            "recognizer": {**ENC, "epochs": 8, "num_passes": 4, "device": "cpu", "lr": 0.003},
            "localizer": {"epochs": 30, "batch_size": 4, "lr": 0.004, "device": "cpu"},
        },
    )
    line_kwargs = {
        "font_paths": fonts[:2],
        "charset": list(classes),
        "text_source": text,
        "degrade": False,
        "max_chars": 8,
        "font_sizes": (26, 30),
    }
    coco_json, image_dir = factory(16, "jp", 3, vertical_fraction=0.5, **line_kwargs)
    manifest = render_glyphs(
        list(classes),
        fonts,
        root / "renders" / "glyphs",
        root / "renders" / "manifest.csv",
        size=32,
        padding=0.05,
        mode=profile.render_mode,
        seed=0,
    )
    sections = config_sections(at_images(config, image_dir))
    train_recognizer(
        manifest, root / "recognizer", **sections.pick("recognizer", "fonts", "run"), threads=1
    )
    rec_pt = root / "recognizer" / "model.pt"
    build_reference_index(
        rec_pt, manifest, root / "index", **sections.pick("recognizer", "fonts", "run"), threads=1
    )
    train_localizer(
        coco_json,
        coco_json,
        root / "localizer",
        **sections.pick("localizer", "dataset", "run"),
        threads=1,
    )
    bundle = root / "bundle"
    export_bundle(
        rec_pt,
        root / "index",
        root / "localizer" / "model.pt",
        coco_json,
        bundle,
        **export_sections(at_images(config, image_dir), export={"parity_lines": 2}),
    )
    # Unseen lines, four of each orientation.
    fresh = {
        name: factory(4, "jp", seed, vertical_fraction=fraction, **line_kwargs)
        for name, seed, fraction in (("vertical", 21, 1.0), ("horizontal", 22, 0.0))
    }
    return {
        "classes": classes,
        "non_bmp": non_bmp,
        "fonts": fonts,
        "reference": reference,
        "renders": manifest,
        "lines": (coco_json, image_dir),
        "localizer": root / "localizer" / "model.pt",
        "bundle": bundle,
        "fresh": fresh,
    }
