"""Shared helpers: code-point labels, atomic outputs, seeding, device selection."""

import os

import numpy as np
import pytest

from effocr.utils import (
    OUTPUT_MARKER,
    EffOCRError,
    atomic_path,
    codepoints_to_label,
    label_to_codepoints,
    read_json,
    seed_everything,
    select_device,
    write_json,
)


@pytest.mark.parametrize("label", ["A", " ", "\t", "\u3000", "語", "𠮷", "e\u0301", "ab"])
def test_label_round_trip(label):
    code = label_to_codepoints(label)
    assert code.isascii() and " " not in code
    assert codepoints_to_label(code) == label


def test_label_format():
    assert label_to_codepoints("A") == "U+0041"
    assert label_to_codepoints("𠮷") == "U+20BB7"
    with pytest.raises(ValueError):
        label_to_codepoints("")
    with pytest.raises(ValueError):
        codepoints_to_label("U+XYZ")


def test_atomic_file_written_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert os.listdir(tmp_path) == []
    with atomic_path(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done"


def test_atomic_dir_replaces_whole_directory(tmp_path):
    target = tmp_path / "bundle"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "stale.txt").write_text("old")
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "new.txt").write_text("new")
    # A folder effocr did not write is never replaced: tests/test_bundle.py.
    assert sorted(p.name for p in target.iterdir()) == [OUTPUT_MARKER, "new.txt"]


def test_read_json_errors_name_the_file(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"a": 1,,}')
    with pytest.raises(EffOCRError, match=r"x.json: invalid JSON at line 1"):
        read_json(bad)
    with pytest.raises(EffOCRError, match="file not found"):
        read_json(tmp_path / "missing.json")
    write_json(tmp_path / "ok.json", {"é": [1, 2]})
    assert read_json(tmp_path / "ok.json") == {"é": [1, 2]}


def test_seed_everything_repeats():
    seed_everything(7)
    a = np.random.rand(3)
    seed_everything(7)
    assert np.array_equal(a, np.random.rand(3))


def test_select_device_on_cpu_machine():
    import torch

    assert select_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        assert select_device("auto") == "cpu"
        with pytest.raises(EffOCRError, match="no CUDA device"):
            select_device("cuda")
