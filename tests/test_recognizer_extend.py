"""effocr.recognizer.extend: characters added to a bundle's index without retraining."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import EN_CLASSES

from effocr.bundle import Manifest
from effocr.recognizer.extend import extend_index, new_labels
from effocr.recognizer.reference import ReferenceIndex
from effocr.utils import EffOCRError, sha256_file

NEW = "bgkpwy"


def _font():
    from effocr.synth.fonts import matplotlib_font_dir

    return matplotlib_font_dir() / "DejaVuSans.ttf"


def test_new_labels_keeps_order_and_drops_present_duplicates_and_spaces():
    assert new_labels("xa yx\tz", ["a", "b"]) == (["x", "y", "z"], ["a"])


@pytest.fixture(scope="module")
def extended(en_bundle, tmp_path_factory):
    before = {p.name: sha256_file(p) for p in en_bundle.iterdir() if p.is_file()}
    out = tmp_path_factory.mktemp("extended") / "bundle"
    result = extend_index(
        en_bundle, out, NEW + "a", [_font()], size=64, padding=0.05, mode="ascender"
    )
    after = {p.name: sha256_file(p) for p in en_bundle.iterdir() if p.is_file()}
    assert after == before, "the input bundle must not change"
    return out, result


def test_extended_bundle_is_complete_and_verified(en_bundle, extended):
    out, result = extended
    assert result.added == list(NEW) and result.present == ["a"]
    assert result.fonts == {c: ["DejaVuSans"] for c in NEW}
    manifest = Manifest.read(out)  # checksums cover the new index
    old, new = ReferenceIndex.load(en_bundle), ReferenceIndex.load(out)
    assert manifest.index["count"] == len(new) == len(old) + len(NEW)
    assert new.labels == old.labels + list(NEW)
    # The existing classes are kept exactly; the new ones are unit vectors.
    np.testing.assert_allclose(new.vectors()[: len(old)], old.vectors(), atol=1e-6)
    norms = np.linalg.norm(new.vectors()[len(old) :], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_renders_embed_as_the_workflow_embeds_them(en_bundle):
    """The ONNX path of `class_vectors` gives the class vectors that `build_reference_index`'s
    PyTorch path (`preprocess` + the trained model, mean over fonts) gives for the same renders,
    so added classes sit among the bundle's own."""
    import torch

    from effocr.onnx_session import make_session
    from effocr.pipeline import RecognizerStage
    from effocr.recognizer.extend import class_vectors
    from effocr.recognizer.model import load_recognizer
    from effocr.recognizer.transforms import preprocess
    from effocr.synth.fonts import matplotlib_font_dir
    from effocr.synth.render import render_glyph

    fonts = [matplotlib_font_dir() / f"DejaVu{s}.ttf" for s in ("Sans", "Serif")]
    labels = list(EN_CLASSES[:6] + NEW[:3])
    manifest = Manifest.read(en_bundle)
    rec = manifest.recognizer
    stage = RecognizerStage(make_session(en_bundle / rec["file"]), rec["mean"], rec["std"], 64)
    got, used, undrawn = class_vectors(
        stage, labels, fonts, rec["input_size"], 64, 0.05, "ascender"
    )
    assert undrawn == [] and all(v == ["DejaVuSans", "DejaVuSerif"] for v in used.values())

    model = load_recognizer(en_bundle.parent / "recognizer" / "model.pt", device="cpu")
    want = []
    for label in labels:
        x = np.stack(
            [
                preprocess(
                    np.asarray(render_glyph(f, label, 64, "ascender", 0.05)),
                    32,
                    model.mean,
                    model.std,
                )
                for f in fonts
            ]
        )
        with torch.inference_mode():
            mean = model(torch.from_numpy(x)).numpy().mean(0)
        want.append(mean / np.linalg.norm(mean))
    cosines = np.sum(got * np.asarray(want), axis=1)
    assert cosines.min() > 0.999, cosines
    # Different characters stay apart: the comparison above is not trivially true.
    assert (got @ np.asarray(want).T)[~np.eye(len(labels), dtype=bool)].max() < 0.999


def test_undrawn_characters_are_named(en_bundle, tmp_path):
    with pytest.raises(EffOCRError, match=r"no font draws '\\u4e00'|no font draws '一'"):
        extend_index(en_bundle, tmp_path / "b", "一", [_font()], 64, 0.05, "ascender")
    assert not (tmp_path / "b").exists()


def test_undrawn_characters_can_be_left_out(en_bundle, tmp_path):
    result = extend_index(
        en_bundle, tmp_path / "b", "一b", [_font()], 64, 0.05, "ascender", skip_undrawn=True
    )
    assert result.added == ["b"] and result.undrawn == ["一"]
    labels = ReferenceIndex.load(tmp_path / "b").labels
    assert labels[-1] == "b" and "一" not in labels and result.count == len(labels)
    # Nothing to add: a verified copy with the same index.
    same = extend_index(en_bundle, tmp_path / "c", "ac", [], 64, 0.05, "ascender")
    assert same.added == [] and ReferenceIndex.load(tmp_path / "c").labels == (
        ReferenceIndex.load(en_bundle).labels
    )
    Manifest.read(tmp_path / "c", verify=True)


def test_output_must_differ_from_the_bundle(en_bundle):
    with pytest.raises(EffOCRError, match="not the bundle itself"):
        extend_index(en_bundle, en_bundle, "b", [_font()], 64, 0.05, "ascender")


def test_cli_adds_ligature_classes(en_bundle, tmp_path, capsys):
    from effocr.cli import main as cli_main

    config = tmp_path / "config.yaml"
    config.write_text("language: en\n", encoding="utf-8")
    out = tmp_path / "lig"
    args = ["extend-index", str(en_bundle), "--output", str(out), "--config", str(config)]
    args += ["--fonts", str(_font()), "--chars", "k", "--ligatures", "st", "ck", "st"]
    assert cli_main(args) == 0
    assert "3 classes added (k st ck)" in capsys.readouterr().out
    old, new = ReferenceIndex.load(en_bundle), ReferenceIndex.load(out)
    assert new.labels == old.labels + ["k", "st", "ck"]
    # A render of the ligature is nearest to its own class, not to its letters'.
    from effocr.onnx_session import make_session
    from effocr.pipeline import RecognizerStage
    from effocr.recognizer.extend import render_squares

    rec = Manifest.read(out).recognizer
    stage = RecognizerStage(make_session(out / rec["file"]), rec["mean"], rec["std"], 8)
    squares, _ = render_squares("st", [_font()], rec["input_size"], 64, 0.05, "ascender")
    _, rows = new.search(stage(squares), 1)
    assert new.labels[int(rows[0, 0])] == "st"


@pytest.mark.parametrize(
    ("ligatures", "message"),
    [(["fi"], r"'fi' has 'f', not in the charset"), (["s"], "'s' is not two or more")],
)
def test_cli_ligatures_need_known_letters(en_bundle, tmp_path, capsys, ligatures, message):
    from effocr.cli import main as cli_main

    config = tmp_path / "config.yaml"
    config.write_text("language: en\n", encoding="utf-8")
    args = ["extend-index", str(en_bundle), "--output", str(tmp_path / "b"), "--config"]
    args += [str(config), "--fonts", str(_font()), "--ligatures", *ligatures]
    assert cli_main(args) == 1
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "b").exists()


def test_extending_keeps_the_prototypes(en_bundle, tmp_path):
    """A bundle with reference prototypes keeps them for its classes; an added class has none
    (its vector alone scores it)."""
    import shutil

    from effocr.export import _index_section
    from effocr.recognizer.reference import Prototypes

    bundle = tmp_path / "with_prototypes"
    shutil.copytree(en_bundle, bundle)
    index = ReferenceIndex.load(bundle)
    n = len(index)
    Prototypes.build(index.vectors(), np.arange(n), 0.5).save(bundle / "ref_prototypes.npz")
    manifest = Manifest.read(bundle)
    manifest.index = _index_section(ReferenceIndex.load(bundle))
    manifest.write(bundle)
    out = tmp_path / "extended"
    extend_index(bundle, out, "k", [_font()], size=64, padding=0.05, mode="ascender")
    assert Manifest.read(out).index["prototypes"]["count"] == n
    new = ReferenceIndex.load(out)
    assert len(new) == n + 1 and new.prototypes.rows.max() == n - 1
    np.testing.assert_allclose(
        new.prototypes.vectors, ReferenceIndex.load(bundle).prototypes.vectors, atol=1e-6
    )
