"""The architecture as a test: import direction, no cycles, short functions, a public front door.

Parses every module under ``oceanda/`` (top-level and function-level imports alike) with ``ast``; nothing
is imported, so a violation is found even in code no other test runs.
"""

from __future__ import annotations

import ast
import json
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "oceanda"
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(name: str) -> str:
    """The longest prefix of ``name`` that is a module of the package."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(module: str) -> set[str]:
    """Every oceanda module ``module`` imports, anywhere in its body."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {_resolve(a.name) for a in node.names if a.name.split(".")[0] == "oceanda"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "oceanda":
                continue
            out.add(_resolve(target))
            out |= {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES}
    out.discard(module)
    return out


IMPORTS = {m: _imports(m) for m in MODULES}


def _graph() -> dict[str, set[str]]:
    """Module graph where importing ``a.b.c`` also imports the packages ``a`` and ``a.b``."""
    graph: dict[str, set[str]] = defaultdict(set)
    for m, targets in IMPORTS.items():
        for t in targets:
            parts = t.split(".")
            for i in range(1, len(parts) + 1):
                q = ".".join(parts[:i])
                if q in MODULES and q != m and not m.startswith(q + "."):  # a package's own modules run inside it
                    graph[m].add(q)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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
                found.append(sorted(comp))

    for v in sorted(MODULES):
        if v not in index:
            visit(v)
    return found


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_parser_sees_function_level_imports():
    # a guard on the guard: cli imports io inside main(), api imports kalman inside its functions
    assert "oceanda.io" in IMPORTS["oceanda.cli"]
    assert any(_under(t, "oceanda.kalman") for t in IMPORTS["oceanda.api"])


def test_no_import_cycle():
    assert _cycles(_graph()) == []


@pytest.mark.parametrize("forbidden", ["oceanda.testbeds", "oceanda.observe", "oceanda.analysis", "oceanda.demo",
                                       "oceanda.experiments", "oceanda.api", "oceanda.commands"])
def test_kalman_imports_no_testbed_observations_or_sampler(forbidden):
    bad = sorted(f"{m} -> {t}" for m, ts in IMPORTS.items() if _under(m, "oceanda.kalman")
                 for t in ts if _under(t, forbidden))
    assert bad == []


def test_contrastive_knows_nothing_of_oceans():
    # errors, io, the typed-settings base (pure Python, no ocean knowledge) and the version
    allowed = ("oceanda.contrastive", "oceanda.errors", "oceanda.io", "oceanda.settings", "oceanda._version")
    bad = sorted(f"{m} -> {t}" for m, ts in IMPORTS.items() if _under(m, "oceanda.contrastive")
                 for t in ts if not any(_under(t, a) for a in allowed))
    assert bad == []


def test_only_io_touches_files():
    calls = {"rmtree", "mkdir", "unlink", "rmdir", "makedirs", "remove", "rename", "replace", "write_text",
             "write_bytes", "touch"}
    bad = []
    for m, path in MODULES.items():
        if m in ("oceanda.io",):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in calls:
                owner = node.func.value
                if isinstance(owner, ast.Name) and owner.id in ("io", "oio"):  # oceanda.io's own writers
                    continue
                # str.replace / dataclasses.replace / ds.rename are not file operations
                if node.func.attr in ("replace", "rename", "remove") and not (
                        isinstance(owner, ast.Name) and owner.id in ("os", "shutil")):
                    continue
                bad.append(f"{m}:{node.lineno} {node.func.attr}")
    assert bad == []


def test_functions_fit_on_a_screen():
    long = []
    for m, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{m}.{node.name}: {n} lines")
    assert long == []


def test_cli_verbs_call_only_the_front_door():
    import oceanda

    allowed = {"oceanda", "oceanda.api", "oceanda.errors", "oceanda._version", "oceanda.commands"}
    bad = sorted(f"{m} -> {t}" for m, ts in IMPORTS.items() if _under(m, "oceanda.commands")
                 for t in ts if t not in allowed)
    assert bad == []
    assert {"open_states", "open_obs", "train", "assimilate", "analyse", "cycle", "evaluate"} <= set(oceanda.__all__)


def test_front_door_names_resolve():
    import oceanda

    missing = [n for n in oceanda.__all__ if not hasattr(oceanda, n)]
    assert missing == []


def _notebook_imports(path: Path) -> list[tuple[str, list[str]]]:
    cells = json.loads(path.read_text())["cells"]
    src = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    src = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!")))
    out = []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("oceanda"):
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("oceanda")]
    return out


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_import_no_private_names(notebook):
    bad = [f"{mod}: {names}" for mod, names in _notebook_imports(notebook)
           if any(part.startswith("_") for part in mod.split(".")) or any(n.startswith("_") for n in names)]
    assert bad == []
