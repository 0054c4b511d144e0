"""A real MCP server for the tests, written with the `mcp` SDK: `python3 mcp_test_server.py stdio` or
`python3 mcp_test_server.py http PORT` (streamable HTTP on 127.0.0.1:PORT/mcp, requiring header X-Test-Key: k)."""

from __future__ import annotations

import asyncio
import sys

from mcp.server.mcpserver import Context, Image, MCPServer

server = MCPServer("agentgym-test", log_level="CRITICAL")
_notes: dict[str, list[str]] = {}  # per MCP session (one stdio process, or one HTTP session id): the notes so far


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def remember(note: str, ctx: Context) -> str:
    """Remember a note in this session and list the notes so far."""
    notes = _notes.setdefault(str((ctx.headers or {}).get("mcp-session-id")), [])
    notes.append(note)
    return ", ".join(notes)


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return "done"


@server.tool()
def explode(message: str) -> str:
    """Always fails."""
    raise ValueError(message)


@server.tool()
def picture(colour: str) -> list:
    """A 24x16 PNG of one colour, and its caption."""
    import io

    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.new("RGB", (24, 16), colour).save(out, format="PNG")
    return [f"a {colour} rectangle", Image(data=out.getvalue(), format="png")]


@server.tool()
def whoami(ctx: Context) -> str:
    """The X-Test-Key header the client sent (HTTP only)."""
    headers = ctx.headers or {}
    return str(headers.get("x-test-key"))


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
