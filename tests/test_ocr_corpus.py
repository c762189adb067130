"""The corpus run: `snakemake ocr` reads a folder of pages in shards (effocr.corpus, rules/ocr.smk).

The planning tests need nothing; the workflow tests run the real Snakemake on a folder of tiny
line images ("pages" until page reading lands) and bad pages, with the real tiny bundle (ONNX
Runtime, FAISS), and count the shard jobs Snakemake plans and runs.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import yaml
from lxml import etree
from page_formats_check import assert_valid, hocr_problems
from PIL import Image
from snakemake_forks import run

from effocr.corpus import (
    CorpusPage,
    list_pages,
    plan_shards,
    read_records,
    summarize,
    summary_table,
)
from effocr.utils import EffOCRError

REPO = Path(__file__).resolve().parents[1]


def _pages(names: list[str]) -> list[CorpusPage]:
    return [CorpusPage(f"in/{n}.png", n) for n in sorted(names)]


def _record(plan, sid: str) -> dict:
    return {"pages": plan.shards[sid]}


# --- planning (no Snakemake) ------------------------------------------------------------------


def test_plan_cuts_sorted_pages_into_shards() -> None:
    plan = plan_shards(_pages([f"p{i:02d}" for i in range(7)]), {}, 3)
    assert list(plan.shards) == ["00000", "00001", "00002"]
    assert [p.name for p in plan.shards["00002"]] == ["p06"]
    assert plan.done == set() and plan.pending == ["00000", "00001", "00002"]


def test_replanning_after_an_interruption_keeps_unfinished_shards_as_they_were() -> None:
    pages = _pages([f"p{i:02d}" for i in range(10)])
    first = plan_shards(pages, {}, 2)
    # Shards 1 and 3 finished before the interruption.
    records = {s: _record(first, s) for s in ("00001", "00003")}
    again = plan_shards(pages, records, 2)
    assert again.shards == first.shards
    assert again.done == {"00001", "00003"}
    assert again.pending == ["00000", "00002", "00004"]
    # What a cluster job plans while shard 2 has finished meanwhile: the same.
    records["00002"] = _record(first, "00002")
    assert plan_shards(pages, records, 2).shards == first.shards


def test_pages_added_anywhere_go_into_new_shards_only() -> None:
    pages = _pages([f"p{i:02d}" for i in range(0, 10, 2)])
    first = plan_shards(pages, {}, 2)
    records = {s: _record(first, s) for s in first.shards}
    # New pages that sort before, between and after the old ones.
    more = _pages([p.name for p in pages] + ["a", "p03", "z"])
    plan = plan_shards(more, records, 2)
    assert plan.done == set(first.shards)
    for sid in first.shards:
        assert plan.shards[sid] == first.shards[sid]
    assert plan.pending == ["00003", "00004"]
    assert [p.name for s in plan.pending for p in plan.shards[s]] == ["a", "p03", "z"]


def test_a_shard_that_lost_a_page_is_planned_again() -> None:
    pages = _pages(["a", "b", "c", "d"])
    first = plan_shards(pages, {}, 2)
    records = {s: _record(first, s) for s in first.shards}
    plan = plan_shards([p for p in pages if p.name != "a"], records, 2)
    assert plan.done == {"00001"}
    assert [p.name for p in plan.shards["00000"]] == ["b"]


def test_a_duplicate_output_name_is_a_problem_of_that_page_only() -> None:
    pages = [CorpusPage("in/a.png", "a"), CorpusPage("in/a.tif", "a"), CorpusPage("in/b.png", "b")]
    plan = plan_shards(pages, {}, 5)
    assert [p.image for p in plan.shards["00000"]] == ["in/a.png", "in/b.png"]
    assert [p["image"] for p in plan.problems] == ["in/a.tif"]
    assert "in/a.png" in plan.problems[0]["error"]
    with pytest.raises(EffOCRError, match="shard_size"):
        plan_shards(pages, {}, 0)


# --- listing ----------------------------------------------------------------------------------


def test_list_pages_folder_list_file_and_mets(tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    for rel in ("b.png", "a.TIF", "book/001.jpg", ".hidden/x.png", "notes.txt"):
        (scans / rel).parent.mkdir(parents=True, exist_ok=True)
        (scans / rel).write_bytes(b"")
    found = list_pages(scans, recursive=True, mets_group="DEFAULT")
    assert [p.name for p in found] == ["a", "b", "book/001"]
    flat = list_pages(scans, recursive=False, mets_group="DEFAULT")
    assert [p.name for p in flat] == ["a", "b"]

    listing = tmp_path / "pages.txt"
    listing.write_text("# pages\nscans/b.png\n\n/elsewhere/c.png\nscans/b.png\n", "utf-8")
    found = list_pages(listing, recursive=True, mets_group="DEFAULT")
    assert [(p.image, p.name) for p in found] == [
        ("/elsewhere/c.png", "c"),
        (str(tmp_path / "scans/b.png"), "scans/b"),
    ]

    mets = tmp_path / "mets.xml"
    mets.write_text(
        '<mets:mets xmlns:mets="http://www.loc.gov/METS/" xmlns:xlink="http://www.w3.org/1999/xlink">'
        "<mets:fileSec>"
        '<mets:fileGrp USE="OCR-D-IMG"><mets:file ID="f1"><mets:FLocat LOCTYPE="URL" '
        'xlink:href="scans/book/001.jpg"/></mets:file></mets:fileGrp>'
        '<mets:fileGrp USE="THUMBS"><mets:file ID="t1"><mets:FLocat LOCTYPE="URL" '
        'xlink:href="thumb.png"/></mets:file></mets:fileGrp>'
        "</mets:fileSec></mets:mets>",
        "utf-8",
    )
    found = list_pages(mets, recursive=True, mets_group="OCR-D-IMG")
    assert [p.name for p in found] == ["scans/book/001"]
    with pytest.raises(EffOCRError, match=r"no METS fileGrp USE='MAX'.*OCR-D-IMG"):
        list_pages(mets, recursive=True, mets_group="MAX")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EffOCRError, match="no page images"):
        list_pages(tmp_path / "empty", recursive=True, mets_group="DEFAULT")
    with pytest.raises(EffOCRError, match="neither a folder nor a file"):
        list_pages(tmp_path / "missing", recursive=True, mets_group="DEFAULT")


def test_summary_counts_and_lists_failures(tmp_path: Path) -> None:
    rec = {
        "shard": "00000",
        "seconds": 2.0,
        "pages": [
            {"image": "a.png", "name": "a", "status": "ok", "lines": 1, "chars": 10},
            {"image": "b.png", "name": "b", "status": "failed", "lines": 0, "chars": 0,
             "error": "not a readable image"},
            {"image": "c.png", "name": "c", "status": "no_text", "lines": 0, "chars": 0,
             "error": "no text found on the page"},
        ],
    }  # fmt: skip
    path = tmp_path / "00000.json"
    path.write_text(json.dumps(rec), "utf-8")
    problems = [{"image": "a.tif", "error": "output name 'a' is also that of a.png"}]
    s = summarize([path], problems)
    assert (s["pages"], s["pages_ok"], s["pages_failed"], s["pages_no_text"]) == (4, 1, 2, 1)
    assert (s["lines"], s["characters"], s["shards"]) == (1, 10, 1)
    assert s["pages_per_s"] == pytest.approx(2.0)
    assert {f["image"] for f in s["failures"]} == {"b.png", "a.tif"}
    table = summary_table(s)
    assert "b.png: not a readable image" in table and "c.png: no text found" in table


# --- the workflow -----------------------------------------------------------------------------


def _huge_png(path: Path) -> None:
    """A PNG header declaring 60000 x 60000 pixels (over PIL's limit), and no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def _snakemake_cmd(workdir: Path, config: Path, *args: str) -> list[str]:
    return [
        *(sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")),
        *("--directory", str(workdir), "--configfile", str(REPO / "config" / "config.yaml")),
        # As the default profile (profiles/default), which a test run leaves out.
        *(str(config), "--workflow-profile", "none", "--rerun-incomplete", *args),
    ]


def _snakemake(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = _snakemake_cmd(workdir, config, "--cores", "2", *args)
    return run(cmd, timeout=600)


def _job_counts(output: str) -> dict[str, int]:
    """The "Job stats" table of a run or dry run, as {rule: jobs} (empty: nothing to do)."""
    if "Job stats:" not in output:
        return {}
    lines = output[output.index("Job stats:") :].splitlines()[3:]
    counts = {}
    for line in lines:
        name, _, count = line.strip().rpartition(" ")
        if not name or name.strip() == "total":
            break
        counts[name.strip()] = int(count)
    return counts


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_corpus_run_shards_reruns_and_additions(
    tiny_bundle: Path, tiny_coco_factory, tmp_path: Path
) -> None:
    _, image_dir = tiny_coco_factory(8, "en", 5, degrade=False, max_chars=14)
    lines = sorted(image_dir.glob("*.png"))
    scans = tmp_path / "scans"
    (scans / "vol2").mkdir(parents=True)
    for i, line in enumerate(lines[:5]):
        shutil.copy(line, scans / ("vol2" if i == 4 else ".") / f"p{i}.png")
    (scans / "p5_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (scans / "p6_empty.png").write_bytes(b"")
    _huge_png(scans / "p7_huge.png")
    Image.new("RGB", (120, 32), "white").save(scans / "p8_blank.png")
    before = {p: p.read_bytes() for p in scans.rglob("*") if p.is_file()}

    out = tmp_path / "corpus"
    config = tmp_path / "ocr.yaml"
    ocr = {
        "input": str(scans),
        "bundle": str(tiny_bundle),
        "output": str(out),
        "shard_size": 3,
        "formats": ["page", "alto", "hocr", "txt"],
    }
    config.write_text(yaml.safe_dump({"ocr": ocr}), "utf-8")
    wd = tmp_path / "wd"
    wd.mkdir()

    # 9 pages in shards of 3: three shard jobs and the summary; nothing of the training DAG.
    plan = _snakemake(wd, config, "ocr", "-n")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert _job_counts(plan.stdout + plan.stderr) == {"ocr": 1, "ocr_shard": 3}

    # Interrupted (Ctrl-C) once a shard is done, one job at a time.
    first = subprocess.Popen(
        _snakemake_cmd(wd, config, "--cores", "1", "ocr"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl-C as a terminal delivers it: a suite started in the background (`make test &`)
        # inherits SIGINT ignored, and Python then never turns it into KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # Interrupted the moment Snakemake reports a shard finished, read from its own output as it
    # is written: the log file lags, and on a fast machine all three shards were done before a
    # poll of it saw the first. The next shard has then just started and is cut short.
    seen = []
    for line in first.stdout:
        seen.append(line)
        if re.search(r"Finished jobid: \d+ \(Rule: ocr_shard\)", line):
            first.send_signal(signal.SIGINT)
            break
    first_log = "".join(seen) + first.communicate(timeout=120)[0]
    # Shards Snakemake saw finish. A record written while Snakemake was stopping belongs to
    # a job it never saw finish: incomplete to it, and run again (--rerun-incomplete).
    n_finished = len(re.findall(r"Finished jobid: \d+ \(Rule: ocr_shard\)", first_log))
    assert 1 <= n_finished < 3, first_log[-3000:]
    assert not (out / "summary.json").exists()
    records_before = {p.stem: p.stat().st_mtime_ns for p in (out / "shards").glob("*.json")}

    # The rerun plans and runs only the shards that did not finish.
    plan = _snakemake(wd, config, "ocr", "-n")
    expected = {"ocr": 1, "ocr_shard": 3 - n_finished}
    assert plan.returncode == 0, (plan.stdout + plan.stderr)[-3000:]
    assert _job_counts(plan.stdout + plan.stderr) == expected
    run = _snakemake(wd, config, "ocr")
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert _job_counts(log) == expected
    untouched = [
        sid
        for sid, mtime in records_before.items()
        if (out / "shards" / f"{sid}.json").stat().st_mtime_ns == mtime
    ]
    assert len(untouched) == n_finished, (records_before, untouched)

    summary = json.loads((out / "summary.json").read_text("utf-8"))
    assert summary["pages"] == 9 and summary["shards"] == 3
    failed = {Path(f["image"]).name: f["error"] for f in summary["failures"]}
    assert set(failed) == {"p5_corrupt.png", "p6_empty.png", "p7_huge.png"}
    assert "not a readable image" in failed["p6_empty.png"]
    assert "decode" in failed["p5_corrupt.png"] or "readable" in failed["p5_corrupt.png"]
    assert "too large" in failed["p7_huge.png"]
    assert [Path(f["image"]).name for f in summary["no_text"]] == ["p8_blank.png"]
    assert summary["pages_ok"] == 5 and summary["lines"] == 5
    assert summary["characters"] > 5 and summary["pages_per_s"] > 0
    assert "failed pages:" in log and "p7_huge.png" in log  # the table, printed
    assert (out / "summary.txt").read_text("utf-8").startswith("pages")
    # Every readable page has its files (the subfolder mirrored), valid against the schemas.
    for name in ("p0", "p1", "p2", "p3", "vol2/p4", "p8_blank"):
        for rel in (f"page/{name}.xml", f"alto/{name}.xml", f"hocr/{name}.hocr"):
            assert (out / rel).is_file(), rel
        assert_valid((out / "page" / f"{name}.xml").read_bytes(), "page")
        assert_valid((out / "alto" / f"{name}.xml").read_bytes(), "alto")
        assert not hocr_problems((out / "hocr" / f"{name}.hocr").read_bytes())
    xml = etree.parse(str(out / "page" / "vol2" / "p4.xml"))
    image = xml.find(".//{*}Page").get("imageFilename")
    assert (out / "page" / "vol2" / image).resolve() == (scans / "vol2" / "p4.png").resolve()
    assert not (out / "page" / "p5_corrupt.xml").exists()
    assert (out / "text" / "p0.txt").read_text("utf-8").strip()
    # A log and a benchmark per shard job.
    assert len(list((out / "logs").glob("ocr_shard_*.log"))) == 3
    assert len(list((out / "benchmarks").glob("ocr_shard_*.tsv"))) == 3
    assert "page 3/3" in (out / "logs" / "ocr_shard_00000.log").read_text("utf-8")
    assert before == {p: p.read_bytes() for p in scans.rglob("*") if p.is_file()}

    # Nothing to do when nothing changed.
    again = _snakemake(wd, config, "ocr", "-n")
    assert again.returncode == 0 and _job_counts(again.stdout + again.stderr) == {}

    records = read_records(out)
    # Pages added to the folder (sorting before and between the others) run in a new shard.
    shutil.copy(lines[5], scans / "a_new.png")
    shutil.copy(lines[6], scans / "p2b.png")
    more = _snakemake(wd, config, "ocr")
    assert more.returncode == 0, (more.stdout + more.stderr)[-4000:]
    assert _job_counts(more.stdout + more.stderr) == {"ocr": 1, "ocr_shard": 1}
    new = read_records(out)
    assert {s: new[s]["pages"] for s in records} == {s: records[s]["pages"] for s in records}
    assert [Path(p.image).name for p in new["00003"]["pages"]] == ["a_new.png", "p2b.png"]
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    assert summary["pages"] == 11 and summary["pages_ok"] == 7 and summary["shards"] == 4


def test_ocr_target_without_input_names_the_keys(tmp_path: Path) -> None:
    config = tmp_path / "none.yaml"
    config.write_text("{}\n", "utf-8")
    proc = _snakemake(tmp_path, config, "ocr", "-n")
    assert proc.returncode != 0
    assert "the ocr target needs ocr.input" in proc.stdout + proc.stderr
