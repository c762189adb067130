"""Container definitions (containers/): files they copy exist, pins agree with pyproject.

No Docker or Apptainer engine is available here, so no image is built (docs/cluster.md).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
CONTAINERS = REPO / "containers"
DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]
APPTAINER = ["Apptainer.def", "Apptainer.cuda.def"]


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (CONTAINERS / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def test_constraints_agree_with_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for r in project["optional-dependencies"]["slurm"]]
    pins = _constraints()
    for req in reqs:
        assert req.name.lower() in pins, f"{req.name} is not pinned in containers/constraints.txt"
        version = Version(pins[req.name.lower()])
        assert version in req.specifier, f"{req.name}=={version} vs {req}"
        for spec in req.specifier:
            if spec.operator == ">=" and len(Version(spec.version).release) == 3:
                assert version == Version(spec.version), f"{req.name}=={version} vs {req}"


def test_constraints_agree_with_conda_envs() -> None:
    pins = _constraints()
    conda_to_pypi = {"pytorch": "torch", "matplotlib-base": "matplotlib"}
    for env_file in sorted((REPO / "envs").glob("*.yaml")):
        for dep in yaml.safe_load(env_file.read_text(encoding="utf-8"))["dependencies"]:
            if isinstance(dep, str):
                name, version = dep.split("==")
                name = conda_to_pypi.get(name, name)
                if name in pins:
                    assert pins[name] == version, (
                        f"{env_file.name}: {name} {version} != {pins[name]}"
                    )


@pytest.mark.parametrize("name", DOCKERFILES + APPTAINER)
def test_definition_pins_and_sources(name: str) -> None:
    text = (CONTAINERS / name).read_text(encoding="utf-8")
    pins = _constraints()
    # torch/torchvision are installed first from the PyTorch index: same versions.
    for pkg in ("torch", "torchvision"):
        found = re.findall(rf"\b{pkg}==([0-9.]+)", text)
        assert found and set(found) == {pins[pkg]}, (name, pkg, found)
    assert "-c constraints.txt" in text
    if name in DOCKERFILES:
        sources = [
            src
            for line in re.findall(r"^COPY (.+)$", text, re.M)
            for src in line.split()[:-1]
            if not src.startswith("--")
        ]
    else:
        files = re.search(r"^%files\n((?:[ \t]+\S.*\n)+)", text, re.M).group(1)
        sources = [line.split()[0] for line in files.splitlines()]
    assert sources
    for src in sources:
        assert (REPO / src).exists(), f"{name} copies {src}, which does not exist"
    # The image tag written in the file is the one rules/common.smk names.
    common = (REPO / "rules" / "common.smk").read_text(encoding="utf-8")
    image = re.search(r'^CONTAINER = "docker://([^:"]+):([^"]+)"', common, re.M)
    assert image, "CONTAINER not found in rules/common.smk"
    if name in ("Dockerfile", "Apptainer.def"):
        assert f"{image.group(1)}:{image.group(2)}" in text or image.group(2) in text
