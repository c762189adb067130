"""effocr.recognizer.index: FAISS reference index, its files, and self-retrieval of renders.

Also home of the small glyph fixtures the other recognizer tests import (`render_manifest`,
`tiny_config`, `untrained_model`): real renders of DejaVu fonts by `effocr.synth.render`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from effocr.config import config_sections, load_config
from effocr.recognizer.dataset import read_manifest
from effocr.recognizer.index import (
    ReferenceIndex,
    build_reference_index,
    embed_paths,
    read_labels,
)
from effocr.recognizer.model import RecognizerNet, load_recognizer, save_recognizer
from effocr.synth.fonts import matplotlib_font_dir
from effocr.synth.render import render_glyphs
from effocr.utils import EffOCRError, label_to_codepoints

FONT_DIR = matplotlib_font_dir()
REFERENCE = "DejaVuSerif"
FONTS = (
    "DejaVuSerif",
    "DejaVuSans",
    "DejaVuSansMono",
    "DejaVuSans-Bold",
    "DejaVuSerif-Bold",
    "DejaVuSans-Oblique",
    "DejaVuSerif-Italic",
)
TINY_ENCODER = "mobilenetv3_small_050"

torch.set_num_threads(1)


def render_manifest(
    out_dir: Path, chars: str, fonts=FONTS, size: int = 32, real: dict | None = None
) -> Path:
    """Render `chars` in `fonts` into `out_dir`; optionally relabel some fonts' renders as real.

    Args:
        real: {font stem: split}: that font's renders become `real` crops of that split (a
            stand-in for crops cut from lines, with the same manifest columns).
    """
    manifest = out_dir / "manifest.csv"
    render_glyphs(
        list(chars),
        [FONT_DIR / f"{f}.ttf" for f in fonts],
        out_dir / "glyphs",
        manifest,
        size=size,
        padding=0.05,
        mode="ascender",
        seed=0,
    )
    if real:
        with open(manifest, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            if row["origin"] in real:
                row["source"], row["split"] = "real", real[row["origin"]]
        with open(manifest, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return manifest


def tiny_config(**recognizer) -> dict:
    """A validated config with a tiny, fast recognizer (overridable)."""
    rec = {
        "encoder": TINY_ENCODER,
        "input_size": 32,
        "batch_size": 32,
        "m": 4,
        "num_passes": 2,
        "epochs": 2,
        "hard_negatives_k": 3,
        "device": "cpu",
        "lr": 0.003,
    }
    rec.update(recognizer)
    return load_config(None, {"seed": 7, "fonts": {"reference": [REFERENCE]}, "recognizer": rec})


def untrained_model(path: Path, size: int = 32) -> Path:
    """Save a seeded, untrained recognizer as model.pt."""
    torch.manual_seed(0)
    model = RecognizerNet(TINY_ENCODER, size)
    return save_recognizer(model, path, tiny_config())


def index_builder(model_pt: Path, renders: Path, root: Path, crops: Path | None = None):
    """`build(name, **recognizer)`: `build_reference_index` of `tiny_config(**recognizer)` into
    `root / f"index_{name}"`."""

    def build(name, **recognizer):
        return build_reference_index(
            model_pt,
            renders,
            root / f"index_{name}",
            crops_manifest=crops,
            **config_sections(tiny_config(**recognizer)).pick("recognizer", "fonts", "run"),
        )

    return build


def test_index_roundtrip_whitespace_and_non_bmp(tmp_path):
    labels = ["A", " ", "\u3000", "\t", "\U0002000b", "e\u0301", "\n"]
    rng = np.random.default_rng(0)
    embs = rng.normal(size=(len(labels), 16)).astype(np.float32)
    index = ReferenceIndex.build(embs, labels, {"model": "x"})
    index.save(tmp_path / "idx")
    lines = (tmp_path / "idx" / "ref_labels.txt").read_text(encoding="utf-8").splitlines()
    assert lines == [label_to_codepoints(x) for x in labels]
    loaded = ReferenceIndex.load(tmp_path / "idx")
    assert loaded.labels == labels
    assert loaded.meta["count"] == len(labels) and loaded.meta["dimension"] == 16
    # Each (normalised) vector finds itself with cosine 1.
    q = embs / np.linalg.norm(embs, axis=1, keepdims=True)
    scores, rows = loaded.search(q, k=2)
    assert rows[:, 0].tolist() == list(range(len(labels)))
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
    assert loaded.labels_of(rows[:2, :1]) == [["A"], [" "]]


def test_index_load_errors(tmp_path):
    index = ReferenceIndex.build(np.eye(3, dtype=np.float32), ["a", "b", "c"])
    index.save(tmp_path / "idx")
    (tmp_path / "idx" / "ref_labels.txt").write_text("U+0061\nU+0062\n", encoding="utf-8")
    with pytest.raises(EffOCRError, match="3 vectors but ref_labels.txt has 2 labels"):
        ReferenceIndex.load(tmp_path / "idx")
    (tmp_path / "idx" / "ref_labels.txt").write_text("U+0061\nb\nU+0063\n", encoding="utf-8")
    with pytest.raises(EffOCRError, match="line 2"):
        read_labels(tmp_path / "idx" / "ref_labels.txt")
    with pytest.raises(EffOCRError, match="not found"):
        ReferenceIndex.load(tmp_path / "missing")
    with pytest.raises(EffOCRError, match="unique"):
        ReferenceIndex.build(np.eye(2, dtype=np.float32), ["a", "a"])


def test_reference_index_finds_its_own_renders(tmp_path):
    chars = "aeo0O1lI,.'"
    manifest = render_manifest(tmp_path / "renders", chars, fonts=("DejaVuSerif", "DejaVuSans"))
    model_pt = untrained_model(tmp_path / "model.pt")
    config = tiny_config()
    index = build_reference_index(
        model_pt,
        manifest,
        tmp_path / "index",
        **config_sections(config).pick("recognizer", "fonts", "run"),
        threads=1,
    )
    assert sorted(index.labels) == sorted(chars)
    assert index.meta["fonts"] == [REFERENCE]
    loaded = ReferenceIndex.load(tmp_path / "index")
    assert loaded.labels == index.labels
    refs = [r for r in read_manifest(manifest) if r.origin == REFERENCE]
    model = load_recognizer(model_pt)
    embs = embed_paths(model, [r.path for r in refs], batch_size=4)
    assert np.allclose(np.linalg.norm(embs, axis=1), 1.0, atol=1e-5)
    _, rows = loaded.search(embs, k=1)
    assert [loaded.labels[r] for r in rows[:, 0]] == [r.label for r in refs]

    # Two reference fonts: one averaged vector per class, still unit length.
    config2 = load_config(
        None,
        {
            "fonts": {"reference": ["DejaVuSerif", "DejaVuSans", "NotThere"]},
            "recognizer": {"device": "cpu"},
        },
    )
    index2 = build_reference_index(
        model_pt,
        manifest,
        tmp_path / "index2",
        **config_sections(config2).pick("recognizer", "fonts", "run"),
    )
    assert index2.meta["fonts"] == ["DejaVuSerif", "DejaVuSans"] and index2.meta["fonts_averaged"]
    vecs = index2.vectors()
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_reference_crops_are_mixed_into_the_vectors(tmp_path):
    renders = render_manifest(tmp_path / "renders", "abcd", fonts=("DejaVuSerif",))
    # Crops of a, b, c only: two training fonts and one validation font (never sampled).
    crops = render_manifest(
        tmp_path / "crops",
        "abc",
        fonts=("DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSerif-Italic"),
        real={
            "DejaVuSans-Bold": "train",
            "DejaVuSans-Oblique": "train",
            "DejaVuSerif-Italic": "val",
        },
    )
    model_pt = untrained_model(tmp_path / "model.pt")
    model = load_recognizer(model_pt)
    build = index_builder(model_pt, renders, tmp_path, crops)

    def vectors(index):
        vecs = index.vectors()
        return {label: vecs[i] for i, label in enumerate(index.labels)}

    def embedded(manifest, origin):
        recs = [r for r in read_manifest(manifest) if r.origin == origin]
        embs = embed_paths(model, [r.path for r in recs])
        return dict(zip([r.label for r in recs], embs, strict=True))

    plain = vectors(build("plain"))
    bold, oblique = embedded(crops, "DejaVuSans-Bold"), embedded(crops, "DejaVuSans-Oblique")
    italic = embedded(crops, "DejaVuSerif-Italic")

    # Weight 1: a class with crops is the mean of its training crops; d keeps its render.
    only_crops = build("crops", reference_crops=5, reference_crop_weight=1.0)
    assert only_crops.meta["crops"]["classes"] == 3 and only_crops.meta["crops"]["crops"] == 6
    got = vectors(only_crops)
    for c in "abc":
        assert np.allclose(got[c], _unit(bold[c] + oblique[c]), atol=1e-5)
        assert not np.allclose(got[c], _unit(bold[c] + oblique[c] + italic[c]), atol=1e-3)
    assert np.allclose(got["d"], plain["d"], atol=1e-6)

    # Half and half, renders and crops; weight 0 is the plain index.
    half = vectors(build("half", reference_crops=5, reference_crop_weight=0.5))
    for c in "abc":
        assert np.allclose(half[c], _unit(plain[c] + _unit(bold[c] + oblique[c])), atol=1e-5)
    none = vectors(build("none", reference_crops=5, reference_crop_weight=0.0))
    assert all(np.allclose(none[c], plain[c], atol=1e-6) for c in "abcd")

    # One crop per class: a seeded choice of the two, the same on every build.
    one = vectors(build("one", reference_crops=1, reference_crop_weight=1.0))
    again = vectors(build("again", reference_crops=1, reference_crop_weight=1.0))
    for c in "abc":
        assert any(np.allclose(one[c], e[c], atol=1e-5) for e in (bold, oblique))
        assert np.allclose(one[c], again[c], atol=1e-6)


@pytest.mark.parametrize(
    ("font", "recognizer", "error"),
    [
        # No render in the reference font.
        ("DejaVuSans", {}, "fonts.reference"),
        # Crops asked for, but no manifest to take them from.
        ("DejaVuSerif", {"reference_crops": 10}, "reference_crops is 10"),
    ],
)
def test_reference_index_errors_write_nothing(tmp_path, font, recognizer, error):
    manifest = render_manifest(tmp_path / "renders", "ab", fonts=(font,))
    model_pt = untrained_model(tmp_path / "model.pt")
    with pytest.raises(EffOCRError, match=error):
        build_reference_index(
            model_pt,
            manifest,
            tmp_path / "index",
            **config_sections(tiny_config(**recognizer)).pick("recognizer", "fonts", "run"),
        )
    assert not (tmp_path / "index").exists()
