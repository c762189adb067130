# Two commands for a fresh machine: `make demo` and `make test` (see README.md).
# Both create .venv when it is missing, install the project into it, and install the
# system packages the workflow uses (Tesseract, fonts) when run as root with apt-get.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= $(shell nproc)
# pytest-xdist workers for the suite: one per core, at most 4 (each worker builds the session's
# tiny models once). --dist loadfile, with tests/conftest.py's scheduler: a test file stays on
# one worker, so its module fixtures, such as test_incremental's workflow run, are built once,
# and the files that use en_bundle (or jp_models) share one, so those models are trained once.
TEST_WORKERS ?= $(shell n=$$(nproc); [ $$n -gt 4 ] && n=4; echo $$n)
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile
STAMP := $(VENV)/.installed
# qemu-user: the int8 test runs the recognizer on an emulated AVX2 CPU without VNNI.
SYS_PACKAGES := tesseract-ocr tesseract-ocr-eng tesseract-ocr-jpn tesseract-ocr-jpn-vert fonts-dejavu-core fonts-ipafont-mincho fonts-ipafont-gothic qemu-user
# Text faces of the base English model (config/base-en.yaml, make model-en): Times, Helvetica,
# Courier, Century, Palatino, Bookman clones, Garamond, Libertine, Noto (all in Debian 12).
FONT_PACKAGES := fonts-urw-base35 fonts-liberation fonts-texgyre fonts-freefont-ttf fonts-linuxlibertine fonts-ebgaramond fonts-noto-core
SYS_PACKAGES += $(FONT_PACKAGES)
# The base English model's word list (lm.lexicon: /usr/share/dict/american-english).
SYS_PACKAGES += wamerican
SLURM_PACKAGES := slurmctld slurmd slurm-client munge slurmdbd mariadb-server

.PHONY: help install sysdeps demo demo-jp model-en test test-fast test-slurm test-container lint format bench clean

help:
	@echo "make demo       run the English demo workflow end to end (results/)"
	@echo "make demo-jp    run the Japanese demo workflow (results-jp/)"
	@echo "make model-en   train the base English model (results-en/), bundle in models/en/"
	@echo "make test       lint and run the test suite (includes the SLURM test)"
	@echo "make test-fast  the test suite without the slow workflow and SLURM tests"
	@echo "make bench      run the benchmarks in bench/"
	@echo "make test-container  build the workflow image with podman, run rules in it, compare with the host"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e ".[dev,slurm]"
	@touch $(STAMP)

install: $(STAMP)

# Installs what is missing when we are root with apt-get; otherwise prints the command.
sysdeps:
	@missing=""; for p in $(SYS_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
	  echo "Optional system packages are missing. Install them with:"; \
	  echo "  sudo apt-get install -y$$missing"; \
	fi

demo: sysdeps install
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml
	@echo "Report: results/report/index.html"

demo-jp: sysdeps install
	$(BIN)/snakemake --cores $(CORES) --configfile config/demo-jp.yaml
	@echo "Report: results-jp/report/index.html"

# The base English model: the same DAG on print-like synthetic lines (config/base-en.yaml);
# the bundle is copied to models/en/ only once the whole workflow has succeeded.
model-en: sysdeps install
	$(BIN)/snakemake --cores $(CORES) --configfile config/base-en.yaml
	rm -rf models/en.tmp && mkdir -p models && cp -r results-en/bundle models/en.tmp
	rm -rf models/en && mv models/en.tmp models/en
	@echo "Bundle: models/en (effocr infer --model models/en ...); report: results-en/report/index.html"

lint: install
	$(BIN)/ruff check effocr workflow_scripts tests bench
	$(BIN)/ruff format --check effocr workflow_scripts tests bench
	$(BIN)/snakefmt --check Snakefile rules/
	$(BIN)/snakemake --lint --cores 1

format: install
	$(BIN)/ruff format effocr workflow_scripts tests bench
	$(BIN)/ruff check --fix effocr workflow_scripts tests bench
	$(BIN)/snakefmt Snakefile rules/

test: sysdeps install lint
	$(BIN)/python -m pytest -ra -m "not slurm" $(PYTEST_PARALLEL)
	$(MAKE) test-slurm

test-fast: install
	$(BIN)/python -m pytest -ra -m "not slow and not slurm" $(PYTEST_PARALLEL)

test-slurm: install
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(SLURM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi; \
	fi
	$(BIN)/python -m pytest -ra -rP -m slurm

# Builds the CPU image with podman (root; podman, runc and debootstrap are installed when
# missing) from a local Debian base, runs the demo's data stage and train_recognizer inside it
# and on the host, and compares the outputs (containers/test_container.sh). Cached between runs.
# TORCH_WHEELS=DIR installs torch from local wheels, TORCH_INDEX=URL from another index;
# CONTAINER_BASE=IMAGE uses another base;
# OCI_ARCHIVE=FILE saves the image for `apptainer build ... oci-archive://FILE`.
CONTAINER_BASE ?= localhost/debian-bookworm:base
TORCH_WHEELS ?=
TORCH_INDEX ?=
OCI_ARCHIVE ?=
test-container: install
	BASE=$(CONTAINER_BASE) TORCH_WHEELS=$(TORCH_WHEELS) TORCH_INDEX=$(TORCH_INDEX) OCI_ARCHIVE=$(OCI_ARCHIVE) \
	  HOST_BIN=$(BIN) CORES=$(CORES) \
	  bash containers/test_container.sh

# The benchmarks compare with tesserocr in the same run: the `tesseract` extra, once.
bench: install
	@$(BIN)/python -c "import tesserocr" 2>/dev/null || $(BIN)/python -m pip install --quiet -e ".[dev,slurm,tesseract]"
	$(BIN)/python bench/run_all.py

clean:
	rm -rf results results-jp results-en .snakemake
