"""The layout's rules, checked over the source (every import, including those inside functions).

- `policy/` is the pure core: it imports none of tasks/, flows/, rsp/, Prefect, boto3,
  great-expectations, slack-sdk, SQLAlchemy.
- Configuration lives below its users: nothing in tasks/ or flows/ imports rsp/.
- tasks/ never imports flows/.
- No import cycles among the project's modules (lazy imports count: a cycle hidden in a
  function is still two modules that cannot be understood apart).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("policy", "tasks", "flows", "rsp")
POLICY_FORBIDDEN = ("tasks", "flows", "rsp", "prefect", "boto3", "botocore", "great_expectations", "slack_sdk",
                    "sqlalchemy")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every project module `path` imports, resolved to the deepest module that exists."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_pkg else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _raw_imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


GRAPH = {n: _imports(p, n, set(_modules())) for n, p in _modules().items()}


def _is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_policy_core_imports_no_io_or_outer_layer() -> None:
    bad = sorted(
        f"{name} imports {imp}"
        for name, path in _modules().items() if _is_within(name, "policy")
        for imp in _raw_imports(path) if any(_is_within(imp, f) for f in POLICY_FORBIDDEN)
    )
    assert bad == []


@pytest.mark.parametrize(("layer", "upper"), [("tasks", "rsp"), ("flows", "rsp"), ("tasks", "flows")])
def test_layers_import_only_downward(layer: str, upper: str) -> None:
    bad = sorted(f"{n} imports {i}" for n, deps in GRAPH.items() if _is_within(n, layer)
                 for i in deps if _is_within(i, upper))
    assert bad == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's __init__ that re-exports its own submodules is a facade, not a cycle: drop the
    edges from a submodule to its own package (they resolve to the submodule that defines the name)."""
    return {n: {i for i in deps if not _is_within(n, i)} for n, deps in graph.items()}


def test_no_import_cycles() -> None:
    assert _cycles(_without_package_inits(GRAPH)) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
