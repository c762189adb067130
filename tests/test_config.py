"""The config schema: defaults, validation messages, and agreement with the shipped configs."""

import re
from pathlib import Path

import pytest
import yaml

from effocr.config import deep_merge, load_config, load_schema, validate_config
from effocr.utils import EffOCRError

REPO = Path(__file__).resolve().parents[1]


def _walk(schema, prefix=""):
    for key, sub in schema.get("properties", {}).items():
        yield prefix + key, sub
        if sub.get("type") == "object":
            yield from _walk(sub, prefix + key + "/")


def test_every_key_has_description_and_default():
    missing = [
        k for k, sub in _walk(load_schema()) if "description" not in sub or "default" not in sub
    ]
    assert missing == []


def test_defaults_filled_from_empty_config():
    config = validate_config({})
    assert config["language"] == "en"
    assert config["recognizer"]["m"] == 4
    assert config["split"]["ratios"] == [0.7, 0.15, 0.15]


def test_user_values_win_over_defaults():
    config = validate_config({"recognizer": {"m": 8}})
    assert config["recognizer"]["m"] == 8
    assert config["recognizer"]["temperature"] == 0.1


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"recognizer": {"m": "four"}}, "recognizer/m"),
        ({"language": "fr"}, "language"),
        ({"split": {"ratios": [0.5, 0.5]}}, "split/ratios"),
        ({"recognizer": {"no_such_key": 1}}, "recognizer"),
    ],
)
def test_invalid_config_names_the_key(config, key):
    with pytest.raises(EffOCRError) as exc:
        validate_config(config)
    assert f"  {key}:" in str(exc.value)


@pytest.mark.parametrize(
    "path", sorted(p for p in (REPO / "config").glob("*.yaml") if p.name != "schema.yaml")
)
def test_shipped_configs_are_valid(path):
    load_config(path)


def _readme_sections(readme: str) -> dict[str, str]:
    """``## a, b`` sections of config/README.md, keyed by each name in the header."""
    sections: dict[str, str] = {}
    for part in re.split(r"^## ", readme, flags=re.M)[1:]:
        header, _, body = part.partition("\n")
        for name in header.split(","):
            sections[name.strip()] = body
    return sections


def test_config_readme_mentions_every_key():
    # Each key is looked up in its own section: a leaf such as `epochs` exists under several
    # sections, so a row deleted from one would still be found in another by a global search.
    sections = _readme_sections((REPO / "config" / "README.md").read_text(encoding="utf-8"))

    def documented(key: str) -> bool:
        top, _, leaf = key.partition("/")
        leaf = leaf.replace("/", ".")  # a nested section's key: `dataset.import.margin`
        if not leaf:
            return top in sections or f"`{top}`" in sections["Top level"]
        body = sections.get(top, "")
        return f"`{top}.{leaf}`" in body or f"`{leaf}`" in body

    missing = [k for k, _ in _walk(load_schema()) if not documented(k)]
    assert missing == []


def test_load_config_reports_bad_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1, 2\n")
    with pytest.raises(EffOCRError, match="bad.yaml: not valid YAML"):
        load_config(bad)


def test_deep_merge_does_not_modify_inputs():
    base = {"a": {"b": 1, "c": 2}}
    update = {"a": {"b": 3}}
    merged = deep_merge(base, update)
    assert merged == {"a": {"b": 3, "c": 2}}
    assert base == {"a": {"b": 1, "c": 2}}
    assert yaml.safe_dump(update) == "a:\n  b: 3\n"
