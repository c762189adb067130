"""The data stage run by the real Snakemake in a temporary directory.

Synthetic lines (rule synth_lines) -> validate_coco -> split_coco -> crop_glyphs, plus
render_glyphs (2 fonts, a small charset) -> build_recognizer_dataset.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from test_coco import make_lines

from effocr.utils import label_to_codepoints

REPO = Path(__file__).resolve().parents[1]
FONTS = ["DejaVuSans", "DejaVuSerif"]
CHARSET = "abcdehlnort,.'"
TEXT = "the cat ate the hot bread. here, a lot 'o bread on the table. the rat ran to the end.\n"


def _snakemake(workdir: Path, config: dict, target: str) -> subprocess.CompletedProcess:
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config" / "config.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config_path),
        "--workflow-profile",
        "none",
        "--cores",
        "1",
        "--latency-wait",
        "1",
        target,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _tiny_config(workdir: Path) -> dict:
    (workdir / "text.txt").write_text(TEXT * 3, encoding="utf-8")
    (workdir / "charset.txt").write_text(
        "".join(f"{label_to_codepoints(c)}\t{c}\n" for c in CHARSET), encoding="utf-8"
    )
    return {
        "seed": 7,
        "language": "en",
        "results_dir": "results",
        "dataset": {"coco_json": "lines/lines.json", "image_dir": "lines/images"},
        "synth": {
            "coco_json": "lines/lines.json",
            "n_lines": 10,
            "text_source": "text.txt",
            "max_chars": 16,
            "font_sizes": [20, 24],
        },
        "fonts": {"include": FONTS, "reference": [FONTS[1]]},
        "render": {"charset": "charset.txt", "size": 32},
        "split": {"ratios": [0.6, 0.2, 0.2]},
    }


@pytest.mark.slow
def test_data_stage(tmp_path):
    result = _snakemake(tmp_path, _tiny_config(tmp_path), "results/recognizer_dataset/manifest.csv")
    assert result.returncode == 0, result.stderr[-4000:]
    res = tmp_path / "results"

    validation = json.loads((res / "data" / "validation.json").read_text())
    assert validation["valid"] and validation["images"] == 10

    # Crops per split == non-space characters of that split's lines; no line in two splits.
    crops = _csv(res / "crops" / "manifest.csv")
    line_split: dict[str, str] = {}
    for split in ("train", "val", "test"):
        coco = json.loads((res / "data" / "splits" / f"{split}.json").read_text())
        n_chars = sum(len("".join(img["text"].split())) for img in coco["images"])
        assert sum(1 for r in crops if r["split"] == split) == n_chars
        for img in coco["images"]:
            assert img["file_name"] not in line_split
            line_split[img["file_name"]] = split
    assert len(line_split) == 10
    assert all(line_split[r["origin"]] == r["split"] for r in crops)

    dataset = _csv(res / "recognizer_dataset" / "manifest.csv")
    summary = json.loads((res / "recognizer_dataset" / "summary.json").read_text())
    renders = [r for r in dataset if r["source"] == "render"]
    # Every charset character rendered once per font (both DejaVu fonts cover ASCII).
    per_font = Counter(r["origin"] for r in renders)
    assert sorted(per_font) == FONTS
    assert set(per_font.values()) == {len(CHARSET)}
    assert {r["split"] for r in renders} == {"train"}
    assert summary["classes"] == len(CHARSET)
    assert summary["real_only_classes"] == []
    assert sum(1 for r in dataset if r["source"] == "real") == len(crops)
    for r in dataset[:: max(1, len(dataset) // 20)]:
        assert (res / "recognizer_dataset" / r["path"]).is_file()
    for rule in ("validate_coco", "split_coco", "crop_glyphs", "build_recognizer_dataset"):
        assert (res / "logs" / f"{rule}.log").is_file()
        assert (res / "benchmarks" / f"{rule}.tsv").is_file()


@pytest.mark.slow
def test_user_dataset_with_split_files(tmp_path):
    json_path, _, _ = make_lines(
        tmp_path / "user", ["ab c", "de", "f, gé", "ba"], char_name="character"
    )
    before = json_path.read_bytes()
    files = {}
    for split, names in {"train": [0, 1], "val": [2], "test": [3]}.items():
        files[split] = f"{split}.txt"
        (tmp_path / files[split]).write_text("".join(f"line_{i}.png\n" for i in names))
    config = {
        "dataset": {"coco_json": "user/lines.json", "image_dir": "user/images"},
        "split": {"files": files},
        "crops": {"padding": 2},
    }
    result = _snakemake(tmp_path, config, "results/crops/manifest.csv")
    assert result.returncode == 0, result.stderr[-4000:]
    crops = _csv(tmp_path / "results" / "crops" / "manifest.csv")
    assert Counter(r["split"] for r in crops) == {"train": 5, "val": 4, "test": 2}
    validation_path = tmp_path / "results" / "data" / "validation.json"
    validation = json.loads(validation_path.read_text())
    # Characters outside the charset (here the profile's `en`) are warnings, not violations.
    assert validation["outside_charset"] == {"U+00E9": {"char": "é", "count": 1}}
    assert json_path.read_bytes() == before
    validated_at = validation_path.stat().st_mtime_ns

    # Changing a split file reruns the split (and only what depends on it).
    (tmp_path / "test.txt").write_text("line_3.png\nline_2.png\n")
    (tmp_path / "val.txt").write_text("")
    result = _snakemake(tmp_path, config, "results/crops/manifest.csv")
    assert result.returncode == 0, result.stderr[-4000:]
    assert validation_path.stat().st_mtime_ns == validated_at
    crops = _csv(tmp_path / "results" / "crops" / "manifest.csv")
    assert Counter(r["split"] for r in crops) == {"train": 5, "test": 6}


@pytest.mark.slow
def test_invalid_coco_fails_without_output(tmp_path):
    json_path, _, coco = make_lines(tmp_path / "user", ["ab c", "de"])
    coco["images"][1]["text"] = "def"
    json_path.write_text(json.dumps(coco), encoding="utf-8")
    before = json_path.read_bytes()
    config = {
        "dataset": {"coco_json": "user/lines.json", "image_dir": "user/images"},
        "render": {"charset": "en"},
    }
    result = _snakemake(tmp_path, config, "results/data/splits/train.json")
    assert result.returncode != 0
    log = (tmp_path / "results" / "logs" / "validate_coco.log").read_text()
    assert "[image 2]: 2 char boxes but 3 non-space characters" in log
    assert not (tmp_path / "results" / "data").exists() or not any(
        (tmp_path / "results" / "data").rglob("*.json")
    )
    assert json_path.read_bytes() == before
