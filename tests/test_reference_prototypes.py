"""Reference prototypes (`effocr.recognizer.reference.Prototypes`): the score, the search, the
file, and their build by `build_reference_index` (`recognizer.reference_prototypes`)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_recognizer_index import index_builder, render_manifest, untrained_model

from effocr.bundle import Manifest
from effocr.export import _index_section
from effocr.infer import Engine
from effocr.recognizer.dataset import read_manifest
from effocr.recognizer.index import embed_paths
from effocr.recognizer.model import load_recognizer
from effocr.recognizer.reference import Prototypes, ReferenceIndex
from effocr.utils import EffOCRError


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _random_index(rng, n_classes=5, dim=8, per_class=(3, 0, 1, 4, 2), weight=0.6):
    classes = _unit(rng.normal(size=(n_classes, dim))).astype(np.float32)
    rows = np.repeat(np.arange(n_classes), per_class)
    # Shuffled on purpose: build groups them by class.
    order = rng.permutation(len(rows))
    vectors = _unit(rng.normal(size=(len(rows), dim))).astype(np.float32)[order]
    protos = Prototypes.build(vectors, rows[order], weight)
    labels = [chr(ord("a") + i) for i in range(n_classes)]
    return ReferenceIndex.build(classes, labels, {}, protos), classes, vectors, rows[order]


def test_score_is_the_class_vector_and_the_best_prototype():
    rng = np.random.default_rng(3)
    index, classes, vectors, rows = _random_index(rng)
    queries = _unit(rng.normal(size=(7, classes.shape[1]))).astype(np.float32)
    got = index.prototypes.scores(queries, classes)
    for q, query in enumerate(queries):
        for c in range(len(classes)):
            own = vectors[rows == c]
            want = query @ classes[c]
            if len(own):
                want = 0.4 * want + 0.6 * max(own @ query)
            assert got[q, c] == pytest.approx(want, abs=1e-5)


def test_search_ranks_by_the_score_and_pads_like_faiss():
    rng = np.random.default_rng(4)
    index, classes, _, _ = _random_index(rng)
    queries = _unit(rng.normal(size=(6, classes.shape[1]))).astype(np.float32)
    full = index.prototypes.scores(queries, classes)
    sims, rows = index.search(queries, k=3)
    assert rows.shape == (6, 3)
    for q in range(6):
        want = np.argsort(-full[q], kind="stable")[:3]
        assert rows[q].tolist() == want.tolist()
        assert np.allclose(sims[q], full[q, want], atol=1e-6)
    # `search` clamps k to the classes; `knn` (the pipeline's) answers as FAISS: rows -1.
    assert index.search(queries, k=9)[1].shape == (6, 5)
    sims, rows = index.knn(queries, 7)
    assert rows.shape == (6, 7) and (rows[:, 5:] == -1).all() and (rows[:, :5] >= 0).all()
    assert (sims[:, 5:] < -1e30).all()


def test_a_prototype_wins_a_glyph_that_the_class_mean_loses():
    # Class b has two looks; its mean lies nearer class a than the query (b's second look).
    a = np.array([1.0, 0.0, 0.0], np.float32)
    looks = _unit(np.array([[0.0, 1.0, 0.0], [0.8, 0.0, 0.6]], np.float32))
    b_mean = _unit(looks.sum(0))
    query = looks[1:2]
    plain = ReferenceIndex.build(np.stack([a, b_mean]), ["a", "b"])
    assert plain.labels_of(plain.search(query, 1)[1]) == [["a"]]
    with_looks = ReferenceIndex.build(
        np.stack([a, b_mean]), ["a", "b"], {}, Prototypes.build(looks, [1, 1], 0.75)
    )
    assert with_looks.labels_of(with_looks.search(query, 1)[1]) == [["b"]]
    assert with_looks.meta["prototypes"] == {"count": 2, "weight": 0.75}
    # Weight 0: the prototypes change nothing.
    zero = ReferenceIndex.build(
        np.stack([a, b_mean]), ["a", "b"], {}, Prototypes.build(looks, [1, 1], 0.0)
    )
    assert np.allclose(zero.search(query, 2)[0], plain.search(query, 2)[0], atol=1e-6)


def test_search_with_faiss_torch_contrib_loaded():
    # pytorch-metric-learning imports it: FAISS then answers `reconstruct_n` with torch
    # tensors, which must not reach the scores (a CI worker's order of tests did that).
    import faiss.contrib.torch_utils  # noqa: F401

    rng = np.random.default_rng(6)
    index, classes, _, _ = _random_index(rng)
    assert isinstance(index.vectors(), np.ndarray)
    queries = _unit(rng.normal(size=(3, classes.shape[1]))).astype(np.float32)
    sims, rows = index.search(queries, k=2)
    full = index.prototypes.scores(queries, classes)
    assert rows[:, 0].tolist() == np.argmax(full, axis=1).tolist()


def test_select_renumbers_the_kept_classes():
    protos = Prototypes.build(np.eye(5, 4, dtype=np.float32), [0, 2, 2, 3, 1], 0.3)
    kept = protos.select([2, 3])
    assert kept.rows.tolist() == [0, 0, 1] and kept.weight == pytest.approx(0.3)
    assert np.array_equal(kept.vectors, protos.vectors[protos.rows >= 2])


def test_prototypes_file_roundtrip_and_errors(tmp_path):
    rng = np.random.default_rng(5)
    index, classes, _, _ = _random_index(rng)
    index.save(tmp_path / "idx")
    loaded = ReferenceIndex.load(tmp_path / "idx")
    assert np.array_equal(loaded.prototypes.vectors, index.prototypes.vectors)
    assert loaded.prototypes.rows.tolist() == sorted(loaded.prototypes.rows.tolist())
    assert loaded.prototypes.weight == pytest.approx(0.6)
    q = _unit(rng.normal(size=(4, classes.shape[1]))).astype(np.float32)
    assert np.array_equal(loaded.search(q, 3)[1], index.search(q, 3)[1])

    path = tmp_path / "idx" / "ref_prototypes.npz"
    np.savez(path, vectors=np.ones((2, 8), np.float32), rows=np.array([0, 9]), weight=0.5)
    with pytest.raises(EffOCRError, match="ref_prototypes.npz: a prototype names a class row"):
        ReferenceIndex.load(tmp_path / "idx")
    np.savez(path, vectors=np.ones((2, 4), np.float32), rows=np.array([0, 1]), weight=0.5)
    with pytest.raises(EffOCRError, match="do not fit an index of dimension 8"):
        ReferenceIndex.load(tmp_path / "idx")
    # An object array needs unpickling: refused, not loaded.
    np.savez(path, vectors=np.array([{"x": 1}], dtype=object), rows=np.array([0]), weight=0.5)
    with pytest.raises(EffOCRError, match="cannot read reference prototypes"):
        ReferenceIndex.load(tmp_path / "idx")
    path.write_bytes(b"not a zip")
    with pytest.raises(EffOCRError, match="cannot read reference prototypes"):
        ReferenceIndex.load(tmp_path / "idx")
    with pytest.raises(EffOCRError, match="not in"):
        Prototypes.build(np.ones((1, 8)), [0], 1.5)


def test_build_reference_index_makes_the_prototypes(tmp_path):
    fonts = ("DejaVuSerif", "DejaVuSans", "DejaVuSans-Bold", "DejaVuSerif-Italic")
    renders = render_manifest(tmp_path / "renders", "abc", fonts=fonts)
    crops = render_manifest(
        tmp_path / "crops",
        "ab",
        fonts=("DejaVuSans-Oblique", "DejaVuSansMono", "DejaVuSerif-Bold"),
        real={"DejaVuSans-Oblique": "train", "DejaVuSansMono": "train", "DejaVuSerif-Bold": "val"},
    )
    model_pt = untrained_model(tmp_path / "model.pt")
    model = load_recognizer(model_pt)
    build = index_builder(model_pt, renders, tmp_path, crops)

    def embedded(manifest, keep):
        recs = [r for r in read_manifest(manifest) if keep(r)]
        return recs, embed_paths(model, [r.path for r in recs])

    plain = build("plain", reference_crops=5)
    assert (
        plain.prototypes is None and not (tmp_path / "index_plain" / "ref_prototypes.npz").exists()
    )

    # Four fonts, at most eight per class: every render is its own prototype; with crops
    # (two training fonts; the validation font is never used) for a and b.
    many = build("many", reference_crops=5, reference_prototypes=8, reference_prototype_weight=0.7)
    assert (tmp_path / "index_many" / "ref_prototypes.npz").is_file()
    protos = ReferenceIndex.load(tmp_path / "index_many").prototypes
    assert protos.weight == pytest.approx(0.7)
    assert many.meta["prototypes"] == {"count": 3 * 4 + 2 * 2, "weight": pytest.approx(0.7)}
    render_recs, render_embs = embedded(renders, lambda r: r.source == "render")
    crop_recs, crop_embs = embedded(crops, lambda r: r.split == "train")
    for row, label in enumerate(many.labels):
        want = [e for r, e in zip(render_recs, render_embs, strict=True) if r.label == label]
        want += [e for r, e in zip(crop_recs, crop_embs, strict=True) if r.label == label]
        got = protos.vectors[protos.rows == row]
        assert len(got) == len(want)
        for vec in want:
            assert np.abs(got - vec).max(axis=1).min() < 1e-5
    # The class vectors are those of the index without prototypes.
    assert np.allclose(many.vectors(), plain.vectors(), atol=1e-6)

    # Two per class: k-means centroids of the four renders (each the unit mean of the renders
    # nearest it), the same on every build; the crops (two per class) stay themselves.
    two = build("two", reference_crops=5, reference_prototypes=2)
    again = build("again", reference_crops=5, reference_prototypes=2)
    assert np.bincount(two.prototypes.rows).tolist() == [4, 4, 2]
    assert np.array_equal(two.prototypes.vectors, again.prototypes.vectors)
    for row, label in enumerate(two.labels):
        own = render_embs[[r.label == label for r in render_recs]]
        vecs = two.prototypes.vectors[two.prototypes.rows == row]
        # The crops' two are among the class's vectors; the other two are the centroids.
        is_crop = [any(np.allclose(v, e, atol=1e-5) for e in crop_embs) for v in vecs]
        cents = vecs[~np.asarray(is_crop)]
        assert len(cents) == 2
        nearest = np.argmax(own @ cents.T, axis=1)
        assert sorted(set(nearest.tolist())) == [0, 1]  # two clusters, none empty
        for c in range(2):
            assert np.allclose(cents[c], _unit(own[nearest == c].mean(0)), atol=1e-4)


def test_engine_reads_a_bundle_with_prototypes(tiny_bundle, tiny_models, tmp_path):
    """A bundle with prototypes: listed and checksummed in `model.yaml`, loaded by the Engine,
    and scored by it (prototypes equal to the class vectors read as the plain bundle)."""
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    index = ReferenceIndex.load(bundle)
    classes = index.vectors()
    Prototypes.build(classes, np.arange(len(classes)), 0.9).save(bundle / "ref_prototypes.npz")
    manifest = Manifest.read(bundle)
    manifest.index = _index_section(ReferenceIndex.load(bundle))
    manifest.write(bundle)
    assert Manifest.read(bundle).index["prototypes"] == {
        "file": "ref_prototypes.npz",
        "count": len(classes),
        "weight": pytest.approx(0.9),
    }
    images = sorted(tiny_models["images"].iterdir())[:3]
    options = {"workers": 1, "geometry": False, "lm": False}
    with Engine(tiny_bundle, **options) as plain, Engine(bundle, **options) as eng:
        assert eng.index.prototypes is not None and plain.index.prototypes is None
        want = plain.infer(images)
        assert [r.text for r in eng.infer(images)] == [r.text for r in want]
    assert sum(len(r.chars) for r in want) > 10

    # Weight 1, class i's one prototype is class i+1's vector: every glyph read as class j
    # without them is read as class j-1 with them (the Engine scores by the prototypes).
    n = len(classes)
    shifted = Prototypes.build(np.roll(classes, -1, axis=0), np.arange(n), 1.0)
    shifted.save(bundle / "ref_prototypes.npz")
    manifest.index = _index_section(ReferenceIndex.load(bundle))
    manifest.write(bundle)
    row = {label: i for i, label in enumerate(index.labels)}
    with Engine(bundle, **options) as eng:
        got = eng.infer(images)
    for before, after in zip(want, got, strict=True):
        assert [c.char for c in after.chars] == [
            index.labels[(row[c.char] - 1) % n] for c in before.chars
        ]

    # The file is under the bundle's checksums.
    Prototypes.build(classes, np.arange(n), 0.5).save(bundle / "ref_prototypes.npz")
    with pytest.raises(EffOCRError, match="ref_prototypes.npz"):
        Engine(bundle)
