"""`agentgym` exports what a user needs, each name the object its module defines, without importing torch."""

from __future__ import annotations

import importlib
import subprocess
import sys

import agentgym


def test_every_export_resolves_to_its_module_object() -> None:
    for name in agentgym.__all__:
        value = getattr(agentgym, name)
        assert value is getattr(importlib.import_module(agentgym._EXPORTS[name]), name)
    for name in ("BaseTool", "ToolResponse", "BaseInteraction", "function_tool", "AgentLoop", "load_config"):
        assert name in agentgym.__all__ and name in dir(agentgym)


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        agentgym.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_writing_a_tool_does_not_import_the_training_stack() -> None:
    code = ("import sys; from agentgym import BaseTool, ToolResponse, function_tool, BaseInteraction; "
            "print(sorted(m for m in ('torch', 'transformers', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
