"""Shared test fixtures: tiny synthetic COCO datasets made by `effocr.synth.lines.synth_lines`.

`tiny_coco` is the default English set (12 lines, seed 0); `tiny_coco_factory(...)` makes
other sizes or languages. Both are session-scoped and cached by their arguments, so each
dataset is generated once per test run. Treat them as read-only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from effocr.synth.lines import synth_lines

TinyCoco = tuple[Path, Path]


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
            synth_lines(out, n_lines, language=language, seed=seed, **kwargs)
            cache[key] = (out, out.parent / "images")
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_coco(tiny_coco_factory: Callable[..., TinyCoco]) -> TinyCoco:
    """12 English synthetic lines (seed 0): ``(json_path, image_dir)``."""
    return tiny_coco_factory(12, "en", 0)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_coco_factory: Callable[..., TinyCoco], tmp_path_factory) -> Path:
    """An exported bundle (float32) of a tiny localizer and recognizer trained on 8 lines.

    The same recipe as tests/test_export.py's `trained` (about 10 s), trained once per session
    for tests that need real ONNX Runtime and FAISS inference but not good accuracy. Treat it
    as read-only (copy it to change `model.yaml`).
    """
    import numpy as np
    import torch
    from pytorch_metric_learning.losses import SupConLoss

    from effocr.config import load_config
    from effocr.data.coco import index_coco, is_vertical, line_chars, load_coco
    from effocr.data.crops import crop_box
    from effocr.export import export_bundle
    from effocr.infer import decode_image
    from effocr.localizer.train import train_localizer
    from effocr.recognizer.model import RecognizerNet, save_recognizer
    from effocr.recognizer.reference import ReferenceIndex
    from effocr.recognizer.transforms import preprocess

    torch.set_num_threads(1)
    torch.manual_seed(0)
    coco_json, image_dir = tiny_coco_factory(8, "en", 5, degrade=False, max_chars=14)
    root = tmp_path_factory.mktemp("tiny_bundle")
    config = load_config(None, {"localizer": {"epochs": 12, "batch_size": 4}})
    train_localizer(config, coco_json, coco_json, image_dir, root / "localizer", threads=1)
    index = index_coco(load_coco(coco_json))
    crops, labels = [], []
    for im in index.images.values():
        img = decode_image(image_dir / im["file_name"])
        h, w = img.shape[:2]
        for char, ann in line_chars(index, im):
            x0, y0, x1, y1 = crop_box(ann["bbox"], w, h, is_vertical(im), True, 0)
            crops.append(img[y0:y1, x0:x1])
            labels.append(char)
    model = RecognizerNet("mobilenetv3_small_050", 32)
    x = torch.from_numpy(np.stack([preprocess(c, 32, model.mean, model.std) for c in crops]))
    classes = {c: i for i, c in enumerate(sorted(set(labels)))}
    y = torch.tensor([classes[c] for c in labels])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    loss_fn = SupConLoss(temperature=0.1)
    model.train()
    for _ in range(8):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    model.eval()
    rec_pt = save_recognizer(model, root / "recognizer" / "model.pt", config)
    with torch.inference_mode():
        embs = model(x).numpy()
    chars = sorted(set(labels))
    refs = np.stack([embs[[i for i, c in enumerate(labels) if c == ch]].mean(0) for ch in chars])
    ReferenceIndex.build(refs, chars).save(root / "index")
    bundle = root / "bundle"
    export_bundle(
        rec_pt,
        root / "index",
        root / "localizer" / "model.pt",
        coco_json,
        image_dir,
        bundle,
        export_cfg={**config["export"], "quantize": "none"},
        infer_cfg=config["infer"],
    )
    return bundle
