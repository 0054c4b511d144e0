"""Tool-call parsers: one model turn in, content + calls + model-readable errors out; calls in, formatted text out.

    parser = get_parser("hermes")    # or "qwen3_coder" (give it the tools' schemas), "gpt-oss", ...
    result = parser.parse(text)      # ParseResult(content, calls: [ParsedToolCall], errors: [ParseError])
    text = parser.format(calls, content="...")
"""

from agentgym.parsers.base import ParsedToolCall, ParseError, ParseResult, ToolCallLike, ToolCallParser
from agentgym.parsers.harmony import HarmonyToolCallParser
from agentgym.parsers.hermes import HermesToolCallParser
from agentgym.parsers.llama3_json import Llama3JsonToolCallParser
from agentgym.parsers.mistral import MistralToolCallParser
from agentgym.parsers.qwen3_coder import Qwen3CoderToolCallParser
from agentgym.parsers.registry import available_parsers, chat_template, get_parser

__all__ = [
    "HarmonyToolCallParser",
    "HermesToolCallParser",
    "Llama3JsonToolCallParser",
    "MistralToolCallParser",
    "ParseError",
    "ParseResult",
    "ParsedToolCall",
    "Qwen3CoderToolCallParser",
    "ToolCallLike",
    "ToolCallParser",
    "available_parsers",
    "chat_template",
    "get_parser",
]
