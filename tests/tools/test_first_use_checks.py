"""What `agentgym tools|interactions validate` must catch before a run: schemas whose `required` names are not
defined, old verl tools whose `create` returns only an id, and interaction files."""

from __future__ import annotations

import asyncio
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentgym.cli import main
from agentgym.episode.session import Session
from agentgym.errors import ConfigError
from agentgym.tools.registry import build_tools, load_tool_specs

REPO = Path(__file__).resolve().parents[2]


def _tool_yaml(tmp_path: Path, class_name: str, parameters: str) -> Path:
    path = tmp_path / "tools.yaml"
    path.write_text(textwrap.dedent(f"""\
        tools:
          - class_name: {class_name}
            config: {{}}
            tool_schema:
              type: function
              function:
                name: lookup
                description: Look a key up.
                parameters:
        """) + textwrap.indent(textwrap.dedent(parameters), " " * 10))
    return path


BROKEN_TOP = """\
type: object
properties:
  key: {type: string}
required: [key, table]
"""

BROKEN_NESTED = """\
type: object
properties:
  filter:
    type: object
    properties:
      column: {type: string}
    required: [value]
required: [filter]
"""


@pytest.mark.parametrize("parameters, where, name", [
    (BROKEN_TOP, "parameters.required", "table"),
    (BROKEN_NESTED, "parameters.properties.filter.required", "value"),
])
def test_required_name_missing_from_properties_is_refused_at_load(tmp_path, capsys, parameters, where, name):
    path = _tool_yaml(tmp_path, "agentgym.tools.calculator.CalculatorTool", parameters)
    with pytest.raises(ConfigError) as info:
        load_tool_specs(path)
    assert f"`{where}` lists `{name}`, which" in str(info.value)
    assert "add each required name to `properties`" in str(info.value)
    assert main(["tools", "validate", str(path)]) == 2
    assert f"lists `{name}`" in capsys.readouterr().err


def test_meta_schema_still_checked(tmp_path):
    path = _tool_yaml(tmp_path, "agentgym.tools.calculator.CalculatorTool",
                      "type: object\nproperties:\n  key: {type: text}\n")
    with pytest.raises(ConfigError, match="not valid JSON Schema at properties/key/type"):
        load_tool_specs(path)


OLD_VERL_TOOL = '''
from typing import Any, Optional
from uuid import uuid4

from agentgym.tools.base_tool import BaseTool
from agentgym.tools.schemas import ToolResponse


class OldLookupTool(BaseTool):
    def __init__(self, config, tool_schema):
        super().__init__(config, tool_schema)
        self._state = {}
        self.released = []

    async def create(self, instance_id: Optional[str] = None, **kwargs) -> str:
        instance_id = instance_id or str(uuid4())
        self._state[instance_id] = kwargs.get("table", {})
        return instance_id

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs):
        return ToolResponse(text=str(self._state[instance_id].get(parameters["key"]))), 0.0, {}

    async def release(self, instance_id: str, **kwargs) -> None:
        self.released.append(instance_id)
        del self._state[instance_id]
'''


@dataclass
class Call:
    name: str
    arguments: dict
    id: str = "c0"


def test_create_returning_only_an_id_runs_with_a_warning(tmp_path, monkeypatch, capsys):
    (tmp_path / "old_verl_lookup.py").write_text(OLD_VERL_TOOL)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _tool_yaml(tmp_path, "old_verl_lookup.OldLookupTool",
                      "type: object\nproperties:\n  key: {type: string}\nrequired: [key]\n")
    assert main(["tools", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning" in out and "return only an instance id" in out and "return instance_id, ToolResponse()" in out

    tool = build_tools(load_tool_specs(path))["lookup"]
    extra_info = {"tools_kwargs": {"lookup": {"create_kwargs": {"table": {"a": "apple"}}}}}

    async def episode():
        async with Session({"lookup": tool}, extra_info=extra_info) as session:
            return await session.run_calls([Call("lookup", {"key": "a"})])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        [result] = asyncio.run(episode())
    assert result.error is None and result.text == "apple"
    assert any("returned only an instance id" in str(w.message) for w in caught)
    assert len(tool.released) == 1 and not tool._state


INTERACTION_YAML = """\
interaction:
  - name: teacher
    class_name: agentgym.interactions.math_feedback.MathFeedbackInteraction
    config: {max_attempts: 2}
"""


def test_interactions_validate_and_list(tmp_path, capsys):
    path = tmp_path / "interaction.yaml"
    path.write_text(INTERACTION_YAML)
    assert main(["interactions", "validate", str(path)]) == 0
    assert "1 interaction(s): teacher (agentgym.interactions.math_feedback.MathFeedbackInteraction)" in \
        capsys.readouterr().out.replace("\n", " ")
    assert main(["interactions", "list", str(path)]) == 0
    out = capsys.readouterr().out
    assert "teacher" in out and "max_attempts=2" in out


def test_tools_validate_recognises_an_interaction_file(tmp_path, capsys):
    path = tmp_path / "interaction.yaml"
    path.write_text(INTERACTION_YAML)
    assert main(["tools", "validate", str(path)]) == 0
    out = capsys.readouterr().out.replace("\n", " ")
    assert "is an interaction config" in out and "1 interaction(s): teacher" in out


def test_interactions_validate_reports_a_bad_class(tmp_path, capsys):
    path = tmp_path / "interaction.yaml"
    path.write_text(INTERACTION_YAML.replace("MathFeedbackInteraction", "MathFeedback"))
    assert main(["interactions", "validate", str(path)]) == 2
    assert "module `agentgym.interactions.math_feedback` has no attribute `MathFeedback`" in capsys.readouterr().err


@pytest.mark.parametrize("config", sorted(REPO.glob("agentgym_envs/*/interaction.yaml")))
def test_bundled_interaction_configs_validate(config, capsys):
    assert main(["interactions", "validate", str(config)]) == 0
