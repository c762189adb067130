"""The bundle manifest (`effocr.bundle`), checksum verification, and issue 12's safety checks.

Safety: `.pt` files load with `weights_only=True` (a crafted pickle runs no code), results_dir
cannot point at `/`, `..` or the working directory, `atomic_path` replaces only directories it
wrote, and outputs follow the user's umask. The bundle tests reuse test_export's tiny models.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import export_sections
from schema_defaults import at_images
from snakemake_forks import run
from test_export import trained  # noqa: F401 (the module fixture: tiny models and a bundle)

from effocr.bundle import Manifest
from effocr.config import check_results_dir, config_sections, validate_config
from effocr.infer import Engine, load_model_yaml
from effocr.utils import (
    OUTPUT_MARKER,
    EffOCRError,
    atomic_path,
    load_checkpoint,
    plain_data,
    resume_training,
    save_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "effocr.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
    )


# -- crafted pickles -------------------------------------------------------------


class _Payload:
    """Unpickling this creates the marker file: what an attacker's `__reduce__` would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def crafted(tmp_path) -> tuple[Path, Path]:
    """A `.pt` that looks like an EffOCR model but runs code when fully unpickled."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(
        {
            "kind": "localizer",
            "model": {"w": torch.zeros(1)},
            "meta": {"classes": ["char"]},
            "config_hash": "x",
            "evil": _Payload(marker),
        },
        path,
    )
    # The premise: loading it the old way would have run the payload.
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    return path, marker


def test_crafted_checkpoint_is_refused_by_every_loader(crafted, tiny_coco, tmp_path, caplog):
    from effocr.export import _load_checkpoint
    from effocr.localizer.model import load_localizer, localizer_meta
    from effocr.localizer.train import train_localizer
    from effocr.recognizer.model import create_encoder, load_recognizer

    path, marker = crafted
    loaders = {
        "load_checkpoint": lambda: load_checkpoint(path, "model"),
        "recognizer": lambda: load_recognizer(path),
        "recognizer init_checkpoint": lambda: create_encoder("resnet10t", path),
        "localizer": lambda: load_localizer(path),
        "localizer meta": lambda: localizer_meta(path),
        "export": lambda: _load_checkpoint(path, "localizer"),
        "localizer init_checkpoint": lambda: train_localizer(
            tiny_coco[0],
            tiny_coco[0],
            tmp_path / "loc",
            **config_sections(
                at_images(
                    validate_config({"localizer": {"epochs": 1, "init_checkpoint": str(path)}}),
                    tiny_coco[1],
                )
            ).pick("localizer", "dataset", "run"),
        ),
    }
    for name, load in loaders.items():
        with pytest.raises(EffOCRError, match="refused to load") as err:
            load()
        assert str(path) in str(err.value), name
        assert not marker.exists(), name
    # Resuming is automatic: a foreign checkpoint.pt is ignored (training starts over).
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    with caplog.at_level(logging.WARNING):
        assert resume_training(path, "x", model, opt, sched) is None
    assert "refused to load" in caplog.text and not marker.exists()


def test_crafted_checkpoint_is_refused_by_the_cli(crafted, tiny_coco, tmp_path):
    path, marker = crafted
    coco_json, image_dir = tiny_coco
    out = tmp_path / "eval.json"
    result = _cli(
        "evaluate-localizer",
        "--model",
        str(path),
        "--coco",
        str(coco_json),
        "--image-dir",
        str(image_dir),
        "--out",
        str(out),
    )
    assert result.returncode == 1, result.stderr
    assert f"{path}: refused to load" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists() and not out.exists()


def test_checkpoints_hold_plain_data(tmp_path):
    payload = {
        "metrics": [{"f1": np.float64(0.5), "n": np.int64(3)}],
        "score": (np.float32(1.0), 0.0),
        "path": tmp_path / "x",
        "version": torch.__version__,  # a str subclass
        "weights": {"w": torch.ones(2)},
    }
    save_checkpoint(payload, tmp_path / "c.pt")
    back = load_checkpoint(tmp_path / "c.pt", "checkpoint")
    assert back["metrics"] == [{"f1": 0.5, "n": 3}] and type(back["metrics"][0]["n"]) is int
    assert back["score"] == (1.0, 0.0) and back["path"] == str(tmp_path / "x")
    assert torch.equal(back["weights"]["w"], torch.ones(2))
    with pytest.raises(TypeError, match="plain data only"):
        plain_data({"bad": object()})


def test_models_written_by_the_trainers_load_safely(trained):  # noqa: F811
    # train_localizer (and save_recognizer) wrote these; weights_only loading accepts them.
    for key in ("localizer", "recognizer"):
        assert "model" in load_checkpoint(trained[key], key)
    assert "optimizer" in load_checkpoint(trained["localizer"].parent / "checkpoint.pt", "ckpt")


# -- the manifest -----------------------------------------------------------------


def _copy(trained, tmp_path: Path, name: str = "bundle") -> Path:  # noqa: F811
    dst = tmp_path / name
    shutil.copytree(trained["bundle"], dst)
    return dst


def _edit_yaml(bundle: Path, edit) -> None:
    meta = yaml.safe_load((bundle / "model.yaml").read_text(encoding="utf-8"))
    edit(meta)
    (bundle / "model.yaml").write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")


def test_manifest_round_trip(trained, tmp_path):  # noqa: F811
    bundle = trained["bundle"]
    manifest = Manifest.read(bundle)
    assert manifest.format_version == 2 and manifest.language == "en"
    assert sorted(manifest.files) == [
        "localizer.onnx",
        "localizer.pt",
        "recognizer.onnx",
        "recognizer.pt",
        "ref.index",
        "ref_labels.txt",
    ]
    assert manifest.recognizer["sha256"] == manifest.files["recognizer.onnx"]
    assert load_model_yaml(bundle) == manifest.to_dict()
    # Writing it again gives the same file.
    copy = _copy(trained, tmp_path)
    Manifest.read(copy).write(copy)
    assert (copy / "model.yaml").read_text() == (bundle / "model.yaml").read_text()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda m: m.update(format_version="one"),
            "format_version: 'one' is not of type 'integer'",
        ),
        (lambda m: m["recognizer"].update(input_size=-5), "recognizer/input_size: -5 is less than"),
        (lambda m: m.pop("localizer"), "'localizer' is a required property"),
        (lambda m: m["localizer"].update(file="../x.onnx"), "localizer/file"),
        (
            lambda m: m["files"].update({"ref.index": "abc"}),
            "files/ref.index: 'abc' does not match",
        ),
        (lambda m: m.update(format_version=3), "unsupported bundle format_version 3"),
    ],
)
def test_invalid_manifest_is_named(trained, tmp_path, edit, expected):  # noqa: F811
    bundle = _copy(trained, tmp_path)
    _edit_yaml(bundle, edit)
    before = (bundle / "model.yaml").read_bytes()
    with pytest.raises(EffOCRError) as err:
        Engine(bundle, device="cpu")
    assert str(bundle / "model.yaml") in str(err.value)
    assert expected in str(err.value)
    assert (bundle / "model.yaml").read_bytes() == before


def test_invalid_manifest_through_the_cli(trained, tmp_path):  # noqa: F811
    bundle = _copy(trained, tmp_path)
    _edit_yaml(bundle, lambda m: m["recognizer"].update(input_size=-5))
    line = _a_line(trained)
    result = _cli("infer", str(line), "--model", str(bundle))
    assert result.returncode == 1
    assert "model.yaml: invalid bundle manifest" in result.stderr
    assert "recognizer/input_size" in result.stderr and "Traceback" not in result.stderr


# -- checksums ---------------------------------------------------------------------


def _a_line(trained) -> Path:  # noqa: F811
    return sorted(trained["images"].glob("*.png"))[0]


def _tamper_onnx(path: Path) -> None:
    """A valid ONNX model with other bytes: what an edited or swapped model looks like."""
    import onnx

    model = onnx.load(str(path))
    model.doc_string = "edited after export"
    onnx.save(model, str(path))


def test_tampered_files_are_refused(trained, tmp_path):  # noqa: F811
    bundle = _copy(trained, tmp_path)
    _tamper_onnx(bundle / "recognizer.onnx")
    with pytest.raises(EffOCRError, match="recognizer.onnx: checksum mismatch") as err:
        Engine(bundle, device="cpu")
    assert "--no-verify" in str(err.value)
    # The bundle's owner may edit it on purpose.
    with Engine(bundle, device="cpu", verify=False) as engine:
        assert engine.input_size == Manifest.read(bundle, verify=False).recognizer["input_size"]

    labels = _copy(trained, tmp_path, "labels")
    rows = (labels / "ref_labels.txt").read_text(encoding="utf-8").splitlines()
    (labels / "ref_labels.txt").write_text("\n".join([rows[1], rows[0], *rows[2:]]) + "\n")
    with pytest.raises(EffOCRError, match="ref_labels.txt: checksum mismatch"):
        Manifest.read(labels)


def test_tampered_bundle_through_the_cli(trained, tmp_path):  # noqa: F811
    bundle = _copy(trained, tmp_path)
    _tamper_onnx(bundle / "recognizer.onnx")
    line = _a_line(trained)
    refused = _cli("infer", str(line), "--model", str(bundle))
    assert refused.returncode == 1 and "recognizer.onnx: checksum mismatch" in refused.stderr
    assert refused.stdout == ""
    accepted = _cli("infer", str(line), "--model", str(bundle), "--no-verify")
    assert accepted.returncode == 0, accepted.stderr
    assert '"text"' in accepted.stdout


def test_bundles_without_a_file_list_still_load_and_verify(trained, tmp_path):  # noqa: F811
    # As written before `files`: format_version 1 with the two models' sha256 only.
    bundle = _copy(trained, tmp_path)
    _edit_yaml(bundle, lambda m: (m.pop("files"), m.update(format_version=1)))
    with Engine(bundle, device="cpu") as engine:
        assert engine.meta["format_version"] == 1
    _tamper_onnx(bundle / "localizer.onnx")
    with pytest.raises(EffOCRError, match="localizer.onnx: checksum mismatch"):
        Engine(bundle, device="cpu")


# -- results_dir ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "   ", "/", ".", "./", "..", "../elsewhere", "a/../../b"])
def test_results_dir_outside_the_working_directory_is_refused(bad, tmp_path):
    with pytest.raises(EffOCRError, match="results_dir"):
        check_results_dir(bad, cwd=tmp_path)


def test_results_dir_absolute_parents_are_refused(tmp_path, monkeypatch):
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    for bad in (str(work), str(tmp_path), "/"):
        with pytest.raises(EffOCRError, match="results_dir"):
            validate_config({"results_dir": bad})
    for good in ("results", "out/run1", str(work / "results"), str(tmp_path / "scratch")):
        assert validate_config({"results_dir": good})["results_dir"] == good


@pytest.mark.parametrize("bad", ["/", "../elsewhere"])
def test_workflow_refuses_the_same_results_dirs(bad, tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"results_dir": bad}))
    result = run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(tmp_path / "config.yaml"),
            "--workflow-profile",
            "none",
            "--cores",
            "1",
            "--dry-run",
        ],
        timeout=300,
    )
    assert result.returncode != 0
    assert f"results_dir {bad!r}" in result.stdout + result.stderr


# -- atomic_path ----------------------------------------------------------------------


def test_atomic_path_replaces_only_its_own_directories(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("years of work")
    with pytest.raises(EffOCRError, match="not written by effocr"):
        with atomic_path(theirs, is_dir=True) as tmp:
            (tmp / "x").write_text("x")
    assert (theirs / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in theirs.iterdir()) == ["thesis.tex"]
    assert [p.name for p in tmp_path.iterdir()] == ["theirs"]  # no temporary left

    ours = tmp_path / "ours"
    for content in ("one", "two"):  # written, then replaced as a whole
        with atomic_path(ours, is_dir=True) as tmp:
            (tmp / content).write_text(content)
    assert sorted(p.name for p in ours.iterdir()) == [OUTPUT_MARKER, "two"]

    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_path(empty, is_dir=True) as tmp:
        (tmp / "x").write_text("x")
    assert (empty / "x").is_file()


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "bundle", is_dir=True) as tmp:
            (tmp / "model.yaml").write_text("x")
        with atomic_path(tmp_path / "file.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "bundle").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "bundle" / "model.yaml").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "file.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_exported_bundle_is_readable_by_the_group(trained):  # noqa: F811
    umask = os.umask(0)
    os.umask(umask)
    assert trained["bundle"].stat().st_mode & 0o777 == 0o777 & ~umask


def test_export_reads_each_checkpoint_once(trained, tmp_path, monkeypatch):  # noqa: F811
    from effocr.export import export_bundle

    loads: list[str] = []
    real_load = torch.load

    def counting_load(path, *args, **kwargs):
        loads.append(str(path))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    config = trained["config"]
    export_bundle(
        trained["recognizer"],
        trained["index"],
        trained["localizer"],
        trained["coco"],
        tmp_path / "bundle",
        **export_sections(at_images(config, trained["images"]), export={"quantize": "none"}),
    )
    assert sorted(loads) == sorted([str(trained["recognizer"]), str(trained["localizer"])])
    # The same bundle as the fixture's (written by the same code from the same models).
    for name in ("localizer.onnx", "recognizer.onnx", "ref.index", "ref_labels.txt"):
        assert (tmp_path / "bundle" / name).read_bytes() == (trained["bundle"] / name).read_bytes()


def test_evaluate_checks_the_bundle_too(trained, tmp_path):  # noqa: F811
    bundle = _copy(trained, tmp_path)
    _tamper_onnx(bundle / "recognizer.onnx")
    args = ["evaluate", "--model", str(bundle), "--no-tesseract", "--output", str(tmp_path / "ev")]
    args += ["--set", f"test={trained['coco']}:coco:{trained['images']}"]
    refused = _cli(*args)
    assert refused.returncode == 1 and "recognizer.onnx: checksum mismatch" in refused.stderr
    assert not (tmp_path / "ev" / "test" / "metrics.json").exists()
    accepted = _cli(*args, "--no-verify")
    assert accepted.returncode == 0, accepted.stderr
    assert (tmp_path / "ev" / "test" / "metrics.json").is_file()
