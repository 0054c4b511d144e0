"""@function_tool: schemas from type hints and docstrings, sync and async calls, return shapes, the
function_tool_path loader, and the errors a badly written tool function gets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentgym import AgentLoop, function_tool
from agentgym.config import load_config
from agentgym.episode.episode import TextTurnSource, run_episode
from agentgym.episode.session import Session
from agentgym.errors import ConfigError
from agentgym.parsers import get_parser
from agentgym.rollout.build import load_environment, registered_names
from agentgym.tools.function_tool import FunctionTool, load_function_tools
from agentgym.tools.registry import load_all_tools

EXAMPLE = Path(__file__).with_name("function_tools_example.py")


@pytest.fixture(scope="module")
def tools() -> dict[str, FunctionTool]:
    return load_function_tools(EXAMPLE)


def test_the_file_gives_its_decorated_functions_by_tool_name(tools: dict[str, FunctionTool]) -> None:
    assert sorted(tools) == ["area", "echo", "fail", "get_weather"]
    assert all(isinstance(tool, FunctionTool) for tool in tools.values())


def test_schema_from_hints_and_docstring(tools: dict[str, FunctionTool]) -> None:
    function = tools["get_weather"].tool_schema.function
    assert function.description == "Get the weather for a city."
    assert function.parameters.model_dump(exclude_none=True) == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": 'The city to look up, e.g. "Oslo".'},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius",
                     "description": "Temperature unit."},
            "days": {"anyOf": [{"type": "integer"}, {"type": "null"}],
                     "description": "How many days ahead; today when left out."},
        },
        "required": ["city"],
    }
    area = tools["area"].tool_schema.function.parameters.model_dump(exclude_none=True)
    assert area["properties"]["box"] == {"type": "object", "description": "The box to measure.", "required": ["width"],
                                         "properties": {"width": {"type": "integer"}, "height": {"type": "integer", "default": 1}}}
    assert area["properties"]["scale"]["enum"] == [1, 10] and area["required"] == ["box"]
    assert tools["echo"].tool_schema.function.description == "Echo the text back as a ToolResponse."


def _run(tool: FunctionTool, arguments: dict) -> tuple:
    return asyncio.run(tool.execute("instance", arguments))


def test_sync_functions_run_in_a_worker_thread_with_typed_arguments(tools: dict[str, FunctionTool]) -> None:
    response, reward, metrics = _run(tools["get_weather"], {"city": "Oslo", "unit": "fahrenheit"})
    assert response.text.startswith('{"city": "Oslo", "temperature": 63.1, "days": null, "thread": ')
    assert '"thread": "MainThread"' not in response.text
    assert (reward, metrics) == (0.0, {})


def test_async_functions_get_models_built_and_return_rewards(tools: dict[str, FunctionTool]) -> None:
    response, reward, metrics = _run(tools["area"], {"box": {"width": 3, "height": 4}})
    assert (response.text, reward, metrics) == ("area=12", 1.0, {"area": 12})
    assert _run(tools["echo"], {"text": "hi"})[0].text == "hi"


def test_in_a_session_bad_arguments_and_exceptions_reach_the_model(tools: dict[str, FunctionTool]) -> None:
    async def go():
        async with Session(tools) as session:
            calls = [_Call("get_weather", {"city": 5}), _Call("fail", {"reason": "disk full"}),
                     _Call("get_weather", {"city": "Oslo", "unit": "kelvin"})]
            return await session.run_calls(calls)

    bad_type, failed, bad_enum = asyncio.run(go())
    assert bad_type.error_kind == "invalid_arguments" and "city" in bad_type.error
    assert failed.error_kind == "tool_exception" and failed.error == "Error: tool `fail` failed: RuntimeError: disk full"
    assert bad_enum.error_kind == "invalid_arguments" and "kelvin" in bad_enum.error


class _Call:
    def __init__(self, name: str, arguments: dict):
        self.name, self.arguments, self.id = name, arguments, None


def test_the_function_stays_a_plain_function() -> None:
    @function_tool
    def add(a: int, b: int = 2) -> int:
        """Add.

        Args:
            a: first
            b: second
        """
        return a + b

    assert add(1) == 3


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def f(x):\n    '''Doc.'''\n", "parameter 'x' has no type hint"),
        ("def f(*xs: int):\n    '''Doc.'''\n", "*xs / **xs cannot be shown to a model as JSON Schema"),
        ("def f(x: int, /):\n    '''Doc.'''\n", "parameter 'x' is positional-only"),
        ("def f(x: int):\n    '''Doc.\n\n    Args:\n        y: typo\n    '''\n", "the docstring describes argument(s) ['y'] that the function does not take"),
        ("def f(x: 'Missing'):\n    '''Doc.'''\n", "its type hints cannot be resolved"),
        ("def f(cb: Callable[[], int]):\n    '''Doc.'''\n", "its parameters have no JSON Schema"),
    ],
)
def test_functions_that_cannot_be_tools_are_refused_at_import(tmp_path: Path, source: str, message: str) -> None:
    file = tmp_path / "bad_tools.py"
    file.write_text(f"from typing import Callable\nfrom agentgym import function_tool\n\n@function_tool\n{source}")
    with pytest.raises(ConfigError) as info:
        load_function_tools(file)
    assert message in str(info.value) and "@function_tool 'f'" in str(info.value)


def test_loader_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_function_tools(tmp_path / "missing.py")
    empty = tmp_path / "plain.py"
    empty.write_text("def f(x: int) -> int:\n    return x\n")
    with pytest.raises(ConfigError, match="defines no @function_tool functions"):
        load_function_tools(empty)
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_module_anywhere\n")
    with pytest.raises(ConfigError, match="importing .* failed: ModuleNotFoundError"):
        load_function_tools(broken)
    twice = tmp_path / "twice.py"
    twice.write_text("from agentgym import function_tool\n\n@function_tool('t')\ndef a() -> str:\n    return ''\n\n"
                     "@function_tool('t')\ndef b() -> str:\n    return ''\n")
    with pytest.raises(ConfigError, match="two functions in .* are both tool 't'"):
        load_function_tools(twice)


def test_names_must_be_unique_across_the_yaml_and_the_file(tmp_path: Path) -> None:
    yaml_file = tmp_path / "tools.yaml"
    yaml_file.write_text("tools:\n  - class_name: agentgym.tools.calculator.CalculatorTool\n    config: {type: native}\n"
                         "    tool_schema:\n      type: function\n      function:\n        name: echo\n"
                         "        description: x\n        parameters: {type: object, properties: {expression: {type: string}}, "
                         "required: [expression]}\n")
    with pytest.raises(ConfigError, match=r"function tool name\(s\) \['echo'\] are also tools in"):
        load_all_tools(yaml_file, EXAMPLE)


def test_function_tool_path_reaches_the_rollout(tmp_path: Path) -> None:
    cfg = load_config(None, [f"actor_rollout_ref.rollout.multi_turn.function_tool_path={EXAMPLE}"])
    tools, _ = load_environment(cfg)
    assert sorted(tools) == ["area", "echo", "fail", "get_weather"]
    assert sorted(registered_names(cfg).tools) == sorted(tools)

    async def policy(messages: list[dict]) -> str:
        if messages[-1]["role"] == "user":
            return '<tool_call>{"name": "area", "arguments": {"box": {"width": 5, "height": 5}}}</tool_call>'
        return "The area is 25."

    async def go():
        async with Session(tools) as session:
            return await run_episode(session, TextTurnSource(policy), get_parser("hermes"),
                                     [{"role": "user", "content": "area?"}])

    episode = asyncio.run(go())
    assert [m["content"] for m in episode.messages if m["role"] == "tool"] == ["area=25"]
    assert [r.reward for r in episode.tool_results] == [1.0] and AgentLoop is not None
