"""OpenMP's wait policy: passive unless the user chose one (see effocr/__init__.py)."""

from __future__ import annotations

import os
import subprocess
import sys


def _policy_seen_by_torch(env: dict) -> str:
    # The workflow scripts and the CLI import effocr before torch (whose OpenMP runtime reads
    # the variable when it loads), so the variable must be in place once effocr is imported.
    code = "import effocr, os; print(os.environ.get('OMP_WAIT_POLICY'))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_passive_by_default():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy_seen_by_torch(env) == "PASSIVE"


def test_the_users_choice_wins():
    env = {**os.environ, "OMP_WAIT_POLICY": "ACTIVE"}
    assert _policy_seen_by_torch(env) == "ACTIVE"
