"""No import cycles in the engine, type-only and call-time imports included.

The graph is read from the source (``ast``): every ``import`` and ``from ... import``
of an engine module, at module level, under ``if TYPE_CHECKING:`` or inside a
function, is an edge.  The CLI's commands are imported by name from
``engine.cli.main.COMMANDS`` (``importlib``), so those edges are added from that table.

- ``test_the_engine_has_no_import_cycles``: the strongly connected components of that
  graph are all single modules (a cycle names its modules in the failure).
- ``test_the_server_core_knows_the_hub_not_the_reverse``: ``hub`` imports none of
  ``actions``, ``connection``, ``session`` (it knows them through its own protocols), and
  ``connection`` (dispatch) does not import trio-websocket.
"""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).parents[1] / "engine"


def _modules() -> dict[str, Path]:
    found = {}
    for path in ENGINE.rglob("*.py"):
        parts = list(path.relative_to(ENGINE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    found.add(f"{target}.{alias.name}")
                elif target in modules:
                    found.add(target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
    return found - {name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    from engine.cli.main import COMMANDS

    graph["engine.cli.main"] |= {f"engine.cli.{module}" for module, _summary in COMMANDS.values()}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_engine_has_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_the_server_core_knows_the_hub_not_the_reverse() -> None:
    graph = _graph()
    assert graph["engine.server.hub"] & {
        "engine.server.actions", "engine.server.connection", "engine.server.session", "engine.server.chains",
    } == set()
    assert "trio_websocket" not in (ENGINE / "server" / "connection.py").read_text()
    assert "engine.server.websocket" not in graph["engine.server.connection"]
