"""Tools served by MCP servers, through the official `mcp` SDK.

A tool YAML entry of type `mcp` (verl's earlier layout) names a servers file; every tool those servers list
becomes a tool here, with the schema the server gives, optionally filtered by `tool_selected_list`:

    tools:
      - class_name: agentgym.tools.mcp_tool.MCPTool
        config: {type: mcp, timeout: 30, rate_limit: 10}
        mcp:
          mcp_servers_config_path: mcp_servers.json   # relative to this YAML file
          tool_selected_list: [search]                 # optional

    {"mcpServers": {"web": {"url": "http://127.0.0.1:8000/mcp", "headers": {"Authorization": "Bearer ..."}},
                    "files": {"command": "python3", "args": ["files_server.py"], "env": {"ROOT": "/data"}}}}

Each trajectory gets its own MCP session with each server it uses (opened on its first call of one of the
server's tools, closed when the trajectory's last instance of them is released), so a server that keeps state per
session keeps it per trajectory. Calls wait for the entry's token bucket (`rate_limit` calls/s per server) and
are bounded by `timeout`. A server that cannot be started or reached, a call that fails or times out, and a tool
result flagged as an error all reach the model as the call's tool message.

Image content in a result reaches the model as images of the tool message (`ToolResponse.image`, as a
vision-language model sees a tool's picture); a text-only model would fail such an episode rather than lose the
image unseen, so for one set `config.images: false` and the images arrive as a `[image image/png]` placeholder.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import threading
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from agentgym.errors import AgentGymError, ConfigError
from agentgym.tools.base_tool import BaseTool
from agentgym.tools.rate_limit import RateLimitTimeout, TokenBucket
from agentgym.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

SERVERS_EXAMPLE = ('{"mcpServers": {"NAME": {"url": "http://host:port/mcp", "headers": {...}}, '
                   '"OTHER": {"command": "python3", "args": ["server.py"], "env": {...}}}}')
T = TypeVar("T")


class MCPServerError(AgentGymError):
    """An MCP server could not be started, reached or initialized."""


class MCPServer(BaseModel):
    """One entry of a servers file: a URL (streamable HTTP, or SSE) or a command started over stdio."""

    model_config = ConfigDict(extra="forbid")

    name: str
    url: str | None = None
    headers: dict[str, str] = {}
    auth_token: str | None = None  # verl's key: sent as `Authorization: Bearer <token>`
    transport: Literal["streamable_http", "sse"] = "streamable_http"
    command: str | None = None
    args: list[str] = []
    env: dict[str, str] | None = None
    cwd: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "MCPServer":
        if (self.url is None) == (self.command is None):
            raise ValueError("give either `url` (with optional `headers`) or `command` (with optional `args`, `env`)")
        return self

    def describe(self) -> str:
        return f"{self.name!r} ({self.url})" if self.url else f"{self.name!r} (`{' '.join([self.command or '', *self.args])}`)"

    def transport_context(self, stack: AsyncExitStack) -> Coroutine[Any, Any, Any]:
        if self.command is not None:
            from mcp.client.stdio import StdioServerParameters, stdio_client

            params = StdioServerParameters(command=self.command, args=self.args, env=self.env, cwd=self.cwd)
            return stack.enter_async_context(stdio_client(params))
        headers = dict(self.headers)
        if self.auth_token:
            headers.setdefault("Authorization", f"Bearer {self.auth_token}")
        if self.transport == "sse":
            from mcp.client.sse import sse_client

            return stack.enter_async_context(sse_client(self.url, headers=headers or None))
        from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

        async def enter() -> Any:
            client = await stack.enter_async_context(create_mcp_http_client(headers=headers or None))
            return await stack.enter_async_context(streamable_http_client(self.url, http_client=client))

        return enter()


def read_servers_file(path: str | Path) -> dict[str, MCPServer]:
    file = str(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("the MCP servers file does not exist.", file=file,
                          fix="check mcp.mcp_servers_config_path (relative paths start at the tool YAML's folder)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"the MCP servers file is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).",
                          file=file, fix=f"write it as {SERVERS_EXAMPLE}") from None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict) or not servers:
        raise ConfigError("the MCP servers file has no `mcpServers` mapping of servers.", file=file,
                          fix=f"write it as {SERVERS_EXAMPLE}")
    found = {}
    for name, entry in servers.items():
        try:
            found[name] = MCPServer.model_validate({**(entry if isinstance(entry, dict) else {"bad": entry}), "name": name})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or name}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"MCP server {name!r}: {problems}.", file=file, entry=f"mcpServers.{name}",
                              fix=f"write each server as {SERVERS_EXAMPLE}") from None
    return found


class _Connection:
    """One open MCP session. Its transport and session live inside one task (anyio's scopes must be entered and
    left by the same task), which the callers talk to through the session object."""

    def __init__(self, server: MCPServer, connect_timeout: float):
        self.server, self.connect_timeout = server, connect_timeout
        self.session: Any = None
        self.error: BaseException | None = None
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> Any:
        self._task = asyncio.create_task(self._run(), name=f"mcp:{self.server.name}")
        try:
            await asyncio.wait_for(self._ready.wait(), self.connect_timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise MCPServerError(f"MCP server {self.server.describe()} did not finish its handshake within "
                                 f"{self.connect_timeout:g} s") from None
        if self.error is not None:
            await self.close()
            raise MCPServerError(f"MCP server {self.server.describe()} could not be started or reached: "
                                 f"{_reason(self.error)}") from None
        return self.session

    async def _run(self) -> None:
        from mcp import ClientSession

        try:
            async with AsyncExitStack() as stack:
                read, write = await self.server.transport_context(stack)
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                self.session = session
                self._ready.set()
                await self._closing.wait()
        except BaseException as exc:  # noqa: BLE001 - reported to the caller of open(), or ends a dead session
            self.error = exc
            self._ready.set()
            if isinstance(exc, asyncio.CancelledError):
                raise

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        self._closing.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 10.0)
            except (asyncio.TimeoutError, Exception):
                self._task.cancel()


@dataclass
class MCPServerPool:
    """The sessions with one server: one per trajectory, counted by the tool instances that use it."""

    server: MCPServer
    connect_timeout: float = 30.0
    limiter: TokenBucket | None = None
    _connections: dict[str, tuple[_Connection, int]] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _loop: Any = None

    def _lock(self, key: str) -> asyncio.Lock:
        """One lock per trajectory (so trajectories connect in parallel), made anew for each event loop (a run may
        use one loop per step, and a lock is bound to the loop it first waited in)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._locks = loop, {}
        return self._locks.setdefault(key, asyncio.Lock())

    async def acquire(self, key: str) -> _Connection:
        async with self._lock(key):
            entry = self._connections.get(key)
            if entry is not None and entry[0].alive:
                self._connections[key] = (entry[0], entry[1] + 1)
                return entry[0]
            connection = _Connection(self.server, self.connect_timeout)
            try:
                await connection.open()
            except BaseException:
                if key not in self._connections:
                    self._locks.pop(key, None)
                raise
            self._connections[key] = (connection, (entry[1] if entry else 0) + 1)
            return connection

    async def reopen(self, key: str) -> _Connection:
        """A fresh session in place of one whose server went away (the instance count is kept)."""
        async with self._lock(key):
            old, count = self._connections.get(key, (None, 1))
            if old is not None and old.alive:
                return old
            connection = _Connection(self.server, self.connect_timeout)
            await connection.open()
            self._connections[key] = (connection, count)
            return connection

    def get(self, key: str) -> _Connection | None:
        entry = self._connections.get(key)
        return entry[0] if entry else None

    async def release(self, key: str) -> None:
        entry = self._connections.get(key)
        if entry is None:
            return
        connection, count = entry
        if count > 1:
            self._connections[key] = (connection, count - 1)
            return
        del self._connections[key]
        self._locks.pop(key, None)
        await connection.close()

    def open_sessions(self) -> int:
        return sum(1 for connection, _ in self._connections.values() if connection.alive)


class MCPTool(BaseTool):
    """One tool of an MCP server. Built from a tool YAML entry of type `mcp` (`build_mcp_tools`), not directly."""

    def __init__(self, config: dict, tool_schema: OpenAIFunctionToolSchema | None, *, pool: MCPServerPool | None = None,
                 remote_name: str | None = None):
        if pool is None:
            raise ConfigError("MCPTool is built from a tool YAML entry of type `mcp`, not on its own.",
                              fix="write the entry with `config: {type: mcp}` and an `mcp:` block naming the servers file")
        super().__init__(config, tool_schema)
        self.pool = pool
        self.remote_name = remote_name or self.name
        self.timeout = float(self.config.get("timeout", 30.0))
        self.pass_images = bool(self.config.get("images", True))
        self._keys: dict[str, str] = {}

    def _trajectory_key(self, instance_id: str) -> str:
        # The session names instances `<trajectory id>-<tool name>`: the tools of one server share its session.
        suffix = f"-{self.name}"
        return instance_id[: -len(suffix)] if instance_id.endswith(suffix) else instance_id

    async def create(self, instance_id: str | None = None, **kwargs: Any) -> tuple[str, ToolResponse]:
        instance_id, response = await super().create(instance_id, **kwargs)
        key = self._trajectory_key(instance_id)
        await self.pool.acquire(key)
        self._keys[instance_id] = key
        return instance_id, response

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any) -> tuple[ToolResponse, float, dict]:
        key = self._keys.get(instance_id)
        if key is None:
            raise RuntimeError(f"MCP tool {self.name!r}: instance {instance_id!r} was never created")
        where = f"MCP server {self.pool.server.name!r}"
        if self.pool.limiter is not None:
            try:
                await self.pool.limiter.acquire(timeout=self.timeout)
            except RateLimitTimeout:
                return ToolResponse(text=f"Error: {where} is rate limited ({self.pool.limiter.rate:g} calls/s) and had "
                                         f"no free slot within {self.timeout:g} s; try again later."), 0.0, {"mcp_error": "rate_limit"}
        connection = self.pool.get(key)
        try:
            if connection is None or not connection.alive:
                connection = await self.pool.reopen(key)
            result = await asyncio.wait_for(connection.session.call_tool(self.remote_name, parameters), self.timeout)
        except asyncio.TimeoutError:
            return ToolResponse(text=f"Error: {where} did not answer `{self.name}` within {self.timeout:g} s."), 0.0, \
                {"mcp_error": "timeout"}
        except MCPServerError as exc:
            return ToolResponse(text=f"Error: {exc}."), 0.0, {"mcp_error": "unavailable"}
        except Exception as exc:  # noqa: BLE001 - a protocol or transport failure is the model's tool message
            return ToolResponse(text=f"Error: {where} failed on `{self.name}`: {_reason(exc)}"), 0.0, {"mcp_error": "call"}
        if getattr(result, "is_error", False):
            text = result_text(result)
            return ToolResponse(text=f"Error: {text}" if text else f"Error: `{self.name}` failed on {where}."), 0.0, \
                {"mcp_error": "tool"}
        images = result_images(result) if self.pass_images else []
        text = result_text(result, images_apart=bool(images))
        if images:
            return ToolResponse(text=text or None, image=images), 0.0, {}
        return ToolResponse(text=text), 0.0, {}

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        key = self._keys.pop(instance_id, None)
        if key is not None:
            await self.pool.release(key)


def result_images(result: Any) -> list[bytes]:
    """The decoded bytes of a CallToolResult's image blocks, in order (a block that does not decode is left to the
    text, as a placeholder)."""
    images = []
    for block in getattr(result, "content", None) or []:
        if getattr(block, "type", "") == "image":
            try:
                images.append(base64.b64decode(block.data, validate=True))
            except (binascii.Error, ValueError, TypeError):
                continue
    return images


def result_text(result: Any, *, images_apart: bool = False) -> str:
    """A CallToolResult as text for the model: text parts in order, resources by their text or URI, media named
    (images left out when `images_apart`: they travel as images); the structured content as JSON when there is
    no text."""
    parts = []
    for block in getattr(result, "content", None) or []:
        kind = getattr(block, "type", "")
        if kind == "image" and images_apart:
            continue
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource":
            resource = block.resource
            parts.append(getattr(resource, "text", None) or f"[resource {resource.uri}]")
        elif kind == "resource_link":
            parts.append(f"[resource {block.uri}]")
        else:
            parts.append(f"[{kind} {getattr(block, 'mime_type', '')}]".replace(" ]", "]"))
    structured = getattr(result, "structured_content", None)
    if not parts and structured is not None:
        parts.append(json.dumps(structured, ensure_ascii=False))
    return "\n".join(parts)


def _reason(exc: BaseException) -> str:
    """The innermost message of an exception (anyio wraps transport failures in exception groups)."""
    while isinstance(getattr(exc, "exceptions", None), tuple) and exc.exceptions:  # an exception group
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


@dataclass(frozen=True)
class MCPEntry:
    """One tool YAML entry of type `mcp`, checked; `build_mcp_tools` connects to its servers."""

    index: int
    file: str
    config: dict[str, Any]
    servers: dict[str, MCPServer]
    selected: tuple[str, ...] | None
    tool_class: type[MCPTool] = None  # type: ignore[assignment]  # set by parse_mcp_entry: MCPTool or a subclass


def parse_mcp_entry(raw: dict[str, Any], index: int, file: str) -> MCPEntry:
    entry = f"tools[{index}] (mcp)"
    block = raw.get("mcp")
    if not isinstance(block, dict) or not isinstance(block.get("mcp_servers_config_path"), str):
        raise ConfigError("an entry of type mcp needs `mcp: {mcp_servers_config_path: servers.json}`.", file=file,
                          entry=entry, fix="add the `mcp` block, optionally with `tool_selected_list: [tool, ...]`")
    path = Path(block["mcp_servers_config_path"]).expanduser()
    if not path.is_absolute():
        path = Path(file).parent / path
    selected = block.get("tool_selected_list")
    if selected is not None and (not isinstance(selected, list) or not all(isinstance(n, str) for n in selected)):
        raise ConfigError("`mcp.tool_selected_list` must be a list of tool names.", file=file, entry=entry,
                          fix="write it as tool_selected_list: [search, fetch]")
    config = dict(raw.get("config") or {})
    if not isinstance(config.get("images", True), bool):
        raise ConfigError(f"`config.images` must be true or false, got {config['images']!r}.", file=file, entry=entry,
                          fix="images: true passes a result's images to the model; false sends a placeholder")
    for key in ("timeout", "rate_limit", "connect_timeout"):
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise ConfigError(f"`config.{key}` must be a positive number, got {value!r}.", file=file, entry=entry,
                              fix=f"set {key}: 30 (seconds; for rate_limit: calls per second per server)")
    from agentgym.loading import import_class
    from agentgym.tools.aliases import VERL_CLASS_ALIASES

    tool_class = import_class(raw.get("class_name") or "agentgym.tools.mcp_tool.MCPTool", MCPTool,
                              aliases=VERL_CLASS_ALIASES, file=file, entry=entry)
    return MCPEntry(index, file, config, read_servers_file(path), tuple(selected) if selected is not None else None,
                    tool_class)


async def list_mcp_tools(entry: MCPEntry) -> list[tuple[MCPServer, Any]]:
    """(server, tool) for every tool the entry's servers list, filtered by `tool_selected_list`."""
    connect_timeout = float(entry.config.get("connect_timeout", 30.0))
    found = []
    for server in entry.servers.values():
        connection = _Connection(server, connect_timeout)
        session = await connection.open()
        try:
            cursor = None
            while True:
                from mcp import types

                page = await asyncio.wait_for(
                    session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None),
                    connect_timeout)
                found.extend((server, tool) for tool in page.tools)
                cursor = page.next_cursor
                if not cursor:
                    break
        finally:
            await connection.close()
    if entry.selected is not None:
        names = {tool.name for _, tool in found}
        missing = sorted(set(entry.selected) - names)
        if missing:
            raise ConfigError(f"`mcp.tool_selected_list` names {missing}, which no server lists (they list: "
                              f"{', '.join(sorted(names)) or 'nothing'}).", file=entry.file,
                              entry=f"tools[{entry.index}] (mcp)", fix="fix the names or drop them from the list")
        found = [(server, tool) for server, tool in found if tool.name in entry.selected]
    return found


def mcp_tool_names(entry: MCPEntry) -> list[str]:
    """The names of the entry's tools, asked of its servers (for the data check)."""
    try:
        return [tool.name for _, tool in _run_sync(list_mcp_tools(entry))]
    except MCPServerError as exc:
        raise ConfigError(f"{exc}.", file=entry.file, entry=f"tools[{entry.index}] (mcp)",
                          fix="check the server's url/command in the servers file, and that it runs") from None


def build_mcp_tools(entry: MCPEntry) -> dict[str, MCPTool]:
    """The entry's tools, schemas fetched from the servers now (each server started or reached once to list them)."""
    try:
        listed = _run_sync(list_mcp_tools(entry))
    except MCPServerError as exc:
        raise ConfigError(f"{exc}.", file=entry.file, entry=f"tools[{entry.index}] (mcp)",
                          fix="check the server's url/command in the servers file, and that it runs") from None
    rate = entry.config.get("rate_limit")
    pools = {name: MCPServerPool(server, float(entry.config.get("connect_timeout", 30.0)),
                                 TokenBucket(float(rate), max(1, int(rate))) if rate else None)
             for name, server in entry.servers.items()}
    tools: dict[str, MCPTool] = {}
    for server, tool in listed:
        if tool.name in tools:
            raise ConfigError(f"MCP servers {tools[tool.name].pool.server.name!r} and {server.name!r} both list tool "
                              f"{tool.name!r}.", file=entry.file, entry=f"tools[{entry.index}] (mcp)",
                              fix="keep one of them in tool_selected_list, or split the servers into two entries")
        schema = OpenAIFunctionToolSchema.model_validate({"type": "function", "function": {
            "name": tool.name, "description": tool.description or "",
            "parameters": tool.input_schema or {"type": "object", "properties": {}}}})
        tool_class = entry.tool_class or MCPTool
        tools[tool.name] = tool_class(entry.config, schema, pool=pools[server.name], remote_name=tool.name)
    return tools


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion from sync code, also when the caller is itself inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="mcp-list-tools")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
