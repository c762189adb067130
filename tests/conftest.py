"""Shared test fixtures: tiny synthetic COCO datasets made by `effocr.synth.lines.synth_lines`.

`tiny_coco` is the default English set (12 lines, seed 0); `tiny_coco_factory(...)` makes
other sizes or languages. Both are session-scoped and cached by their arguments, so each
dataset is generated once per test run. Treat them as read-only.

Tests that need Tesseract or the IPA fonts call `require_tesseract()` / `require_ipa_fonts()`
(or use the `needs_tesseract` / `needs_ipa_fonts` fixtures). They skip when the dependency is missing,
unless EFFOCR_REQUIRE_ALL=1 (set by `.ci/run`): `make test` installs both, so in CI a missing
one is an install that went wrong, and the tests it guards must fail rather than vanish.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from schema_defaults import CATEGORIES, at_images, synth_line_knobs

from effocr.config import config_sections, deep_merge
from effocr.synth.lines import synth_lines

TinyCoco = tuple[Path, Path]

REQUIRE_ALL = "EFFOCR_REQUIRE_ALL"
IPA_FONTS = (
    Path("/usr/share/fonts/opentype/ipafont-mincho/ipam.ttf"),
    Path("/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf"),
)


def export_sections(config: dict | None = None, **overrides: dict) -> dict:
    """`export_bundle`'s section arguments (export, infer, localizer, crops, dataset, lm,
    line_detector) of `config` with `overrides` ({section: {key: value}}) merged in."""
    merged = deep_merge(config or {}, overrides)
    return config_sections(merged).pick(
        "export", "infer", "localizer", "crops", "dataset", "lm", "line_detector"
    )


def unmasked_env() -> dict[str, str]:
    """This process's environment without bench/avx2_only.c's CPUID mask (which the suite may
    run under), for children that handle SIGSEGV themselves (gcc, qemu) and die under it."""
    return {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "AVX2_ONLY_REQUIRED")}


def missing_dependency(reason: str) -> None:
    """Skip the test, or fail it when EFFOCR_REQUIRE_ALL=1 (CI, where nothing may be missing)."""
    if os.environ.get(REQUIRE_ALL) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ALL}=1: `make sysdeps` should have installed it)")
    pytest.skip(reason)


def require_tesseract(lang: str = "eng") -> None:
    """Tesseract with the data of `lang` (`make sysdeps` installs eng and jpn)."""
    from effocr.tesseract import tesseract_status

    if shutil.which("tesseract") is None or not tesseract_status(lang).available:
        missing_dependency(f"Tesseract with the {lang!r} data is not installed")


def require_ipa_fonts() -> None:
    """The IPA Mincho and Gothic fonts (`make sysdeps`: fonts-ipafont-*)."""
    absent = [str(p) for p in IPA_FONTS if not p.is_file()]
    if absent:
        missing_dependency(f"IPA fonts not installed: {', '.join(absent)}")


# Session fixtures that train models (tens of seconds each): under pytest-xdist every worker
# that needs one builds its own, so the test files that take one as an argument run on one
# worker (`make test`'s --dist loadfile, with the scheduler below).
SHARED_BUILDS = ("en_bundle", "jp_models")


@functools.cache  # the scheduler asks once per test id
def shared_build_of(test_file: Path) -> str | None:
    """The first of `SHARED_BUILDS` that a test function of `test_file` takes, if any."""
    import re

    text = test_file.read_text(encoding="utf-8")
    for name in SHARED_BUILDS:
        if re.search(rf"^def \w+\([^)]*\b{name}\b", text, re.MULTILINE | re.DOTALL):
            return name
    return None


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """--dist loadfile, with the files of one shared build as one scope. (xdist_group marks
    would say this, but xdist 3.8's loadgroup renames node ids the way pytest 9.2 no longer
    reads, so its groups are ignored.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    root = config.rootpath

    class SharedBuildScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            file = root / path
            build = shared_build_of(file) if file.is_file() else None
            return build or path

    return SharedBuildScheduling(config, log)


@pytest.fixture
def needs_tesseract() -> None:
    require_tesseract("eng")


@pytest.fixture
def needs_ipa_fonts() -> None:
    require_ipa_fonts()


def pinned_en_line_fonts() -> list[Path]:
    """The English line fonts of the tests: matplotlib's DejaVu faces of the demo's lines."""
    from effocr.synth.fonts import matplotlib_font_dir

    stems = ("DejaVuSans-Bold", "DejaVuSans", "DejaVuSansMono", "DejaVuSerif-Italic", "DejaVuSerif")
    return [matplotlib_font_dir() / f"{stem}.ttf" for stem in stems]


@pytest.fixture(scope="session")
def tiny_coco_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., TinyCoco]:
    """Return ``make(n_lines=12, language="en", seed=0, **synth_kwargs) -> (json_path, image_dir)``.

    Extra keyword arguments go to `synth_lines` (e.g. ``vertical_fraction=0.5``,
    ``max_chars=16``, ``degrade=False``, ``font_sizes=(20, 24)``).
    """
    cache: dict[tuple, TinyCoco] = {}

    def make(n_lines: int = 12, language: str = "en", seed: int = 0, **kwargs) -> TinyCoco:
        key = (n_lines, language, seed, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"coco_{language}_{n_lines}_{seed}") / "lines.json"
            if language == "en" and "font_paths" not in kwargs:
                # Pinned, as the demo's: the font packages of `make sysdeps` (for make
                # model-en) would otherwise change every English test set.
                kwargs = {**kwargs, "font_paths": pinned_en_line_fonts()}
            synth_lines(out, n_lines, language, seed=seed, **synth_line_knobs(**kwargs))
            cache[key] = (out, out.parent / "images")
        return cache[key]

    return make


@pytest.fixture(scope="session")
def workflow_rule_listing(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """This checkout's workflow rules as Snakemake parses them (`rule_listing.workflow_rules`),
    listed once per session (test_envs, test_containers, test_provenance, test_slurm). Read-only."""
    from rule_listing import workflow_rules

    return workflow_rules(tmp_path_factory.mktemp("rules"))


@pytest.fixture(scope="session")
def tiny_coco(tiny_coco_factory: Callable[..., TinyCoco]) -> TinyCoco:
    """12 English synthetic lines (seed 0): ``(json_path, image_dir)``."""
    return tiny_coco_factory(12, "en", 0)


# Letters of the English end-to-end bundle: few enough classes for models trained in
# seconds, with look-alikes (c/e/o, h/n/u, i/l/t) that a broken pipeline confuses.
EN_CLASSES = "acdehilmnorstu"
EN_LINE_KWARGS = {"degrade": False, "max_chars": 20, "font_sizes": (26, 30)}


def en_lines(factory: Callable[..., TinyCoco], n_lines: int, seed: int) -> TinyCoco:
    """Clean English lines of `EN_CLASSES` and spaces, in DejaVu Sans."""
    from effocr.synth.fonts import matplotlib_font_dir

    fonts = [matplotlib_font_dir() / "DejaVuSans.ttf"]
    return factory(
        n_lines, "en", seed, font_paths=fonts, charset=list(EN_CLASSES), **EN_LINE_KWARGS
    )


@pytest.fixture(scope="session")
def en_bundle(tiny_coco_factory, tmp_path_factory) -> Path:
    """An English bundle of tiny models, trained in seconds, that reads unseen `en_lines`.

    The localizer learns from 32 lines; the recognizer (a few supervised-contrastive steps on
    jittered crops) from the glyph crops of 16 of them (`en_lines(..., 16, 11)`, the bundle's
    text), and the index holds each letter's mean crop embedding. Across training seeds its
    CER on unseen lines is 0.06-0.28 (0.41-0.53 when it learnt from 16 lines without jitter,
    which is what a new CPU's rounding moved past the bounds of test_confidence).
    """
    coco_json, image_dir = en_lines(tiny_coco_factory, 32, 11)
    return _build_en_bundle(
        tmp_path_factory.mktemp("en_bundle"),
        coco_json,
        image_dir,
        recognizer_lines=en_lines(tiny_coco_factory, 16, 11),
    )


def line_crops(coco_json: Path, image_dir: Path) -> tuple[list, list[str]]:
    """Full-height glyph crops of annotated lines and their characters."""
    from effocr.data.coco import index_coco, is_vertical, line_chars, load_coco
    from effocr.data.crops import crop_box
    from effocr.infer import decode_image

    index = index_coco(load_coco(coco_json), **CATEGORIES)
    crops, labels = [], []
    for im in index.images.values():
        img = decode_image(image_dir / im["file_name"])
        h, w = img.shape[:2]
        for char, ann in line_chars(index, im):
            x0, y0, x1, y1 = crop_box(ann["bbox"], w, h, is_vertical(im), True, 0)
            crops.append(img[y0:y1, x0:x1])
            labels.append(char)
    return crops, labels


def fit_supcon(model, x, labels: list[str], steps: int, jitter: float = 0.0):
    """`steps` full-batch supervised-contrastive steps on preprocessed crops `x` (N, 3, S, S).

    `jitter` > 0 scales each crop by 1 ± jitter and shifts it by ± jitter of its size, anew at
    every step: without it a model that sees each crop as it is learns those crops only (p@1
    on the crops of unseen lines 0.76 against 0.95-1.0 with 0.06).
    """
    import torch
    import torch.nn.functional as F
    from pytorch_metric_learning.losses import SupConLoss

    classes = {c: i for i, c in enumerate(sorted(set(labels)))}
    y = torch.tensor([classes[c] for c in labels])
    x = torch.from_numpy(x)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    loss_fn = SupConLoss(temperature=0.1)
    rng = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch = x
        if jitter > 0:
            n = len(x)
            theta = torch.zeros(n, 2, 3)
            scale = 1 + (2 * torch.rand(n, generator=rng) - 1) * jitter
            theta[:, 0, 0] = theta[:, 1, 1] = scale
            theta[:, :, 2] = (2 * torch.rand(n, 2, generator=rng) - 1) * jitter
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            batch = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
        opt.zero_grad()
        loss_fn(model(batch), y).backward()
        opt.step()
    return model.eval()


def _build_en_bundle(
    root: Path, coco_json: Path, image_dir: Path, recognizer_lines: TinyCoco | None = None
) -> Path:
    config = {"seed": 7, "localizer": {"epochs": 60, "batch_size": 4, "lr": 0.004, "device": "cpu"}}
    # Validation picks the epoch kept; two of the training lines do, at a sixteenth of the cost.
    return build_bundle(
        root,
        coco_json,
        image_dir,
        config,
        steps=60,
        val_lines=2,
        recognizer_lines=recognizer_lines,
        jitter=0.06,
    )


# Full-batch supervised-contrastive steps of the tiny recognizer: enough to separate its
# classes clearly (test_export compares PyTorch and ONNX readings away from near-ties).
TINY_STEPS = 40


@pytest.fixture(scope="session")
def tiny_models(tiny_coco_factory: Callable[..., TinyCoco], tmp_path_factory) -> dict:
    """A tiny localizer and recognizer trained on 8 lines, their index and float32 bundle.

    Trained once per session (about 10 s) for tests that need real ONNX Runtime and FAISS
    inference but not good accuracy: test_export's checks and `tiny_bundle`. Keys: root, coco,
    images, config, localizer, recognizer (the `.pt` files), index, bundle. Read-only.
    """
    from effocr.config import load_config

    coco_json, image_dir = tiny_coco_factory(8, "en", 5, degrade=False, max_chars=14)
    overrides = {"localizer": {"epochs": 12, "batch_size": 4}}
    root = tmp_path_factory.mktemp("tiny_bundle")
    bundle = build_bundle(root, coco_json, image_dir, overrides, TINY_STEPS)
    return {
        "root": root,
        "coco": coco_json,
        "images": image_dir,
        "config": load_config(None, overrides),
        "localizer": root / "localizer" / "model.pt",
        "recognizer": root / "recognizer" / "model.pt",
        "index": root / "index",
        "bundle": bundle,
    }


@pytest.fixture(scope="session")
def tiny_bundle(tiny_models: dict) -> Path:
    """`tiny_models`' bundle. Treat it as read-only (copy it to change `model.yaml`)."""
    return tiny_models["bundle"]


@pytest.fixture(scope="session")
def jp_models(tiny_coco_factory: Callable[..., TinyCoco], tmp_path_factory) -> dict:
    """Tiny Japanese models and their bundle (tests/jp_models.py), trained once per session
    for test_japanese and test_localizer_train. Read-only."""
    from jp_models import build_jp_models

    return build_jp_models(tiny_coco_factory, tmp_path_factory.mktemp("jp"))


def build_bundle(
    root: Path,
    coco_json: Path,
    image_dir: Path,
    overrides: dict,
    steps: int,
    val_lines: int | None = None,
    recognizer_lines: TinyCoco | None = None,
    jitter: float = 0.0,
) -> Path:
    """Train a localizer (config `overrides`) and a recognizer (`steps` supervised-contrastive
    steps, `fit_supcon`'s `jitter`, on the glyph crops of `recognizer_lines`, by default the
    localizer's lines; index = each character's mean crop embedding) and export them as a
    float32 bundle; `val_lines` of the training lines validate the localizer (all when None).
    """
    import numpy as np
    import torch

    from effocr.config import load_config
    from effocr.data.coco import load_coco, save_coco
    from effocr.export import export_bundle
    from effocr.localizer.train import train_localizer
    from effocr.recognizer.model import RecognizerNet, save_recognizer
    from effocr.recognizer.reference import ReferenceIndex
    from effocr.recognizer.transforms import preprocess

    torch.set_num_threads(1)
    config = load_config(None, overrides)
    val_json = coco_json
    if val_lines is not None:
        val = load_coco(coco_json)
        keep = {im["id"] for im in val["images"][:val_lines]}
        val["images"] = val["images"][:val_lines]
        val["annotations"] = [a for a in val["annotations"] if a["image_id"] in keep]
        val_json = root / "val.json"
        save_coco(val, val_json)
    train_localizer(
        coco_json,
        val_json,
        root / "localizer",
        **config_sections(at_images(config, image_dir)).pick("localizer", "dataset", "run"),
        threads=1,
    )
    crops, labels = line_crops(*(recognizer_lines or (coco_json, image_dir)))
    torch.manual_seed(0)
    model = RecognizerNet("mobilenetv3_small_050", 32)
    x = np.stack([preprocess(c, 32, model.mean, model.std) for c in crops])
    fit_supcon(model, x, labels, steps, jitter)
    classes = sorted(set(labels))
    rec_pt = save_recognizer(model, root / "recognizer" / "model.pt", config)
    with torch.inference_mode():
        embs = model(torch.from_numpy(x)).numpy()
    chars = classes
    refs = np.stack([embs[[i for i, c in enumerate(labels) if c == ch]].mean(0) for ch in chars])
    ReferenceIndex.build(refs, chars).save(root / "index")
    bundle = root / "bundle"
    export_cfg: dict = {"quantize": "none"}
    if val_lines is not None:
        export_cfg["parity_lines"] = val_lines
    export_bundle(
        rec_pt,
        root / "index",
        root / "localizer" / "model.pt",
        coco_json,
        bundle,
        **export_sections(at_images(config, image_dir), export=export_cfg),
    )
    return bundle
