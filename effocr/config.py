"""Workflow configuration: the JSON schema in `config/schema.yaml`, defaults and validation.

The same schema validates the config in the Snakefile (via `snakemake.utils.validate`) and in
the `effocr` command line, so a key means the same thing everywhere.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import yaml

from effocr.utils import EffOCRError

if TYPE_CHECKING:
    import jsonschema

_REPO_SCHEMA = Path(__file__).resolve().parents[1] / "config" / "schema.yaml"
LOG = logging.getLogger(__name__)

# Keys renamed after users had written configs with them: old key path -> new key path. The
# old spelling is still read (with a deprecation message), here and nowhere else.
RENAMED_KEYS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("recognizer", "hardneg_k"): ("recognizer", "hard_negatives_k"),
    ("recognizer", "hn_ratio"): ("recognizer", "hard_negatives_ratio"),
    ("recognizer", "hn_epochs"): ("recognizer", "hard_negatives_epochs"),
    ("recognizer", "hn_fine_tune"): ("recognizer", "hard_negatives_fine_tune"),
    ("infer", "threads"): ("infer", "workers"),
}


def rename_deprecated_keys(config: dict, *, source: str = "config") -> list[str]:
    """Move every key of `RENAMED_KEYS` found in `config` to its new name, in place.

    Returns the deprecation messages (also logged as warnings).

    Raises:
        EffOCRError: a key is given under both its old and its new name.
    """
    messages = []
    for old, new in RENAMED_KEYS.items():
        section = config
        for key in old[:-1]:
            section = section.get(key) if isinstance(section, dict) else None
        if not isinstance(section, dict) or old[-1] not in section:
            continue
        old_name, new_name = ".".join(old), ".".join(new)
        if new[-1] in section:
            raise EffOCRError(
                f"{source}: {old_name} and {new_name} are both set; {old_name} is the "
                f"deprecated name of {new_name}, keep only {new_name}"
            )
        section[new[-1]] = section.pop(old[-1])
        message = f"{source}: {old_name} is deprecated, read as {new_name}; rename it"
        LOG.warning(message)
        messages.append(message)
    return messages


def schema_path() -> Path:
    """Path of the config schema: the repository's `config/schema.yaml`, else the packaged copy."""
    if _REPO_SCHEMA.exists():
        return _REPO_SCHEMA
    return Path(str(resources.files("effocr") / "resources" / "schema.yaml"))


def load_schema() -> dict:
    """Load the config schema."""
    # libyaml's safe loader when there is one: the same result, a fifth of the time (library
    # code reads the schema's defaults, e.g. on opening a localizer, and pays it per process).
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(schema_path(), encoding="utf-8") as f:
        return yaml.load(f, Loader=loader)


def section_defaults(name: str) -> dict:
    """The schema's defaults of config section `name` (what a config without it gets)."""
    return copy.deepcopy(_section_defaults(name))


@functools.cache
def _section_defaults(name: str) -> dict:
    return _fill_defaults(load_schema()["properties"][name], {})


def _fill_defaults(schema: dict, instance: Any) -> Any:
    """Fill `default`s of object properties recursively (what `snakemake.utils.validate` does)."""
    if not isinstance(instance, dict) or schema.get("type") not in ("object", ["object", "null"]):
        return instance
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            instance[key] = _fill_defaults(sub, instance[key])
    return instance


def _non_finite(value: Any, path: tuple = ()) -> Iterator[tuple]:
    """Key paths of NaN or infinite numbers (YAML `.nan`, `.inf`) anywhere in `value`."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path
    elif isinstance(value, dict):
        for key, sub in value.items():
            yield from _non_finite(sub, (*path, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _non_finite(sub, (*path, i))


def _message(err: jsonschema.ValidationError) -> str:
    """A one-line problem; jsonschema's own text can quote a whole section of the schema."""
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = list(err.schema.get("properties", {}))
        unknown = [k for k in err.instance if k not in allowed]
        return (
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"(allowed: {', '.join(allowed)})"
        )
    if err.validator == "contains" and "exclusiveMinimum" in err.validator_value:
        return (
            f"{err.instance!r}: at least one value must be above "
            f"{err.validator_value['exclusiveMinimum']}"
        )
    return err.message


def validate_config(config: dict, *, source: str = "config") -> dict:
    """Validate `config` against the schema and return a copy with every default filled in.

    Raises:
        EffOCRError: naming the offending key path and the problem.
    """
    # Imported here: library code reads section defaults without validating anything.
    import jsonschema

    schema = load_schema()
    config = copy.deepcopy(config or {})
    rename_deprecated_keys(config, source=source)
    filled = _fill_defaults(schema, config)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(e.absolute_path))
    lines = []
    for err in errors:
        key = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        lines.append(f"  {key}: {_message(err)}")
    # JSON Schema's bounds never reject NaN (every comparison with it is false).
    for path in _non_finite(filled):
        lines.append(f"  {'/'.join(map(str, path))}: not a finite number")
    if lines:
        raise EffOCRError(f"{source}: invalid configuration\n" + "\n".join(lines))
    check_results_dir(filled["results_dir"], source=source)
    return filled


def check_results_dir(results_dir: str, *, source: str = "config", cwd: Path | None = None) -> Path:
    """Refuse a `results_dir` whose outputs would land outside the working directory.

    The workflow writes `<results_dir>/data/...`, `<results_dir>/bundle` and replaces output
    folders as a whole, so `""`, `/`, `..` or the working directory itself must not pass. A
    relative path must stay strictly inside the working directory; an absolute one may point
    elsewhere (a scratch disk), but not at a filesystem root, the working directory or one of
    its parents. Also run by the workflow (rules/common.smk).

    Raises:
        EffOCRError: naming `source`, the key and the reason.
    """
    cwd = Path(os.path.abspath(cwd or os.getcwd()))
    problem = None
    if not str(results_dir).strip():
        problem = "is empty"
    elif not os.path.isabs(results_dir):
        norm = Path(os.path.normpath(results_dir))
        if norm == Path("."):
            problem = "is the working directory itself"
        elif norm.parts[0] == "..":
            problem = "leaves the working directory (relative paths must stay inside it)"
    else:
        for path in {Path(os.path.abspath(results_dir)), Path(os.path.realpath(results_dir))}:
            if path.parent == path:
                problem = "is a filesystem root"
            elif path == cwd or path in cwd.parents or Path(os.path.realpath(cwd)) == path:
                problem = "is the working directory or one of its parents"
            if problem:
                break
    if problem:
        raise EffOCRError(
            f"{source}: results_dir {results_dir!r} {problem}; give a folder inside the "
            "working directory (e.g. results) or an absolute path to a dedicated folder"
        )
    return Path(results_dir)


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Read a YAML config (or start empty), merge `overrides`, validate and fill defaults."""
    config: dict = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                config = yaml.safe_load(f) or {}
        except FileNotFoundError as exc:
            raise EffOCRError(f"{path}: config file not found") from exc
        except yaml.YAMLError as exc:
            raise EffOCRError(f"{path}: not valid YAML: {exc}") from exc
    if overrides:
        config = deep_merge(config, overrides)
    return validate_config(config, source=str(path or "config"))


def deep_merge(base: dict, update: dict) -> dict:
    """Return `base` updated recursively with `update` (neither is modified)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ---------------------------------------------------------------------------
# Typed, frozen config sections
# ---------------------------------------------------------------------------
# Built once from the validated config (`config_sections`), or, in a workflow script, from the
# rule's params (`step_sections`): a rule passes the sections its step reads as plain dicts
# (Snakemake compares plain params to decide reruns), so what a step reads is what reruns it.
# Where a whole section would rerun a step for keys it never reads (e.g. `evaluate` and the
# report's `worst_lines`), the rule passes only some keys (`SECTIONS.params(evaluate=(...))`);
# the step's section then refuses to read the others, so a key it reads is always one that
# reruns it. No field has a default: config/schema.yaml is the only place defaults live
# (tests/test_config.py checks that the fields are the schema's keys).

# The top-level keys that are no step's config: the workflow turns them into paths (every
# output lies under `results_dir`; `init_from` names the base weights, inputs of the
# training rules). Every other top-level key is a section, or a field of `RunSection`.
PATH_KEYS = ("results_dir", "init_from")


class _NotPassed:
    """The value of a key the rule did not pass (a partial section in a workflow script)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<not passed>"


NOT_PASSED: Any = _NotPassed()


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


class Section:
    """A config section: `from_dict(validated section)`, `as_dict()` (plain data, as in YAML)."""

    NAME = ""

    @classmethod
    def key(cls, name: str) -> str:
        """The config key of field `name` (a key that is a Python keyword gets a trailing `_`)."""
        return name[:-1] if name.endswith("_") else name

    @classmethod
    def from_dict(cls, section: Mapping, *, partial: bool = False) -> Any:
        """The section from its validated dict (every key present, no unknown ones).

        With `partial` (a rule's params, `step_sections`), keys may be missing: reading one
        then raises, naming it.

        Raises:
            EffOCRError: a key is missing or unknown (the dict was not validated).
        """
        keys = {cls.key(f.name): f.name for f in fields(cls)}  # type: ignore[arg-type]
        missing = [] if partial else [k for k in keys if k not in section]
        unknown = [k for k in section if k not in keys]
        if missing or unknown:
            raise EffOCRError(
                f"config section {cls.NAME}: missing {missing}, unknown {unknown} "
                "(build sections from a validated config)"
            )
        return cls(
            **{
                name: _freeze(section[k]) if k in section else NOT_PASSED
                for k, name in keys.items()
            }
        )

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if value is NOT_PASSED:
            cls = type(self)
            raise EffOCRError(
                f"config {cls.NAME}.{cls.key(name)} is read by a step whose rule does not pass "
                f"it: add it to the rule's SECTIONS.params(...), so that changing it reruns "
                "the step"
            )
        return value

    # The subclasses are dataclasses with repr=False, eq=False: the generated methods would
    # read every field, and a partial section refuses the keys its rule did not pass.
    def _values(self) -> tuple:
        return tuple(object.__getattribute__(self, f.name) for f in fields(self))  # type: ignore[arg-type]

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={object.__getattribute__(self, f.name)!r}"
            for f in fields(self)  # type: ignore[arg-type]
        )
        return f"{type(self).__name__}({shown})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def passed(self) -> list[str]:
        """The config keys this section holds (all of them, unless built from a partial dict)."""
        return [
            self.key(f.name)
            for f in fields(self)  # type: ignore[arg-type]
            if object.__getattribute__(self, f.name) is not NOT_PASSED
        ]

    def as_dict(self) -> dict:
        """Plain dict (lists and dicts), as in the validated config (the keys it holds)."""
        return {
            self.key(f.name): _thaw(object.__getattribute__(self, f.name))
            for f in fields(self)  # type: ignore[arg-type]
            if object.__getattribute__(self, f.name) is not NOT_PASSED
        }


@dataclass(frozen=True, repr=False, eq=False)
class RunSection(Section):
    """The top-level keys a step reads: `seed`, `language`."""

    NAME = "run"
    seed: int
    language: str


@dataclass(frozen=True, repr=False, eq=False)
class DatasetSection(Section):
    NAME = "dataset"
    coco_json: str
    image_dir: str
    char_category: str
    word_category: str
    format: str
    path: str | tuple[str, ...] | None
    import_: Mapping[str, Any]


@dataclass(frozen=True, repr=False, eq=False)
class SplitSection(Section):
    NAME = "split"
    ratios: tuple[float, ...]
    files: Mapping[str, str] | None


@dataclass(frozen=True, repr=False, eq=False)
class SynthSection(Section):
    NAME = "synth"
    coco_json: str
    n_lines: int
    text_source: str | None
    font_sizes: tuple[int, int]
    max_chars: int
    vertical_fraction: float
    degrade: bool
    style: str
    pretrain_below: int
    base: Mapping[str, Any]
    line_fonts: tuple[str, ...] | None


@dataclass(frozen=True, repr=False, eq=False)
class FontsSection(Section):
    NAME = "fonts"
    dirs: tuple[str, ...] | None
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    min_coverage: float
    reference: tuple[str, ...] | None
    max_fonts: int | None


@dataclass(frozen=True, repr=False, eq=False)
class RenderSection(Section):
    NAME = "render"
    size: int
    padding: float
    charset: str | None
    charset_from_text: bool
    ligatures: tuple[str, ...]
    mode: str | None


@dataclass(frozen=True, repr=False, eq=False)
class CropsSection(Section):
    NAME = "crops"
    full_height: bool
    padding: int
    jitter: int
    jitter_range: float


@dataclass(frozen=True, repr=False, eq=False)
class RecognizerSection(Section):
    NAME = "recognizer"
    encoder: str
    encoder_args: Mapping[str, Any] | None
    init_checkpoint: str | None
    input_size: int
    batch_size: int
    m: int
    num_passes: int | None
    epochs: int | None
    hard_negatives_epochs: int | None
    lr: float
    warm_start_lr: float
    weight_decay: float
    temperature: float
    hard_negatives_k: int
    hard_negatives_ratio: float | None
    hard_negatives_fine_tune: bool
    reference_crops: int
    reference_crop_weight: float
    reference_prototypes: int
    reference_prototype_weight: float
    augment: Mapping[str, Any] | None
    device: str
    amp: bool
    wandb: Mapping[str, Any] | None


@dataclass(frozen=True, repr=False, eq=False)
class LocalizerSection(Section):
    NAME = "localizer"
    backend: str
    input_height: int
    epochs: int
    batch_size: int
    lr: float
    warm_start_lr: float
    score_threshold: float
    nms_iou: float
    max_detections: int
    detections_per_height: float
    onnx_layout: str
    onnx_model: str | None
    init_checkpoint: str | None
    device: str
    amp: bool
    weight_decay: float
    augment: bool
    ink_spread: float
    arch: Mapping[str, Any] | None
    gap_factor: float
    contained_share: float


@dataclass(frozen=True, repr=False, eq=False)
class ExportSection(Section):
    NAME = "export"
    opset: int
    embedding_max_abs: float
    embedding_min_cosine: float
    box_max_abs: float
    score_max_abs: float
    parity_lines: int
    parity_pages: int
    line_detector_max_abs: float
    quantize: str
    quantized_box_agreement: float
    quantized_min_cosine: float
    quantized_top1_agreement: float
    calibration_lines: int
    confidence_lines: int
    recognizer_onnx: str | None
    localizer_onnx: str | None


@dataclass(frozen=True, repr=False, eq=False)
class InferSection(Section):
    NAME = "infer"
    batch_size: int
    workers: int
    geometry: bool


@dataclass(frozen=True, repr=False, eq=False)
class EvaluateSection(Section):
    NAME = "evaluate"
    sets: tuple[Mapping[str, str], ...]
    normalize_quotes: bool
    ignore_case: bool
    ignore_spaces: bool
    tesseract: bool
    worst_lines: int


@dataclass(frozen=True, repr=False, eq=False)
class LineDetectorSection(Section):
    NAME = "line_detector"
    enabled: bool
    n_train_pages: int
    n_val_pages: int
    n_test_pages: int
    dpi: tuple[float, float]
    vertical_fraction: float
    max_skew: float
    degrade: bool
    input_height: int
    arch: Mapping[str, Any] | None
    epochs: int
    batch_size: int
    crop_size: int
    crops_per_page: int
    lr: float
    weight_decay: float
    device: str
    score_threshold: float
    min_cells: int
    line_margin: float
    max_line_tilt: float
    cut_height: int


@dataclass(frozen=True, repr=False, eq=False)
class LMSection(Section):
    NAME = "lm"
    enabled: bool
    order: int
    weight: float
    k: int
    beam: int
    margin: float
    text: tuple[str, ...]
    lexicon: tuple[str, ...]
    lexicon_margin: float


@dataclass(frozen=True, repr=False, eq=False)
class AlignSection(Section):
    NAME = "align"
    bundle: str | None
    rounds: int
    extend_index: bool
    top_k: int
    min_confidence: float
    min_missed_width: float
    tighten: bool
    split_penalty: float
    merge_penalty: float
    missed_penalty: float
    extra_penalty: float
    space_penalty: float


@dataclass(frozen=True, repr=False, eq=False)
class OcrSection(Section):
    NAME = "ocr"
    input: str | None
    bundle: str | None
    output: str | None
    formats: tuple[str, ...]
    shard_size: int
    workers: int
    recursive: bool
    mets_group: str


SECTION_TYPES: dict[str, type[Section]] = {
    cls.NAME: cls
    for cls in (
        RunSection,
        DatasetSection,
        SplitSection,
        SynthSection,
        FontsSection,
        RenderSection,
        CropsSection,
        RecognizerSection,
        LocalizerSection,
        LineDetectorSection,
        ExportSection,
        InferSection,
        LMSection,
        EvaluateSection,
        AlignSection,
        OcrSection,
    )
}


@dataclass(frozen=True)
class ConfigSections:
    """Every section of one validated config (`config_sections`)."""

    run: RunSection
    dataset: DatasetSection
    split: SplitSection
    synth: SynthSection
    fonts: FontsSection
    render: RenderSection
    crops: CropsSection
    recognizer: RecognizerSection
    localizer: LocalizerSection
    line_detector: LineDetectorSection
    export: ExportSection
    infer: InferSection
    lm: LMSection
    evaluate: EvaluateSection
    align: AlignSection
    ocr: OcrSection

    def params(self, *names: str, **parts: Sequence[str]) -> dict[str, dict]:
        """{name: plain dict} of the named sections, and of only the given keys of the
        sections named in `parts` (`evaluate=("ignore_case", ...)`): a rule's params for its
        step.

        Raises:
            EffOCRError: a key of `parts` that its section does not have.
        """
        out = {name: getattr(self, name).as_dict() for name in names}
        for name, keys in parts.items():
            whole = getattr(self, name).as_dict()
            unknown = [k for k in keys if k not in whole]
            if unknown or isinstance(keys, str):
                raise EffOCRError(f"config section {name} has no keys {unknown or keys!r}")
            out[name] = {k: whole[k] for k in keys}
        return out

    def pick(self, *names: str) -> dict[str, Section]:
        """{name: section}: the keyword arguments of a step that takes these sections."""
        return {name: getattr(self, name) for name in names}


def config_sections(config: dict, *, source: str = "config") -> ConfigSections:
    """Validate `config` (defaults filled, deprecated keys renamed) and build every section."""
    filled = validate_config(config, source=source)
    run = {"seed": filled["seed"], "language": filled["language"]}
    return ConfigSections(
        **{
            name: cls.from_dict(run if name == "run" else filled[name])
            for name, cls in SECTION_TYPES.items()
        }
    )


def step_sections(params: Mapping | Any) -> dict[str, Section]:
    """{name: section} of the sections a rule passed as params (plain dicts named as in
    `SECTION_TYPES`), typed: a workflow script passes them on as `step(..., **sections)`.

    A step takes its sections as keyword-only arguments without defaults, so a rule that
    passes one too many or too few fails at once, and a step cannot read config that does
    not rerun it.
    """
    items = params.items() if hasattr(params, "items") else vars(params).items()
    return {k: SECTION_TYPES[k].from_dict(v, partial=True) for k, v in items if k in SECTION_TYPES}
