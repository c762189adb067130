"""`effocr.pipeline.Pipeline`, `effocr.runner.Runner` and the one ONNX session factory."""

from __future__ import annotations

import pickle

import pytest

from effocr.evaluate import GT_IMAGE_SUFFIXES
from effocr.imageio import IMAGE_SUFFIXES
from effocr.pipeline import STAGES, LineResult, Pipeline, PipelineSpec, StageTimings
from effocr.runner import Runner, resolve_parallel
from effocr.utils import EffOCRError


class _EchoPipeline:
    """A pipeline without models: each line's result names the line and its index."""

    def __init__(self) -> None:
        self.stats = StageTimings()
        self.calls: list[tuple[list, int]] = []

    def run(self, images, first_index=0):
        self.calls.append((list(images), first_index))
        self.stats.merge({"decode": 1.0}, len(images), 0)
        return [LineResult(image=f"{first_index + i}:{x}") for i, x in enumerate(images)]


@pytest.mark.parametrize("workers", [1, 2])
def test_runner_keeps_input_order_in_chunks(workers):
    pipe = _EchoPipeline()
    runner = Runner(pipe, PipelineSpec("unused"), workers=workers, parallel="thread", chunk_lines=3)
    images = list("abcdefghij")
    assert [r.image for r in runner.run(images)] == [f"{i}:{x}" for i, x in enumerate(images)]
    assert sorted(pipe.calls, key=lambda c: c[1]) == [
        (images[i : i + 3], i) for i in range(0, len(images), 3)
    ]
    assert pipe.stats.lines == len(images) and pipe.stats.seconds["decode"] == 4.0
    assert set(pipe.stats.seconds) == set(STAGES)


def test_small_process_job_runs_in_the_calling_process():
    pipe = _EchoPipeline()
    with Runner(pipe, PipelineSpec("unused"), workers=2, chunk_lines=1) as runner:
        assert runner.parallel == "process"
        assert len(runner.run(list("abc"))) == 3 and runner._pool is None
    assert resolve_parallel("auto", 1) == "thread"
    with pytest.raises(EffOCRError, match="parallel"):
        resolve_parallel("fork", 2)


def test_worker_spec_is_small_and_picklable():
    spec = PipelineSpec("/some/bundle", 32)
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert len(pickle.dumps(spec)) < 200


def test_evaluate_tries_every_suffix_infer_reads():
    assert GT_IMAGE_SUFFIXES[:2] == (".bin.png", ".nrm.png")
    assert GT_IMAGE_SUFFIXES[2:] == IMAGE_SUFFIXES


def test_pipeline_is_the_engines_and_both_models_share_session_options(tiny_bundle, tmp_path):
    from PIL import Image

    from effocr.infer import Engine

    paths = []
    for i, (w, h) in enumerate([(120, 24), (60, 20)]):
        paths.append(tmp_path / f"line{i}.png")
        Image.new("RGB", (w, h), "white").save(paths[-1])
    pipe = Pipeline.from_bundle(tiny_bundle, verify=False)
    with Engine(tiny_bundle, device="cpu") as engine:
        want = [r.to_dict() for r in engine.infer(paths)]
    got = pipe.run([str(p) for p in paths])
    assert [r.to_dict() for r in got] == want
    assert pipe.stats.lines == 2 and set(pipe.stats.seconds) == set(STAGES)
    # One factory: the localizer and the recognizer run with the same options.
    sessions = [pipe.localizer.session.session, pipe.recognizer.session]
    opts = [s.get_session_options() for s in sessions]
    for key in ("session.set_denormal_as_zero", "session.intra_op.allow_spinning"):
        assert {o.get_session_config_entry(key) for o in opts} == {
            "1" if "denormal" in key else "0"
        }
    for attr in ("intra_op_num_threads", "inter_op_num_threads", "execution_mode"):
        assert len({str(getattr(o, attr)) for o in opts}) == 1
    assert len({str(o.graph_optimization_level) for o in opts}) == 1


def test_recognizer_normalize_is_the_transforms_one_for_grey_colour_and_mixed_batches():
    """A grey line's one-channel squares and a colour line's three give exactly the float
    input `transforms.normalize` gives the three-channel pixels (the training transform)."""
    import numpy as np

    from effocr.pipeline import RecognizerStage, stack_squares
    from effocr.recognizer.transforms import normalize

    class _Session:  # normalize never runs the model; the stage only reads the io names
        def get_inputs(self):
            return [type("Arg", (), {"name": "images"})]

        get_outputs = get_inputs

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    stage = RecognizerStage(_Session(), mean, std, batch_size=64)
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    colour = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    batch = stack_squares([grey, colour])
    assert batch.shape == (8, 8, 8, 3)
    want = np.stack([normalize(np.repeat(g, 3, axis=2), mean, std) for g in grey])
    assert np.array_equal(stage.normalize(grey), want)
    want_all = np.stack([normalize(np.asarray(sq), mean, std) for sq in batch])
    got = stage.normalize(batch)
    assert np.array_equal(got, want_all) and got.flags.c_contiguous and got.dtype == np.float32
    assert stack_squares([grey, grey]).shape == (10, 8, 8, 1)
    with pytest.raises(ValueError, match="channels"):
        stage.normalize(np.zeros((1, 8, 8, 2), np.uint8))


def test_overlapping_boxes_and_their_merge_into_one_glyph():
    import numpy as np

    from effocr.pipeline import merge_glyph_pairs, overlapping

    boxes = [[0, 2, 10, 20], [8, 0, 18, 19], [18, 1, 25, 20], [30, 3, 40, 21]]
    # Overlapping along the line only: touching (18 = 18) and apart are two glyphs.
    assert overlapping(boxes).tolist() == [True, False, False]
    assert overlapping([]).tolist() == []
    sims = np.arange(8, dtype=np.float32).reshape(4, 2)
    rows = np.arange(8).reshape(4, 2)
    spaces = np.asarray([False, False, False, True])
    pairs = {0: (np.asarray([0.0, 0, 18, 20]), np.asarray([0.9, 0.5]), np.asarray([7, 3]))}
    out = merge_glyph_pairs(boxes, sims, rows, np.asarray([0, 1, 0, 1]), spaces, {0: 1}, pairs)
    b, s, r, picked, sp = out
    assert b == [[0, 0, 18, 20], [18, 1, 25, 20], [30, 3, 40, 21]]
    np.testing.assert_allclose(s, [[0.9, 0.5], [4, 5], [6, 7]])
    assert r.tolist() == [[7, 3], [4, 5], [6, 7]] and picked.tolist() == [1, 0, 1]
    assert sp.tolist() == [False, False, True]
    assert rows.shape == (4, 2) and sims[0, 0] == 0  # the inputs untouched
    assert merge_glyph_pairs(boxes, sims, rows, picked[:1].repeat(4), None, {}, {})[4] is None
