"""MCP tools against real MCP servers written with the `mcp` SDK (tests/tools/mcp_test_server.py), over stdio and
streamable HTTP: schemas listed and registered, a session per trajectory, timeouts, rate limits, and server
failures as tool messages. (Timeouts are generous: a busy machine starts a Python MCP server slowly.)"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from agentgym.episode.session import Session
from agentgym.errors import ConfigError
from agentgym.tools.mcp_tool import MCPTool, read_servers_file
from agentgym.tools.registry import load_all_tools

SERVER = Path(__file__).with_name("mcp_test_server.py")
CONNECT = 240


class _Call:
    def __init__(self, name: str, arguments: dict):
        self.name, self.arguments, self.id = name, arguments, None


def write_config(tmp_path: Path, servers: dict, *, selected: list[str] | None = None, **config) -> Path:
    (tmp_path / "servers.json").write_text(json.dumps({"mcpServers": servers}))
    mcp = {"mcp_servers_config_path": "servers.json"}
    if selected is not None:
        mcp["tool_selected_list"] = selected
    entry = {"class_name": "agentgym.tools.mcp_tool.MCPTool", "config": {"type": "mcp", "connect_timeout": CONNECT, **config},
             "mcp": mcp}
    calculator = {"class_name": "agentgym.tools.calculator.CalculatorTool", "config": {"type": "native"},
                  "tool_schema": {"type": "function", "function": {"name": "calculator", "description": "c", "parameters": {
                      "type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}}
    path = tmp_path / "tools.yaml"
    path.write_text(json.dumps({"tools": [calculator, entry]}))  # JSON is YAML
    return path


STDIO = {"local": {"command": sys.executable, "args": [str(SERVER), "stdio"]}}


@pytest.fixture(scope="module")
def http_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(SERVER), "http", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + CONNECT
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            break
        except httpx.HTTPError:
            time.sleep(0.5)
    yield url, proc
    proc.terminate()
    proc.wait(30)


async def _episode(tools: dict, calls: list[list[_Call]], extra_info: dict | None = None) -> list[list]:
    async with Session(tools, extra_info=extra_info) as session:
        return [[(r.error_kind, r.response.text) for r in await session.run_calls(turn)] for turn in calls]


def test_stdio_server_tools_are_registered_with_their_schemas(tmp_path: Path) -> None:
    tools = load_all_tools(write_config(tmp_path, STDIO, selected=["add", "remember", "explode", "slow"], timeout=60))
    assert sorted(tools) == ["add", "calculator", "explode", "remember", "slow"]
    assert isinstance(tools["add"], MCPTool)
    params = tools["add"].tool_schema.function.parameters.model_dump(exclude_none=True)
    assert params["required"] == ["a", "b"] and params["properties"]["a"]["type"] == "integer"
    assert tools["add"].tool_schema.function.description == "Add two integers."

    async def two_trajectories():
        first = _episode(tools, [[_Call("remember", {"note": "a"}), _Call("add", {"a": 2, "b": 3})],
                                 [_Call("remember", {"note": "b"})], [_Call("explode", {"message": "boom"})]])
        second = _episode(tools, [[_Call("remember", {"note": "c"})]])
        return await asyncio.gather(first, second)

    first, second = asyncio.run(two_trajectories())
    assert first[0] == [(None, "a"), (None, "5")]
    assert first[1] == [(None, "a, b")], "one MCP session for the whole trajectory"
    assert second == [[(None, "c")]], "another trajectory, another session"
    assert first[2] == [(None, "Error: Error executing tool explode")]
    assert tools["add"].pool.open_sessions() == 0, "sessions close with their trajectory"


def test_http_server_with_headers_timeouts_and_a_server_that_goes_away(tmp_path: Path, http_server) -> None:
    url, proc = http_server
    tools = load_all_tools(write_config(tmp_path, {"remote": {"url": url, "headers": {"X-Test-Key": "k"}}}, timeout=3))
    assert {"whoami", "remember", "slow"} <= set(tools)
    [[who], [slow], [notes]] = asyncio.run(_episode(tools, [
        [_Call("whoami", {})], [_Call("slow", {"seconds": 30})], [_Call("remember", {"note": "x"})]]))
    assert who == (None, "k")
    assert slow == (None, "Error: MCP server 'remote' did not answer `slow` within 3 s.")
    assert notes == (None, "x")
    proc.terminate()
    proc.wait(30)
    [[gone]] = asyncio.run(_episode(tools, [[_Call("add", {"a": 1, "b": 1})]]))
    assert gone[0] == "tool_exception" and "MCP server 'remote'" in gone[1] and "could not be started or reached" in gone[1]


def test_rate_limit_spaces_the_calls(tmp_path: Path) -> None:
    tools = load_all_tools(write_config(tmp_path, STDIO, selected=["add"], rate_limit=4, timeout=60))
    started = time.monotonic()
    [results] = asyncio.run(_episode(tools, [[_Call("add", {"a": i, "b": 0}) for i in range(9)]]))
    assert [text for _, text in results] == [str(i) for i in range(9)]
    assert time.monotonic() - started >= (9 - 4) / 4 - 0.1  # a burst of 4, then 4 calls/s


@pytest.mark.parametrize(
    ("servers", "selected", "message"),
    [
        ({"bad": {"command": "/nonexistent/mcp-server"}}, None, "MCP server 'bad' (`/nonexistent/mcp-server`) could not be started or reached"),
        (STDIO, ["add", "substract"], "`mcp.tool_selected_list` names ['substract'], which no server lists"),
        ({"both": {"url": "http://x", "command": "y"}}, None, "give either `url`"),
    ],
)
def test_broken_entries_fail_at_load_with_the_fix(tmp_path: Path, servers: dict, selected, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_all_tools(write_config(tmp_path, servers, selected=selected))
    assert message in str(info.value)


def test_the_entry_class_must_be_an_mcp_tool(tmp_path: Path) -> None:
    path = write_config(tmp_path, STDIO)
    path.write_text(path.read_text().replace("agentgym.tools.mcp_tool.MCPTool", "agentgym.tools.calculator.CalculatorTool"))
    with pytest.raises(ConfigError, match="MCPTool"):
        load_all_tools(path)


def test_servers_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "s.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_servers_file(bad)
    bad.write_text('{"servers": {}}')
    with pytest.raises(ConfigError, match="no `mcpServers` mapping"):
        read_servers_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        read_servers_file(tmp_path / "missing.json")
    bad.write_text('{"mcpServers": {"a": {"url": "http://h/mcp", "auth_token": "t"}}}')
    assert read_servers_file(bad)["a"].auth_token == "t"


def test_a_results_images_reach_the_model_as_images_or_as_a_placeholder(tmp_path: Path) -> None:
    """A vision-language model sees a tool's picture (`ToolResponse.image`); `images: false` (text-only models)
    sends a placeholder instead, so the episode does not fail on an image it could not show."""
    import io

    from PIL import Image

    async def call(tools):
        async with Session(tools) as session:
            [result] = await session.run_calls([_Call("picture", {"colour": "red"})])
            return result.response

    as_images = asyncio.run(call(load_all_tools(write_config(tmp_path, STDIO, selected=["picture"], timeout=60))))
    assert as_images.text == "a red rectangle"
    [png] = as_images.image
    picture = Image.open(io.BytesIO(png))
    assert picture.size == (24, 16) and picture.convert("RGB").getpixel((3, 3)) == (255, 0, 0)
    as_text = asyncio.run(call(load_all_tools(write_config(tmp_path, STDIO, selected=["picture"], timeout=60, images=False))))
    assert as_text.image is None and as_text.text == "a red rectangle\n[image image/png]"
    with pytest.raises(ConfigError, match="config.images"):
        load_all_tools(write_config(tmp_path, STDIO, selected=["picture"], images="yes"))


def test_tools_validate_and_list_show_mcp_entries_and_connect_on_request(tmp_path: Path, capsys) -> None:
    from agentgym.cli import main

    path = write_config(tmp_path, STDIO, selected=["add", "picture"], timeout=60)
    assert main(["tools", "validate", str(path)]) == 0
    offline = capsys.readouterr().out
    assert "1 tool(s): calculator" in offline and "servers local (not contacted" in offline
    assert main(["tools", "list", str(path), "--connect"]) == 0
    listed = capsys.readouterr().out
    assert "calculator" in listed and "MCPTool (local)" in listed
    assert "add" in listed and "picture" in listed and "a*: integer" in listed
    assert main(["tools", "validate", str(path), "--connect"]) == 0
    assert "serve 2 tool(s): add, picture" in capsys.readouterr().out
