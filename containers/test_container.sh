#!/usr/bin/env bash
# Build the CPU workflow image with podman and check it against the host (`make test-container`).
#
#   1. podman, runc and debootstrap: installed with apt-get when missing (root).
#   2. The base image BASE (default localhost/debian-bookworm:base): `debootstrap --variant=minbase
#      bookworm` imported into podman, once; skipped while the image exists. Set BASE to a public
#      image (python:3.11.7-slim-bookworm) where a registry is reachable.
#   3. The image IMAGE from containers/Dockerfile with BASE_IMAGE=BASE. podman's layer cache
#      makes a second build take seconds. With TORCH_WHEELS=DIR, torch/torchvision and their
#      nvidia/cuda/triton wheels are hard-linked from DIR into containers/local/ and installed
#      from there instead of TORCH_INDEX. When pip on this machine needs a CA bundle (PIP_CERT,
#      e.g. behind a TLS-inspecting proxy), it is copied there too and pip in the build uses it;
#      neither ends up in the image. TORCH_INDEX, when set, is passed on as the build argument.
#   4. The demo workflow's data stage (synth_lines, check_coco, split_coco, render_glyphs,
#      crop_glyphs, build_recognizer_dataset), then train_recognizer (pass 1, TRAIN_EPOCHS epochs,
#      default 2 of the demo's 8), run twice with the same config and the same paths: on the
#      host (HOST_BIN/snakemake) and inside the image
#      (snakemake in the container on the repository, mounted at its own path). The fonts are
#      the image's fonts of the demo's list, copied out once, so both sides render the same files.
#   5. Checks: every data-stage output byte for byte (logs and benchmark timings aside), the
#      trained model's metrics within METRIC_TOL. Exit status 1 on a difference.
#   6. With OCI_ARCHIVE=FILE, the image is saved there as an OCI archive, the input of
#      `apptainer build effocr-workflow_0.1.0.sif oci-archive://FILE` (docs/cluster.md).
#
# Needs root (apt-get, podman as root). Work files go to WORK (.container-test/, ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

BASE=${BASE:-localhost/debian-bookworm:base}
IMAGE=${IMAGE:-localhost/effocr/effocr-workflow:0.1.0}
TORCH_WHEELS=${TORCH_WHEELS:-}
CA_BUNDLE=${CA_BUNDLE:-${PIP_CERT:-}}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOTFS_DIR=${ROOTFS_DIR:-/var/tmp/effocr-debootstrap}
HOST_BIN=${HOST_BIN:-.venv/bin}
CORES=${CORES:-$(nproc)}
METRIC_TOL=${METRIC_TOL:-0.02}
TRAIN_EPOCHS=${TRAIN_EPOCHS:-2}
OCI_ARCHIVE=${OCI_ARCHIVE:-}
WORK=.container-test
# runc, cgroupfs, no default ulimits, host network: what works on a root Debian 12 machine
# (crun fails there); passed to podman alone, /etc/containers is not edited.
export CONTAINERS_CONF=${CONTAINERS_CONF:-$REPO/containers/podman-containers.conf}

log() { printf '[test-container %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
declare -A TIMES
timed() { # timed NAME CMD...: run CMD, record its wall time under NAME
    local name=$1 start=$SECONDS
    shift
    "$@"
    TIMES[$name]=$((SECONDS - start))
    log "$name: ${TIMES[$name]} s"
}

# 1. the engine
install_engine() {
    local missing=""
    for tool in podman runc debootstrap; do
        command -v "$tool" >/dev/null || missing="$missing $tool"
    done
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "missing:$missing; install them (sudo apt-get install$missing) or run as root" >&2
        exit 2
    fi
    log "installing$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$missing >/dev/null
}

# 2. the base image
build_base() {
    if podman image exists "$BASE"; then
        log "base $BASE exists, skipped"
        return 0
    fi
    case "$BASE" in
        localhost/*) ;;
        *) podman pull "$BASE"; return 0 ;;
    esac
    log "debootstrap bookworm -> $BASE"
    rm -rf "$ROOTFS_DIR"
    debootstrap --variant=minbase bookworm "$ROOTFS_DIR" "$DEBIAN_MIRROR" >/dev/null
    rm -rf "$ROOTFS_DIR"/var/lib/apt/lists/* "$ROOTFS_DIR"/var/cache/apt/archives/*.deb
    tar -C "$ROOTFS_DIR" -c . | podman import - "$BASE" >/dev/null
    rm -rf "$ROOTFS_DIR"
}

# 3. the image
build_inputs() {
    if [ -n "$CA_BUNDLE" ]; then
        cp "$CA_BUNDLE" containers/local/ca-certificates.crt
        log "pip in the build trusts $CA_BUNDLE"
    fi
    [ -n "$TORCH_WHEELS" ] || return 0
    local torch_v vision_v n=0 f
    torch_v=$(sed -n 's/^torch==//p' containers/constraints.txt)
    vision_v=$(sed -n 's/^torchvision==//p' containers/constraints.txt)
    rm -f containers/local/*.whl
    for f in "$TORCH_WHEELS"/torch-"$torch_v"-cp311-*.whl "$TORCH_WHEELS"/torchvision-"$vision_v"-cp311-*.whl \
        "$TORCH_WHEELS"/nvidia_*.whl "$TORCH_WHEELS"/cuda_*.whl "$TORCH_WHEELS"/triton-*.whl; do
        [ -e "$f" ] || continue
        ln -f "$f" containers/local/ 2>/dev/null || cp "$f" containers/local/
        n=$((n + 1))
    done
    log "$n wheels from $TORCH_WHEELS in containers/local/"
}

build_image() {
    local args=(--build-arg BASE_IMAGE="$BASE")
    [ -n "${TORCH_INDEX:-}" ] && args+=(--build-arg TORCH_INDEX="$TORCH_INDEX")
    podman build --layers -f containers/Dockerfile "${args[@]}" -t "$IMAGE" .
}

# 4. the runs
in_image() { # run a command in the image on the repository, mounted at its own path
    podman run --rm --network host -v "$REPO:$REPO" -w "$REPO" -e HOME=/tmp "$IMAGE" "$@"
}

prepare_work() {
    mkdir -p "$WORK"
    rm -rf "$WORK/results" "$WORK/synthetic" "$WORK/host" "$WORK/container" "$WORK/fonts"
    mkdir -p "$WORK/fonts"
    # The image's fonts of the demo's pinned list (fonts.include of config/config.yaml; the
    # image also has base-en's faces, which the demo does not render), copied out once.
    in_image python -c "
import shutil, sys
import yaml
from effocr.synth.fonts import find_fonts
include = yaml.safe_load(open('config/config.yaml', encoding='utf-8'))['fonts']['include']
fonts = find_fonts(include=include)
for f in fonts:
    shutil.copy2(f, sys.argv[1])
print(len(fonts), 'fonts:', ' '.join(f.stem for f in fonts))
" "$WORK/fonts"
    "$HOST_BIN/python" - "$WORK" "$TRAIN_EPOCHS" <<'EOF'
import sys
from pathlib import Path
import yaml

work = Path(sys.argv[1])
config = yaml.safe_load(Path("config/config.yaml").read_text(encoding="utf-8"))
config["results_dir"] = f"{work}/results"
lines = f"{work}/synthetic/lines.json"
config["dataset"] = {**config["dataset"], "coco_json": lines, "image_dir": f"{work}/synthetic/images"}
config["synth"] = {**config["synth"], "coco_json": lines}
config["fonts"] = {**config.get("fonts", {}), "dirs": [f"{work}/fonts"]}
# A short first pass (TRAIN_EPOCHS of the demo's 8): enough to compare the two trainings.
config["recognizer"] = {**config.get("recognizer", {}), "epochs": int(sys.argv[2])}
(work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
EOF
}

# snakemake with the same config, paths and targets on both sides; each side's outputs are
# then moved to WORK/<side>, so the other side starts from nothing at the very same paths.
run_side() { # run_side host|container
    local side=$1 snakemake=(env PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$HOST_BIN/snakemake")
    [ "$side" = container ] && snakemake=(in_image snakemake)
    local args=(--cores "$CORES" --configfile "$WORK/config.yaml" --quiet rules)
    timed "$side data stage" "${snakemake[@]}" build_recognizer_dataset "${args[@]}"
    timed "$side train_recognizer" "${snakemake[@]}" train_recognizer "${args[@]}"
    mkdir -p "$WORK/$side"
    mv "$WORK/results" "$WORK/synthetic" "$WORK/$side/"
}

# 5. the checks
compare() {
    local status=0
    log "data stage, byte for byte (logs/ and benchmarks/ left out: timings)"
    if diff -r -q "$WORK/host/synthetic" "$WORK/container/synthetic" \
        && diff -r -q -x logs -x benchmarks -x recognizer "$WORK/host/results" "$WORK/container/results"; then
        log "data stage: identical ($(find "$WORK/host/synthetic" "$WORK/host/results" -type f \
            -not -path '*/logs/*' -not -path '*/benchmarks/*' -not -path '*/recognizer/*' | wc -l) files)"
    else
        log "data stage: DIFFERENT"
        status=1
    fi
    log "train_recognizer (pass 1): metrics within $METRIC_TOL"
    "$HOST_BIN/python" - "$WORK" "$METRIC_TOL" <<'EOF' || status=1
import csv, json, sys
from pathlib import Path

work, tol = Path(sys.argv[1]), float(sys.argv[2])
pass1 = {side: work / side / "results/recognizer/pass1" for side in ("host", "container")}
host, cont = (json.loads((pass1[s] / "metrics.json").read_text()) for s in ("host", "container"))


def timing(key):  # wall times and throughput legitimately differ between the two runs
    return key.endswith("_s") or "time" in key


bad = 0
for key in sorted(host):
    a, b = host[key], cont.get(key)
    if isinstance(a, (int, float)) and not isinstance(a, bool) and not timing(key):
        close = isinstance(b, (int, float)) and abs(a - b) <= tol * max(1.0, abs(a))
        print(f"  {key}: host {a} container {b}{'' if close else '  <- differs'}")
        bad += not close
rows = {
    s: [{k: v for k, v in r.items() if not timing(k)} for r in csv.DictReader(open(pass1[s] / "metrics.csv"))]
    for s in pass1
}
same_model = (pass1["host"] / "model.pt").read_bytes() == (pass1["container"] / "model.pt").read_bytes()
print(f"  per-epoch metrics.csv (timings aside) identical: {rows['host'] == rows['container']}")
print(f"  model.pt byte-identical: {same_model}")
sys.exit(1 if bad else 0)
EOF
    return $status
}

# All in one function, so bash has read the whole file before anything runs.
main() {
    if [ "${1:-}" = --compare-only ]; then # the checks alone, on the outputs of the last run
        compare
        exit
    fi
    START=$SECONDS
    timed engine install_engine
    timed base build_base
    build_inputs
    timed image build_image
    in_image sh -c 'cd / && tesseract --list-langs 2>&1 | tr "\n" " " && echo && python -c "import effocr, torch; print(\"effocr\", effocr.__file__, \"torch\", torch.__version__)"'
    prepare_work
    run_side host
    run_side container
    set +e
    compare
    status=$?
    set -e
    if [ "$status" = 0 ] && [ -n "$OCI_ARCHIVE" ]; then
        rm -f "$OCI_ARCHIVE"
        timed "oci archive" podman save --format oci-archive -o "$OCI_ARCHIVE" "$IMAGE"
    fi
    TIMES[total]=$((SECONDS - START))
    log "times (s): $(for k in engine base image "host data stage" "host train_recognizer" \
        "container data stage" "container train_recognizer" total; do printf '%s=%s; ' "$k" "${TIMES[$k]}"; done)"
    if [ "$status" = 0 ]; then log "OK: the image reproduces the host's outputs"; else log "FAILED"; fi
    exit "$status"
}

main "$@"
