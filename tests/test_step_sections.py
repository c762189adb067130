"""Config reaches code one way (issue 13 item 5): typed sections built from the validated
config, passed by each rule as params, taken by each step as keyword-only arguments.

The rule checks run the Snakefile through Snakemake's API (tests/rule_listing.py), so they see
the rules exactly as a run does.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
from pathlib import Path

import pytest
import yaml
from rule_listing import REPO, rule_script, workflow_rules

from effocr.config import (
    PATH_KEYS,
    SECTION_TYPES,
    RunSection,
    config_sections,
    load_schema,
    step_sections,
)
from effocr.utils import EffOCRError

# The params of a rule that are no config section, besides `code`: paths, values computed from
# files, and what the DAG works out per job. A new one needs a reason here.
NON_CONFIG_PARAMS: dict[str, dict[str, str]] = {
    "check_coco": {"charset": "the resolved render charset (its files' contents)"},
    "render_glyphs": {
        "text_source": "synth.text_source only with render.charset_from_text (a file)",
        "charset": "hash of the resolved charset (its files' contents)",
        "font_files": "hash of the font files found",
    },
    "synth_lines": {
        "charset": "hash of the resolved charset (its files' contents)",
        "font_files": "hash of the font files found",
    },
    "synth_pages": {
        "charset": "hash of the resolved charset (its files' contents)",
        "font_files": "hash of the font files found",
        "n_pages": "line_detector.n_<split>_pages of the job's split (a wildcard)",
        "first_index": "the number of the split's first page (a workflow constant)",
    },
    "train_recognizer": {
        "init_from": "config init_from: the base (a path, PATH_KEYS)",
        "init_from_sha256": "checksum of the base's weights",
    },
    "train_recognizer_hard_negatives": {
        "init_from": "config init_from: the base (a path, PATH_KEYS)",
        "init_from_sha256": "checksum of the base's weights",
    },
    "train_localizer": {
        "init_from": "config init_from: the base (a path, PATH_KEYS)",
        "init_from_sha256": "checksum of the base's weights",
        "out_dir": "the output folder",
    },
    "train_line_detector": {"out_dir": "the output folder"},
    "export_bundle": {"index_dir": "the input index's folder"},
    "evaluate": {"spec": "the job's evaluation set (name, path, type, image_dir)"},
    "align_lines": {"bundle": "the bundle aligned with: align.bundle or the last round's"},
    "extend_align_bundle": {
        "bundle": "align.bundle (a path)",
        "font_files": "hash of the font files found",
    },
    "import_dataset": {"out_dir": "the output folder"},
    "ocr_shard": {
        "pages": "the shard's pages (the plan's)",
        "out_dir": "the output folder",
    },
    "ocr": {"problems": "the listing's problems (the plan's)"},
}


def _schema_keys(schema: dict) -> list[str]:
    return list(schema.get("properties", {}))


def test_every_schema_key_has_its_section_field():
    """Every top-level schema key is a section with a Section class of exactly its keys, a
    field of RunSection, or a path key; a key added to the schema without its field fails."""
    properties = load_schema()["properties"]
    run_keys = [RunSection.key(f.name) for f in dataclasses.fields(RunSection)]
    for name, sub in properties.items():
        if sub.get("type") == "object":
            assert name in SECTION_TYPES, f"schema section {name} has no Section class"
            cls = SECTION_TYPES[name]
            got = [cls.key(f.name) for f in dataclasses.fields(cls)]
            assert got == _schema_keys(sub), name
        else:
            assert name in run_keys or name in PATH_KEYS, f"top-level key {name} is no field"
    assert set(SECTION_TYPES) == {n for n, s in properties.items() if s.get("type") == "object"} | {
        "run"
    }
    assert set(run_keys) | set(PATH_KEYS) == {
        n for n, s in properties.items() if s.get("type") != "object"
    }


def test_a_partial_section_refuses_the_keys_its_rule_did_not_pass():
    sections = config_sections({"evaluate": {"worst_lines": 3}})
    params = sections.params(evaluate=("ignore_case", "tesseract"), run=("language",))
    assert params == {
        "evaluate": {"ignore_case": False, "tesseract": True},
        "run": {"language": "en"},
    }
    typed = step_sections({**params, "spec": {"name": "test"}})
    assert typed["evaluate"].ignore_case is False and typed["run"].language == "en"
    assert typed["evaluate"].passed() == ["ignore_case", "tesseract"]
    assert typed["evaluate"].as_dict() == params["evaluate"]
    # Shown and compared without reading the keys it lacks (a log line must not raise).
    assert "worst_lines=<not passed>" in repr(typed["evaluate"])
    assert typed["evaluate"] == step_sections(params)["evaluate"] != sections.evaluate
    with pytest.raises(EffOCRError, match=r"config evaluate\.worst_lines is read .* does not pass"):
        _ = typed["evaluate"].worst_lines
    with pytest.raises(EffOCRError, match=r"config run\.seed"):
        _ = typed["run"].seed
    with pytest.raises(EffOCRError, match="has no keys"):
        sections.params(evaluate=("no_such_key",))


# --- the rules --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rules(tmp_path_factory) -> dict[str, dict]:
    return workflow_rules(tmp_path_factory.mktemp("wf"))


@pytest.fixture(scope="module")
def demo_sections():
    with open(REPO / "config" / "config.yaml", encoding="utf-8") as f:
        return config_sections(yaml.safe_load(f))


def _step_function(script: Path):
    """The function a workflow script hands its sections to (`f(..., **step_sections(...))`),
    or None when it calls `step_sections` nowhere."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    imported = {
        a.asname or a.name: node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for a in node.names
    }

    def is_sections(value: ast.expr) -> bool:
        return (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id == "step_sections"
        )

    # `sections = step_sections(...)`, then `f(..., **sections)`, counts too.
    names = {
        t.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and is_sections(node.value)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        for kw in node.keywords:
            value = kw.value
            if kw.arg is None and (
                is_sections(value) or (isinstance(value, ast.Name) and value.id in names)
            ):
                module = importlib.import_module(imported[node.func.id])
                return getattr(module, node.func.id)
    return None


def _attributes_read(func, name: str) -> set[str]:
    """`x` of every `name.x` in `func`'s own body."""
    tree = ast.parse(inspect.getsource(func).lstrip())
    return {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == name
    }


def test_rules_pass_only_config_sections(rules, demo_sections):
    """Besides `code`, a rule's params are config sections (dicts named as in SECTION_TYPES,
    holding the config's values of the keys passed) or a listed non-config param."""
    checked = 0
    for name, rule in rules.items():
        if not rule["script"]:
            continue
        names = set(rule["param_names"]) - {"code"}
        sections = names & set(SECTION_TYPES)
        extra = names - sections
        allowed = set(NON_CONFIG_PARAMS.get(name, {}))
        assert extra <= allowed, f"rule {name}: params {sorted(extra - allowed)} are no section"
        assert allowed <= extra, f"rule {name}: NON_CONFIG_PARAMS lists {sorted(allowed - extra)}"
        for section in sections:
            passed = rule["dict_params"][section]
            whole = getattr(demo_sections, section).as_dict()
            assert passed and set(passed) <= set(whole), (name, section)
            assert passed == {k: whole[k] for k in passed}, (name, section)
        checked += 1
    assert checked >= 20


def test_each_step_takes_exactly_the_sections_its_rule_passes(rules):
    """The function a rule's script calls takes, as keyword-only arguments without defaults,
    exactly the sections the rule passes, and reads no key of them the rule leaves out."""
    for name, rule in rules.items():
        script = rule_script(rule)
        if script is None:
            continue
        passed = set(rule["param_names"]) & set(SECTION_TYPES)
        step = _step_function(script)
        if step is None:
            assert not passed, f"rule {name} passes {passed}, {script.name} hands over none"
            continue
        params = inspect.signature(step).parameters
        taken = {p for p in params if p in SECTION_TYPES}
        assert taken == passed, f"rule {name}: {step.__qualname__} takes {taken}, gets {passed}"
        for section in taken:
            param = params[section]
            assert param.kind is inspect.Parameter.KEYWORD_ONLY, (name, section)
            assert param.default is inspect.Parameter.empty, (name, section)
            cls = SECTION_TYPES[section]
            fields = {f.name for f in dataclasses.fields(cls)}
            read = {cls.key(a) for a in _attributes_read(step, section) & fields}
            keys = set(rule["dict_params"][section])
            assert read <= keys, f"rule {name}: {step.__qualname__} reads {section}.{read - keys}"


# --- no defaults in code ----------------------------------------------------------------------

# `.get(config key, literal)` calls that read no config: (module, key) -> why.
NOT_CONFIG_GETS = {
    ("effocr/data/coco.py", "text"): "a COCO image record's transcription (data)",
    ("effocr/export.py", "score_threshold"): "the trained localizer's model metadata",
    ("effocr/report.py", "tesseract"): "an evaluation's metrics.json record (data)",
}


def _config_keys(schema: dict) -> set[str]:
    keys = set()
    for key, sub in schema.get("properties", {}).items():
        keys.add(key)
        if isinstance(sub, dict):
            keys |= _config_keys(sub)
    return keys


def _is_literal(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.operand, ast.Constant)
    if isinstance(node, ast.Dict):
        return not node.keys
    return isinstance(node, ast.List | ast.Tuple) and not node.elts


def test_no_config_default_in_code():
    """No effocr module re-states a default with `.get(config key, literal)`: every config
    value comes from the validated config (config/schema.yaml)."""
    keys = _config_keys(load_schema())
    found = []
    for path in sorted((REPO / "effocr").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and len(node.args) == 2
            ):
                continue
            key, default = node.args
            if (
                isinstance(key, ast.Constant)
                and key.value in keys
                and _is_literal(default)
                and (rel, key.value) not in NOT_CONFIG_GETS
            ):
                found.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "config defaults in code:\n" + "\n".join(found)


# Keyword defaults (`def f(..., padding=0)`) and `effocr` option defaults
# (`add_argument("--padding", default=0)`) named as a config key that are no config knob:
# (module, function or "cli", parameter) -> why. A config knob has no default in code: the
# caller passes the section's value, the command line fills it from the config.
NOT_CONFIG_DEFAULTS: dict[tuple[str, str, str], str] = {
    ("effocr/config.py", "_non_finite", "path"): (
        "a key path in the config (recursion), not dataset.path"
    ),
    ("effocr/evaluate.py", "run_effocr", "device"): (
        "the ONNX Runtime device of inference; no config key (the schema's `device` keys are the training devices); the CPU, so that speeds compare"
    ),
    ("effocr/evaluate.py", "evaluate_set", "device"): (
        "the ONNX Runtime device of inference; no config key (the schema's `device` keys are the training devices); the CPU, so that speeds compare"
    ),
    ("effocr/evaluate.py", "cli", "device"): (
        "the ONNX Runtime device of inference; no config key (the schema's `device` keys are the training devices); the CPU, so that speeds compare"
    ),
    ("effocr/infer.py", "__init__", "device"): (
        "the ONNX Runtime device of inference; no config key (the schema's `device` keys are the training devices)"
    ),
    ("effocr/infer.py", "cli", "device"): (
        "the ONNX Runtime device of inference; no config key (the schema's `device` keys are the training devices)"
    ),
    ("effocr/linedet/model.py", "load_model", "device"): (
        "the torch device a model is loaded onto (a resolved device, cpu unless asked); the schema's `device` keys are the training devices, resolved from `auto` by the trainers"
    ),
    ("effocr/linedet/model.py", "__init__", "device"): (
        "the torch device a model is loaded onto (a resolved device, cpu unless asked); the schema's `device` keys are the training devices, resolved from `auto` by the trainers"
    ),
    ("effocr/localizer/model.py", "load_localizer", "device"): (
        "the torch device a model is loaded onto (a resolved device, cpu unless asked); the schema's `device` keys are the training devices, resolved from `auto` by the trainers"
    ),
    ("effocr/localizer/model.py", "load_model", "device"): (
        "the torch device a model is loaded onto (a resolved device, cpu unless asked); the schema's `device` keys are the training devices, resolved from `auto` by the trainers"
    ),
    ("effocr/localizer/model.py", "__init__", "device"): (
        "the torch device a model is loaded onto (a resolved device, cpu unless asked); the schema's `device` keys are the training devices, resolved from `auto` by the trainers"
    ),
    ("effocr/recognizer/model.py", "load_recognizer", "device"): (
        "the torch device a model is loaded onto (a resolved device, cpu unless asked); the schema's `device` keys are the training devices, resolved from `auto` by the trainers"
    ),
    ("effocr/recognizer/model.py", "recognizer_from_checkpoint", "device"): (
        "the torch device a model is loaded onto (a resolved device, cpu unless asked); the schema's `device` keys are the training devices, resolved from `auto` by the trainers"
    ),
    ("effocr/recognizer/index.py", "embed_paths", "device"): (
        "the torch device a model is loaded onto (a resolved device, cpu unless asked); the schema's `device` keys are the training devices, resolved from `auto` by the trainers"
    ),
    ("effocr/recognizer/index.py", "class_embeddings", "device"): (
        "the torch device a model is loaded onto (a resolved device, cpu unless asked); the schema's `device` keys are the training devices, resolved from `auto` by the trainers"
    ),
    ("effocr/utils.py", "load_checkpoint", "device"): (
        "`map_location` of torch.load: the torch device a model is loaded onto (a resolved device, cpu unless asked); the schema's `device` keys are the training devices, resolved from `auto` by the trainers"
    ),
    ("effocr/linedet/train.py", "train_one_epoch", "augment"): (
        "line_detector has no augment key (the schema's are recognizer's and localizer's); the page crops are always jittered"
    ),
    ("effocr/pipeline.py", "__call__", "k"): (
        "neighbours per query: 1 is the top-1 read; lm.k is passed where the LM re-ranks"
    ),
    ("effocr/recognizer/reference.py", "search", "k"): (
        "neighbours per query: 1 is the top-1 read; lm.k is passed where the LM re-ranks"
    ),
    ("effocr/quantize.py", "quantize_recognizer", "batch_size"): (
        "the int8 calibration batch; no config key"
    ),
    ("effocr/recognizer/hard_negatives.py", "mine_hard_negatives", "batch_size"): (
        "batch of the embedding passes (no gradients, memory only), not recognizer.batch_size (the training batch of m crops per class)"
    ),
    ("effocr/recognizer/hard_negatives.py", "cli", "batch_size"): (
        "batch of the embedding passes (no gradients, memory only), not recognizer.batch_size (the training batch of m crops per class)"
    ),
    ("effocr/recognizer/index.py", "embed_paths", "batch_size"): (
        "batch of the embedding passes (no gradients, memory only), not recognizer.batch_size (the training batch of m crops per class)"
    ),
    ("effocr/recognizer/index.py", "class_embeddings", "batch_size"): (
        "batch of the embedding passes (no gradients, memory only), not recognizer.batch_size (the training batch of m crops per class)"
    ),
    ("effocr/recognizer/index.py", "build_reference_index", "batch_size"): (
        "batch of the embedding passes (no gradients, memory only), not recognizer.batch_size (the training batch of m crops per class)"
    ),
    ("effocr/recognizer/index.py", "cli", "batch_size"): (
        "batch of the embedding passes (no gradients, memory only), not recognizer.batch_size (the training batch of m crops per class)"
    ),
    ("effocr/recognizer/train.py", "embed", "batch_size"): (
        "batch of the embedding passes (no gradients, memory only), not recognizer.batch_size (the training batch of m crops per class)"
    ),
    ("effocr/recognizer/index.py", "embed_paths", "workers"): (
        "DataLoader worker processes, not infer/ocr.workers"
    ),
    ("effocr/recognizer/index.py", "class_embeddings", "workers"): (
        "DataLoader worker processes, not infer/ocr.workers"
    ),
    ("effocr/synth/render.py", "render_glyphs", "workers"): (
        "processes rendering fonts (the rule's threads), not infer/ocr.workers"
    ),
    ("effocr/synth/render.py", "render_glyphs_from_config", "workers"): (
        "processes rendering fonts (the rule's threads), not infer/ocr.workers"
    ),
    ("effocr/synth/render.py", "cli", "workers"): (
        "processes rendering fonts (the rule's threads), not infer/ocr.workers"
    ),
    ("effocr/synth/fonts.py", "find_fonts", "include"): (
        "a filter of a general font listing (empty: none); the config's fonts.include is passed where the config selects fonts"
    ),
    ("effocr/synth/fonts.py", "find_fonts", "exclude"): (
        "a filter of a general font listing (empty: none); the config's fonts.exclude is passed where the config selects fonts"
    ),
    ("effocr/synth/fonts.py", "usable_chars", "size"): (
        "the size fonts are probed at for placeholder glyphs, not render.size"
    ),
    ("effocr/synth/lines.py", "_english_line", "style"): (
        "the line style of synth/pages.py's page lines (line_detector has no style key); synth_lines passes synth.style"
    ),
    ("effocr/synth/lines.py", "_layout", "style"): (
        "the line style of synth/pages.py's page lines (line_detector has no style key); synth_lines passes synth.style"
    ),
    ("effocr/synth/lines.py", "_draw_line", "style"): (
        "the line style of synth/pages.py's page lines (line_detector has no style key); synth_lines passes synth.style"
    ),
    ("effocr/align.py", "LineReport", "split"): (
        "a report row's count of split boxes, not the split section"
    ),
    ("effocr/document.py", "Line", "text"): ("a line's recognised text (data), not lm.text"),
    ("effocr/pipeline.py", "LineResult", "text"): ("a line's recognised text (data), not lm.text"),
    ("effocr/pipeline.py", "CharResult", "margin"): (
        "a recognised character's score margin (a result), not lm.margin"
    ),
    ("effocr/profiles.py", "Profile", "text_source"): (
        "a language profile's shipped text (the profile's own setting); synth.text_source "
        "overrides it from the config"
    ),
    ("effocr/synth/pages.py", "SynthPage", "dpi"): ("a drawn page's resolution (a result)"),
    ("effocr/synth/pages.py", "text", "align"): (
        "horizontal alignment of a drawn text block, not the align section"
    ),
}


def _schema_defaults_by_key(schema: dict, found: dict | None = None) -> dict[str, list]:
    found = {} if found is None else found
    for key, sub in schema.get("properties", {}).items():
        if isinstance(sub, dict):
            if "default" in sub:
                found.setdefault(key, []).append(sub["default"])
            _schema_defaults_by_key(sub, found)
    return found


def _literal_value(node: ast.expr):
    """The value of a literal default (a constant, or a list/tuple/dict of them), else a
    marker; None (`= None`: "not given") counts as no default."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        return _literal_value


def _keyword_defaults(tree: ast.AST):
    """(function, parameter, default node) of every parameter with a default, and (class,
    field, default node) of every class-level field with one (a dataclass's `__init__`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    if stmt.value is not None:
                        yield node.name, stmt.target.id, stmt.value
            continue
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        args = node.args
        positional = args.posonlyargs + args.args
        pairs = list(
            zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True)
        )
        pairs += [
            (a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None
        ]
        for arg, default in pairs:
            yield node.name, arg.arg, default


def _option_defaults(tree: ast.AST):
    """(dest, default node) of every `add_argument(..., default=...)` of an option."""
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_argument"
        ):
            continue
        kw = {k.arg: k.value for k in node.keywords}
        if "default" not in kw:
            continue
        names = [a.value for a in node.args if isinstance(a, ast.Constant)]
        if "dest" in kw and isinstance(kw["dest"], ast.Constant):
            dest = kw["dest"].value
        else:
            longs = [n for n in names if n.startswith("--")] or names
            dest = longs[0].lstrip("-").replace("-", "_") if longs else None
        if dest:
            yield dest, kw["default"]


def test_no_config_default_in_signatures_or_options():
    """No effocr function (or dataclass field) gives a parameter named as a config key a
    literal default, and no
    `effocr` option named as one has a literal default: the value comes from the config
    (config/schema.yaml), so the schema stays the one place a default lives. A literal that
    differs from the schema's is caught as well (the knob would read two defaults)."""
    defaults = _schema_defaults_by_key(load_schema())
    found, used = [], set()
    for path in sorted((REPO / "effocr").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        items = [(f, p, d) for f, p, d in _keyword_defaults(tree)]
        items += [("cli", dest, d) for dest, d in _option_defaults(tree)]
        for func, param, default in items:
            value = _literal_value(default)
            if param not in defaults or value is None or value is _literal_value:
                continue
            if (rel, func, param) in NOT_CONFIG_DEFAULTS:
                used.add((rel, func, param))
                continue
            found.append(f"{rel}: {func}({param}={ast.unparse(default)}) schema: {defaults[param]}")
    assert not found, "config defaults in code:\n" + "\n".join(found)
    assert used == set(NOT_CONFIG_DEFAULTS), f"stale: {set(NOT_CONFIG_DEFAULTS) - used}"


def test_an_older_bundle_manifest_reads_the_schema_defaults():
    """model.yaml without `infer`/`crops` keys (or with `infer.threads`, the old name of
    `workers`): readers get every key a bundle carries (the bundle schema's), from the config
    schema, as a new export writes them; training-only keys (`crops.jitter`) are not carried."""
    from effocr.bundle import Manifest, manifest_schema

    manifest = {
        "format_version": 1,
        "profile": {"name": "en"},
        "recognizer": {"file": "recognizer.onnx", "input_size": 32, "mean": [0.5], "std": [0.5]},
        "localizer": {"file": "localizer.onnx", "meta": {"input_height": 32, "classes": ["char"]}},
        "index": {"file": "ref.index", "labels": "ref_labels.txt"},
    }
    defaults = config_sections({})
    read = Manifest.from_dict(manifest)
    carried = manifest_schema()["properties"]["crops"]["properties"]
    assert set(carried) == {"full_height", "padding"}
    crops = {k: v for k, v in defaults.crops.as_dict().items() if k in carried}
    assert read.infer == defaults.infer.as_dict() and read.crops == crops
    read = Manifest.from_dict({**manifest, "infer": {"threads": 3}, "crops": {"padding": 2}})
    assert read.infer == {**defaults.infer.as_dict(), "workers": 3}
    assert read.crops["padding"] == 2
