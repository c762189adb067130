"""Warm start (config `init_from`): both trainers begin from an earlier model's weights.

`init_from` names a bundle (whose `model.yaml` lists `recognizer.pt` and `localizer.pt` under
`weights`, written by `effocr.export`) or the results directory of an earlier run (its
`recognizer/pass2/model.pt` and `localizer/model.pt`). `weight_files` resolves it without
torch, for the rules (the files are the training rules' inputs, so a new base reruns them);
`warm_start` loads the base's tensors into a freshly created model where name and shape match.

Only a head may differ: the localizer's per-class heads (a base without word boxes gives a
model with them a fresh word head; heads are matched by class name, not position). Anything
else that does not fit (another encoder, another width) is an `EffOCRError` naming the
tensors, since silently training half a network from scratch would defeat the purpose.
Nothing here is random: layers the base lacks keep the trainer's seeded initialisation.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from effocr.bundle import MANIFEST, Manifest
from effocr.config import validate_config
from effocr.utils import EffOCRError

LOG = logging.getLogger(__name__)

KINDS = ("recognizer", "localizer")
# Where an earlier run keeps the models its bundle was exported from (PATHS in
# rules/common.smk: recognizer_pass2, localizer).
RESULTS_FILES = {"recognizer": "recognizer/pass2/model.pt", "localizer": "localizer/model.pt"}
# The PyTorch weights a bundle carries (`Manifest.weights`, written by effocr.export).
BUNDLE_FILES = {"recognizer": "recognizer.pt", "localizer": "localizer.pt"}
# Tensors a base may lack or hold in another shape: the parts trained per class.
HEADS = {
    "recognizer": ("encoder.fc.", "encoder.classifier.", "encoder.head."),
    "localizer": ("heads.",),
}
# `init_from` values that name no path: the workflow resolves them (`resolve_init_from`).
# SYNTHETIC: a base the workflow trains on its own synthetic lines (module `synthetic_base`);
# AUTO (the default): SYNTHETIC for a small dataset of the user's own, else from scratch.
SYNTHETIC = "synthetic"
AUTO = "auto"
NO_WEIGHTS = (
    "this bundle carries no PyTorch weights (model.yaml has no `weights`, it was exported "
    "before bundles carried them): export it again with the current effocr (rule export_bundle "
    "or `effocr export-onnx`), or set init_from to the results directory it was exported from"
)


def resolve_init_from(
    init_from: str | None,
    *,
    synthetic_dataset: bool,
    pretrain_below: int,
    dataset_lines: Callable[[], int | None],
) -> str | None:
    """What config `init_from` means for this run: a base path, SYNTHETIC, or None (scratch).

    AUTO gives SYNTHETIC when the dataset is the user's own (not the synthetic lines) and has
    fewer than `pretrain_below` lines (`synth.pretrain_below`; 0 never), else None. Few real
    lines do not teach a localizer or an encoder the shapes of print; synthetic lines in the
    configured fonts and charset do, and the real lines then fine-tune (the original EffOCR's
    recipe). `dataset_lines` (`effocr.importer.dataset_lines`) is called only when the count
    decides (it may parse files), and None from it (the dataset is not there yet) means from
    scratch.

    Raises:
        EffOCRError: SYNTHETIC when the dataset is the synthetic lines themselves.
    """
    if init_from == AUTO:
        if synthetic_dataset or pretrain_below == 0:
            return None
        n = dataset_lines()
        return SYNTHETIC if n is not None and n < pretrain_below else None
    if init_from == SYNTHETIC and synthetic_dataset:
        raise EffOCRError(
            "init_from: synthetic fine-tunes a dataset of your own lines from a base trained "
            "on synthetic lines, but dataset.coco_json is the synthetic set itself "
            "(synth.coco_json)"
        )
    return init_from


# Keys that shape a model's tensors. The fine-tune loads the synthetic base's weights into the
# run's architecture, so `synth.base` cannot give the base one of its own.
ARCHITECTURE_KEYS = {
    "recognizer": ("encoder", "encoder_args"),
    "localizer": ("backend", "arch", "onnx_model"),
}


def synthetic_base_sections(config: dict) -> dict[str, dict]:
    """The `recognizer` and `localizer` sections the synthetic base trains with: the run's, with
    the keys of `synth.base` over them (a validated config, defaults filled in).

    The base learns from many synthetic lines and the fine-tune from a few real ones, so their
    budgets differ: `synth.base: {localizer: {epochs: 40}}` halves the base localizer's time,
    which is most of the synthetic path's.

    Raises:
        EffOCRError: a key that shapes the model (ARCHITECTURE_KEYS), or a value the schema
            refuses (named under `synth.base`).
    """
    sections = {}
    for name, keys in config["synth"]["base"].items():
        fixed = sorted(set(keys) & set(ARCHITECTURE_KEYS[name]))
        if fixed:
            raise EffOCRError(
                f"synth.base.{name}: {', '.join(fixed)} shape the model, and the fine-tune starts "
                f"from the base's weights: set them in the `{name}` section, for both"
            )
        sections[name] = {**config[name], **keys}
    validate_config({**config, **sections}, source="synth.base")
    return sections


def weight_files(
    init_from: str | os.PathLike, results_dir: str | None = None, kinds: tuple[str, ...] = KINDS
) -> dict[str, Path]:
    """The base checkpoints of `init_from`, by kind (`recognizer`, `localizer`).

    A bundle gives the kinds it carries (an ONNX localizer made elsewhere has no weights);
    a results directory gives `kinds` (all of them must be there). `results_dir` (this run's)
    must not hold `init_from`: the run would train from its own outputs.

    Raises:
        EffOCRError: a missing directory, a bundle without weights or failing its checksums,
            a directory that is neither a bundle nor a results directory.
    """
    root = Path(init_from)
    if results_dir is not None:
        here = Path(results_dir).resolve()
        if root.resolve() == here or here in root.resolve().parents:
            raise EffOCRError(
                f"init_from: {root} lies inside results_dir {results_dir}: this run would "
                "train from its own outputs (copy the base elsewhere first)"
            )
    if not root.is_dir():
        raise EffOCRError(f"init_from: {root}: directory not found (a bundle or a results dir)")
    if (root / MANIFEST).is_file():
        manifest = Manifest.read(root, verify=True)
        if not manifest.weights:
            raise EffOCRError(f"init_from: {root}: {NO_WEIGHTS}")
        return {kind: root / name for kind, name in manifest.weights.items()}
    found = {kind: root / RESULTS_FILES[kind] for kind in kinds}
    missing = [str(p) for p in found.values() if not p.is_file()]
    if len(missing) == len(found):
        raise EffOCRError(
            f"init_from: {root}: neither a bundle ({MANIFEST}) nor the results directory of a "
            f"run (none of {', '.join(RESULTS_FILES.values())})"
        )
    if missing:
        raise EffOCRError(f"init_from: {root}: results directory without {', '.join(missing)}")
    return found


def weight_file(init_from: str | os.PathLike, kind: str, results_dir: str | None = None) -> Path:
    """`weight_files(init_from)[kind]`, or an error saying the base lacks that model."""
    # Of a results directory only this model need be there: the other may still be training
    # (the synthetic base's localizer while the recognizer fine-tunes from its encoder).
    files = weight_files(init_from, results_dir, kinds=(kind,))
    if kind not in files:
        raise EffOCRError(
            f"init_from: {init_from}: the bundle carries no {kind} weights (its {kind} was an "
            "ONNX model made elsewhere); train that model from scratch or use another base"
        )
    return files[kind]


def peak_learning_rate(section: Any, init_from: str | os.PathLike | None) -> float:
    """A trainer's peak learning rate: the section's `warm_start_lr` when the run starts from
    trained weights (`init_from`, or the section's `init_checkpoint`), else its `lr`.

    `section` is a `RecognizerSection` or `LocalizerSection`. A fine-tune at the rate that
    trains a fresh model unlearns its base (the recognizer's first epoch fell from p@1 0.87 to
    0.73 at 0.002), so both trainers ask this one rule.
    """
    warm = init_from is not None or bool(section.init_checkpoint)
    return float(section.warm_start_lr if warm else section.lr)


def warm_start(model: Any, init_from: str | os.PathLike | None, kind: str) -> Path | None:
    """Load the base's `kind` weights into `model` where names and shapes match.

    Args:
        model: A freshly created `RecognizerNet` or `LineDetector` (config architecture).
        init_from: Config `init_from`; None leaves the model as it is.
        kind: `recognizer` or `localizer`.

    Returns:
        The checkpoint the weights came from (for the trainer's resume hash), None without
        `init_from`.

    Raises:
        EffOCRError: the base cannot be read, or differs from the model beyond its head.
    """
    if init_from is None:
        return None
    from effocr.utils import load_checkpoint

    path = weight_file(init_from, kind)
    ckpt = load_checkpoint(path, f"{kind} weights of init_from")
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind or "model" not in ckpt:
        raise EffOCRError(f"{path}: not a {kind} checkpoint (init_from); kind {ckpt.get('kind')!r}")
    state = dict(ckpt["model"])
    if kind == "localizer":
        state = _heads_by_class(state, ckpt["meta"]["classes"], list(model.classes), path)
        base_desc = f"arch {ckpt['meta'].get('arch')}"
        config_desc = f"localizer.arch {model.arch}"
    else:
        base_desc = f"encoder {ckpt['encoder']} {ckpt.get('encoder_args')}"
        config_desc = f"recognizer.encoder {model.encoder_name} {model.encoder_args}"
        if ckpt["encoder"] != model.encoder_name:
            raise EffOCRError(
                f"{path}: the base recognizer's {base_desc} is not the configured "
                f"{config_desc}: set recognizer.encoder/encoder_args to the base's"
            )
    report = load_matching(model, state, HEADS[kind], path, f"{base_desc} vs {config_desc}")
    LOG.info(
        "%s warm-started from %s: %d tensors loaded; kept fresh (head): %s; base tensors not "
        "used: %s",
        kind,
        path,
        report["loaded"],
        report["fresh"] or "none",
        report["unused"] or "none",
    )
    return path


def load_matching(
    model: Any, state: dict, heads: tuple[str, ...], source: Path, describe: str
) -> dict[str, Any]:
    """Copy the tensors of `state` into `model` where name and shape match.

    Returns `{loaded, fresh, unused}`: the count loaded, the model's tensors the base lacks
    (or holds in another shape) and the base's the model has no place for.

    Raises:
        EffOCRError: when a tensor outside `heads` is missing or has another shape.
    """
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    fresh = sorted(k for k in own if k not in matched)
    unused = sorted(k for k in state if k not in matched)
    bad = [k for k in (*fresh, *unused) if not k.startswith(heads)]
    if bad:
        shapes = [
            f"{k} base {tuple(state[k].shape) if k in state else '-'} "
            f"model {tuple(own[k].shape) if k in own else '-'}"
            for k in bad[:3]
        ]
        raise EffOCRError(
            f"{source}: init_from: the base model differs from the configured one beyond its "
            f"head ({describe}): {len(bad)} tensors do not fit, e.g. {'; '.join(shapes)}"
        )
    model.load_state_dict({**own, **matched})
    return {"loaded": len(matched), "fresh": fresh, "unused": unused}


def _heads_by_class(
    state: dict, base_classes: list[str], classes: list[str], source: Path
) -> dict[str, Any]:
    """The base's localizer state with `heads.<i>.` renumbered to this model's class order.

    A head of a class this model does not have is renamed out of the way (`unused`).
    """
    out = {}
    for key, value in state.items():
        m = re.match(r"heads\.(\d+)\.(.*)", key)
        if m is None:
            out[key] = value
            continue
        i = int(m.group(1))
        if i >= len(base_classes):
            raise EffOCRError(f"{source}: head {i} but the meta names classes {base_classes}")
        cls = base_classes[i]
        if cls in classes:
            out[f"heads.{classes.index(cls)}.{m.group(2)}"] = value
        else:
            out[f"heads.{cls}.{m.group(2)}"] = value
    return out
