"""Run a real function against a copy of `effocr` whose modules are edited one at a time.

The trainers decide whether to resume from the hash of the code they run; these helpers let a
test check that decision for real, without patching the function under test: the copy is
imported in a subprocess (PYTHONPATH), so the trainer hashes the copy's files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
from pathlib import Path
import effocr.provenance as provenance

src, extra = Path(sys.argv[1]).resolve(), json.loads(sys.argv[2])
assert provenance.ROOT == src, (provenance.ROOT, src)  # the copy, not the checkout
modules = provenance.closure({entry!r}) + extra
{setup}
def value():
    return {expr}

before = value()
after = {{}}
for module in modules:
    path = provenance.module_file(module)
    original = path.read_bytes()
    path.write_bytes(original + b"\\n# an edit\\n")
    try:
        after[module] = value()
    finally:
        path.write_bytes(original)
print("EDITS=" + json.dumps({{"before": before, "after": after,
                             "closure": provenance.closure({entry!r})}}))
"""


def copy_package(dest: Path) -> Path:
    """A copy of the `effocr` package under `dest` (returned: the folder to import it from)."""
    shutil.copytree(REPO / "effocr", dest / "effocr", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def values_after_edits(src: Path, entry: str, setup: str, expr: str, extra: list[str]) -> dict:
    """`expr` (after `setup`) evaluated on the copy in `src`, then again after editing alone
    each module in the closure of `entry` and each of `extra`. Returns {"before",
    "after": {module: value}, "closure": the closure of `entry`}."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT.format(setup=setup, expr=expr, entry=entry),
            str(src),
            json.dumps(extra),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(src)},
        cwd=src,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("EDITS="))
    return json.loads(line.removeprefix("EDITS="))


def assert_checkpoint_hash_follows_code(
    tmp_path: Path, trainer: str, input_file: str, hash_call: str, must_cover: set[str]
) -> None:
    """A trainer's checkpoint hash (`hash_call`, from `trainer`'s module, on an empty
    `input_file`) changes when any module of the trainer's closure is edited (`must_cover` of
    them at least) and stays when an unrelated module (`effocr.report`) is."""
    src = copy_package(tmp_path)
    (src / input_file).write_text("", encoding="utf-8")
    setup = (
        "from effocr.config import config_sections, load_config\n"
        f"from {trainer} import config_hash\n"
        "sections = config_sections(load_config(None))\n"
    )
    res = values_after_edits(src, trainer, setup, hash_call, extra=["effocr.report"])
    assert must_cover <= set(res["closure"])
    resumed = [m for m in res["closure"] if res["after"][m] == res["before"]]
    assert not resumed, f"editing {resumed} would resume the old checkpoint"
    assert res["after"]["effocr.report"] == res["before"]  # not code the rule runs
