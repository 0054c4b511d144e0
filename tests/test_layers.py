"""The package imports only downward, over every package and module of agentgym: leaf modules, then config/models/
multimodal, then parsers/tools/interactions/rows, then the episode, the rollout, rewards, services, the trainer, and
the commands on top. Lazy imports inside functions count too (they are what broke this before). The library never
imports a task package (agentgym_envs), and the packages' import graph has no cycle."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "agentgym"

# rank -> the top-level packages and modules of agentgym at that rank; each may import only lower ranks (and itself)
LAYERS: list[set[str]] = [
    {"errors", "devices", "storable_text", "trajectory", "answers", "utils", "loading"},
    {"config", "models", "multimodal"},
    {"parsers", "tools", "interactions", "rows"},
    {"episode"},
    {"rollout"},
    {"rewards"},
    {"services", "report"},
    {"trainer"},
    {"quickstart"},
    {"cli", "__main__", "__init__"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
# Packages in one rank may import each other, but without a cycle.
TASK_PACKAGES = ("agentgym_envs", "environments")


def _unit(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _edges(root: Path = PACKAGE) -> list[tuple[str, str, str]]:
    edges = []
    for path in sorted(root.rglob("*.py")):
        src = path.relative_to(root).parts[0].removesuffix(".py")
        for line, module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "agentgym" and len(parts) > 1 and parts[1] != src:
                edges.append((src, parts[1], f"{path.relative_to(root.parent)}:{line} imports {module}"))
    return edges


def test_every_package_has_a_layer():
    units = {_unit(p) for p in PACKAGE.rglob("*.py")}
    missing = sorted(units - set(RANK))
    assert not missing, f"give these a layer in tests/test_layers.py (and docs/architecture.md): {missing}"


@pytest.mark.parametrize("layer", range(len(LAYERS)), ids=lambda r: "+".join(sorted(LAYERS[r])))
def test_layer_imports_only_downward(layer):
    bad = [where for src, dst, where in _edges() if RANK.get(src) == layer and RANK.get(dst, -1) > layer]
    assert not bad, "\n".join(bad)


def find_cycle(root: Path) -> list[str] | None:
    graph: dict[str, set[str]] = defaultdict(set)
    for src, dst, _ in _edges(root):
        graph[src].add(dst)
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return trail + [node, nxt]
            if nxt not in state and (cycle := visit(nxt, trail + [node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            return cycle[cycle.index(cycle[-1]):]
    return None


def test_no_cycle_between_packages():
    cycle = find_cycle(PACKAGE)
    assert cycle is None, "package import cycle: " + " -> ".join(cycle or [])


def test_the_library_imports_no_task_package():
    bad = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
           for path in sorted(PACKAGE.rglob("*.py")) for line, module in imported_modules(path)
           if module.split(".")[0] in TASK_PACKAGES]
    assert not bad, "\n".join(bad)


def test_a_cycle_is_caught(tmp_path):
    """The cycle check itself: two packages importing each other are reported."""
    fake = tmp_path / "agentgym"
    (fake / "alpha").mkdir(parents=True)
    (fake / "beta").mkdir()
    (fake / "alpha" / "a.py").write_text("from agentgym.beta import b\n")
    (fake / "beta" / "b.py").write_text("import agentgym.alpha.a\n")
    assert find_cycle(fake) == ["alpha", "beta", "alpha"]
    (fake / "beta" / "b.py").write_text("import json\n")
    assert find_cycle(fake) is None
