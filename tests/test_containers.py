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
from rule_listing import container_images

REPO = Path(__file__).resolve().parents[1]
CONTAINERS = REPO / "containers"
DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]
APPTAINER = ["Apptainer.def", "Apptainer.cuda.def"]
CUDA = ["Dockerfile.cuda", "Apptainer.cuda.def"]
# CPU wheel the project depends on -> its CUDA build in the `gpu` extra (same module).
CUDA_SWAPS = {"onnxruntime": "onnxruntime-gpu", "faiss-cpu": "faiss-gpu-cu12"}


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


def test_gpu_extra_is_pinned_for_the_cuda_image() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = {Requirement(r).name.lower(): Requirement(r) for r in project["dependencies"]}
    gpu = {
        Requirement(r).name.lower(): Requirement(r) for r in project["optional-dependencies"]["gpu"]
    }
    assert set(gpu) == set(CUDA_SWAPS.values())
    pins = _constraints()
    for name, req in gpu.items():
        assert name in pins, f"{name} is not pinned in containers/constraints.txt"
        assert Version(pins[name]) in req.specifier, f"{name}=={pins[name]} vs {req}"
    # The CUDA ONNX Runtime is the newest onnxruntime-gpu on PyPI (1.31.1 while the CPU wheel
    # is at 1.32.0): never newer than the CPU build the parity checks ran with, same major.
    gpu_v, cpu_v = Version(pins["onnxruntime-gpu"]), Version(pins["onnxruntime"])
    assert gpu_v <= cpu_v and gpu_v.major == cpu_v.major, (gpu_v, cpu_v)
    assert Version(pins["onnxruntime"]) in reqs["onnxruntime"].specifier


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


@pytest.fixture(scope="module")
def rules(workflow_rule_listing: dict[str, dict]) -> dict[str, dict]:
    return workflow_rule_listing


@pytest.mark.parametrize("name", DOCKERFILES + APPTAINER)
def test_definition_pins_and_sources(name: str, rules: dict[str, dict]) -> None:
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
    # The image tag written in the file is the one the workflow's rules run in: the GPU rules'
    # for the CUDA definitions, the other rules' for the CPU ones.
    image = container_images(rules)[name in CUDA]
    assert image.startswith("docker://"), image
    repo, tag = image.removeprefix("docker://").rsplit(":", 1)
    assert f"{repo}:{tag}" in text or f"{repo.split('/')[-1]}_{tag}.sif" in text, (name, image)
    version = re.search(r"org\.opencontainers\.image\.version\W+([0-9][^\"\s]*)", text)
    assert version and version.group(1) == tag, (name, tag)


@pytest.mark.parametrize("name", DOCKERFILES + APPTAINER)
def test_cuda_definitions_install_the_gpu_builds(name: str) -> None:
    text = (CONTAINERS / name).read_text(encoding="utf-8")
    commands = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    if name not in CUDA:
        # The CPU images keep the CPU wheels.
        for gpu_pkg in CUDA_SWAPS.values():
            assert gpu_pkg not in commands, (name, gpu_pkg)
        assert "download.pytorch.org/whl/cpu" in commands
        return
    assert re.search(r"download\.pytorch\.org/whl/cu\d+", commands), name
    # The CPU wheels are removed before the CUDA builds go in (they share module files).
    uninstall = re.search(r"pip uninstall -y ([^\n\\&]+)", commands)
    assert uninstall, f"{name} does not uninstall the CPU wheels"
    assert set(uninstall.group(1).split()) == set(CUDA_SWAPS), uninstall.group(1)
    install = re.search(
        r"pip install [^\n]*-c constraints\.txt ((?:[\w.-]+ ?)+)", commands[uninstall.end() :]
    )
    assert install, f"{name} does not install the CUDA builds after the uninstall"
    assert set(install.group(1).split()) == set(CUDA_SWAPS.values()), install.group(1)
    # and the build fails unless ONNX Runtime offers CUDA.
    assert "'CUDAExecutionProvider' in ort.get_available_providers()" in commands


def _make_packages(variable: str) -> list[str]:
    """The Debian packages a Makefile variable lists (`:=` then `+=`, `$(VAR)` expanded)."""
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    values: dict[str, list[str]] = {}
    for name, op, value in re.findall(r"^([A-Z_]+) *(:=|\+=) *(.*)$", text, re.M):
        words = []
        for word in value.split():
            ref = re.fullmatch(r"\$\((\w+)\)", word)
            words += values.get(ref.group(1), []) if ref else [word]
        values[name] = (values.get(name, []) if op == "+=" else []) + words
    return values[variable]


@pytest.mark.parametrize("name", DOCKERFILES + APPTAINER)
def test_definitions_install_the_system_packages_of_make(name: str) -> None:
    """Every image has what `make sysdeps` installs on a host (Tesseract, the demos' and
    base-en's fonts, base-en's word list), so `make model-en`'s config runs in it too; qemu-user
    only serves a host test."""
    wanted = set(_make_packages("SYS_PACKAGES")) - {"qemu-user"}
    assert {"tesseract-ocr", "fonts-noto-core", "wamerican"} <= wanted
    text = (CONTAINERS / name).read_text(encoding="utf-8")
    commands = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    installed = set(re.findall(r"[a-z0-9][a-z0-9.+-]+", commands.replace("\\\n", " ")))
    assert wanted <= installed, (name, sorted(wanted - installed))
