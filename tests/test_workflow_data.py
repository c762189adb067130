"""The data stage run by the real Snakemake in a temporary directory.

Synthetic lines (rule synth_lines) -> check_coco -> split_coco -> crop_glyphs, plus
render_glyphs (2 fonts, a small charset) -> build_recognizer_dataset; in English and in
Japanese (IPA fonts, horizontal and vertical lines, centred renders).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import missing_dependency, require_ipa_fonts
from snakemake_forks import run
from test_coco import make_lines

from effocr.utils import label_to_codepoints

REPO = Path(__file__).resolve().parents[1]
# Per language: fonts (the second is the reference), a small charset, a text using only it.
LANGUAGES = {
    "en": (
        ["DejaVuSans", "DejaVuSerif"],
        "abcdehlnort,.'",
        "the cat ate the hot bread. here, a lot 'o bread on the table. the rat ran to the end.\n",
    ),
    "jp": (
        ["ipag", "ipam"],
        "日本語の文字をよむ。たてこがき行",
        "日本語の文字をよむ。たてがきの行をよむ。よこがきの行をよむ。日本の文字の行。\n",
    ),
}


def _have_fonts(stems: list[str]) -> bool:
    from effocr.synth.fonts import find_fonts

    return {f.stem for f in find_fonts(include=stems)} >= set(stems)


def _snakemake(
    workdir: Path, config: dict, target: str, *extra: str
) -> subprocess.CompletedProcess:
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
        # Independent jobs (render_glyphs beside the line chain) side by side, each on one
        # core as with --cores 1.
        "--cores",
        "2",
        "--max-threads",
        "1",
        "--latency-wait",
        "1",
        *extra,
        target,
    ]
    return run(cmd, timeout=300)


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _tiny_config(workdir: Path, language: str = "en") -> dict:
    fonts, charset, text = LANGUAGES[language]
    (workdir / "text.txt").write_text(text * 3, encoding="utf-8")
    (workdir / "charset.txt").write_text(
        "".join(f"{label_to_codepoints(c)}\t{c}\n" for c in charset), encoding="utf-8"
    )
    config = {
        "seed": 7,
        "language": language,
        "results_dir": "results",
        "init_from": None,  # from scratch: no synthetic base for few lines
        "dataset": {"coco_json": "lines/lines.json", "image_dir": "lines/images"},
        "synth": {
            "coco_json": "lines/lines.json",
            "n_lines": 10,
            "text_source": "text.txt",
            "max_chars": 16,
            "font_sizes": [20, 24],
        },
        "fonts": {"include": fonts, "reference": [fonts[1]]},
        "render": {"charset": "charset.txt", "size": 32},
        "split": {"ratios": [0.6, 0.2, 0.2]},
    }
    if language == "jp":
        config["synth"]["vertical_fraction"] = 0.5
    return config


@pytest.mark.slow
@pytest.mark.parametrize("language", ["en", "jp"])
def test_data_stage(tmp_path, language):
    fonts, charset, _ = LANGUAGES[language]
    if language == "jp":
        require_ipa_fonts()
    if not _have_fonts(fonts):
        missing_dependency(f"fonts {fonts} are not installed (`make sysdeps` installs them)")
    config = _tiny_config(tmp_path, language)
    result = _snakemake(tmp_path, config, "results/recognizer_dataset/manifest.csv")
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
    # Every charset character rendered once per font (both fonts cover the charset).
    per_font = Counter(r["origin"] for r in renders)
    assert sorted(per_font) == sorted(fonts)
    assert set(per_font.values()) == {len(charset)}
    assert {r["split"] for r in renders} == {"train"}
    assert {r["codepoints"] for r in renders} == {label_to_codepoints(c) for c in charset}
    assert summary["classes"] == len(charset)
    assert summary["real_only_classes"] == []
    assert sum(1 for r in dataset if r["source"] == "real") == len(crops)
    for r in dataset[:: max(1, len(dataset) // 20)]:
        assert (res / "recognizer_dataset" / r["path"]).is_file()
    for rule in ("check_coco", "split_coco", "crop_glyphs", "build_recognizer_dataset"):
        assert (res / "logs" / f"{rule}.log").is_file()
        assert (res / "benchmarks" / f"{rule}.tsv").is_file()
    if language == "jp":
        _check_japanese(tmp_path, renders, crops)


def _check_japanese(workdir: Path, renders: list[dict], crops: list[dict]) -> None:
    """Centred square renders; both orientations; vertical lines cropped full width."""
    from PIL import Image

    res = workdir / "results"
    for r in renders:
        with Image.open(res / "recognizer_dataset" / r["path"]) as im:
            assert im.width == im.height, r["path"]  # `centered` mode: a square
            ink = np.asarray(im.convert("L")) < 255  # any ink, as the renderer centres it
        ys, xs = np.nonzero(ink)
        assert len(xs), r["path"]
        h, w = ink.shape
        # The ink's margins are the same on both sides (within a pixel of rounding).
        assert abs(xs.min() - (w - 1 - xs.max())) <= 1 and abs(ys.min() - (h - 1 - ys.max())) <= 1
    lines = {
        im["file_name"]: im
        for im in json.loads((workdir / "lines" / "lines.json").read_text())["images"]
    }
    assert all(" " not in im["text"] for im in lines.values())  # no spaces in Japanese
    vertical = {name for name, im in lines.items() if im["height"] > im["width"]}
    assert 0 < len(vertical) < len(lines), "expected both horizontal and vertical lines"
    for r in crops:
        line = lines[r["origin"]]
        with Image.open(res / "crops" / r["path"]) as im:
            if r["origin"] in vertical:
                assert im.width == line["width"] and im.height < line["height"], r["path"]
            else:
                assert im.height == line["height"] and im.width < line["width"], r["path"]


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
        "init_from": None,  # from scratch: no synthetic base for few lines
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
        "init_from": None,  # from scratch: no synthetic base for few lines
        "dataset": {"coco_json": "user/lines.json", "image_dir": "user/images"},
        "render": {"charset": "en"},
    }
    result = _snakemake(tmp_path, config, "results/data/splits/train.json")
    assert result.returncode != 0
    log = (tmp_path / "results" / "logs" / "check_coco.log").read_text()
    assert "[image 2]: 2 char boxes but 3 non-space characters" in log
    assert not (tmp_path / "results" / "data").exists() or not any(
        (tmp_path / "results" / "data").rglob("*.json")
    )
    assert json_path.read_bytes() == before
