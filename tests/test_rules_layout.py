"""The rules files (issue 13 item 7): each stage file needs only rules/common.smk, in any
include order, and artefact file names come from `effocr.artifacts`, not spelled in rules."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from rule_listing import REPO, workflow_rules

from effocr import artifacts

STAGE_INCLUDE = re.compile(r'^include: "rules/(?!common)\w+\.smk"\n', re.M)


def test_stage_files_work_in_any_include_order(tmp_path):
    wf = tmp_path / "wf"
    for name in ("rules", "config", "envs", "report", "workflow_scripts", "effocr"):
        shutil.copytree(REPO / name, wf / name, ignore=shutil.ignore_patterns("__pycache__"))
    snakefile = (REPO / "Snakefile").read_text(encoding="utf-8")
    includes = STAGE_INCLUDE.findall(snakefile)
    assert len(includes) >= 6
    block = "".join(includes)
    assert block in snakefile, "the stage includes are expected as one block"
    (wf / "Snakefile").write_text(
        snakefile.replace(block, "".join(reversed(includes))), encoding="utf-8"
    )
    reversed_rules = workflow_rules(tmp_path / "run2", repo=wf, pythonpath=REPO)
    rules = workflow_rules(tmp_path / "run1")
    assert set(reversed_rules) == set(rules)
    for name, rule in rules.items():
        assert reversed_rules[name]["params"] == rule["params"], name


def _file_names() -> set[str]:
    names = set()
    for key, value in vars(artifacts).items():
        if not key.isupper():
            continue
        values = value.values() if isinstance(value, dict) else [value]
        names |= {v for v in values if isinstance(v, str) and "." in v}
    return names


def test_rules_spell_no_artefact_file_name():
    names = _file_names()
    assert {"model.pt", "metrics.csv", "checkpoint.pt", "ref.index", "index.html"} <= names
    found = []
    for smk in sorted((REPO / "rules").rglob("*.smk")):
        for number, line in enumerate(smk.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            found += [
                f"{smk.relative_to(REPO)}:{number}: {n}"
                for n in names
                if re.search(rf"\b{re.escape(n)}\b", code)
            ]
    assert found == []


def test_workflow_paths_lie_under_results_dir():
    paths = artifacts.workflow_paths("somewhere")
    flat = [p for v in paths.values() for p in (v.values() if isinstance(v, dict) else [v])]
    assert all(Path(p).parts[0] == "somewhere" for p in flat)
    assert paths["hard_negatives"].endswith(artifacts.HARD_NEGATIVES)
