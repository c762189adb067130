"""The workflow's rules as Snakemake itself parses them, for tests that check rule directives.

Reading `rules/*.smk` with regexes misses rules inside an `if`, values passed as constants and
anything computed; the Snakemake API sees the rules exactly as a run would.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The corpus run (`snakemake ocr`, rules/ocr.smk): listed like every rule, but not part of
# the default target, so a run of `all` plans none of them.
CORPUS_RULES = {"ocr_shard", "ocr"}

# Runs in a subprocess: the API changes the working directory and keeps global state.
DUMP_RULES = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

repo, workdir = Path(sys.argv[1]), Path(sys.argv[2])
configfiles = [Path(p) for p in sys.argv[3:]] or [repo / "config" / "config.yaml"]
with SnakemakeApi(OutputSettings()) as api:
    wf = api.workflow(
        resource_settings=ResourceSettings(cores=1),
        config_settings=ConfigSettings(configfiles=configfiles),
        snakefile=repo / "Snakefile",
        workdir=workdir,
    )
    rules = {}
    for r in wf._workflow.rules:
        params = {k: v for k, v in r.params.items() if isinstance(v, (str, int, float, bool))}
        resources = {
            k: getattr(v, "raw", v) for k, v in r.resources.items() if not k.startswith("_")
        }
        rules[r.name] = {
            "conda": str(r.conda_env) if r.conda_env else None,
            "container": r.container_img,
            "basedir": str(r.basedir),
            "norun": r.norun,
            "script": r.script,
            "params": params,
            # Every param's name, and the dict-valued ones (the config sections a rule passes).
            "param_names": [k for k, _ in r.params.items()],
            "dict_params": {k: v for k, v in r.params.items() if isinstance(v, dict)},
            "resources": {
                k: v for k, v in resources.items() if isinstance(v, (str, int, float, bool))
            },
        }
    print("RULES=" + json.dumps(rules))
"""


def workflow_rules(
    workdir: Path, repo: Path = REPO, configfiles: tuple[Path, ...] = (), pythonpath=None
) -> dict[str, dict]:
    """{rule name: conda, container, basedir, norun, script, params (plain values),
    param_names, dict_params, resources}
    of the workflow in `repo`; `pythonpath` is where `effocr` is imported from (default: as
    the test process)."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    proc = subprocess.run(
        [sys.executable, "-c", DUMP_RULES, str(repo), str(workdir), *map(str, configfiles)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RULES="))
    return json.loads(line.removeprefix("RULES="))


def rule_script(rule: dict) -> Path | None:
    """The workflow script a rule runs (None for a rule without `script:`)."""
    if not rule["script"]:
        return None
    return (Path(rule["basedir"]) / rule["script"]).resolve()


def script_imports(script: Path) -> set[str]:
    """The `effocr` modules a workflow script imports."""
    from effocr.provenance import module_file

    found = set()
    for node in ast.walk(ast.parse(script.read_bytes())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found.update(n for n in names if n.split(".")[0] == "effocr" and module_file(n))
    return found


def rule_entry(name: str, rule: dict) -> str:
    """The module whose code hash a rule carries as its `code` param, found among the modules
    its script imports (so a param hashing anything else fails here)."""
    from effocr.provenance import code_hash

    script = rule_script(rule)
    assert script, f"rule {name} runs no script"
    imports = script_imports(script)
    matches = [m for m in imports if code_hash(m) == rule["params"].get("code")]
    assert len(matches) == 1, f"rule {name}: code param is not the hash of one of {imports}"
    return matches[0]


def container_images(rules: dict[str, dict]) -> dict[bool, str]:
    """{needs a GPU: the one container image those rules run in}; fails if rules differ."""
    images: dict[bool, set[str]] = {False: set(), True: set()}
    for rule in rules.values():
        if not rule["norun"]:
            images[bool(rule["resources"].get("gpu"))].add(rule["container"])
    assert all(len(found) == 1 for found in images.values()), images
    return {gpu: found.pop() for gpu, found in images.items()}
