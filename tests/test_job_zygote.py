"""tests/job_zygote.py: a script job forked from the zygote runs as `python SCRIPT` would.

The workflow tests rely on it for every Snakemake `script:` job, so what a job sees (its
folder first on sys.path, PYTHONPATH next, its working directory, environment and exit
status, the package imported from its own copy) is checked here against a new interpreter
(EFFOCR_TEST_JOB_ZYGOTE=0) on the same tiny workflow.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from snakemake_forks import run

SNAKEFILE = """
rule all:
    input: "probe.json"

rule probe:
    output: "probe.json"
    script: "scripts/probe.py"

rule fails:
    output: "never.txt"
    script: "scripts/fails.py"
"""

PROBE = """
import json, os, sys
preloaded = "torch" in sys.modules  # before this script imports anything heavy
import probe_mod
import effocr
json.dump(
    {
        "preloaded": preloaded,
        "path0": sys.path[0],
        "path1": sys.path[1],
        "cwd": os.getcwd(),
        "env": os.environ.get("PROBE_VALUE"),
        "mod": probe_mod.__file__,
        "effocr": effocr.__file__,
        "argv0": sys.argv[0],
        "name": __name__,
    },
    open(snakemake.output[0], "w"),
)
print("probe ran", flush=True)
"""

FAILS = """
import sys
print("about to fail", file=sys.stderr)
raise RuntimeError("the probe job fails on purpose")
"""


def _workflow(root: Path) -> Path:
    wf = root / "wf"
    (wf / "scripts").mkdir(parents=True)
    (wf / "Snakefile").write_text(SNAKEFILE, encoding="utf-8")
    (wf / "scripts" / "probe.py").write_text(PROBE, encoding="utf-8")
    (wf / "scripts" / "fails.py").write_text(FAILS, encoding="utf-8")
    # A package named as the workflow's own, in the copy: the job must import this one.
    (wf / "pkg" / "effocr").mkdir(parents=True)
    (wf / "pkg" / "effocr" / "__init__.py").write_text("", encoding="utf-8")
    (root / "mods").mkdir()
    (root / "mods" / "probe_mod.py").write_text("", encoding="utf-8")
    return wf


def _snakemake(wf: Path, root: Path, zygote: str, *args: str):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(wf / "pkg"), str(root / "mods")]),
        # Longer than one read of the request (64 KiB): the request arrives in pieces.
        "PROBE_VALUE": "from the run's environment" + "." * 100_000,
        "EFFOCR_TEST_JOB_ZYGOTE": zygote,
    }
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", *args]
    return run(cmd, cwd=wf, env=env, timeout=300)


@pytest.mark.parametrize("zygote", ["1", "0"])
def test_a_job_sees_what_a_new_interpreter_sees(tmp_path, zygote):
    wf = _workflow(tmp_path)
    proc = _snakemake(wf, tmp_path, zygote)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads((wf / "probe.json").read_text(encoding="utf-8"))
    assert got["preloaded"] is (zygote == "1")  # the zygote did the imports, or not
    scripts = wf / ".snakemake" / "scripts"
    assert Path(got["path0"]) == scripts and Path(got["argv0"]).parent == scripts
    assert Path(got["path1"]) == wf / "pkg"
    assert Path(got["cwd"]) == wf and got["env"] == "from the run's environment" + "." * 100_000
    assert Path(got["mod"]) == tmp_path / "mods" / "probe_mod.py"
    assert Path(got["effocr"]) == wf / "pkg" / "effocr" / "__init__.py"
    assert got["name"] == "__main__"


@pytest.mark.parametrize("zygote", ["1", "0"])
def test_a_failing_job_fails_the_run_with_its_traceback(tmp_path, zygote):
    wf = _workflow(tmp_path)
    proc = _snakemake(wf, tmp_path, zygote, "never.txt")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "RuntimeError: the probe job fails on purpose" in out, out[-3000:]
    assert "about to fail" in out
    assert not (wf / "never.txt").exists()
