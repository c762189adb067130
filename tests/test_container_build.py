"""Build inputs of the Dockerfiles that `make test-container` builds (containers/test_container.sh).

The build itself needs podman and root; it runs from `make test-container`, not from pytest.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONTAINERS = REPO / "containers"
PUBLIC_BASE = "python:3.11.7-slim-bookworm"


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_base_image_is_a_build_argument(name: str) -> None:
    text = (CONTAINERS / name).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    # The ARG comes before FROM (so FROM can use it) and defaults to the public base.
    assert lines[0] == f"ARG BASE_IMAGE={PUBLIC_BASE}", lines[0]
    assert lines[1] == "FROM ${BASE_IMAGE}", lines[1]
    # A plain Debian base gets Python from Debian; everything Python goes into one venv.
    assert 'command -v python3 >/dev/null || pkgs="$pkgs python3 python3-venv"' in text
    assert "python3 -m venv /opt/venv" in text
    # Local wheels and a CA bundle come through a bind mount of containers/local (no layer),
    # for both pip steps.
    mounts = re.findall(r"RUN --mount=type=bind,source=(\S+),target=(\S+)", text)
    assert mounts == [("containers/local", "/tmp/local")] * 2, mounts
    assert "--find-links /tmp/local" in text
    assert text.count("export PIP_CERT=/tmp/local/ca-certificates.crt") == 2


def test_local_folder_is_in_the_build_context() -> None:
    assert (CONTAINERS / "local" / "README.md").is_file()
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [p.strip() for p in ignored if p.strip() and not p.startswith("#")]
    for needed in ("containers", "containers/local", "effocr", "pyproject.toml", "README.md"):
        assert needed not in patterns, needed
    assert ".git" in patterns and ".venv" in patterns


def test_make_target_runs_the_container_check() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^test-container: install$", makefile, re.M)
    assert "bash containers/test_container.sh" in makefile
    script = CONTAINERS / "test_container.sh"
    assert script.is_file()
    assert "containers/Dockerfile" in script.read_text(encoding="utf-8")
