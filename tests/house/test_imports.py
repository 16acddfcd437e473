"""The house is one-way: imports read from the source (nothing is imported), then checked.

- no import cycle between files, and none between folders;
- layers: ``common`` imports no other folder, ``runtime`` only ``common``, ``export`` only ``runtime``,
  ``training`` only ``export`` and ``runtime``, ``fleet`` only ``runtime`` (each of them ``common`` too);
  ``pipelines`` composes all of those, ``bench`` measures them, and ``tools`` (the CLI) sits on top of
  everything (docs/DESIGN.md, "Layout and layers");
- product code never reaches test code (``tests/``, ``device_tests/``), by import or by file path;
- no private helper (``_name``) is imported from another folder.
Imports inside functions count as much as those at the top of a file.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from repo_paths import REPO

ROOT = REPO
# each product folder and the other folders it may import
LAYERS = {
    "common": set(),
    "runtime": {"common"},
    "export": {"common", "runtime"},
    "training": {"common", "export", "runtime"},
    "fleet": {"common", "runtime"},
    "pipelines": {"common", "runtime", "export", "training", "fleet"},
    "bench": {"common", "runtime", "export", "training", "fleet"},
    "tools": {"common", "runtime", "export", "training", "fleet", "pipelines", "bench"},
}
TEST_FOLDERS = ("tests", "device_tests")


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["metalite", *parts]) if parts[0] in LAYERS else ".".join(parts)


def _product_files() -> dict:
    return {_module(p): p for folder in LAYERS for p in sorted((ROOT / folder).rglob("*.py"))}


def _docstring_nodes(tree) -> set:
    nodes = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
        ):
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                nodes.add(id(first.value))
    return nodes


def _imports(path: Path, module: str, known=()) -> list:
    """[(imported module name, [names imported from it], line)] of one file, relative imports resolved.

    ``from package import name`` depends on the submodule ``package.name`` when ``known`` has it, else on
    ``package`` itself."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names = [a.name for a in node.names]
            attrs = [n for n in names if f"{target}.{n}" not in known]
            if attrs or not names:
                found.append((target, attrs, node.lineno))
            found += [(f"{target}.{n}", [], node.lineno) for n in names if f"{target}.{n}" in known]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append((node.args[0].value, [], node.lineno))
    return found


def _graph():
    files = _product_files()
    edges, private, errors = {m: set() for m in files}, [], []
    for module, path in files.items():
        for target, names, line in _imports(path, module, files):
            where = f"{path.relative_to(ROOT)}:{line}"
            if target.split(".")[0] in TEST_FOLDERS + (
                "conftest",
                "devicekit",
                "envs",
                "device_bundles",
            ):
                errors.append(f"{where} imports test code ({target})")
            if target in files and target != module:
                edges[module].add(target)
                if _folder(target) != _folder(module):
                    private += [
                        f"{where} imports {n} from {target}"
                        for n in names
                        if n.startswith("_") and not n.endswith("__")
                    ]
    return files, edges, private, errors


def _folder(module: str) -> str:
    return module.split(".")[1]


def _cycles(edges: dict) -> list:
    """Strongly connected components with more than one node (Tarjan), as sorted lists."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_files_or_folders():
    _, edges, _, _ = _graph()
    assert _cycles(edges) == []
    folders = {}
    for m, targets in edges.items():
        folders.setdefault(_folder(m), set()).update(
            _folder(t) for t in targets if _folder(t) != _folder(m)
        )
    assert _cycles(folders) == []


def test_each_folder_imports_only_the_layers_below_it():
    _, edges, _, _ = _graph()
    upward = [
        f"{m} -> {t}"
        for m, targets in edges.items()
        for t in targets
        if _folder(t) != _folder(m) and _folder(t) not in LAYERS[_folder(m)]
    ]
    assert upward == []


def test_product_code_never_reaches_test_code():
    files, _, _, errors = _graph()
    test_path = re.compile(r"(^|[/\\])(device_tests|tests)([/\\]|$)")
    for path in files.values():
        tree = ast.parse(path.read_text())
        docs = _docstring_nodes(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docs
            ):
                if test_path.search(node.value) or node.value in TEST_FOLDERS:
                    errors.append(
                        f"{path.relative_to(ROOT)}:{node.lineno} names a test folder: {node.value!r}"
                    )
    assert errors == []


def test_no_private_helper_is_imported_across_folders():
    _, _, private, _ = _graph()
    assert private == []


def test_the_checks_see_what_they_check(tmp_path, monkeypatch):
    """The checks find a planted cycle, an upward import and an import of test code."""
    for folder in LAYERS:
        (tmp_path / folder).mkdir()
    (tmp_path / "training" / "a.py").write_text("from . import b\nfrom metalite.tools import cli\n")
    (tmp_path / "training" / "b.py").write_text("def f():\n    from .a import x\n")
    (tmp_path / "tools" / "cli.py").write_text(
        "import importlib\nimportlib.import_module('device_tests.envs')\n"
    )
    (tmp_path / "runtime" / "c.py").write_text("from metalite.training.b import _helper\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    _, edges, private, errors = _graph()
    assert _cycles(edges) == [["metalite.training.a", "metalite.training.b"]]
    with pytest.raises(AssertionError):
        test_each_folder_imports_only_the_layers_below_it()
    assert errors and "device_tests.envs" in errors[0]
    assert private and "_helper" in private[0]
