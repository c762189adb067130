"""Which `effocr` source a step runs, and one hash of it.

Snakemake reruns a rule when its script changes, not when a module the script imports does, so
each rule carries `code_hash(<entry module>)` as a param, and the trainers store it in their
checkpoints so that a rerun for edited code does not resume the old run. The modules hashed are
computed, not listed by hand: the transitive closure of the `effocr` modules the entry module
imports, found by a static walk of the source (`ast`), which sees

- every `import` / `from ... import` statement, at module level or inside functions, classes,
  `if` and `try` blocks (a lazy import still runs);
- relative imports, resolved against the importing module's package;
- `from effocr.pkg import name` where `name` is a submodule;
- the `__init__.py` of every package on the way (importing `effocr.a.b` runs `effocr/__init__`
  and `effocr/a/__init__`);
- a string constant that names an `effocr` module (a registry handed to `importlib`, such as
  `effocr.localizer.backends.BACKENDS`).

Resource files under `effocr/resources/` count for the module that names them: a path built as
`... / "resources" / "a" / "b"` from string constants adds the file or folder `resources/a/b`
(a non-constant part ends the path, so `"charsets" / f"{name}.txt"` adds the whole folder).
That way an edit of the config schema's defaults (`resources/schema.yaml`, read by
`effocr.config`) reruns the rules that load the config, and an edit of the report's style sheet
reruns only `report`.

Third-party packages are not hashed: their pinned versions are the conda env's and container's
business (Snakemake's `software-env` trigger).
"""

from __future__ import annotations

import ast
import hashlib
import re
from functools import cache
from pathlib import Path

PACKAGE = "effocr"
_MODULE_NAME = re.compile(rf"^{PACKAGE}(\.[A-Za-z_]\w*)+$")
# The folder that holds the `effocr` package (the repository in a checkout).
ROOT = Path(__file__).resolve().parents[1]


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """Source file of `module` under `root`: `a/b.py`, or `a/b/__init__.py` for a package."""
    base = Path(root, *module.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _is_package(module: str, root: Path) -> bool:
    return (Path(root, *module.split(".")) / "__init__.py").is_file()


def _resolve_from(module: str, node: ast.ImportFrom, root: Path) -> str:
    """The absolute module a `from ... import` names (relative ones against `module`)."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    # A package's own relative imports are relative to itself, a module's to its package.
    package = parts if _is_package(module, root) else parts[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resource_paths(tree: ast.AST) -> set[str]:
    """`resources/...` paths named by a `/` chain of string constants (see the module doc)."""
    found = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)):
            continue
        # Flatten the left-nested chain `((x / "resources") / "a") / "b"`.
        chain = []
        while isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            chain.append(node.right)
            node = node.left
        chain.append(node)
        chain.reverse()
        consts = [c.value if isinstance(c, ast.Constant) else None for c in chain]
        if "resources" not in consts:
            continue
        path = []
        for value in consts[consts.index("resources") :]:
            if not isinstance(value, str):
                break
            path.append(value)
        found.add("/".join(path))
    # ast.walk also visits the inner links of a chain: keep only the longest path.
    return {p for p in found if not any(q.startswith(f"{p}/") for q in found)}


def _direct(module: str, root: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(effocr modules, resource paths) named directly by `module`'s source."""
    return _parse(module, root, module_file(module, root).read_bytes())


# Keyed by the source itself: an edited file is parsed again, an unchanged one is not.
@cache
def _parse(module: str, root: Path, source: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    tree = ast.parse(source)
    candidates: set[str] = set(_parents(module))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(module, node, root)
            candidates.add(base)
            candidates.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _MODULE_NAME.match(node.value):
                candidates.add(node.value)
    modules = set()
    for name in candidates:
        if name.split(".")[0] != PACKAGE:
            continue
        for m in [*_parents(name), name]:
            if module_file(m, root):
                modules.add(m)
    return tuple(sorted(modules)), tuple(sorted(_resource_paths(tree)))


def closure(entry: str, root: Path | str = ROOT) -> list[str]:
    """Every `effocr` module that importing `entry` may run (itself included), sorted."""
    root = Path(root).resolve()
    if module_file(entry, root) is None:
        raise ValueError(f"no module {entry} under {root}")
    seen: set[str] = set()
    todo = [entry, *_parents(entry)]
    while todo:
        module = todo.pop()
        if module in seen or module_file(module, root) is None:
            continue
        seen.add(module)
        todo.extend(_direct(module, root)[0])
    return sorted(seen)


def source_files(entry: str, root: Path | str = ROOT) -> list[Path]:
    """The files `code_hash(entry)` covers: the closure's sources and the resources they name."""
    root = Path(root).resolve()
    files = set()
    for module in closure(entry, root):
        files.add(module_file(module, root))
        for rel in _direct(module, root)[1]:
            path = root / PACKAGE / rel
            if path.is_dir():
                files.update(p for p in path.rglob("*") if p.is_file())
            elif path.is_file():
                files.add(path)
    return sorted(files)


def code_hash(entry: str, root: Path | str = ROOT) -> str:
    """Hash (16 hex digits) of the paths and contents of `source_files(entry, root)`."""
    root = Path(root).resolve()
    h = hashlib.sha256()
    for f in source_files(entry, root):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]
