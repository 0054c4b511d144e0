"""The package's layers import only downward: parsers, tools, interactions and env below rollout, rollout below
the trainer. Lazy imports inside functions count too (they are what broke this before)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "agentgym"

# layer -> packages it must not import
FORBIDDEN = {
    "parsers": ("agentgym.env", "agentgym.rollout", "agentgym.trainer"),
    "tools": ("agentgym.env", "agentgym.rollout", "agentgym.trainer"),
    "interactions": ("agentgym.env", "agentgym.rollout", "agentgym.trainer"),
    "env": ("agentgym.rollout", "agentgym.trainer"),
    "rollout": ("agentgym.trainer",),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_downward(layer):
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files, f"no modules under agentgym/{layer}"
    bad = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
           for path in files for line, module in imported_modules(path)
           if any(module == top or module.startswith(top + ".") for top in FORBIDDEN[layer])]
    assert not bad, "\n".join(bad)
