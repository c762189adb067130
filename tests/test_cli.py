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
