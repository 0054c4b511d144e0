"""The tool YAML registry: what loads, and the exact message for each way a file can be wrong."""

from pathlib import Path
import textwrap

import pytest

from agentgym.errors import ConfigError
from agentgym.tools.calculator import CalculatorTool
from agentgym.tools.registry import build_tools, initialize_tools_from_config, load_tool_specs

REPO = Path(__file__).resolve().parents[2]

GOOD_ENTRY = """
  - class_name: agentgym.tools.calculator.CalculatorTool
    config: {type: native}
    tool_schema:
      type: function
      function:
        name: calculator
        description: calc
        parameters:
          type: object
          properties:
            expression: {type: string}
          required: [expression]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tools.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("config", sorted((REPO / "tool_configs").glob("*.yaml")) + sorted((REPO / "agentgym_envs").glob("*/tools.yaml")))
def test_bundled_tool_configs_load(config):
    tools = initialize_tools_from_config(config)
    assert tools and all(tool.name for tool in tools)


def test_loads_class_config_and_schema(tmp_path):
    specs = load_tool_specs(write(tmp_path, "tools:" + GOOD_ENTRY))
    assert [s.name for s in specs] == ["calculator"]
    tools = build_tools(specs)
    assert isinstance(tools["calculator"], CalculatorTool)
    assert tools["calculator"].config == {"type": "native"}
    assert tools["calculator"].tool_schema.function.parameters.required == ["expression"]


def test_bad_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "tools:\n  - class_name: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_tool_specs(path)
    assert str(err.value).startswith(
        f"file {path}: invalid YAML at line 3, column 1: expected ',' or ']', but got '<stream end>' "
        "(while parsing a flow sequence at line 2, column 17)."
    )
    assert "Fix: correct the YAML syntax there." in str(err.value)


def test_missing_tools_key(tmp_path):
    path = write(tmp_path, "tool: []\n")
    with pytest.raises(ConfigError, match=r"the top level must be a mapping with a `tools` list\. Fix: write it as:"):
        load_tool_specs(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_tool_specs(tmp_path / "nope.yaml")
    assert str(err.value) == f"file {tmp_path / 'nope.yaml'}: the file does not exist. Fix: check the path."


def test_class_that_cannot_be_imported(tmp_path):
    path = write(tmp_path, "tools:" + GOOD_ENTRY.replace("agentgym.tools.calculator.", "agentgym.tools.no_such_module."))
    with pytest.raises(ConfigError) as err:
        load_tool_specs(path)
    message = str(err.value)
    assert message.startswith(f"file {path}, entry tools[0] (agentgym.tools.no_such_module.CalculatorTool): cannot import module")
    assert "Fix: check the spelling, and that the package is installed and on PYTHONPATH." in message


def test_class_missing_from_module_lists_candidates(tmp_path):
    path = write(tmp_path, "tools:" + GOOD_ENTRY.replace("CalculatorTool", "Calculater"))
    with pytest.raises(ConfigError, match=r"module `agentgym.tools.calculator` has no attribute `Calculater`\. Fix: check the class name; the module defines: .*CalculatorTool"):
        load_tool_specs(path)


def test_class_that_is_not_a_tool(tmp_path):
    path = write(tmp_path, "tools:" + GOOD_ENTRY.replace("agentgym.tools.calculator.CalculatorTool", "agentgym.errors.ConfigError"))
    with pytest.raises(ConfigError, match=r"`agentgym.errors.ConfigError` is not a subclass of agentgym.tools.base_tool.BaseTool"):
        load_tool_specs(path)


def test_schema_that_is_not_json_schema(tmp_path):
    path = write(tmp_path, "tools:" + GOOD_ENTRY.replace("expression: {type: string}", "expression: {type: strnig}"))
    with pytest.raises(ConfigError) as err:
        load_tool_specs(path)
    assert "`tool_schema.function.parameters` is not valid JSON Schema at properties/expression/type:" in str(err.value)
    assert "entry tools[0] (agentgym.tools.calculator.CalculatorTool)" in str(err.value)


def test_schema_missing_function_name(tmp_path):
    path = write(tmp_path, "tools:" + GOOD_ENTRY.replace("name: calculator", "title: calculator"))
    with pytest.raises(ConfigError, match=r"invalid tool_schema: `tool_schema.function.name`: Field required"):
        load_tool_specs(path)


def test_duplicate_tool_names(tmp_path):
    path = write(tmp_path, "tools:" + GOOD_ENTRY + GOOD_ENTRY)
    with pytest.raises(ConfigError) as err:
        load_tool_specs(path)
    assert str(err.value) == (
        f"file {path}, entry tools[1] (agentgym.tools.calculator.CalculatorTool): tool name `calculator` is already "
        "used by tools[0]. Fix: give every tool a distinct `tool_schema.function.name`."
    )


def test_missing_class_name(tmp_path):
    path = write(tmp_path, "tools:\n  - config: {}\n")
    with pytest.raises(ConfigError, match=r"entry tools\[0\]: `class_name` is missing\. Fix: add `class_name: package.module.ToolClass`\."):
        load_tool_specs(path)
