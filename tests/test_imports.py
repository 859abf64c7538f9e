"""The package's import graph: layered entry points, no import circle, no state passed through env vars."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lit_transfer"
# Edges outside this test's owner's files that still close a circle; each names who removes it. Keep empty.


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def import_graph() -> dict[str, set[str]]:
    """``module -> lit_transfer modules it imports``, from every import statement (module level and inside
    functions). ``from pkg import sub`` is an edge to ``pkg.sub`` when ``sub`` is a module, else to ``pkg``."""
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in mods]
                targets = subs + ([module] if len(subs) < len(node.names) else [])
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def test_the_graph_walker_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "lit_transfer.sweep" in graph["lit_transfer.entry"]  # inside main()
    assert "lit_transfer.data.shifts" in graph["lit_transfer.data.domains"]  # from .shifts import ...
    assert cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]


def test_import_graph_between_lit_transfer_modules_is_acyclic():
    graph = import_graph()
    assert cycles(graph) == []


def test_entry_is_on_top_and_the_cli_below_the_tools():
    graph = import_graph()
    tools = {"lit_transfer.sweep", "lit_transfer.report", "lit_transfer.ranking.rank", "lit_transfer.entry"}
    for low in ("lit_transfer.cli", "lit_transfer.source_stage", "lit_transfer.configs"):
        assert not graph[low] & tools, (low, graph[low] & tools)
    assert "lit_transfer.cli" not in graph["lit_transfer.source_stage"] | graph["lit_transfer.configs"]
    assert {"lit_transfer.cli", "lit_transfer.sweep", "lit_transfer.report", "lit_transfer.ranking.rank"} <= \
        graph["lit_transfer.entry"]
    assert graph["lit_transfer.__main__"] == {"lit_transfer.entry"}


def test_no_configuration_travels_through_environment_variables():
    # Only DDP workers inherit state through the environment (LIT_TRANSFER_RUN_DIR): the configs folder and
    # the stage cache are CLI options (--run.configs, --run.stage_cache).
    for name in ("cli", "source_stage", "configs", "entry", "demo"):
        text = (PACKAGE / f"{name}.py").read_text()
        assert "LIT_TRANSFER_CONFIGS" not in text and "LIT_TRANSFER_STAGE_CACHE" not in text, name
