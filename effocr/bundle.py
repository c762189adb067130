"""The bundle as a type: `Manifest`, the contents of `model.yaml`, and how a bundle is opened.

A bundle (docs/architecture.md) is one directory: `localizer.onnx`, `recognizer.onnx`,
`ref.index`, `ref_labels.txt`, `model.yaml` (this manifest) and `parity.json`, and optionally
`lm.json` (a character language model, `effocr.lm`; section `lm`), `line_detector.onnx`
(section `line_detector`) and the PyTorch weights (`recognizer.pt`, `localizer.pt`, section
`weights`: the base of a fine-tune, config `init_from`) and `confidence.json` (the calibration
of word and line confidences, `effocr.confidence`; section `confidence`). The manifest names the files, records their sha256 and says everything inference needs. `Manifest.write`
is the only writer (`effocr.export`), `Manifest.read` the only reader (`effocr.infer`,
`effocr.evaluate`): it validates the whole file against `resources/bundle_schema.yaml` and,
unless told not to, checks every file against its recorded checksum.

No torch here: inference imports this module.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from effocr import artifacts
from effocr.utils import EffOCRError, sha256_file, write_text

FORMAT_VERSION = 2
# Format versions this code reads. Version 1 bundles written before `files` existed carry
# checksums for the two ONNX models only; those are checked. Version 2 adds the optional
# `line_detector` section (and its file, `line_detector.onnx`): pages can be read; a
# version-1 bundle, or one exported without it, reads line images as before.
SUPPORTED_FORMATS = (1, 2)
MANIFEST = "model.yaml"
PARITY = "parity.json"
# The files of every bundle written so far, checked before the manifest is parsed so that
# an incomplete copy is named as such rather than as a schema problem.
STANDARD_FILES = (
    "localizer.onnx",
    "recognizer.onnx",
    artifacts.INDEX,
    artifacts.INDEX_LABELS,
    MANIFEST,
)
VERIFY_HINT = "use --no-verify (Engine(verify=False)) to open a bundle you changed on purpose"


@cache
def manifest_schema() -> dict:
    """The JSON schema of `model.yaml` (package data); a copy the caller may change."""
    return copy.deepcopy(_manifest_schema())


@functools.cache
def _manifest_schema() -> dict:
    # Read once per process: opening a bundle consults it three times (validation, and the
    # `infer` and `crops` keys a bundle carries).
    text = (resources.files("effocr") / "resources" / "bundle_schema.yaml").read_text("utf-8")
    return yaml.safe_load(text)


@dataclass
class Manifest:
    """The contents of a bundle's `model.yaml` (format version 2; 1 is read too).

    The sections are plain dicts, written and read as they are (their keys are documented in
    `resources/bundle_schema.yaml`); `files` maps each file of the bundle to its sha256 and is
    filled by `write`. Keys this version does not know are kept in `extra`.
    """

    language: str
    profile: dict
    recognizer: dict
    localizer: dict
    index: dict
    crops: dict = field(default_factory=dict)
    infer: dict = field(default_factory=dict)
    output: dict = field(default_factory=dict)
    # The optional language model (`effocr.lm`): file, order, enabled, weight, k, beam,
    # margin, lexicon_margin. Empty: the bundle has none (every bundle exported before it).
    lm: dict = field(default_factory=dict)
    opset: int | None = None
    versions: dict = field(default_factory=dict)
    config_sha256: dict = field(default_factory=dict)
    # PyTorch state dicts by kind (`recognizer.pt`, `localizer.pt`): what a fine-tune starts
    # from (config `init_from`, effocr.warm_start); inference never reads them.
    weights: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    line_detector: dict = field(default_factory=dict)
    # The confidence calibration (`effocr.confidence`): file and what it was fitted on.
    # Empty: word and line confidences are mean cosines (bundles exported before it).
    confidence: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    # -- the files ---------------------------------------------------------

    def file_names(self) -> list[str]:
        """The bundle's model and index files, as this manifest names them."""
        names = [
            self.recognizer["file"],
            self.localizer["file"],
            self.index["file"],
            self.index["labels"],
            *self.weights.values(),
        ]
        if self.index.get("prototypes"):
            names.append(self.index["prototypes"]["file"])
        if self.lm:
            names.append(self.lm["file"])
        if self.line_detector:
            names.append(self.line_detector["file"])
        if self.confidence:
            names.append(self.confidence["file"])
        return names

    def checksums(self) -> dict[str, str]:
        """Recorded sha256 per file: `files`, or the models' own for bundles older than it."""
        if self.files:
            return dict(self.files)
        return {
            section["file"]: section["sha256"]
            for section in (self.recognizer, self.localizer)
            if section.get("sha256")
        }

    def verify(self, bundle_dir: str | os.PathLike) -> None:
        """Check every recorded checksum against the bundle's files.

        Raises:
            EffOCRError: naming the first file that is missing or differs.
        """
        bundle = Path(bundle_dir)
        for name, expected in self.checksums().items():
            path = bundle / name
            if not path.is_file():
                raise EffOCRError(f"{path}: listed in {MANIFEST} but missing")
            got = sha256_file(path)
            if got != expected:
                raise EffOCRError(
                    f"{path}: checksum mismatch: {MANIFEST} records sha256 {expected[:16]}..., "
                    f"the file has {got[:16]}... (changed after export; {VERIFY_HINT})"
                )

    # -- model.yaml --------------------------------------------------------

    def to_dict(self) -> dict:
        """The manifest as written to `model.yaml` (key order kept)."""
        out: dict[str, Any] = {"format_version": self.format_version}
        for f in dataclasses.fields(self):
            if f.name in ("format_version", "extra"):
                continue
            value = getattr(self, f.name)
            if f.name == "opset" and value is None:
                continue
            if f.name in ("files", "lm", "line_detector", "weights", "confidence") and not value:
                continue
            out[f.name] = value
        out.update(self.extra)
        return out

    def write(self, bundle_dir: str | os.PathLike) -> Path:
        """Record the checksums of the bundle's files, then write `model.yaml` into it.

        Raises:
            EffOCRError: when a file the manifest names is not in `bundle_dir`.
        """
        bundle = Path(bundle_dir)
        missing = [n for n in self.file_names() if not (bundle / n).is_file()]
        if missing:
            raise EffOCRError(f"{bundle}: cannot write {MANIFEST}, missing {', '.join(missing)}")
        self.files = {name: sha256_file(bundle / name) for name in self.file_names()}
        # The per-model checksums are what version-1 readers before `files` know.
        self.recognizer["sha256"] = self.files[self.recognizer["file"]]
        self.localizer["sha256"] = self.files[self.localizer["file"]]
        problems = schema_problems(self.to_dict())
        if problems:  # a bug in the writer, not the user's input
            raise ValueError(f"{MANIFEST} would not validate: {'; '.join(problems)}")
        path = bundle / MANIFEST
        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))
        return path

    @classmethod
    def from_dict(cls, data: dict, *, source: str = MANIFEST) -> Manifest:
        """Build from a parsed `model.yaml`, validating it as a whole.

        Raises:
            EffOCRError: naming `source` and every offending key.
        """
        if not isinstance(data, dict):
            raise EffOCRError(f"{source}: not a bundle manifest (a mapping of keys expected)")
        version = data.get("format_version")
        if isinstance(version, int) and not isinstance(version, bool):
            if version not in SUPPORTED_FORMATS:
                supported = ", ".join(str(v) for v in SUPPORTED_FORMATS)
                raise EffOCRError(
                    f"{source}: unsupported bundle format_version {version} (this effocr reads "
                    f"{supported}); export the bundle again or use a matching effocr"
                )
        problems = schema_problems(data)
        if problems:
            raise EffOCRError(f"{source}: invalid bundle manifest\n  " + "\n  ".join(problems))
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        known.setdefault("language", data["profile"]["name"])
        for name in ("infer", "crops"):
            known[name] = _config_defaults(name, known.get(name))
        if known.get("lm"):
            known["lm"] = _config_defaults("lm", known["lm"])
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})

    @classmethod
    def read(cls, bundle_dir: str | os.PathLike, *, verify: bool = True) -> Manifest:
        """Open a bundle: its `model.yaml`, validated, and (with `verify`) its checksums.

        Raises:
            EffOCRError: a missing directory or file, a manifest that is not valid YAML or
                does not fit the schema, an unsupported format, or a checksum mismatch.
        """
        bundle = Path(bundle_dir)
        if not bundle.is_dir():
            raise EffOCRError(f"{bundle}: bundle directory not found")
        missing = [f for f in STANDARD_FILES if not (bundle / f).is_file()]
        if missing:
            raise EffOCRError(f"{bundle}: not a complete bundle, missing {', '.join(missing)}")
        path = bundle / MANIFEST
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise EffOCRError(f"{path}: not valid YAML: {exc}") from exc
        manifest = cls.from_dict(data, source=str(path))
        missing = [n for n in manifest.file_names() if not (bundle / n).is_file()]
        if missing:
            raise EffOCRError(f"{path}: names files the bundle lacks: {', '.join(missing)}")
        if verify:
            manifest.verify(bundle)
        return manifest


def _config_defaults(name: str, given: dict | None) -> dict:
    """model.yaml's config section `name` (`infer`, `crops`, `lm`) with the keys a bundle exported
    before them lacks taken from the config schema, as a new export would write them (a
    reader then reads every key; no default is repeated here).

    Only the keys the bundle schema lists are filled: a bundle carries what inference reads
    (`crops.full_height`, `crops.padding`), not the training-only keys of the section
    (`crops.jitter`)."""
    from effocr.config import section_defaults

    given = dict(given or {})
    if name == "infer" and "threads" in given:  # the name of `workers` in older bundles
        given.setdefault("workers", given.pop("threads"))
    carried = _manifest_schema()["properties"][name]["properties"]
    defaults = {k: v for k, v in section_defaults(name).items() if k in carried}
    return {**defaults, **given}


def schema_problems(data: Any) -> list[str]:
    """Every place `data` breaks the manifest schema, as ``key/path: message``."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(_manifest_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    return [
        f"{'/'.join(str(p) for p in err.absolute_path) or '(top level)'}: {err.message}"
        for err in errors
    ]
