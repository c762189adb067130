"""The config schema: defaults, validation messages, and agreement with the shipped configs."""

import logging
import re
from pathlib import Path

import pytest
import yaml

from effocr.config import (
    RENAMED_KEYS,
    SECTION_TYPES,
    RunSection,
    config_sections,
    deep_merge,
    load_config,
    load_schema,
    rename_deprecated_keys,
    step_sections,
    validate_config,
)
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


# Renamed keys (issue 13 item 6): the old spelling still works, with a deprecation message.
@pytest.mark.parametrize(
    ("old", "new", "value"),
    [(o, n, v) for (o, n), v in zip(RENAMED_KEYS.items(), (3, 0.5, 2, True, 4), strict=True)],
)
def test_deprecated_key_is_read_under_its_new_name(old, new, value, caplog):
    config = {old[0]: {old[1]: value}}
    with caplog.at_level(logging.WARNING, logger="effocr.config"):
        filled = validate_config(config, source="my.yaml")
    assert filled[new[0]][new[1]] == value and old[1] not in filled[new[0]]
    assert config == {old[0]: {old[1]: value}}  # the caller's config is not modified
    assert f"my.yaml: {'.'.join(old)} is deprecated, read as {'.'.join(new)}" in caplog.text


def test_deprecated_key_beside_its_new_name_is_an_error():
    with pytest.raises(EffOCRError, match="infer.threads and infer.workers are both set"):
        validate_config({"infer": {"threads": 2, "workers": 3}})


def test_rename_deprecated_keys_in_place_for_the_workflow(tmp_path):
    # rules/common.smk renames in the Snakemake config itself, so Snakemake's own validate
    # (additionalProperties: false) and the rules' params see only the new names.
    config = {"recognizer": {"hardneg_k": 5, "epochs": 2}, "seed": 1}
    messages = rename_deprecated_keys(config)
    assert config == {"recognizer": {"hard_negatives_k": 5, "epochs": 2}, "seed": 1}
    assert len(messages) == 1 and rename_deprecated_keys(config) == []


def test_renamed_keys_point_at_schema_keys():
    schema = load_schema()
    for old, new in RENAMED_KEYS.items():
        section = schema["properties"][new[0]]["properties"]
        assert new[1] in section and old[1] not in section, (old, new)


# Typed sections (issue 13 item 5): the schema's keys, no defaults of their own, frozen.
def test_sections_have_exactly_the_schema_keys_and_no_defaults():
    import dataclasses

    properties = load_schema()["properties"]
    for name, cls in SECTION_TYPES.items():
        names = [cls.key(f.name) for f in dataclasses.fields(cls)]
        expected = ["seed", "language"] if name == "run" else list(properties[name]["properties"])
        assert names == expected, name
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING, (name, f.name)
            assert f.default_factory is dataclasses.MISSING, (name, f.name)


def test_sections_are_built_from_the_validated_config_and_frozen():
    import dataclasses

    sections = config_sections({"seed": 7, "recognizer": {"hardneg_k": 3, "augment": {"a": [1]}}})
    assert sections.run == RunSection(seed=7, language="en")
    assert sections.recognizer.hard_negatives_k == 3  # deprecated key renamed first
    assert (
        sections.recognizer.epochs
        == load_schema()["properties"]["recognizer"]["properties"]["epochs"]["default"]
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        sections.recognizer.epochs = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        sections.recognizer.augment["a"] = 2  # type: ignore[index]
    assert sections.fonts.exclude[0] == "cmex*" and isinstance(sections.fonts.exclude, tuple)
    # Plain data again for a rule's params, and the same section back in the workflow script.
    params = sections.params("recognizer", "run")
    assert params["recognizer"]["augment"] == {"a": [1]}
    assert params["run"] == {"seed": 7, "language": "en"}
    typed = step_sections({**params, "code": "abc"})
    assert typed == sections.pick("recognizer", "run")  # a step sees only what its rule passed


def test_section_from_an_unvalidated_dict_names_the_problem():
    with pytest.raises(
        EffOCRError, match=r"config section crops: missing \['padding', 'jitter', 'jitter_range'\]"
    ):
        SECTION_TYPES["crops"].from_dict({"full_height": True})
