"""The workflow submitted to a real single-node Slurm through `snakemake --executor slurm`.

tests/slurm/slurm-up.sh starts munge, mariadb, slurmdbd, slurmctld and slurmd in a directory
owned by this test (stopped by PID in tests/slurm/slurm-down.sh). The workflow then runs with
a profile derived from profiles/slurm (partition `debug`, no GPUs, no conda/apptainer) on a
tiny config, and the test checks that:

* every job went through Slurm: `sacct` lists one COMPLETED job per rule, in partition debug;
* the outputs equal those of a local run of the same targets with the same config;
* a rule that fails (check_coco on a broken COCO JSON) is FAILED in sacct and the run fails;
* (test_corpus_on_slurm) a small corpus read with a bundle (`snakemake ocr`, rules/ocr.smk)
  goes out as one Slurm job per shard, each COMPLETED in sacct, with a log per shard, and the
  summary counts every page.

Needs root and the Debian packages of tests/slurm/slurm-up.sh: `make test-slurm` installs them.
Without them the test fails (it is the proof of cluster submission; it must not be skipped).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from PIL import Image

from effocr.corpus import shard_id
from effocr.utils import label_to_codepoints

REPO = Path(__file__).resolve().parents[1]
SLURM_DIR = REPO / "tests" / "slurm"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# The rules the SLURM run must execute (the furthest part of the DAG that is tested there).
RULES = {
    "check_coco",
    "split_coco",
    "crop_glyphs",
    "render_glyphs",
    "build_recognizer_dataset",
    "train_recognizer",
    "mine_hard_negatives",
    "train_recognizer_hard_negatives",
    "build_reference_index",
    "train_localizer",
    "train_lm",
    "export_bundle",
}
TARGETS = ["results/bundle"]
# Local run: only the deterministic data stage (training twice would double the test time).
LOCAL_TARGETS = ["results/recognizer_dataset/manifest.csv"]
# Outputs that must be byte-identical between the SLURM and the local run (all deterministic).
SAME_FILES = [
    "results/data/validation.json",
    "results/data/splits/train.json",
    "results/data/splits/val.json",
    "results/data/splits/test.json",
    "results/crops/manifest.csv",
    "results/renders/manifest.csv",
    "results/recognizer_dataset/manifest.csv",
]
# Manifests whose listed images must be identical too (pixel data, compared by hash).
SAME_IMAGES = ["results/crops/manifest.csv", "results/renders/manifest.csv"]
GPU_RULES = [
    "train_recognizer",
    "train_recognizer_hard_negatives",
    "train_localizer",
    "build_reference_index",
    "mine_hard_negatives",
    "train_line_detector",
]
FONTS = ["DejaVuSans", "DejaVuSerif"]
# A few characters: 11 classes x 2 fonts of renders keep the training jobs short.
CHARSET = "abcdehlnort"
# Hang guards, not speed limits: the workflow's 12 jobs take about 45 s each to be polled, and
# on a loaded 2-core machine (CI beside other work) the run took more than 360 s.
RUN_TIMEOUT_S = 720
# The corpus: line images as pages, in shards of 2 (3 shard jobs and the summary).
CORPUS_PAGES = 5
CORPUS_SHARD_SIZE = 2
PACKAGES = "slurmctld slurmd slurm-client munge slurmdbd mariadb-server"


def _require_slurm() -> None:
    """Fail (never skip) with the command that fixes a missing prerequisite."""
    if os.geteuid() != 0:
        pytest.fail(
            "the SLURM test must run as root (it starts the Slurm daemons): sudo make test-slurm"
        )
    missing = [
        b
        for b in ("slurmctld", "slurmd", "sbatch", "sacct", "munged", "slurmdbd", "mariadbd")
        if shutil.which(b) is None and not Path("/usr/sbin", b).exists()
    ]
    if missing:
        pytest.fail(
            f"missing Slurm programs {missing}: run `make test-slurm` as root, which installs "
            f"them, or `apt-get install -y {PACKAGES}`"
        )
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.fail('snakemake-executor-plugin-slurm is missing: pip install -e ".[slurm]"')


@pytest.fixture(scope="module")
def slurm_env() -> Iterator[dict[str, str]]:
    """A running single-node cluster; yields the environment that points clients at it."""
    _require_slurm()
    # Not pytest's tmp_path: its parents are 0700 and the daemons run as other users.
    cluster = Path(tempfile.mkdtemp(prefix="effocr-slurm-", dir="/tmp"))
    # What slurm-up.sh prints: its config, and its srun wrapper first on PATH (see there).
    env = dict(
        os.environ,
        SLURM_CONF=str(cluster / "etc" / "slurm.conf"),
        PATH=f"{cluster / 'bin'}{os.pathsep}{os.environ['PATH']}",
    )
    up_log = cluster.parent / f"{cluster.name}.up.log"
    try:
        with open(up_log, "w") as out:
            # Output to a file, not a pipe: a daemon holding the pipe would block the read.
            proc = subprocess.run(
                ["bash", str(SLURM_DIR / "slurm-up.sh"), str(cluster)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=150,
            )
        if proc.returncode != 0:
            pytest.fail(f"slurm-up.sh failed:\n{up_log.read_text()}\n{_daemon_logs(cluster)}")
        yield env
    finally:
        subprocess.run(
            ["bash", str(SLURM_DIR / "slurm-down.sh"), str(cluster)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(cluster, ignore_errors=True)
        up_log.unlink(missing_ok=True)


def _daemon_logs(cluster: Path) -> str:
    parts = []
    for log in sorted((cluster / "log").glob("*.log")):
        parts.append(f"--- {log.name} (tail)\n" + "\n".join(log.read_text().splitlines()[-15:]))
    return "\n".join(parts)


def _tiny_config(workdir: Path, coco: tuple[Path, Path], **overrides: dict) -> Path:
    """Copy the tiny COCO set into workdir and write a tiny config (1 epoch, 11 classes)."""
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    json_path, image_dir = coco
    shutil.copy(json_path, workdir / "lines.json")
    shutil.copytree(image_dir, workdir / "images")
    (workdir / "charset.txt").write_text(
        "".join(f"{label_to_codepoints(c)}\t{c}\n" for c in CHARSET), encoding="utf-8"
    )
    config = {
        "seed": 7,
        "language": "en",
        "results_dir": "results",
        # A user dataset (not synth.coco_json), so the workflow does not generate lines.
        "init_from": None,  # from scratch: no synthetic base for few lines
        "dataset": {"coco_json": "lines.json", "image_dir": "images"},
        "fonts": {"include": FONTS, "reference": [FONTS[1]]},
        "render": {"charset": "charset.txt", "size": 32},
        "split": {"ratios": [0.5, 0.25, 0.25]},
        "recognizer": {
            "epochs": 1,
            "num_passes": 2,
            "batch_size": 16,
            "m": 2,
            "input_size": 32,
            "hard_negatives_k": 3,
            "amp": False,
        },
        "localizer": {"epochs": 1, "batch_size": 4, "amp": False},
        "export": {"parity_lines": 2},
        "evaluate": {"tesseract": False},
        # Line images only: the line detector's rules are covered by tests/test_pages.py, and
        # the corpus run below reads with a bundle of its own.
        "line_detector": {"enabled": False},
    }
    for key, value in overrides.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path = workdir / "config" / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _test_profile(dest: Path) -> Path:
    """profiles/slurm adapted to the test cluster; fails if the keys it adapts are gone."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert set(GPU_RULES) <= set(profile["set-resources"]), "GPU rules missing in profiles/slurm"
    # The single node has partition `debug`, 2 CPUs and no GPU.
    profile["default-resources"].update(slurm_partition="debug", mem_mb=1000, runtime=30)
    for rule in GPU_RULES:
        assert profile["set-resources"][rule]["gpu"] == 1
        profile["set-resources"][rule].update(slurm_partition="debug", gpu=0, mem_mb=3000)
    # Neither conda nor an Apptainer engine is available here: jobs use this venv.
    del profile["software-deployment-method"]
    del profile["apptainer-args"]
    profile.update(
        {
            "jobs": 2,
            "max-threads": 2,
            "retries": 0,
            "latency-wait": 5,
            "slurm-init-seconds-before-status-checks": 5,
            "slurm-keep-successful-logs": True,
        }
    )
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile), encoding="utf-8")
    return dest


def _run(cmd: list[str], env: dict[str, str], timeout: int = RUN_TIMEOUT_S) -> subprocess.Popen:
    # SIGKILL on timeout: snakemake ignores SIGTERM while it polls Slurm (slurm-notes.md).
    return subprocess.Popen(
        ["timeout", "-s", "KILL", str(timeout), *cmd],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _snakemake_cmd(workdir: Path, config: Path, *extra: str) -> list[str]:
    return [
        *SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
        *extra,
    ]


def _sacct(env: dict[str, str]) -> list[dict[str, str]]:
    """All jobs of the test cluster: id, run name, rule (from the comment), state, partition."""
    fields = ["JobID", "JobName", "Comment", "State", "Partition", "NodeList", "Elapsed"]
    out = subprocess.run(
        [
            "sacct",
            "-X",
            "--parsable2",
            "--noheader",
            "--starttime",
            "2020-01-01",
            f"--format={','.join(fields)}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines() if line]


def _wait_for_states(env: dict[str, str], n_jobs: int, timeout: float = 30) -> list[dict]:
    """sacct once every job is final (slurmdbd records the end a moment after the job)."""
    end = time.monotonic() + timeout
    while True:
        jobs = _sacct(env)
        final = [j for j in jobs if j["State"] not in ("PENDING", "RUNNING", "COMPLETING")]
        if len(final) >= n_jobs or time.monotonic() > end:
            return jobs
        time.sleep(1)


def _file_hashes(root: Path, manifest: str) -> dict[str, str]:
    path = root / manifest
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    hashes = {}
    for r in rows:
        # Pixels, not file bytes: the PNG encoder may compress the same image differently.
        with Image.open(path.parent / r["path"]) as im:
            hashes[r["path"]] = hashlib.sha256(im.mode.encode() + im.tobytes()).hexdigest()
    return hashes


@pytest.mark.slurm
@pytest.mark.timeout(900)
def test_workflow_on_slurm(slurm_env: dict[str, str], tiny_coco_factory, capsys) -> None:
    started = time.monotonic()
    tiny_coco = tiny_coco_factory(
        8, "en", 0, charset=list(CHARSET), max_chars=12, font_sizes=(20, 24)
    )
    base = Path(tempfile.mkdtemp(prefix="effocr-slurm-wd-", dir="/tmp"))
    try:
        _check_workflow_on_slurm(slurm_env, tiny_coco, base, capsys)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    with capsys.disabled():
        print(f"\nSLURM test wall time (without cluster start): {time.monotonic() - started:.0f} s")


def _check_workflow_on_slurm(env: dict[str, str], coco, base: Path, capsys) -> None:
    profile = _test_profile(base / "profile")
    slurm_wd, local_wd, fail_wd = base / "slurm", base / "local", base / "fail"

    # A rule that fails on the cluster: check_coco on a COCO JSON without categories.
    fail_cfg = _tiny_config(fail_wd, coco)
    (fail_wd / "lines.json").write_text(
        json.dumps({"images": [], "annotations": []}), encoding="utf-8"
    )
    fail = _run(
        _snakemake_cmd(
            fail_wd, fail_cfg, "--profile", str(profile), "results/data/validation.json"
        ),
        env,
    )
    slurm = _run(
        _snakemake_cmd(slurm_wd, _tiny_config(slurm_wd, coco), "--profile", str(profile), *TARGETS),
        env,
    )
    # The same targets locally, meanwhile (the SLURM runs mostly wait for sacct polls).
    local = _run(
        _snakemake_cmd(
            local_wd,
            _tiny_config(local_wd, coco),
            "--workflow-profile",
            "none",
            "--cores",
            "2",
            *LOCAL_TARGETS,
        ),
        env,
    )
    outputs = {
        name: p.communicate()[0] for name, p in (("fail", fail), ("slurm", slurm), ("local", local))
    }
    assert local.returncode == 0, f"local run failed:\n{outputs['local'][-4000:]}"
    assert slurm.returncode == 0, (
        f"SLURM run failed (rc {slurm.returncode}):\n{outputs['slurm'][-6000:]}"
    )
    assert fail.returncode not in (0, 137), (
        f"the failing run did not fail:\n{outputs['fail'][-3000:]}"
    )
    assert "FAILED" in outputs["fail"], outputs["fail"][-3000:]

    jobs = _wait_for_states(env, len(RULES) + 1)
    with capsys.disabled():
        print("\nsacct -X (JobID|JobName|Comment|State|Partition|NodeList|Elapsed):")
        for j in jobs:
            print("  " + "|".join(j.values()))

    by_rule: dict[str, list[str]] = {}
    for j in jobs:
        by_rule.setdefault(j["Comment"].removeprefix("rule_"), []).append(j["State"])
        assert j["Partition"] == "debug", j
    failed = [j for j in jobs if j["State"].startswith("FAILED")]
    assert [j["Comment"] for j in failed] == ["rule_check_coco"], jobs
    completed = {j["Comment"].removeprefix("rule_") for j in jobs if j["State"] == "COMPLETED"}
    assert completed == RULES, f"rules COMPLETED in sacct {sorted(completed)} != {sorted(RULES)}"
    assert len(jobs) == len(RULES) + 1, f"unexpected extra jobs: {jobs}"
    # The rule really ran inside a Slurm job (logs of the jobstep executor).
    assert any((slurm_wd / ".snakemake" / "slurm_logs").rglob("*.log"))

    for rel in SAME_FILES:
        a, b = slurm_wd / rel, local_wd / rel
        assert a.is_file() and b.is_file(), rel
        assert a.read_bytes() == b.read_bytes(), (
            f"{rel} differs between the SLURM and the local run"
        )
    for manifest in SAME_IMAGES:
        assert _file_hashes(slurm_wd, manifest) == _file_hashes(local_wd, manifest), manifest


@pytest.mark.slurm
@pytest.mark.timeout(900)
def test_corpus_on_slurm(
    slurm_env: dict[str, str], tiny_coco_factory, tiny_bundle: Path, capsys
) -> None:
    """`snakemake ocr` (rules/ocr.smk) with a bundle: one Slurm job per shard, then the summary."""
    coco = tiny_coco_factory(8, "en", 0, charset=list(CHARSET), max_chars=12, font_sizes=(20, 24))
    base = Path(tempfile.mkdtemp(prefix="effocr-slurm-corpus-", dir="/tmp"))
    try:
        _check_corpus_on_slurm(slurm_env, coco, tiny_bundle, base, capsys)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _check_corpus_on_slurm(env: dict[str, str], coco, bundle: Path, base: Path, capsys) -> None:
    profile = _test_profile(base / "profile")
    workdir = base / "corpus"
    config = _tiny_config(
        workdir,
        coco,
        ocr={
            "input": "pages",
            "bundle": str(bundle),
            "output": "results/ocr",
            "shard_size": CORPUS_SHARD_SIZE,
        },
    )
    pages = workdir / "pages"
    pages.mkdir()
    for image in sorted((workdir / "images").glob("*.png"))[:CORPUS_PAGES]:
        shutil.copy(image, pages / image.name)
    jobs_before = len(_sacct(env))
    run = _run(_snakemake_cmd(workdir, config, "--profile", str(profile), "ocr"), env)
    output = run.communicate()[0]
    assert run.returncode == 0, f"SLURM corpus run failed:\n{output[-6000:]}"
    n_shards = -(-CORPUS_PAGES // CORPUS_SHARD_SIZE)
    jobs = _wait_for_states(env, jobs_before + n_shards + 1)[jobs_before:]
    with capsys.disabled():
        print(
            "\nsacct -X of the corpus run (JobID|JobName|Comment|State|Partition|NodeList|Elapsed):"
        )
        for j in jobs:
            print("  " + "|".join(j.values()))
    states = [(j["Comment"], j["State"]) for j in jobs]
    # Nothing of the training DAG (the bundle is a given folder): one job per shard (the
    # plugin's comment names the rule and the wildcards), then the summary.
    shards = [f"rule_ocr_shard_wildcards_{shard_id(i)}" for i in range(n_shards)]
    assert sorted(states) == sorted(
        [("rule_ocr", "COMPLETED")] + [(s, "COMPLETED") for s in shards]
    ), states
    summary = json.loads((workdir / "results" / "ocr" / "summary.json").read_text("utf-8"))
    assert summary["pages"] == CORPUS_PAGES and summary["shards"] == n_shards, summary
    assert summary["pages_failed"] == 0, summary["failures"]
    logs = sorted((workdir / "results" / "ocr" / "logs").glob("ocr_shard_*.log"))
    assert len(logs) == n_shards
    assert all("page 1/" in log.read_text("utf-8") for log in logs)


# --- The profiles themselves (run in the ordinary test suite, no Slurm needed) ---------------


def _profile(name: str) -> dict:
    return yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ["default", "slurm"])
def test_profile_entries_are_commented_and_valid(name: str) -> None:
    """Every top-level key has a comment above it, and Snakemake's parser accepts the keys."""
    lines = (REPO / "profiles" / name / "config.yaml").read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith((" ", "#", "-")):
            assert i > 0 and lines[i - 1].lstrip().startswith("#"), f"{name}: uncommented {line}"
    from snakemake.cli import get_argument_parser

    args = get_argument_parser(profiles=[str(REPO / "profiles" / name)]).parse_args([])
    if name == "slurm":
        assert args.executor == "slurm"
        assert args.software_deployment_method  # a list, parsed as one method each


def test_default_profile_does_not_undo_the_slurm_profile() -> None:
    """The workflow profile overrides --profile per key: shared keys must agree."""
    default, slurm = _profile("default"), _profile("slurm")
    for key in set(default) & set(slurm):
        assert default[key] == slurm[key], (
            f"{key}: default {default[key]!r} vs slurm {slurm[key]!r}"
        )


def test_slurm_profile_gpu_rules_exist_and_request_a_gpu(
    workflow_rule_listing: dict[str, dict],
) -> None:
    profile = _profile("slurm")
    assert isinstance(profile["software-deployment-method"], list)
    assert set(profile["set-resources"]) == set(GPU_RULES)
    rules = workflow_rule_listing
    for rule in GPU_RULES:
        assert rule in rules, (
            f"rule {rule} (in profiles/slurm set-resources) is not in the workflow"
        )
        assert rules[rule]["resources"].get("gpu") == 1, f"rule {rule} does not request gpu=1"
        assert profile["set-resources"][rule]["gpu"] == 1
        assert (
            profile["set-resources"][rule]["slurm_partition"]
            != profile["default-resources"]["slurm_partition"]
        )
    # A GPU rule left out of the profile would queue on the CPU partition and never start.
    assert {n for n, r in rules.items() if r["resources"].get("gpu")} == set(GPU_RULES)
