"""The conda environments (envs/*.yaml) and the rules' software directives.

No conda binary or channel is reachable here, so the envs are not built: these tests check
what can be checked without them (see docs/cluster.md, "What was exercised").
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version
from rule_listing import (
    CORPUS_RULES,
    REPO,
    container_images,
    rule_entry,
    rule_script,
)
from snakemake_forks import run

from effocr.provenance import closure, module_file

ENVS_DIR = REPO / "envs"
ENV_NAMES = ["data", "train", "export", "report"]
# conda-forge package name -> PyPI distribution name, where they differ.
CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib"}
# Top-level import name -> conda-forge package that provides it.
IMPORT_TO_CONDA = {
    "numpy": "numpy",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "jsonschema": "jsonschema",
    "tqdm": "tqdm",
    "pandas": "pandas",
    "fontTools": "fonttools",
    "pycocotools": "pycocotools",
    "matplotlib": "matplotlib-base",
    "torch": "pytorch",
    "torchvision": "torchvision",
    "timm": "timm",
    "pytorch_metric_learning": "pytorch-metric-learning",
    "faiss": "faiss-cpu",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "rapidfuzz": "rapidfuzz",
    "threadpoolctl": "threadpoolctl",
    "lxml": "lxml",
    "scipy": "scipy",
}
# The rules that declare a `gpu` resource (and so run in CONTAINER_GPU).
GPU_RULES = {
    "train_recognizer",
    "mine_hard_negatives",
    "train_recognizer_hard_negatives",
    "build_reference_index",
    "train_localizer",
    "train_line_detector",
}
# Imports inside functions that the rules of an env never call, as (env, module, what it
# imports: a package or an effocr module). No call-graph walk proves it, so they are listed
# here; the test checks that each stays inside a function and is still there.
_TRAINING_ONLY = "select_device, set_threads, resume_training: the training and export steps"
NOT_CALLED = {
    ("data", "effocr.utils", "torch"): _TRAINING_ONLY,
    ("report", "effocr.utils", "torch"): _TRAINING_ONLY,
    ("report", "effocr.localizer.runtime", "effocr.localizer.model"): "open_localizer of a .pt",
    ("report", "effocr.recognizer.transforms", "torch"): "render_augment: training only",
    ("report", "effocr.recognizer.transforms", "torchvision"): "the same",
    ("report", "effocr.localizer.runtime", "onnx"): "read_onnx_meta: the bundle passes its meta",
}
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([0-9][0-9A-Za-z.\-]*)$")


@cache
def _env(name: str) -> dict:
    return yaml.safe_load((ENVS_DIR / f"{name}.yaml").read_text(encoding="utf-8"))


@cache
def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _pins(env: dict) -> dict[str, str]:
    """Every pinned package of an env (conda and pip sections) as {name: version}."""
    pins = {}
    for dep in env["dependencies"]:
        specs = dep["pip"] if isinstance(dep, dict) else [dep]
        for spec in specs:
            m = PIN.match(spec.strip())
            assert m, f"not pinned with ==: {spec!r}"
            pins[m.group(1).lower()] = m.group(2)
    return pins


@pytest.fixture(scope="module")
def rules(workflow_rule_listing: dict[str, dict]) -> dict[str, dict]:
    return workflow_rule_listing


@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_file_is_pinned_conda_forge(name: str) -> None:
    env = _env(name)
    assert env["name"] == f"effocr-{name}"
    assert env["channels"] == ["conda-forge", "nodefaults"]
    pins = _pins(env)
    assert pins["python"].startswith("3.11."), pins["python"]
    # The post-deploy script that installs effocr into the env (Snakemake finds it by name).
    script = ENVS_DIR / f"{name}.post-deploy.sh"
    assert script.is_file()
    assert f"envs/{name}.yaml" in script.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_pins_agree_with_pyproject(name: str) -> None:
    """A pin satisfies pyproject's range and equals its lower bound when that is a full x.y.z."""
    project = _pyproject()["project"]
    reqs = {Requirement(r).name.lower(): Requirement(r) for r in project["dependencies"]}
    assert (
        Version(_pins(_env(name))["python"])
        in Requirement(f"python{project['requires-python']}").specifier
    )
    checked = 0
    for conda_name, version in _pins(_env(name)).items():
        req = reqs.get(CONDA_TO_PYPI.get(conda_name, conda_name))
        if req is None:
            continue
        checked += 1
        assert Version(version) in req.specifier, f"{conda_name}=={version} vs {req}"
        for spec in req.specifier:
            if spec.operator == ">=" and len(Version(spec.version).release) == 3:
                assert Version(version) == Version(spec.version), (
                    f"{conda_name}=={version} vs {req}"
                )
    assert checked >= 5


def test_same_package_same_version_in_every_env() -> None:
    seen: dict[str, tuple[str, str]] = {}
    for name in ENV_NAMES:
        for pkg, version in _pins(_env(name)).items():
            first = seen.setdefault(pkg, (name, version))
            assert first[1] == version, f"{pkg}: {first[0]} pins {first[1]}, {name} pins {version}"


def test_envs_mapping_names_the_env_files(rules: dict[str, dict]) -> None:
    """The rules use every env file in envs/, and nothing else."""
    used = {(Path(r["basedir"]) / r["conda"]).resolve() for r in rules.values() if not r["norun"]}
    assert used == {ENVS_DIR / f"{n}.yaml" for n in ENV_NAMES}, sorted(map(str, used))
    assert {p.stem for p in ENVS_DIR.glob("*.yaml")} == set(ENV_NAMES)


def test_every_rule_names_an_env_and_its_container(rules: dict[str, dict]) -> None:
    """GPU rules (a `gpu` resource) run in the CUDA image, every other rule in the CPU one."""
    images = container_images(rules)
    assert images[True] == f"{images[False]}-cuda", images
    runnable = {n: r for n, r in rules.items() if not r["norun"]}
    assert len(runnable) >= 5, sorted(rules)
    gpu_rules = set()
    for name, rule in runnable.items():
        assert rule["conda"], f"rule {name} has no conda: directive"
        env_file = (Path(rule["basedir"]) / rule["conda"]).resolve()
        assert env_file.parent == ENVS_DIR and env_file.stem in ENV_NAMES, (name, env_file)
        if rule["resources"].get("gpu"):
            gpu_rules.add(name)
    assert gpu_rules == GPU_RULES, sorted(gpu_rules)


def _guarded(tree: ast.AST) -> set[ast.AST]:
    """Nodes inside a `try` whose `except ImportError` carries on without the package (an
    optional one); a handler that raises (a clearer error) leaves the import required."""
    guarded = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        for handler in node.handlers:
            caught = {
                n.id for n in ast.walk(handler.type or ast.Tuple([])) if isinstance(n, ast.Name)
            }
            reraises = any(isinstance(n, ast.Raise) for n in ast.walk(handler))
            if caught & {"ImportError", "ModuleNotFoundError"} and not reraises:
                guarded.update(n for stmt in node.body for n in ast.walk(stmt))
    return guarded


def _in_functions(tree: ast.AST) -> set[ast.AST]:
    """Nodes inside a function body (run only when the function is called)."""
    funcs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
    return {
        n
        for f in ast.walk(tree)
        if isinstance(f, funcs)
        for part in (f.body if isinstance(f.body, list) else [f.body])
        for n in ast.walk(part)
    }


def _imports(path: Path) -> dict[str, bool]:
    """{name a file imports (`from a import b` gives `a` and `a.b`): whether at module level},
    for every import in the file (in functions too) except those guarded by `except
    ImportError`."""
    tree = ast.parse(path.read_bytes())
    guarded, lazy = _guarded(tree), _in_functions(tree)
    found: dict[str, bool] = {}
    for node in ast.walk(tree):
        if node in guarded:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            found[name] = found.get(name, False) or node not in lazy
    return found


def _third_party(imports: dict[str, bool]) -> dict[str, bool]:
    found: dict[str, bool] = {}
    for name, module_level in imports.items():
        top = name.split(".")[0]
        if top not in sys.stdlib_module_names and top not in ("__future__", "effocr"):
            found[top] = found.get(top, False) or module_level
    return found


def _reached(script: Path, env_name: str) -> dict[str, Path]:
    """{module: file} of the `effocr` code a rule's script may run: every import followed (in
    functions too), but not the lazy ones NOT_CALLED names for the env."""
    files = {"script": script}
    todo = ["script"]
    while todo:
        module = todo.pop()
        for name, module_level in _imports(files[module]).items():
            parts = name.split(".")
            for k in range(1, len(parts) + 1):
                target = ".".join(parts[:k])
                if parts[0] != "effocr" or target in files or not module_file(target):
                    continue
                if (env_name, module, target) in NOT_CALLED:
                    assert not module_level, f"{(env_name, module, target)} is not lazy"
                    continue
                files[target] = module_file(target)
                todo.append(target)
    return files


def test_each_env_has_what_its_rules_import(rules: dict[str, dict]) -> None:
    """The packages imported by the code a rule runs (its script and every module of its code
    closure, see effocr.provenance) are pinned in the rule's conda env, except the function-level
    imports of NOT_CALLED."""
    runnable = {n: r for n, r in rules.items() if not r["norun"]}
    assert len(runnable) == 22 and CORPUS_RULES <= set(runnable), sorted(runnable)
    used = set()
    for name, rule in runnable.items():
        env_name = Path(rule["conda"]).stem
        pins = _pins(_env(env_name))
        modules = _reached(rule_script(rule), env_name)
        # What the env check follows is the code the rule hashes, or less (NOT_CALLED).
        assert set(modules) - {"script"} <= set(closure(rule_entry(name, rule))), name
        used.update(k for k in NOT_CALLED if k[0] == env_name and k[1] in modules)
        for module, path in modules.items():
            for imp, module_level in _third_party(_imports(path)).items():
                if (env_name, module, imp) in NOT_CALLED:
                    # Only a lazy import can be left out: a module-level one always runs.
                    assert not module_level, f"{(env_name, module, imp)} is not lazy"
                    continue
                assert imp in IMPORT_TO_CONDA, f"{module}: unknown import {imp!r}: map it above"
                assert IMPORT_TO_CONDA[imp] in pins, (
                    f"rule {name} runs {module}, which imports {imp}, but envs/{env_name}.yaml "
                    f"lacks {IMPORT_TO_CONDA[imp]}"
                )
    assert used == set(NOT_CALLED), f"stale NOT_CALLED entries: {set(NOT_CALLED) - used}"


def _dry_run_cmd(workdir: Path, *configfiles: Path) -> list[str]:
    """`snakemake --dry-run` of this workflow in `workdir` with `configfiles`, no profile."""
    return [
        *(sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")),
        *("--directory", str(workdir), "--configfile", *map(str, configfiles)),
        *("--workflow-profile", "none", "--dry-run"),
    ]


def _rule_inputs(log: str, rule: str) -> list[str]:
    """The inputs of the first job of `rule` in Snakemake's output (a dry run's plan too)."""
    found = re.search(rf"rule {rule}:\n\s+input: ([^\n]*)", log)
    assert found, f"no job of {rule} in the plan"
    return found.group(1).split(", ")


def _job_counts(output: str) -> dict[str, int]:
    """The first "Job stats" table of a dry run, as {rule: jobs}."""
    lines = output[output.index("Job stats:") :].splitlines()[3:]
    counts = {}
    for line in lines:
        name, _, count = line.strip().rpartition(" ")
        if not name or name.strip() == "total":
            break
        counts[name.strip()] = int(count)
    return counts


def test_dry_run_builds_the_dag(tmp_path: Path, rules: dict[str, dict]) -> None:
    """The DAG of the demo builds: one job of every rule but the corpus run's (the demo has
    one evaluation set; synthetic pages are one job per split).
    With `--sdm conda` Snakemake first runs `conda info` (the platform of pin files): where
    a conda binary answers, the plan must be the same DAG with every env to be created; where
    none does, the only acceptable failure is that call."""
    # import_dataset runs only for a dataset of PAGE/ALTO/line folders (tests/test_import_workflow.py),
    # align_lines only for a dataset of transcriptions (`align.bundle`), the corpus rules only
    # for the `ocr` target: none is in the demo's DAG.
    skipped = {"import_dataset", "align_lines", *CORPUS_RULES}
    expected = {name: 1 for name in rules if name not in skipped}
    expected["synth_pages"] = 3  # train, val and test pages
    base = _dry_run_cmd(tmp_path, REPO / "config" / "config.yaml")
    plain = run(base, timeout=180)
    out = plain.stdout + plain.stderr
    assert plain.returncode == 0, out[-3000:]
    assert _job_counts(out) == expected, out[-3000:]
    conda = run([*base, "--sdm", "conda"], timeout=180)
    out = conda.stdout + conda.stderr
    if conda.returncode != 0:
        assert "Error running conda info" in out, out[-3000:]
        return
    assert _job_counts(out) == expected, out[-3000:]
    for name in ENV_NAMES:
        assert f"envs/{name}.yaml will be created" in out, (name, out[-3000:])


def test_external_onnx_localizer_replaces_training(tmp_path: Path) -> None:
    """With `localizer.onnx_model` the DAG exports and evaluates that model: no training."""
    onnx_file = tmp_path / "yolo.onnx"
    onnx_file.write_bytes(b"not read by a dry run")
    config = tmp_path / "external.yaml"
    config.write_text(
        yaml.safe_dump({"localizer": {"onnx_model": str(onnx_file), "onnx_layout": "yolov8"}}),
        encoding="utf-8",
    )
    cmd = _dry_run_cmd(tmp_path, REPO / "config" / "config.yaml", config)
    proc = run(cmd, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "train_localizer" not in out, out[-3000:]
    assert "export_bundle" in out and "evaluate_localizer" in out
    assert str(onnx_file) in out  # the external model is an input of export and evaluation


def _threads(output: str) -> dict[str, int]:
    """{rule: threads} of the jobs a dry run lists (it prints `threads:` only above 1)."""
    threads, rule = {}, None
    for line in output.splitlines():
        head = line.strip()
        if head.startswith(("rule ", "localrule ")) and head.endswith(":"):
            rule = head.split()[1][:-1]
            threads[rule] = 1
        elif head.startswith("threads:") and rule:
            threads[rule] = int(head.split()[1])
    return threads


@pytest.mark.parametrize(
    ("config", "cores", "recognizer", "render"),
    [
        ("config.yaml", 2, 1, 1),  # English: the localizer is the long job, trained beside
        ("config.yaml", 8, 7, 4),
        ("demo-jp.yaml", 2, 2, 2),  # Japanese: the recognizer is, and takes every core
        ("demo-jp.yaml", 8, 8, 4),
    ],
)
def test_recognizer_rules_leave_the_localizer_a_core(tmp_path, config, cores, recognizer, render):
    """train_localizer takes one thread; for a profile whose localizer leads (en), the
    recognizer rules and render_glyphs leave it a core of --cores, so both train at once."""
    cmd = [*_dry_run_cmd(tmp_path, REPO / "config" / config), "--cores", str(cores)]
    proc = run(cmd, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    threads = _threads(out)
    assert threads["train_localizer"] == threads["train_line_detector"] == 1, threads
    for rule in ("train_recognizer", "train_recognizer_hard_negatives", "mine_hard_negatives"):
        assert threads[rule] == recognizer, (rule, threads)
    assert threads["render_glyphs"] == render, threads
