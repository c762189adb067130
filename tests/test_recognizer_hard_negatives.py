"""effocr.recognizer.hard_negatives: the hard_negatives.txt format and mining against the first-pass index."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from test_recognizer_index import render_manifest, tiny_config, untrained_model

from effocr.cli import main
from effocr.config import config_sections
from effocr.recognizer.dataset import read_manifest
from effocr.recognizer.hard_negatives import (
    mine_hard_negatives,
    nearest_other_classes,
    read_hard_negatives,
    write_hard_negatives,
)
from effocr.recognizer.model import load_recognizer
from effocr.recognizer.transforms import preprocess
from effocr.utils import EffOCRError, codepoints_to_label

TRICKY = [" ", "\u3000", "\t", "\U0002000b", "e\u0301", "#", "U", "+"]


def test_hard_negatives_roundtrip_whitespace_and_non_bmp(tmp_path):
    sets = [TRICKY[:4], TRICKY[4:], ["a", "\u3000", "\U0001f600", " "]]
    path = write_hard_negatives(tmp_path / "hard_negatives.txt", sets, k=4, model="pass1/model.pt")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# effocr hard negatives: k=4 model=pass1/model.pt\n")
    body = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert body[0] == "U+0020 U+3000 U+0009 U+2000B"
    assert body[1] == "U+0065_U+0301 U+0023 U+0055 U+002B"
    assert all("\t" not in ln and len(ln.split(" ")) == 4 for ln in body)
    assert read_hard_negatives(path) == sets


@pytest.mark.parametrize(
    "content,message",
    [
        ("# header\nU+0041 U+0042\nU+0041 B\n", "line 3: not a code-point label: 'B'"),
        ("U+0041\tU+0042 U+0043\n", "line 1: not a code-point label"),
        ("U+0041\n", "line 1: a set needs at least 2 classes"),
        ("# only a comment\n", "no hard-negative sets"),
    ],
)
def test_hard_negatives_errors_name_the_line(tmp_path, content, message):
    path = tmp_path / "hard_negatives.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EffOCRError, match=message.replace("(", r"\(")):
        read_hard_negatives(path)
    with pytest.raises(EffOCRError, match="not found"):
        read_hard_negatives(tmp_path / "missing.txt")


def test_nearest_other_classes_puts_own_first():
    rows = np.array([[3, 0, 1, 2], [1, 2, 0, 3]])
    assert nearest_other_classes([0, 1], rows, 3) == [[0, 3, 1], [1, 2, 0]]


def test_mine_one_render_per_class_matches_brute_force(tmp_path):
    chars = "abcdeoO0,.'"
    manifest = render_manifest(tmp_path / "r", chars, fonts=("DejaVuSerif", "DejaVuSans"))
    model_pt = untrained_model(tmp_path / "model.pt")
    config = tiny_config(hard_negatives_k=4)
    out = mine_hard_negatives(
        model_pt,
        manifest,
        tmp_path / "hard_negatives.txt",
        **config_sections(config).pick("recognizer", "fonts", "run"),
    )
    sets = read_hard_negatives(out)
    assert len(sets) == len(chars)
    # Brute force, without the miner's helpers: the model run on each class's reference render
    # (read from the manifest as a plain CSV), cosine neighbours by a full similarity matrix.
    model = load_recognizer(model_pt).eval()
    with open(manifest, encoding="utf-8", newline="") as f:
        refs = [r for r in csv.DictReader(f) if r["origin"] == "DejaVuSerif"]
    assert sorted(codepoints_to_label(r["codepoints"]) for r in refs) == sorted(chars)
    labels = [codepoints_to_label(r["codepoints"]) for r in refs]
    batch = []
    for r in refs:
        with Image.open(manifest.parent / r["path"]) as im:
            batch.append(preprocess(im.convert("RGB"), model.input_size, model.mean, model.std))
    with torch.no_grad():
        embs = model(torch.from_numpy(np.stack(batch))).numpy().astype(np.float64)
    embs /= np.linalg.norm(embs, axis=1, keepdims=True)
    sims = embs @ embs.T
    assert sorted(s[0] for s in sets) == sorted(chars)
    for s in sets:
        i = labels.index(s[0])
        assert len(s) == 4 and len(set(s)) == 4
        want = sorted((j for j in range(len(labels)) if j != i), key=lambda j: -sims[i, j])[:3]
        # Ranked by similarity; a swap of two near-equal neighbours (float rounding) is no error.
        got_sims = [sims[i, labels.index(c)] for c in s[1:]]
        np.testing.assert_allclose(got_sims, sims[i, want], atol=1e-5)


def test_mine_real_training_crops_via_cli(tmp_path):
    chars = "aeo0O"
    manifest = render_manifest(
        tmp_path / "r",
        chars,
        fonts=("DejaVuSerif", "DejaVuSans", "DejaVuSans-Bold", "DejaVuSansMono"),
        real={"DejaVuSans-Bold": "train", "DejaVuSansMono": "val"},
    )
    model_pt = untrained_model(tmp_path / "model.pt")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "fonts: {reference: [DejaVuSerif]}\nrecognizer: {device: cpu}\n", encoding="utf-8"
    )
    hard_negatives = tmp_path / "hard_negatives.txt"
    rc = main(
        [
            "mine-hard-negatives",
            "--model",
            str(model_pt),
            "--manifest",
            str(manifest),
            "--out",
            str(hard_negatives),
            "--config",
            str(cfg),
            "--k",
            "3",
        ]
    )
    assert rc == 0
    sets = read_hard_negatives(hard_negatives)
    real_train = [r for r in read_manifest(manifest) if r.source == "real" and r.split == "train"]
    # One set per real training crop (not per class, not the val crops), own class first.
    assert [s[0] for s in sets] == [r.label for r in real_train]
    assert all(len(s) == 3 and len(set(s)) == 3 and set(s) <= set(chars) for s in sets)
    assert "k=3" in hard_negatives.read_text(encoding="utf-8").splitlines()[0]
