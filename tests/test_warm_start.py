"""Warm start (config `init_from`): a bundle's or a results directory's weights start training.

The bundle base is conftest's `tiny_bundle` (exported by `effocr.export`, so it carries
`recognizer.pt` and `localizer.pt`); the results-directory base is trained here with the real
trainers into the paths a run uses (`recognizer/pass2/model.pt`, `localizer/model.pt`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from schema_defaults import at_images
from test_recognizer_index import render_manifest, tiny_config

from effocr.bundle import Manifest
from effocr.config import config_sections, load_config
from effocr.importer import dataset_lines
from effocr.localizer.backends import create_localizer
from effocr.localizer.model import detection_loss, load_model
from effocr.localizer.train import (
    LineSet,
    augment_line,
    evaluate,
    make_batch,
    train_localizer,
)
from effocr.recognizer.model import RecognizerNet, load_recognizer
from effocr.recognizer.train import train_recognizer
from effocr.utils import EffOCRError, load_checkpoint, save_checkpoint, seed_everything
from effocr.warm_start import (
    AUTO,
    NO_WEIGHTS,
    SYNTHETIC,
    peak_learning_rate,
    resolve_init_from,
    warm_start,
    weight_files,
)

torch.set_num_threads(1)
NAMES = {"char": "char", "word": "word"}
# conftest's tiny_bundle: its recognizer is this encoder, untouched by any profile arguments.
BUNDLE_ENCODER = {"encoder": "mobilenetv3_small_050", "encoder_args": {}, "input_size": 32}


def base_state(path: Path) -> dict:
    return load_checkpoint(path, "test")["model"]


def assert_same(model: torch.nn.Module, state: dict, keys=None) -> None:
    own = model.state_dict()
    for k in keys if keys is not None else own:
        assert torch.equal(own[k], state[k]), k


def bundle_recognizer() -> RecognizerNet:
    seed_everything(3)
    return RecognizerNet("mobilenetv3_small_050", 32, encoder_args={})


def localizer(classes, **arch) -> torch.nn.Module:
    seed_everything(3)
    return create_localizer("fcos", classes=classes, input_height=32, arch=arch or None)


# -- the bundle carries the weights -------------------------------------------------------


def test_bundle_lists_and_checksums_its_weights(tiny_bundle, tmp_path):
    manifest = Manifest.read(tiny_bundle)
    assert manifest.weights == {"recognizer": "recognizer.pt", "localizer": "localizer.pt"}
    assert {"recognizer.pt", "localizer.pt"} <= set(manifest.files)
    # Both load with weights_only=True into the models that were exported.
    rec = load_recognizer(tiny_bundle / "recognizer.pt")
    assert rec.encoder_name == "mobilenetv3_small_050" and rec.input_size == 32
    model, meta = load_model(tiny_bundle / "localizer.pt")
    assert meta["classes"] == manifest.localizer["meta"]["classes"]
    # A changed weight file fails the bundle's checksum check like any other file.
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    with open(copy / "recognizer.pt", "ab") as f:
        f.write(b"\0")
    with pytest.raises(EffOCRError, match=r"recognizer\.pt: checksum mismatch"):
        Manifest.read(copy)


# -- parameters equal the base's before training ------------------------------------------


def test_recognizer_starts_as_the_bundles(tiny_bundle):
    fresh = bundle_recognizer()
    model = bundle_recognizer()
    assert warm_start(model, tiny_bundle, "recognizer") == tiny_bundle / "recognizer.pt"
    state = base_state(tiny_bundle / "recognizer.pt")
    assert set(state) == set(model.state_dict())
    assert_same(model, state)
    assert not all(torch.equal(v, state[k]) for k, v in fresh.state_dict().items())


def test_localizer_starts_as_the_bundles_heads_matched_by_class(tiny_bundle):
    state = base_state(tiny_bundle / "localizer.pt")
    base_classes = load_checkpoint(tiny_bundle / "localizer.pt", "test")["meta"]["classes"]
    assert base_classes == ["char", "word"]
    model = localizer(["char", "word"])
    warm_start(model, tiny_bundle, "localizer")
    assert_same(model, state)

    # Another class order: the heads follow their class, not their position.
    swapped = localizer(["word", "char"])
    warm_start(swapped, tiny_bundle, "localizer")
    own = swapped.state_dict()
    for k, v in state.items():
        if k.startswith("heads.0."):
            assert torch.equal(own["heads.1." + k[len("heads.0.") :]], v), k
        elif k.startswith("heads.1."):
            assert torch.equal(own["heads.0." + k[len("heads.1.") :]], v), k
        else:
            assert torch.equal(own[k], v), k

    # A char-only model takes everything but the word head.
    char_only = localizer(["char"])
    warm_start(char_only, tiny_bundle, "localizer")
    assert_same(char_only, state)


def test_a_head_the_base_lacks_is_seeded(tiny_bundle, tmp_path):
    """A char-only base gives a char+word model a fresh word head: the seeded one, every time."""
    ckpt = load_checkpoint(tiny_bundle / "localizer.pt", "test")
    base = tmp_path / "base"
    (base / "localizer").mkdir(parents=True)
    (base / "recognizer" / "pass2").mkdir(parents=True)
    shutil.copy(tiny_bundle / "recognizer.pt", base / "recognizer" / "pass2" / "model.pt")
    char_state = {k: v for k, v in ckpt["model"].items() if not k.startswith("heads.1.")}
    meta = {**ckpt["meta"], "classes": ["char"]}
    save_checkpoint({**ckpt, "model": char_state, "meta": meta}, base / "localizer" / "model.pt")
    a, b = localizer(["char", "word"]), localizer(["char", "word"])
    fresh = localizer(["char", "word"]).state_dict()
    warm_start(a, base, "localizer")
    warm_start(b, base, "localizer")
    assert_same(a, b.state_dict())
    assert_same(a, char_state, keys=list(char_state))
    assert_same(a, fresh, keys=[k for k in fresh if k.startswith("heads.1.")])


# -- a better start than a fresh init -----------------------------------------------------


def localizer_loss(model: torch.nn.Module, data: LineSet) -> float:
    """The detection loss of `model` on all of `data` in one batch, without augmentation."""
    items = []
    for img, boxes, labels in zip(data.images, data.boxes, data.labels, strict=True):
        line, line_boxes = augment_line(
            img, boxes, model.input_height, None, allows_vertical=False, ink_spread=0.0
        )
        items.append((line, line_boxes, labels))
    x, targets = make_batch(items)
    with torch.no_grad():
        raw = model.eval()(x)
    losses = detection_loss(
        raw, targets, tuple(x.shape[2:]), model.level_meta(), model.arch["center_radius"]
    )
    return float(sum(losses.values()))


def test_bundle_localizer_starts_better(tiny_bundle, tiny_coco_factory):
    """On new lines of the kind it was trained on, the warm start beats a fresh init at once."""
    coco_json, image_dir = tiny_coco_factory(4, "en", 23, degrade=False, max_chars=14)
    data = LineSet(coco_json, image_dir, ["char", "word"], NAMES, allows_vertical=False)
    _, meta = load_model(tiny_bundle / "localizer.pt")
    warm, fresh = localizer(["char", "word"]), localizer(["char", "word"])
    warm_start(warm, tiny_bundle, "localizer")
    loss_warm, loss_fresh = localizer_loss(warm, data), localizer_loss(fresh, data)
    assert loss_warm < 0.7 * loss_fresh, (loss_warm, loss_fresh)
    f1_warm = evaluate(warm, data, meta, "cpu", NAMES)["char"]["f1"]
    f1_fresh = evaluate(fresh, data, meta, "cpu", NAMES)["char"]["f1"]
    assert f1_warm > f1_fresh, (f1_warm, f1_fresh)


def _train_recognizer(glyphs, out, config, init_from=None):
    sections = config_sections(config).pick("recognizer", "fonts", "run")
    return train_recognizer(glyphs, out, **sections, init_from=init_from, threads=1)


def _train_localizer(config, coco_json, image_dir, out, init_from=None):
    sections = config_sections(at_images(config, image_dir)).pick("localizer", "dataset", "run")
    return train_localizer(coco_json, coco_json, out, **sections, init_from=init_from, threads=1)


@pytest.fixture(scope="module")
def glyphs(tmp_path_factory):
    out = tmp_path_factory.mktemp("warm_glyphs")
    fonts = ("DejaVuSerif", "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique")
    return render_manifest(out, "abdehkmnprstxyz", fonts=fonts, real={"DejaVuSans-Oblique": "val"})


@pytest.fixture(scope="module")
def results_base(tmp_path_factory, glyphs, tiny_coco_factory):
    """An earlier run's results directory: the recognizer trained 3 epochs, the localizer 12."""
    root = tmp_path_factory.mktemp("earlier_run") / "results"
    config = tiny_config(encoder="resnet10t", epochs=3, num_passes=3)
    _train_recognizer(glyphs, root / "recognizer" / "pass2", config)
    coco_json, image_dir = tiny_coco_factory(8, "en", 5, degrade=False, max_chars=14)
    loc = load_config(None, {"seed": 3, "localizer": {"epochs": 12, "batch_size": 4}})
    _train_localizer(loc, coco_json, image_dir, root / "localizer")
    return root


def test_results_dir_recognizer_starts_higher(tmp_path, glyphs, results_base):
    """Trained by the real trainer from an earlier run: epoch 0 is the base's precision."""
    config = tiny_config(encoder="resnet10t", epochs=1, num_passes=1)
    fresh = _train_recognizer(glyphs, tmp_path / "fresh", config)
    warm = _train_recognizer(glyphs, tmp_path / "warm", config, init_from=str(results_base))
    base_p1 = load_recognizer(results_base / "recognizer" / "pass2" / "model.pt").info["val_p1"]
    assert warm["zero_shot_val_p1"] == pytest.approx(base_p1, abs=1e-6)
    assert warm["zero_shot_val_p1"] >= fresh["zero_shot_val_p1"] + 0.2
    # The resume hash covers the base: the warm run does not resume the fresh one's checkpoint.
    assert warm["config_hash"] != fresh["config_hash"]


def test_results_dir_localizer_starts_better(tmp_path, results_base, tiny_coco_factory):
    """Trained by the real trainer at a learning rate too small to move the weights, the
    warm-started model.pt is the base's start: lower loss, higher F1 than a fresh one."""
    coco_json, image_dir = tiny_coco_factory(4, "en", 23, degrade=False, max_chars=14)
    data = LineSet(coco_json, image_dir, ["char", "word"], NAMES, allows_vertical=False)
    small = {"lr": 1e-7, "warm_start_lr": 1e-7}
    cfg = {"seed": 3, "localizer": {"epochs": 1, "batch_size": 4, **small}}
    fresh = _train_localizer(load_config(None, cfg), coco_json, image_dir, tmp_path / "f")
    warm = _train_localizer(
        load_config(None, cfg), coco_json, image_dir, tmp_path / "w", init_from=str(results_base)
    )
    loss = {n: localizer_loss(load_model(tmp_path / n / "model.pt")[0], data) for n in "fw"}
    assert loss["w"] < 0.8 * loss["f"], loss
    assert warm["char"]["f1"] > fresh["char"]["f1"], (warm["char"], fresh["char"])


def _peak_lr(out_dir: Path) -> float:
    """The peak learning rate a finished run's optimizer was given (its checkpoint.pt):
    `max_lr` of the localizer's one-cycle schedule, `initial_lr` of the recognizer's."""
    group = torch.load(out_dir / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"][0]
    return group.get("max_lr", group["initial_lr"])


def test_trained_weights_fine_tune_at_warm_start_lr(
    tmp_path, glyphs, results_base, tiny_coco_factory
):
    """A model that starts from a base trains at its section's warm_start_lr, a fresh one at lr;
    a pass that continues another (hard_negatives_fine_tune) at the rate of its run."""
    lrs = {"lr": 3e-3, "warm_start_lr": 2e-4}
    config = tiny_config(encoder="resnet10t", epochs=1, num_passes=1)
    config["recognizer"].update(lrs)
    base = str(results_base)
    _train_recognizer(glyphs, tmp_path / "r_fresh", config)
    _train_recognizer(glyphs, tmp_path / "r_warm", config, init_from=base)
    sections = config_sections(config).pick("recognizer", "fonts", "run")
    for run, init_from in (("fresh", None), ("warm", base)):
        train_recognizer(
            glyphs,
            tmp_path / f"r_{run}_continued",
            **sections,
            init_from=init_from,
            init_model=tmp_path / f"r_{run}" / "model.pt",
            threads=1,
        )
    coco_json, image_dir = tiny_coco_factory(4, "en", 23, degrade=False, max_chars=14)
    cfg = load_config(None, {"seed": 3, "localizer": {"epochs": 1, "batch_size": 4, **lrs}})
    _train_localizer(cfg, coco_json, image_dir, tmp_path / "l_fresh")
    _train_localizer(cfg, coco_json, image_dir, tmp_path / "l_warm", init_from=base)
    peaks = {d.name: _peak_lr(d) for d in tmp_path.iterdir()}
    assert peaks == pytest.approx(
        {
            **{"r_fresh": 3e-3, "r_fresh_continued": 3e-3, "l_fresh": 3e-3},
            **{"r_warm": 2e-4, "r_warm_continued": 2e-4, "l_warm": 2e-4},
        }
    )


@pytest.mark.parametrize("kind", ["recognizer", "localizer"])
@pytest.mark.parametrize(
    ("init_from", "init_checkpoint", "expected"),
    [(None, None, 3e-3), ("base", None, 2e-4), (None, "ckpt.pt", 2e-4), ("base", "ckpt.pt", 2e-4)],
)
def test_peak_learning_rate_is_the_warm_start_lr_from_any_trained_weights(
    kind, init_from, init_checkpoint, expected
):
    """`init_checkpoint` starts a run from trained weights as `init_from` does."""
    section = {"lr": 3e-3, "warm_start_lr": 2e-4, "init_checkpoint": init_checkpoint}
    sections = config_sections(load_config(None, {kind: section}))
    assert peak_learning_rate(getattr(sections, kind), init_from) == pytest.approx(expected)


# -- clear errors ---------------------------------------------------------------------------


def test_bundle_without_weights_is_a_clear_error(tiny_bundle, tmp_path):
    """A bundle exported before bundles carried weights: still a bundle, but no base."""
    old = tmp_path / "old_bundle"
    shutil.copytree(tiny_bundle, old)
    data = yaml.safe_load((old / "model.yaml").read_text(encoding="utf-8"))
    for name in data.pop("weights").values():
        (old / name).unlink()
        del data["files"][name]
    (old / "model.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    assert Manifest.read(old).weights == {}  # inference opens it as before
    with pytest.raises(EffOCRError, match="carries no PyTorch weights") as err:
        warm_start(bundle_recognizer(), old, "recognizer")
    assert str(old) in str(err.value) and NO_WEIGHTS in str(err.value)


def test_architecture_mismatch_is_a_clear_error(tiny_bundle):
    with pytest.raises(EffOCRError, match=r"differs from the configured one beyond its head"):
        warm_start(
            localizer(["char", "word"], widths=[8, 16, 32, 48, 64]), tiny_bundle, "localizer"
        )
    wider = RecognizerNet("mobilenetv3_small_075", 32, encoder_args={})
    with pytest.raises(EffOCRError, match=r"mobilenetv3_small_050.*recognizer\.encoder"):
        warm_start(wider, tiny_bundle, "recognizer")
    # Same encoder, other width: the shapes name what differs.
    seed_everything(0)
    slim = RecognizerNet("resnet10t", 32, encoder_args={"channels": [16, 32, 64, 128]})
    with pytest.raises(EffOCRError, match=r"beyond its head.*base \(") as err:
        from effocr.warm_start import load_matching

        load_matching(slim, RecognizerNet("resnet10t", 32).state_dict(), (), Path("x.pt"), "")
    assert "model (" in str(err.value)


def test_what_is_no_base(tmp_path, results_base):
    with pytest.raises(EffOCRError, match="directory not found"):
        weight_files(tmp_path / "nothing")
    with pytest.raises(EffOCRError, match="neither a bundle"):
        weight_files(tmp_path)
    partial = tmp_path / "partial"
    shutil.copytree(results_base / "localizer", partial / "localizer")
    with pytest.raises(EffOCRError, match=r"results directory without .*pass2/model\.pt"):
        weight_files(partial)
    # The run's own results: it would train from its own outputs.
    with pytest.raises(EffOCRError, match="inside results_dir"):
        weight_files(results_base, results_dir=str(results_base.parent))
    assert weight_files(results_base, results_dir=str(tmp_path / "results")) == {
        "recognizer": results_base / "recognizer" / "pass2" / "model.pt",
        "localizer": results_base / "localizer" / "model.pt",
    }


def test_no_init_from_changes_nothing(tiny_bundle):
    a, b = bundle_recognizer(), bundle_recognizer()
    assert warm_start(a, None, "recognizer") is None
    assert_same(a, b.state_dict())


# --- init_from: auto / synthetic (the small-dataset path) ---


def _resolve(init_from, *, synthetic_dataset=False, below=200, lines=10):
    calls = []

    def count():
        calls.append(1)
        return lines

    out = resolve_init_from(
        init_from, synthetic_dataset=synthetic_dataset, pretrain_below=below, dataset_lines=count
    )
    return out, len(calls)


def test_auto_pretrains_small_datasets_of_the_users_own():
    assert _resolve(AUTO, lines=199) == (SYNTHETIC, 1)
    assert _resolve(AUTO, lines=200) == (None, 1)  # from `pretrain_below` lines on: scratch
    assert _resolve(AUTO, lines=0, below=1) == (SYNTHETIC, 1)
    assert _resolve(AUTO, lines=None) == (None, 1)  # not there yet: the data rules say so
    # Neither the demo's synthetic lines nor pretrain_below 0 count anything.
    assert _resolve(AUTO, synthetic_dataset=True, lines=5) == (None, 0)
    assert _resolve(AUTO, below=0, lines=5) == (None, 0)


def test_explicit_init_from_is_kept():
    assert _resolve(SYNTHETIC, lines=10_000) == (SYNTHETIC, 0)
    assert _resolve("models/en", lines=5) == ("models/en", 0)
    assert _resolve(None, lines=5) == (None, 0)
    with pytest.raises(EffOCRError, match="dataset.coco_json is the synthetic set itself"):
        _resolve(SYNTHETIC, synthetic_dataset=True)


def _dataset(**kw):
    cfg = load_config(None, {"dataset": kw})
    return cfg["dataset"]


def test_dataset_lines_counts_coco_images_and_ground_truth(tiny_coco, tmp_path):
    coco_json, image_dir = tiny_coco
    n_images = len(yaml.safe_load(Path(coco_json).read_text(encoding="utf-8"))["images"])
    assert dataset_lines(_dataset(coco_json=str(coco_json)), 1000) == n_images
    assert dataset_lines(_dataset(coco_json=str(tmp_path / "none.json")), 1000) is None
    gt = tmp_path / "gt"
    gt.mkdir()
    for i in range(7):
        shutil.copy(next(Path(image_dir).glob("*.png")), gt / f"l{i}.png")
        (gt / f"l{i}.gt.txt").write_text(f"line {i}\n", encoding="utf-8")
    assert dataset_lines(_dataset(format="lines", path=str(gt)), 1000) == 7
    # Counting stops once the threshold is reached (large collections are not read whole).
    assert dataset_lines(_dataset(format="lines", path=[str(gt)]), 3) == 3
    assert dataset_lines(_dataset(format="lines", path=str(tmp_path / "missing")), 9) is None
