"""effocr.provenance: the code a rule runs is computed, and every rule reruns when it changes.

The rules are read through the Snakemake API (tests/rule_listing.py), so a rule inside an `if`
or one whose param is built from a constant is checked like any other.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rule_listing import CORPUS_RULES, REPO, rule_entry, rule_script, script_imports, workflow_rules

from effocr.provenance import closure, code_hash, module_file, source_files

EDIT = b"\n# an edit\n"


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_closure_follows_every_kind_of_import(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "effocr/__init__.py": "",
            "effocr/entry.py": (
                "import os\n"
                "from effocr.pkg import sub\n"  # a submodule imported by name
                "def lazy():\n"
                "    from . import in_function\n"  # relative, inside a function
                "    try:\n"
                "        import effocr.guarded\n"
                "    except ImportError:\n"
                "        pass\n"
                "REGISTRY = {'x': 'effocr.by_name'}\n"  # handed to importlib elsewhere
            ),
            "effocr/in_function.py": "",
            "effocr/guarded.py": "",
            "effocr/by_name.py": "",
            "effocr/pkg/__init__.py": "from .helpers import thing\n",
            "effocr/pkg/helpers.py": "thing = 1\n",
            "effocr/pkg/sub.py": "from ..deep.mod import value\n",
            "effocr/deep/__init__.py": "",
            "effocr/deep/mod.py": "value = 2\n",
            "effocr/unrelated.py": "import effocr.entry\n",
        },
    )
    assert closure("effocr.entry", tmp_path) == [
        "effocr",
        "effocr.by_name",
        "effocr.deep",
        "effocr.deep.mod",
        "effocr.entry",
        "effocr.guarded",
        "effocr.in_function",
        "effocr.pkg",
        "effocr.pkg.helpers",
        "effocr.pkg.sub",
    ]


def test_resource_files_named_by_a_module_are_hashed(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "effocr/__init__.py": "",
            "effocr/config.py": (
                "from importlib import resources\n"
                "SCHEMA = resources.files('effocr') / 'resources' / 'schema.yaml'\n"
                "def charset(name):\n"
                "    return resources.files('effocr') / 'resources' / 'charsets' / f'{name}.txt'\n"
            ),
            "effocr/resources/schema.yaml": "a: 1\n",
            "effocr/resources/charsets/en.txt": "U+0041\n",
            "effocr/resources/style.css": "",
        },
    )
    names = {f.relative_to(tmp_path).as_posix() for f in source_files("effocr.config", tmp_path)}
    assert names == {
        "effocr/__init__.py",
        "effocr/config.py",
        "effocr/resources/schema.yaml",
        "effocr/resources/charsets/en.txt",
    }
    before = code_hash("effocr.config", tmp_path)
    (tmp_path / "effocr/resources/style.css").write_text("body {}", encoding="utf-8")
    assert code_hash("effocr.config", tmp_path) == before
    (tmp_path / "effocr/resources/schema.yaml").write_text("a: 2\n", encoding="utf-8")
    assert code_hash("effocr.config", tmp_path) != before


@pytest.fixture(scope="module")
def rules(workflow_rule_listing: dict[str, dict]) -> dict[str, dict]:
    return {name: rule for name, rule in workflow_rule_listing.items() if not rule["norun"]}


def _entries(rules: dict[str, dict]) -> dict[str, str]:
    """{rule: the module its code param hashes}."""
    entries = {}
    for name, rule in rules.items():
        entry = entries[name] = rule_entry(name, rule)
        # What the script imports beside its entry (setup_logging, validate_config) is covered.
        extra = script_imports(rule_script(rule)) - set(closure(entry))
        assert not extra, f"rule {name}: its script imports {extra}, outside {entry}'s closure"
    return entries


def test_every_rule_hashes_the_code_its_script_runs(rules: dict[str, dict]) -> None:
    entries = _entries(rules)
    # All rules of the demo DAG, the one inside `if` (synth_lines) included.
    assert {
        "synth_lines",
        "render_glyphs",
        "evaluate",
        "report",
        "export_bundle",
        "train_lm",
        "train_line_detector",
    } <= set(entries)
    assert CORPUS_RULES <= set(entries)
    assert len(entries) == 22, sorted(entries)
    # Modules the former hand-written lists missed (issue 13).
    assert {"effocr.recognizer.reference", "effocr.data.coco"} <= set(closure(entries["evaluate"]))
    assert {"effocr.data.coco", "effocr.config"} <= set(closure(entries["train_localizer"]))


def test_editing_a_file_changes_exactly_the_hashes_of_the_rules_that_run_it(
    rules: dict[str, dict], tmp_path: Path
) -> None:
    """Every file of the package, edited in a copy: a rule's hash changes iff the file is in its
    closure (or is a resource that closure names)."""
    entries = _entries(rules)
    copy = tmp_path / "src"
    shutil.copytree(REPO / "effocr", copy / "effocr", ignore=shutil.ignore_patterns("__pycache__"))
    by_entry = {e: set(source_files(e, copy)) for e in set(entries.values())}
    before = {e: code_hash(e, copy) for e in by_entry}
    files = sorted(p for p in (copy / "effocr").rglob("*") if p.is_file())
    assert len(files) > 40
    for f in files:
        original = f.read_bytes()
        f.write_bytes(original + EDIT)
        try:
            for entry, covered in by_entry.items():
                changed = code_hash(entry, copy) != before[entry]
                assert changed == (f in covered), (f.relative_to(copy), entry, changed)
        finally:
            f.write_bytes(original)
    # Each module a rule's closure holds is one of its files, so the loop above edited it.
    for entry, covered in by_entry.items():
        assert {module_file(m, copy) for m in closure(entry, copy)} <= covered


def test_workflow_params_follow_an_edit(rules: dict[str, dict], tmp_path: Path) -> None:
    """End to end: the workflow parsed from a copy with one module edited changes the `code`
    param of exactly the rules whose closure holds it (`evaluate` among them)."""
    entries = _entries(rules)
    copy = tmp_path / "repo"
    copy.mkdir()
    for part in ("Snakefile", "rules", "config", "workflow_scripts", "envs", "report", "effocr"):
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, copy / part)
    edited = "effocr.recognizer.reference"
    path = module_file(edited, copy)
    path.write_bytes(path.read_bytes() + EDIT)
    workdir = tmp_path / "work"
    workdir.mkdir()
    after = workflow_rules(workdir, repo=copy, pythonpath=copy)
    changed = {n for n in entries if after[n]["params"]["code"] != rules[n]["params"]["code"]}
    expected = {n for n, e in entries.items() if edited in closure(e)}
    assert "evaluate" in expected and "render_glyphs" not in expected
    assert changed == expected


IMPORTED = """
import importlib, json, sys
found = {}
for entry in json.loads(sys.argv[1]):
    for name in [m for m in sys.modules if m == "effocr" or m.startswith("effocr.")]:
        del sys.modules[name]
    importlib.import_module(entry)
    found[entry] = sorted(m for m in sys.modules if m == "effocr" or m.startswith("effocr."))
print("IMPORTED=" + json.dumps(found))
"""


def test_closure_holds_what_python_imports(rules: dict[str, dict]) -> None:
    """An independent lower bound: every `effocr` module that importing a rule's entry module
    really loads is in its closure (the closure also holds the lazy imports Python has not run
    yet)."""
    entries = sorted(set(_entries(rules).values()))
    proc = subprocess.run(
        [sys.executable, "-c", IMPORTED, json.dumps(entries)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("IMPORTED="))
    for entry, imported in json.loads(line.removeprefix("IMPORTED=")).items():
        missing = set(imported) - set(closure(entry))
        assert not missing, f"importing {entry} loads {missing}, outside its closure"
