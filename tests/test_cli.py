"""The `effocr` command: every subcommand is registered, importable and documented."""

import subprocess
import sys

import pytest

from effocr.cli import COMMANDS, main


def test_help_lists_every_subcommand():
    out = subprocess.run(
        [sys.executable, "-m", "effocr.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert f"effocr {name}" in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_renamed_subcommand_still_runs(capsys):
    # `export-onnx` ran export_bundle; it is `export-bundle` now, the old name still works.
    with pytest.raises(SystemExit) as exc:
        main(["--log", "x.log", "export-onnx", "--help"])
    assert exc.value.code == 0
    captured = capsys.readouterr()
    assert "effocr export-onnx is deprecated; use effocr export-bundle" in captured.err
    assert "usage: effocr export-bundle" in captured.out
