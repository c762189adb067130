"""Export parity, the bundle round-trip and `effocr infer` end to end on tiny trained models.

The session's `tiny_models` (conftest) are a tiny localizer (`train_localizer`) and a tiny
recognizer (a few supervised-contrastive steps on the lines' own glyph crops), a reference
index built from those crops and the exported bundle. The tests then check that ONNX inference reproduces
the PyTorch pipeline, that perturbed models fail the parity check without leaving a bundle,
and that bad images are reported and skipped.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import export_sections, fit_supcon, line_crops, missing_dependency, unmasked_env
from schema_defaults import CATEGORIES, at_images
from snakemake_forks import run

from effocr.data.coco import index_coco, line_chars, load_coco
from effocr.export import check_onnx, export_bundle, match_boxes
from effocr.infer import Engine, assemble_text, decode_image
from effocr.recognizer.reference import ReferenceIndex
from effocr.utils import EffOCRError, label_to_codepoints

REPO = Path(__file__).resolve().parents[1]
ENCODER = "mobilenetv3_small_050"
INPUT_SIZE = 32
# Enough full-batch steps for the en encoder to separate the fixture's classes clearly.
ACCURACY_STEPS = 40


@pytest.fixture(scope="module")
def trained(tiny_models) -> dict:
    """Tiny trained models, their index, and an exported float32 bundle (the tests below
    compare the bundle with PyTorch exactly; int8 has its own): conftest's `tiny_models`,
    trained once per session and shared with the tests of `tiny_bundle`."""
    return tiny_models


# Embeddings of the same crops from ONNX Runtime and PyTorch (or from two batchings of one
# ONNX model) may differ by float rounding: the tests below require at most EMB_TOL between them
# (L2; export.embedding_max_abs per coordinate is the bundle's own check). A similarity moves by
# at most that much (references are unit vectors), so the nearest class can only change where
# the two best similarities lie within 2 * EMB_TOL: those near-ties (TIE, with room to spare) are
# the only characters allowed to differ.
EMB_TOL = 1e-3
TIE = 3 * EMB_TOL


def _reads(paths: list[Path], detect, embed, index, rec_meta: dict) -> list[dict]:
    """Engine's steps spelled out with the given localizer and recognizer, the two best classes.

    The same preprocessing as `Engine` (grey kept, `glyph_squares`, `normalize`), so PyTorch and
    ONNX models can be compared on identical crops.
    """
    from effocr.recognizer.transforms import glyph_squares, normalize

    size, mean, std = rec_meta["input_size"], rec_meta["mean"], rec_meta["std"]
    reads = []
    for path in paths:
        img = decode_image(path, keep_grey=True)
        det = detect(img)
        squares = glyph_squares(img, det.crop_boxes(0), size, det.vertical)
        squares = np.broadcast_to(squares, squares.shape[:3] + (3,))
        read = {
            "boxes": np.asarray(det.chars, np.float64).reshape(-1, 4),
            "scores": np.asarray(det.char_scores, np.float64).reshape(-1),
            "x": np.stack([normalize(q, mean, std) for q in squares]) if len(squares) else None,
            "text": "",
        }
        if read["x"] is not None:
            embs = np.asarray(embed(read["x"]), np.float32)
            sims, rows = index.search(embs, 2)
            read.update(embs=embs, sims=sims[:, 0], margins=sims[:, 0] - sims[:, 1])
            read["labels"] = [index.labels[r] for r in rows[:, 0]]
            read["text"] = assemble_text(read["labels"], det.spaces)
        reads.append(read)
    return reads


def _torch_reads(trained, paths: list[Path]) -> list[dict]:
    """The PyTorch models' reading of `paths` (what the bundle must reproduce)."""
    from effocr.localizer.model import load_localizer
    from effocr.recognizer.index import ReferenceIndex
    from effocr.recognizer.model import load_recognizer

    loc = load_localizer(trained["localizer"])
    rec = load_recognizer(trained["recognizer"])

    def embed(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return rec(torch.from_numpy(np.ascontiguousarray(x))).numpy()

    meta = {"input_size": rec.input_size, "mean": rec.mean, "std": rec.std}
    return _reads(paths, loc.detect, embed, ReferenceIndex.load(trained["index"]), meta)


def _engine_reads(engine: Engine, paths: list[Path]) -> list[dict]:
    """`engine`'s own models through `_reads` (its near-ties, for comparing two engines)."""
    from effocr.recognizer.reference import ReferenceIndex

    meta = {"input_size": engine.input_size, "mean": engine.mean, "std": engine.std}
    index = ReferenceIndex.load(engine.bundle_dir)
    return _reads(paths, engine.localizer.detect, engine.embed, index, meta)


def test_engine_geometry_decides_pairs_by_boxes(trained):
    """`infer.geometry` (on in a new bundle) changes exactly the labels `geometry_labels`
    decides from the boxes of the reading without it, and only to labels the index has."""
    from effocr.geometry import geometry_labels

    paths = _line_paths(trained)
    chars = set(ReferenceIndex.load(trained["bundle"]).labels)
    with Engine(trained["bundle"], workers=1, geometry=False) as engine:
        off = engine.infer(paths)
    with Engine(trained["bundle"], workers=1) as engine:  # the bundle's default: on
        assert engine.pipeline.geometry is not None
        on = engine.infer(paths)
    for a, b in zip(off, on, strict=True):
        assert [c.bbox for c in a.chars] == [c.bbox for c in b.chars]
        labels = [c.char for c in a.chars]
        decided = geometry_labels(np.asarray([c.bbox for c in a.chars]).reshape(-1, 4), labels)
        want = [d if d in chars else lab for lab, d in zip(labels, decided, strict=True)]
        assert [c.char for c in b.chars] == want, a.image
        assert len(a.text) == len(b.text) and a.text.count(" ") == b.text.count(" ")


def _assert_reads_agree(got: list[dict], ref: list[dict], box_tol: float) -> int:
    """`got` (to_dict records) read as `ref` within the tolerances above; returns chars compared.

    Boxes within `box_tol` px, similarities within EMB_TOL, the same class and the same text
    wherever the reference's two best classes are not a near-tie.
    """
    compared = 0
    for g, r in zip(got, ref, strict=True):
        assert len(g["chars"]) == len(r["boxes"]), (g["image"], len(g["chars"]), len(r["boxes"]))
        if not g["chars"]:
            continue
        boxes = np.array([c["bbox"] for c in g["chars"]])
        np.testing.assert_allclose(boxes, r["boxes"], atol=box_tol + 0.01)
        np.testing.assert_allclose([c["score"] for c in g["chars"]], r["sims"], atol=EMB_TOL)
        clear = r["margins"] > TIE
        got_chars = np.array([c["char"] for c in g["chars"]], object)
        assert list(got_chars[clear]) == list(np.array(r["labels"], object)[clear]), g["image"]
        if clear.all():
            assert g["text"] == r["text"]
        compared += int(clear.sum())
    return compared


def _assert_same_results(a: list, b: list, reads: list[dict]) -> None:
    """Two engines' results agree: the same lines and boxes, chars as `_assert_reads_agree`."""
    a, b = [r.to_dict() for r in a], [r.to_dict() for r in b]
    for x, y in zip(a, b, strict=True):
        assert (x["width"], x["height"]) == (y["width"], y["height"])
        assert len(x["words"]) == len(y["words"])
        for wx, wy in zip(x["words"], y["words"], strict=True):
            np.testing.assert_allclose(wx["bbox"], wy["bbox"], atol=0.011)
    assert _assert_reads_agree(a, reads, 0.0) == _assert_reads_agree(b, reads, 0.0) > 0


def _line_paths(trained) -> list[Path]:
    coco = load_coco(trained["coco"])
    return [
        trained["images"] / im["file_name"] for im in sorted(coco["images"], key=lambda i: i["id"])
    ]


# -- export ------------------------------------------------------------------


def test_bundle_contents(trained):
    bundle = trained["bundle"]
    for name in (
        "localizer.onnx",
        "recognizer.onnx",
        "ref.index",
        "ref_labels.txt",
        "model.yaml",
        "parity.json",
    ):
        assert (bundle / name).is_file(), name
    check_onnx(bundle / "recognizer.onnx")
    check_onnx(bundle / "localizer.onnx")
    meta = yaml.safe_load((bundle / "model.yaml").read_text())
    assert meta["format_version"] == 2
    assert meta["profile"] == {
        "name": "en",
        "vertical": False,
        "spaces": True,
        "render_mode": "ascender",
        "tesseract_lang": "eng",
    }
    rec = meta["recognizer"]
    assert rec["input_size"] == INPUT_SIZE and rec["encoder"] == ENCODER
    assert len(rec["mean"]) == 3 and len(rec["std"]) == 3
    loc = meta["localizer"]["meta"]
    assert loc["score_threshold"] == trained["config"]["localizer"]["score_threshold"]
    assert loc["classes"] == ["char", "word"]
    assert set(meta["versions"]) >= {"effocr", "torch", "onnx", "onnxruntime"}
    assert len(meta["config_sha256"]["recognizer"]) == 64
    assert meta["opset"] == trained["config"]["export"]["opset"]
    parity = json.loads((bundle / "parity.json").read_text())
    assert parity["passed"] and parity["recognizer"]["n_crops"] > 20
    assert parity["recognizer"]["max_abs"] <= trained["config"]["export"]["embedding_max_abs"]
    assert parity["localizer"]["n_lines"] == 8


def test_perturbed_recognizer_fails_and_leaves_no_bundle(trained, tmp_path):
    # Export the good model, then check that ONNX against weights changed after export.
    from effocr.recognizer.model import load_recognizer, save_recognizer

    model = load_recognizer(trained["recognizer"])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    perturbed = save_recognizer(model, tmp_path / "perturbed.pt", trained["config"])
    out = tmp_path / "bundle"
    with pytest.raises(EffOCRError, match="recognizer: min cosine"):
        export_bundle(
            perturbed,
            trained["index"],
            trained["localizer"],
            trained["coco"],
            out,
            **export_sections(at_images(trained["config"], trained["images"])),
            recognizer_onnx=trained["bundle"] / "recognizer.onnx",
        )
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "perturbed.pt"]  # no temporary left


def test_perturbed_localizer_fails(trained, tmp_path):
    ckpt = torch.load(trained["localizer"], weights_only=False)
    gen = torch.Generator().manual_seed(0)
    ckpt["model"] = {
        k: v + 0.2 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
        for k, v in ckpt["model"].items()
    }
    torch.save(ckpt, tmp_path / "loc.pt")
    out = tmp_path / "bundle"
    # The parity check's own message, not a load or checker error that names the localizer.
    parity = r"disagrees with PyTorch on the test split; no bundle written:\n  localizer chars: "
    with pytest.raises(EffOCRError, match=parity):
        export_bundle(
            trained["recognizer"],
            trained["index"],
            tmp_path / "loc.pt",
            trained["coco"],
            out,
            **export_sections(at_images(trained["config"], trained["images"])),
            localizer_onnx=trained["bundle"] / "localizer.onnx",
        )
    assert not out.exists()


def test_match_boxes_tolerates_only_borderline_extras():
    ref = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float)
    m = match_boxes(ref, [0.9, 0.3004], ref[:1] + 0.1, [0.9], threshold=0.3, margin=0.001)
    assert m["matched"] == 1 and m["unmatched"] == 0 and m["unmatched_borderline"] == 1
    assert m["box_max_abs"] == pytest.approx(0.1)
    m = match_boxes(ref, [0.9, 0.8], ref[:1], [0.9], threshold=0.3, margin=0.001)
    assert m["unmatched"] == 1


def test_parity_means_are_over_all_matched_boxes_of_all_lines():
    """box_mean_abs and score_mean_abs: the mean per matched box over every line, not a sum or
    a mean of per-line means (a line with one match weighs one box)."""
    from types import SimpleNamespace

    from effocr.export import localizer_parity

    ref = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], float)
    lines = {  # line: (reference detections, "ONNX" detections)
        "a": ((ref, [0.9, 0.8, 0.7]), (ref + 1.0, [0.8, 0.8, 0.7])),
        "b": ((ref[:1], [0.9]), (ref[:1] + 1.5, [0.5])),
    }

    class Fake:
        def __init__(self, side: int):
            self.side = side

        def detect(self, name, allows_vertical=None):
            boxes, scores = lines[name][self.side]
            return SimpleNamespace(chars=boxes, char_scores=np.array(scores))

    got = localizer_parity(Fake(0), Fake(1), list(lines), threshold=0.3, margin=0.01)
    t = got["chars"]
    assert t["matched"] == 4 and t["unmatched"] == 0
    assert t["box_max_abs"] == pytest.approx(1.5) and t["score_max_abs"] == pytest.approx(0.4)
    assert t["box_mean_abs"] == pytest.approx((3 * 1.0 + 1.5) / 4)
    assert t["score_mean_abs"] == pytest.approx((0.1 + 0 + 0 + 0.4) / 4)


# -- inference -----------------------------------------------------------------


def test_engine_reproduces_pytorch(trained, tmp_path):
    from effocr.export import match_boxes

    # Round trip: the bundle alone, moved away from everything it was made from.
    moved = tmp_path / "moved_bundle"
    shutil.copytree(trained["bundle"], moved)
    paths = _line_paths(trained)
    # The models against PyTorch's top-1, so without the glyph-box rules (test_geometry and
    # test_engine_geometry_decides_pairs_by_boxes below).
    engine = Engine(moved, workers=2, batch_size=16, geometry=False)
    results = engine.infer(paths)
    assert sum(len(r.chars) for r in results) > 0, "the tiny localizer found no character"
    for r in results:
        assert r.ok and r.width > 0 and r.height > 0
        for c in r.chars:
            assert c.codepoints == label_to_codepoints(c.char) and -1.01 <= c.score <= 1.01
    ref = _torch_reads(trained, paths)
    onnx = _engine_reads(engine, paths)
    tol = trained["config"]["export"]
    threshold = yaml.safe_load((moved / "model.yaml").read_text())["localizer"]["meta"][
        "score_threshold"
    ]
    comparable = []
    for r, o in zip(ref, onnx, strict=True):
        # The localizers agree as the export check demands: a box only one of them finds
        # must score within score_max_abs of the threshold.
        m = match_boxes(
            r["boxes"],
            r["scores"],
            o["boxes"],
            o["scores"],
            threshold=threshold,
            margin=tol["score_max_abs"],
            box_tol=tol["box_max_abs"],
        )
        assert m["unmatched"] == 0, m
        comparable.append(len(r["boxes"]) == len(o["boxes"]) == m["matched"])
        if r["x"] is not None:
            # ONNX Runtime and PyTorch embed the same crops alike.
            got = engine.embed(r["x"])
            cos = (got * r["embs"]).sum(1) / np.linalg.norm(r["embs"], axis=1)
            assert cos.min() >= tol["embedding_min_cosine"]
            assert np.linalg.norm(got - r["embs"], axis=1).max() <= EMB_TOL
    assert sum(comparable) >= len(paths) - 1
    got = [g.to_dict() for g, ok in zip(results, comparable, strict=True) if ok]
    want = [r for r, ok in zip(ref, comparable, strict=True) if ok]
    n_chars = sum(len(r["boxes"]) for r in want)
    assert _assert_reads_agree(got, want, tol["box_max_abs"]) >= 0.5 * n_chars > 0
    # Threads and batch size change nothing beyond float rounding.
    single = Engine(moved, workers=1, batch_size=7, geometry=False).infer(paths)
    _assert_same_results(single, results, onnx)
    # Arrays are accepted too.
    arr = Engine(moved, geometry=False).infer([decode_image(paths[0])])
    _assert_same_results(arr, results[:1], onnx[:1])
    assert arr[0].image == "<array 0>"


def test_engine_worker_processes_and_threads_agree(trained, monkeypatch):
    paths = _line_paths(trained)
    # Without the glyph-box rules, as the PyTorch reads compared with: the worker processes
    # must take that from the Engine (PipelineSpec), not from the bundle (on).
    off = {"geometry": False}
    with Engine(trained["bundle"], workers=2, batch_size=8, chunk_lines=2, **off) as procs:
        assert procs.parallel == "process"
        procs.start()
        assert procs._pool is not None and len(procs._pool._processes) == 2

        def not_here(*args):
            raise AssertionError("a chunk ran in the parent process")

        procs.pipeline.run = not_here  # the workers do all the work
        first = procs.infer(paths)
        assert procs._pool is not None  # started once, reused by the next call
        pool = procs._pool
        again = procs.infer(paths + [trained["root"] / "missing.png"])
        assert procs._pool is pool
        assert procs.lines_done == 2 * len(paths) + 1 and procs.glyphs_done > 0
        # knn can round to 0 on tiny jobs; lm runs only with a language model in the bundle,
        # geometry only when on.
        skipped = ("knn", "lm", "geometry")
        assert all(t > 0 for stage, t in procs.timings.items() if stage not in skipped)
    assert procs._pool is None  # closed on leaving the block
    threads = Engine(
        trained["bundle"], workers=2, batch_size=8, chunk_lines=2, parallel="thread", **off
    )
    assert threads.parallel == "thread"
    expected = threads.infer(paths)
    reads = _engine_reads(threads, paths)
    _assert_same_results(first, expected, reads)
    _assert_same_results(again[:-1], expected, reads)
    assert [r.image for r in first] == [r.image for r in expected] == [str(p) for p in paths]
    assert not again[-1].ok and "not found" in again[-1].error
    # One worker never starts processes; a small job does not start them either ...
    assert Engine(trained["bundle"], workers=1).parallel == "thread"
    small = Engine(trained["bundle"], workers=2, chunk_lines=2, **off)
    _assert_same_results(small.infer(paths), expected, reads)
    assert small._pool is None
    # ... but a large one does.
    monkeypatch.setattr("effocr.runner.SMALL_JOB_LINES", 1)
    _assert_same_results(small.infer(paths), expected, reads)
    assert small._pool is not None
    small.close()
    with pytest.raises(EffOCRError, match="parallel"):
        Engine(trained["bundle"], workers=2, parallel="fork")


def test_engine_vertical_follows_the_profile(trained, tmp_path):
    # An English line of one narrow glyph is taller than wide: the English bundle reads it
    # as it is (not transposed); a bundle whose profile has vertical lines transposes it.
    from PIL import Image, ImageDraw, ImageFont

    im = Image.new("RGB", (20, 60), "white")
    ImageDraw.Draw(im).text(
        (10, 30), "l", fill="black", font=ImageFont.load_default(size=48), anchor="mm"
    )
    img = np.asarray(im)
    jp = tmp_path / "jp_bundle"
    shutil.copytree(trained["bundle"], jp)
    meta = yaml.safe_load((jp / "model.yaml").read_text())
    meta["profile"].update(name="jp", vertical=True)
    (jp / "model.yaml").write_text(yaml.safe_dump(meta))
    for bundle, vertical in ((trained["bundle"], False), (jp, True)):
        engine = Engine(bundle, device="cpu")
        assert engine.allows_vertical is vertical
        seen = []
        detect = engine.localizer.detect

        def spy(image, allows_vertical=None, detect=detect, seen=seen):
            seen.append(allows_vertical)
            return detect(image, allows_vertical=allows_vertical)

        engine.localizer.detect = spy
        res = engine.infer([img])[0]
        assert res.ok and seen == [vertical]
        _, prepared, _ = engine.localizer._prepare(img, vertical)
        assert prepared.transposed is vertical
        det = detect(img, allows_vertical=vertical)
        assert det.vertical is vertical
        for c in res.chars:  # boxes in the line's own pixels either way
            assert 0 <= c.bbox[0] <= c.bbox[2] <= 20 and 0 <= c.bbox[1] <= c.bbox[3] <= 60


def test_cli_infer_with_bad_images(trained, tmp_path, capsys):
    from effocr.cli import main

    lines = tmp_path / "lines"
    lines.mkdir()
    paths = _line_paths(trained)[:3]
    for p in paths:
        shutil.copy(p, lines / p.name)
    (lines / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    args = [
        "infer",
        "--model",
        str(trained["bundle"]),
        "--output",
        str(out),
        "--coco",
        "--threads",
        "2",
    ]
    rc = main([*args, str(lines), str(tmp_path / "missing.png")])
    assert rc == 1
    assert "2 of 5 image(s) failed" in capsys.readouterr().err
    records = [json.loads(ln) for ln in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 5
    errors = {Path(r["image"]).name: r["error"] for r in records if "error" in r}
    assert set(errors) == {"zz_corrupt.png", "missing.png"}
    assert "not found" in errors["missing.png"]
    assert [Path(r["image"]).name for r in records[:3]] == [p.name for p in paths]
    # The CLI reads as the bundle's models do (float rounding aside: see _assert_reads_agree).
    reads = _engine_reads(Engine(trained["bundle"]), paths)
    assert _assert_reads_agree(records[:3], reads, 0.0) > 0
    for p, r in zip(paths, records[:3], strict=True):
        assert (out / "text" / f"{p.stem}.txt").read_text() == r["text"] + "\n"
    coco = json.loads((out / "predictions_coco.json").read_text())
    assert len(coco["images"]) == 3
    # Without --output: JSON Lines on stdout, exit 0 when every image is fine.
    assert main(["infer", "--model", str(trained["bundle"]), str(paths[0])]) == 0
    rec = json.loads(capsys.readouterr().out.strip())
    assert rec["image"] == str(paths[0])
    assert _assert_reads_agree([rec], reads[:1], 0.0) == _assert_reads_agree(
        records[:1], reads[:1], 0.0
    )


# -- the Snakemake rule ----------------------------------------------------------


def _rule_workdir(trained, workdir: Path, export_cfg: dict) -> Path:
    res = workdir / "results"
    for src, dst in (
        (trained["recognizer"], res / "recognizer" / "pass2" / "model.pt"),
        (trained["localizer"], res / "localizer" / "model.pt"),
        (trained["coco"], res / "data" / "splits" / "test.json"),
        # The int8 recognizer's calibration crops come from the validation split.
        (trained["coco"], res / "data" / "splits" / "val.json"),
        (trained["index"] / "ref.index", res / "recognizer" / "index" / "ref.index"),
        (trained["index"] / "ref_labels.txt", res / "recognizer" / "index" / "ref_labels.txt"),
    ):
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    # The character language model the bundle ships (rule train_lm's output).
    from effocr.lm import CharLM, training_texts

    (res / "lm").mkdir(parents=True, exist_ok=True)
    CharLM.train(training_texts([trained["coco"]], []), 3).save(res / "lm" / "lm.json")
    config = {
        "results_dir": "results",
        "init_from": None,  # from scratch: no synthetic base for few lines
        "dataset": {"coco_json": "unused/lines.json", "image_dir": str(trained["images"])},
        "export": export_cfg,
        # Lines only: the line detector's export has its own test (test_pages.py).
        "line_detector": {"enabled": False},
    }
    (workdir / "config").mkdir(exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return workdir


def _run_rules(*workdirs: Path) -> list[subprocess.CompletedProcess]:
    """The rule run in each of `workdirs` (one after the other, on the tests' Snakemake server
    and job zygote: tests/snakemake_forks.py, tests/job_zygote.py)."""
    done = []
    for workdir in workdirs:
        cmd = [
            *(sys.executable, "-m", "snakemake", "results/bundle"),
            *("--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)),
            *("--configfile", str(workdir / "config" / "config.yaml")),
            *("--workflow-profile", "none", "--cores", "1", "--allowed-rules", "export_bundle"),
        ]
        done.append(run(cmd, timeout=300))
    return done


@pytest.mark.slow
def test_rule_export_bundle(trained, tmp_path):
    from effocr.recognizer.model import export_onnx, load_recognizer, save_recognizer

    # A recognizer ONNX that no longer matches the trained weights: the rule fails, no bundle.
    model = load_recognizer(trained["recognizer"])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_recognizer(model, tmp_path / "perturbed.pt", trained["config"])
    export_onnx(tmp_path / "perturbed.pt", tmp_path / "perturbed.onnx", 17)
    workdir = _rule_workdir(
        trained,
        tmp_path / "bad",
        {"parity_lines": 2, "recognizer_onnx": str(tmp_path / "perturbed.onnx")},
    )
    good, bad = _run_rules(_rule_workdir(trained, tmp_path / "good", {"parity_lines": 2}), workdir)
    assert good.returncode == 0, good.stderr[-3000:]
    bundle = tmp_path / "good" / "results" / "bundle"
    assert json.loads((bundle / "parity.json").read_text())["passed"]
    assert Engine(bundle).infer(_line_paths(trained)[:1])[0].ok
    assert bad.returncode != 0
    assert not (workdir / "results" / "bundle").exists()
    assert not [p for p in (workdir / "results").iterdir() if p.name.startswith(".bundle")]
    log = (workdir / "results" / "logs" / "export_bundle.log").read_text()
    assert "disagrees with PyTorch" in log and "min cosine" in log


# -- int8 recognizer -----------------------------------------------------------


def _op_types(path: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _export(trained, out: Path, **export_cfg) -> dict:
    sections = export_sections(at_images(trained["config"], trained["images"]))
    # Replaced, not validated: a test may ask for tolerances the schema refuses.
    sections["export"] = dataclasses.replace(sections["export"], **export_cfg)
    return export_bundle(
        trained["recognizer"],
        trained["index"],
        trained["localizer"],
        trained["coco"],
        out,
        **sections,
        calibration_json=trained["coco"],
    )


def test_int8_recognizer_in_the_bundle(trained, tmp_path):
    from effocr.quantize import int16_unsafe_weights

    # The plumbing, with tolerances every quantization meets (cosines are >= -1, agreement
    # >= 0): the accuracy of int8 is test_int8_recognizer_accuracy's.
    bundle = tmp_path / "int8"
    report = _export(
        trained, bundle, quantize="int8", quantized_min_cosine=-1.0, quantized_top1_agreement=0.0
    )
    q = report["recognizer_int8"]
    assert q["used"] and not q["problems"] and q["calibration_crops"] > 20
    assert q["n_crops"] == report["recognizer"]["n_crops"] and 0.0 <= q["top1_agreement"] <= 1.0
    assert "QuantizeLinear" in _op_types(bundle / "recognizer.onnx")
    assert "QuantizeLinear" not in _op_types(trained["bundle"] / "recognizer.onnx")
    assert int16_unsafe_weights(bundle / "recognizer.onnx") == []
    assert not (bundle / "recognizer.int8.onnx").exists()
    meta = yaml.safe_load((bundle / "model.yaml").read_text())
    assert meta["recognizer"]["quantization"] == "int8"
    assert json.loads((bundle / "parity.json").read_text())["recognizer_int8"]["used"]
    results = Engine(bundle).infer(_line_paths(trained)[:2])
    assert all(r.ok and r.chars for r in results)
    # The finished (int8) bundle read the calibration split for its confidence calibration;
    # whether a fit was possible depends on the tiny models' right and wrong words.
    conf = report["confidence"]
    assert conf["lines"] > 0 and conf["word"]["units"] >= conf["lines"]
    fitted = all("skipped" not in conf[level] for level in ("word", "line"))
    assert bool(meta.get("confidence")) == fitted == (bundle / "confidence.json").is_file()
    assert all(r.to_dict()["confidence_calibrated"] == fitted for r in results)


@pytest.mark.parametrize(
    ("tolerances", "problem"),
    [
        # A cosine cannot exceed 1 (beyond rounding): certain to fail.
        (
            {"quantized_min_cosine": 1.01, "quantized_top1_agreement": 0.0},
            "quantized_min_cosine",
        ),
        # An agreement above 1 (the schema would refuse it) cannot be met either.
        (
            {"quantized_min_cosine": -1.0, "quantized_top1_agreement": 1.0 + 1e-9},
            "quantized_top1_agreement",
        ),
    ],
)
def test_int8_recognizer_that_disagrees_is_not_shipped(trained, tmp_path, tolerances, problem):
    bundle = tmp_path / "strict"
    report = _export(trained, bundle, quantize="int8", **tolerances)
    q = report["recognizer_int8"]
    assert not q["used"] and len(q["problems"]) == 1 and problem in q["problems"][0]
    assert report["passed"]  # the float32 model passed its own check and is shipped
    assert "QuantizeLinear" not in _op_types(bundle / "recognizer.onnx")
    assert yaml.safe_load((bundle / "model.yaml").read_text())["recognizer"]["quantization"] == (
        "none"
    )
    assert (
        json.loads((bundle / "parity.json").read_text())["recognizer_int8"]["problems"]
        == (q["problems"])
    )
    assert sorted(p.name for p in bundle.glob("recognizer*.onnx")) == ["recognizer.onnx"]


def test_int8_that_can_saturate_is_not_shipped(trained, tmp_path, monkeypatch):
    import effocr.quantize as quantize

    # Full 8-bit weights (the old setting) pass the parity check on a CPU with VNNI, so only
    # the weight check stops them reaching CPUs without it.
    old = quantize.quantize_recognizer
    monkeypatch.setattr(
        quantize, "quantize_recognizer", lambda *a, **kw: old(*a, **kw, weights="int8")
    )
    report = _export(
        trained,
        tmp_path / "full8",
        quantize="int8",
        quantized_min_cosine=-1.0,
        quantized_top1_agreement=0.0,
    )
    q = report["recognizer_int8"]
    assert not q["used"] and len(q["problems"]) == 1 and "without VNNI" in q["problems"][0]
    assert "QuantizeLinear" not in _op_types(tmp_path / "full8" / "recognizer.onnx")


def test_int8_weights_cannot_saturate_int16(trained, tmp_path):
    # Without VNNI, x86 u8 x s8 kernels add two u8*s8 products into a saturating int16; the
    # shipped weights must keep 255 * |w| * 2 within it on any CPU, which the file itself shows.
    from effocr.quantize import INT16_SAFE_WEIGHT, int16_unsafe_weights, quantize_recognizer

    assert 2 * 255 * INT16_SAFE_WEIGHT <= 32767
    crops, _ = line_crops(trained["coco"], trained["images"])
    calibration = _preprocessed(trained, crops)
    fp32 = trained["bundle"] / "recognizer.onnx"
    shipped = quantize_recognizer(fp32, tmp_path / "int7.onnx", calibration)
    assert int16_unsafe_weights(shipped) == []
    # The check sees full-range int8 weights (what bundles shipped before, wrong on AMD EPYCs).
    full = quantize_recognizer(fp32, tmp_path / "int8.onnx", calibration, weights="int8")
    assert len(int16_unsafe_weights(full)) > 0
    # uint8 weights take U8U8 kernels, which cannot saturate.
    u8 = quantize_recognizer(fp32, tmp_path / "u8.onnx", calibration, weights="uint8")
    assert int16_unsafe_weights(u8) == []
    with pytest.raises(EffOCRError, match="weights="):
        quantize_recognizer(fp32, tmp_path / "x.onnx", calibration, weights="int4")


def _preprocessed(trained, crops: list[np.ndarray]) -> np.ndarray:
    from effocr.recognizer.model import load_recognizer
    from effocr.recognizer.transforms import preprocess

    rec = load_recognizer(trained["recognizer"])
    return np.stack([preprocess(c, rec.input_size, rec.mean, rec.std) for c in crops])


def test_int8_recognizer_accuracy(trained, tmp_path):
    # On a recognizer whose classes are well apart (the en profile's encoder trained to
    # separate the crops' classes), int8 meets the export check's default tolerances. The
    # tiny fixture model cannot show this: its near-random embeddings flip on any rounding.
    import faiss

    from effocr.config import load_config
    from effocr.export import recognizer_parity
    from effocr.profiles import get_profile
    from effocr.quantize import quantize_recognizer
    from effocr.recognizer.model import (
        RecognizerNet,
        export_onnx,
        load_recognizer,
        save_recognizer,
    )
    from effocr.recognizer.transforms import preprocess

    crops, labels = line_crops(trained["coco"], trained["images"])
    torch.manual_seed(0)
    model = RecognizerNet("resnet10t", INPUT_SIZE, encoder_args=get_profile("en").encoder_args)
    x = np.stack([preprocess(c, INPUT_SIZE, model.mean, model.std) for c in crops])
    pt = save_recognizer(
        fit_supcon(model, x, labels, ACCURACY_STEPS), tmp_path / "model.pt", trained["config"]
    )
    model = load_recognizer(pt)
    x = np.stack([preprocess(c, INPUT_SIZE, model.mean, model.std) for c in crops])
    with torch.inference_mode():
        embs = model(torch.from_numpy(x)).numpy()
    chars = sorted(set(labels))
    refs = np.stack([embs[[i for i, c in enumerate(labels) if c == ch]].mean(0) for ch in chars])
    refs /= np.linalg.norm(refs, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(refs.shape[1])
    index.add(refs.astype(np.float32))
    # The premise: every crop's class is clearly the nearest (margin well above int8 noise).
    sims = np.sort(embs @ refs.T, axis=1)
    assert (sims[:, -1] - sims[:, -2]).min() > 0.05
    fp32 = export_onnx(pt, tmp_path / "model.onnx", 17)
    int8 = quantize_recognizer(fp32, tmp_path / "int8.onnx", x)
    got = recognizer_parity(model, int8, x, index=index)
    # Predictions unchanged (the export check's default agreement). The cosines: a sound int8
    # model's worst crop lay at 0.988-0.992 across trainings (its mean at 0.997-0.998), int16
    # saturation gives 0.4-0.5; the bounds sit between, clear of both.
    defaults = load_config(None, {})["export"]
    assert got["top1_agreement"] >= defaults["quantized_top1_agreement"], got
    assert got["min_cosine"] >= 0.97 and got["mean_cosine"] >= 0.99, got
    assert got["min_cosine"] < 1.0 - 1e-6  # it did quantize


# -- a localizer ONNX made elsewhere -----------------------------------------------


def test_external_onnx_localizer_in_the_bundle(trained, tmp_path):
    from test_localizer_layouts import _const_model

    # A Detectron2-style graph that "detects" the annotated chars of the first test line.
    coco = load_coco(trained["coco"])
    image = sorted(coco["images"], key=lambda im: im["id"])[0]
    scale = 32 / image["height"]
    chars = line_chars(index_coco(coco, **CATEGORIES), image)
    xywh = np.asarray([a["bbox"] for _, a in chars], np.float32)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1) * scale
    outputs = {
        "boxes": boxes,
        "labels": np.zeros(len(boxes), np.int64),
        "scores": np.full(len(boxes), 0.9, np.float32),
    }
    external = tmp_path / "d2.onnx"
    _const_model(external, [1, 3, 32, "width"], outputs)
    bundle = tmp_path / "external"
    report = export_bundle(
        trained["recognizer"],
        trained["index"],
        external,
        trained["coco"],
        bundle,
        **export_sections(
            at_images(trained["config"], trained["images"]),
            export={"quantize": "none"},
            localizer={"onnx_layout": "detectron2", "input_height": 32, "score_threshold": 0.5},
        ),
    )
    assert report["localizer"]["external"] and report["localizer"]["chars_found"] > 0
    meta = yaml.safe_load((bundle / "model.yaml").read_text())
    assert meta["localizer"]["meta"]["layout"] == "detectron2"
    assert (bundle / "localizer.onnx").read_bytes() == external.read_bytes()
    result = Engine(bundle).infer([trained["images"] / image["file_name"]])[0]
    assert result.ok and len(result.chars) == len(chars)
    # The annotated boxes of a line the tiny recognizer was trained on: mostly read right.
    got = result.text.replace(" ", "")
    want = "".join(c for c, _ in chars)
    assert sum(a == b for a, b in zip(got, want, strict=True)) >= 0.7 * len(want)
    # Without its layout an external ONNX localizer is refused with a clear message.
    with pytest.raises(EffOCRError, match="onnx_layout"):
        export_bundle(
            trained["recognizer"],
            trained["index"],
            external,
            trained["coco"],
            tmp_path / "nolayout",
            **export_sections(at_images(trained["config"], trained["images"])),
        )
    assert not (tmp_path / "nolayout").exists()


# -- int8 on a CPU without VNNI ------------------------------------------------------


def test_int8_recognizer_same_without_vnni(trained, tmp_path):
    # The int8 model must compute on AVX2-only CPUs (AMD EPYC before Zen 4, whose u8 x s8
    # kernels saturate in int16) what it computes here. qemu-user emulates such a CPU: ONNX
    # Runtime picks its kernels by CPUID, so there it runs the non-VNNI ones for real.
    from effocr.infer import make_session
    from effocr.quantize import quantize_recognizer

    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        missing_dependency("needs qemu-user (make sysdeps installs it)")
    crops, _ = line_crops(trained["coco"], trained["images"])
    x = np.ascontiguousarray(_preprocessed(trained, crops)[:32])
    folder = tmp_path / "emulated"
    folder.mkdir()
    shipped = quantize_recognizer(trained["bundle"] / "recognizer.onnx", folder / "int7.onnx", x)
    np.save(folder / "crops.npy", x)
    cmd = [qemu, "-cpu", "Haswell", sys.executable, str(REPO / "bench" / "int8_cpu_paths.py")]
    # qemu is the CPU here: the suite's own CPUID mask, if any, must not follow it in.
    proc = subprocess.run(
        [*cmd, "--worker", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        env=unmasked_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads((folder / "cpu.json").read_text())["cpuid"]
    assert seen == {"avx2": True, "avx512f": False, "avx512_vnni": False}
    sess = make_session(shipped, ["CPUExecutionProvider"], 1)
    native = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    emulated = np.load(folder / "int7.emb.npy")
    # The same integer arithmetic; only float rounding (stem conv, requantization) may differ.
    # Saturated sums (full 8-bit weights) gave a min cosine of 0.87 here, 0.06-0.41 with the en
    # recognizer of bench/int8_cpu_paths.py.
    cos = (native * emulated).sum(1) / (
        np.linalg.norm(native, axis=1) * np.linalg.norm(emulated, axis=1)
    )
    assert cos.min() >= 0.999, cos.min()


def _export_int8_localizer(trained, out: Path, box_agreement: float) -> dict:
    """An int8 export whose recognizer check always passes, so that only the localizer's
    agreement decides (`box_agreement`)."""
    return _export(
        trained,
        out,
        quantize="int8",
        quantized_min_cosine=-1.0,
        quantized_top1_agreement=0.0,
        quantized_box_agreement=box_agreement,
    )


def test_int8_localizer_in_the_bundle(trained, tmp_path):
    """The plumbing, with an agreement every quantization meets (>= 0): the int8 localizer is
    shipped with its metadata, marked in model.yaml and read by `Engine`."""
    from effocr.localizer.runtime import read_onnx_meta
    from effocr.quantize import int16_unsafe_weights

    bundle = tmp_path / "int8"
    report = _export_int8_localizer(trained, bundle, 0.0)
    q = report["localizer_int8"]
    assert q["used"] and not q["problems"] and q["calibration_lines"] > 0
    assert 0.0 <= q["box_agreement"] <= 1.0 and q["n_lines"] == len(report["lines"])
    loc = bundle / "localizer.onnx"
    assert "QuantizeLinear" in _op_types(loc)
    assert "QuantizeLinear" not in _op_types(trained["bundle"] / "localizer.onnx")
    assert read_onnx_meta(loc) == read_onnx_meta(trained["bundle"] / "localizer.onnx")
    assert int16_unsafe_weights(loc) == []
    assert not (bundle / "localizer.int8.onnx").exists()
    meta = yaml.safe_load((bundle / "model.yaml").read_text())
    assert meta["localizer"]["quantization"] == "int8"
    assert json.loads((bundle / "parity.json").read_text())["localizer_int8"]["used"]
    results = Engine(bundle).infer(_line_paths(trained)[:2])
    assert all(r.ok and r.chars for r in results)


def test_int8_localizer_that_disagrees_is_not_shipped(trained, tmp_path):
    # An agreement above 1 (the schema would refuse it) cannot be met: certain to fail.
    bundle = tmp_path / "strict"
    report = _export_int8_localizer(trained, bundle, 1.0 + 1e-9)
    q = report["localizer_int8"]
    assert not q["used"] and len(q["problems"]) == 1
    assert "export.quantized_box_agreement" in q["problems"][0]
    assert report["passed"] and report["recognizer_int8"]["used"]
    assert "QuantizeLinear" not in _op_types(bundle / "localizer.onnx")
    assert yaml.safe_load((bundle / "model.yaml").read_text())["localizer"]["quantization"] == (
        "none"
    )
    assert sorted(p.name for p in bundle.glob("localizer*.onnx")) == ["localizer.onnx"]


def test_export_quantize_none_ships_float_models(trained, tmp_path):
    bundle = tmp_path / "none"
    report = _export(trained, bundle, quantize="none", quantized_box_agreement=0.0)
    assert report["localizer_int8"] is None and report["recognizer_int8"] is None
    meta = yaml.safe_load((bundle / "model.yaml").read_text())
    assert meta["localizer"]["quantization"] == meta["recognizer"]["quantization"] == "none"
    assert "QuantizeLinear" not in _op_types(bundle / "localizer.onnx")


def test_int8_localizer_accuracy(en_bundle, tiny_coco_factory, tmp_path):
    """On a trained localizer (en_bundle's, 32 lines), int8 finds the chars and words PyTorch
    finds on unseen lines (agreement 0.97-1.0 across training seeds), with boxes and scores on
    average within a fraction of a pixel and a few thousandths. The tiny fixture's localizer
    cannot show this: its scores sit near the cut-off."""
    from conftest import en_lines

    from effocr.export import box_agreement, localizer_parity
    from effocr.localizer.export import export_onnx
    from effocr.localizer.model import load_localizer
    from effocr.localizer.prepare import prepare_line
    from effocr.localizer.runtime import LocalizerSession
    from effocr.quantize import quantize_localizer

    coco_json, image_dir = en_lines(tiny_coco_factory, 12, 29)  # unseen lines
    images = [decode_image(p) for p in sorted(Path(image_dir).glob("*.png"))]
    model = load_localizer(en_bundle / "localizer.pt")
    fp32 = export_onnx(en_bundle / "localizer.pt", tmp_path / "localizer.onnx", 17)
    meta = model.meta
    inputs = [
        prepare_line(img, meta["input_height"], meta["pad_multiple"], False).array[None]
        for img in images[:4]
    ]
    int8 = quantize_localizer(fp32, tmp_path / "localizer.int8.onnx", inputs)
    margin = 0.05
    got = localizer_parity(
        model,
        LocalizerSession(int8, threads=1),
        images[4:],
        threshold=float(meta["score_threshold"]),
        margin=margin,
        allows_vertical=False,
    )
    # Means, not maxima: across training seeds of this localizer one box in 80 may move
    # 2-10 px or change its score by up to 0.4, while the means stay below a third of these
    # bounds (chars 0.14-0.31 px, words 0.75-1.35 px, scores 0.002-0.009).
    for kind, box_bound in (("chars", 0.8), ("words", 3.0)):
        t = got[kind]
        assert t["n_ref"] > {"chars": 50, "words": 10}[kind], got
        assert t["box_mean_abs"] < box_bound and t["score_mean_abs"] < 0.02, got
    assert box_agreement(got) >= 0.95, got
