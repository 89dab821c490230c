"""The architecture rules of docs/architecture.md, read from the source with ``ast`` (nothing is imported).

- only ``autoloss/commands/`` and ``autoloss/cli.py`` know argparse;
- the strategies (evolutionary and differentiable) do not import the tracking domain;
- the engine imports nothing from autoloss but ``errors`` and ``timelimit``;
- the generic report imports no domain and no strategy: they add to it through registered hooks;
- no import cycle between the top-level packages and modules of autoloss (module- and function-level imports).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "autoloss"


def _sources() -> dict[str, ast.Module]:
    """Every module of autoloss by its path relative to the package's parent (``autoloss/engine/study.py``)."""
    return {path.relative_to(PACKAGE.parent).as_posix(): ast.parse(path.read_text(encoding="utf-8"), str(path))
            for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(tree: ast.Module, path: str) -> set[str]:
    """The absolute names of the modules ``tree`` imports anywhere (``from a import b``: a and a.b)."""
    names = set()
    package = path.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    if not path.endswith("__init__.py"):
        package = package.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _top(module: str) -> str | None:
    """The top-level package or module of autoloss that ``module`` belongs to (``autoloss.engine``)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "autoloss" and len(parts) > 1 else None


def _unit(path: str) -> str | None:
    """The top-level unit of a source path (None for autoloss/__init__.py)."""
    return _top(path.removesuffix(".py").removesuffix("/__init__").replace("/", "."))


def test_only_the_command_line_imports_argparse():
    offenders = [path for path, tree in _sources().items()
                 if not (path.startswith("autoloss/commands/") or path == "autoloss/cli.py")
                 and "argparse" in _imports(tree, path)]
    assert offenders == []


def test_strategies_do_not_import_the_tracking_domain():
    offenders = {path: sorted(name for name in _imports(tree, path) if name.startswith("autoloss.tracking"))
                 for path, tree in _sources().items()
                 if path.startswith(("autoloss/strategies/", "autoloss/differentiable/"))}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_engine_imports_only_errors_and_timelimit():
    allowed = {"autoloss", "autoloss.engine", "autoloss.errors", "autoloss.timelimit"}
    offenders = {}
    for path, tree in _sources().items():
        if path.startswith("autoloss/engine/"):
            above = {name for name in _imports(tree, path)
                     if name.startswith("autoloss") and _top(name) not in allowed
                     and name not in allowed}
            if above:
                offenders[path] = sorted(above)
    assert offenders == {}


def test_the_generic_report_imports_no_domain_and_no_strategy():
    domains = {"autoloss.cell", "autoloss.detection", "autoloss.differentiable", "autoloss.loss", "autoloss.tasks",
               "autoloss.tracking", "autoloss.strategies", "autoloss.commands"}
    offenders = {path: sorted(name for name in _imports(tree, path) if _top(name) in domains)
                 for path, tree in _sources().items() if path.startswith("autoloss/report/")}
    assert {path: names for path, names in offenders.items() if names} == {}


def _graph() -> dict[str, set[str]]:
    """Top-level unit -> the top-level units it imports (itself left out)."""
    graph: dict[str, set[str]] = {}
    for path, tree in _sources().items():
        unit = _unit(path)
        if unit is None:  # autoloss/__init__.py
            continue
        targets = {_top(name) for name in _imports(tree, path) if name.startswith("autoloss.")}
        graph.setdefault(unit, set()).update(t for t in targets if t and t != unit)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its nodes in order), or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_top_level_packages():
    graph = _graph()
    assert {"autoloss.engine", "autoloss.commands", "autoloss.cli", "autoloss.plugins"} <= set(graph)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
