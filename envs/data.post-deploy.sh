#!/usr/bin/env bash
# Run by Snakemake once, inside the freshly created conda env (envs/data.yaml): install the
# effocr package from this checkout, editable and without dependencies (the env pins those).
# Editable, so jobs run the checkout's code, the same code the rules' `code` params hash.
# A relative path in the env file's pip section would not work: Snakemake copies the env file
# to .snakemake/conda/<hash>.yaml before creating it, while this script runs where it lies.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -f "$root/pyproject.toml" ]; then
    echo "post-deploy: no pyproject.toml in $root: run the workflow from a checkout of effocr" >&2
    exit 1
fi
python -m pip install --no-deps -e "$root"
