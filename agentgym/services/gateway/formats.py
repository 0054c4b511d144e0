"""OpenAI Chat Completions and Anthropic Messages, both mapped onto one internal conversation.

The internal form is what the agent loop records and the chat template renders: OpenAI-style messages with
string content, assistant `tool_calls` whose arguments are JSON strings, and `tool` messages carrying
`tool_call_id` and the called tool's `name`; tools as `{"type": "function", "function": {...}}` dumped through
agentgym's schema model, so the rendered prompt is the agent loop's for the same tools.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from agentgym.episode.environment import tool_dicts
from agentgym.services.gateway.recorder import Completion, GatewayRequestError, Message
from agentgym.tools.schemas import OpenAIFunctionToolSchema


class _Lenient(BaseModel):
    """Clients send many fields we do not act on (frequency_penalty, parallel_tool_calls, ...): accept them."""

    model_config = ConfigDict(extra="allow")


class ChatCompletionRequest(_Lenient):
    model: str | None = None
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    logprobs: bool | None = None
    user: str | None = None


class MessagesRequest(_Lenient):
    model: str | None = None
    max_tokens: int
    messages: list[dict[str, Any]]
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = None


def _content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise GatewayRequestError(f"{where}: content parts of type {kind!r} are not supported by this gateway "
                                          "(text only); send text parts")
        return "".join(texts)
    raise GatewayRequestError(f"{where}: content must be a string or a list of parts, got {type(content).__name__}")


def normal_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """OpenAI function tools through agentgym's schema model (the agent loop renders exactly these dicts)."""
    if not tools:
        return None
    schemas = []
    for index, tool in enumerate(tools):
        try:
            schemas.append(OpenAIFunctionToolSchema.model_validate(tool))
        except ValidationError as exc:
            raise GatewayRequestError(f"tools[{index}] is not an OpenAI function tool "
                                      f"({{type: function, function: {{name, description, parameters}}}}): {exc}") from exc
    return tool_dicts(schemas)


def openai_messages(messages: list[dict[str, Any]]) -> list[Message]:
    out: list[Message] = []
    names: dict[str, str] = {}
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        role = message.get("role")
        if role == "developer":
            role = "system"
        if role in ("system", "user"):
            out.append({"role": role, "content": _content_text(message.get("content"), where)})
        elif role == "assistant":
            turn: Message = {"role": "assistant", "content": _content_text(message.get("content"), where)}
            calls = []
            for call in message.get("tool_calls") or []:
                fn = call.get("function") or {}
                arguments = fn.get("arguments", "{}")
                if not isinstance(arguments, str):
                    arguments = json.dumps(arguments, ensure_ascii=False)
                calls.append({"id": call.get("id"), "type": "function",
                              "function": {"name": fn.get("name"), "arguments": arguments}})
                if call.get("id"):
                    names[call["id"]] = fn.get("name")
            if calls:
                turn["tool_calls"] = calls
            out.append(turn)
        elif role == "tool":
            call_id = message.get("tool_call_id")
            turn = {"role": "tool", "tool_call_id": call_id}
            if call_id in names:
                turn["name"] = names[call_id]
            turn["content"] = _content_text(message.get("content"), where)
            out.append(turn)
        else:
            raise GatewayRequestError(f"{where}: unknown role {role!r}; use system, developer, user, assistant or tool")
    return out


def chat_completion(completion: Completion, model: str, *, logprobs: bool, tokenizer: Any) -> dict[str, Any]:
    parsed = completion.parsed
    message: dict[str, Any] = {"role": "assistant", "content": completion.content or None}
    if parsed.calls:
        message["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.name, "arguments": c.arguments_json()}} for c in parsed.calls]
    finish = "tool_calls" if parsed.calls and completion.finish_reason == "stop" else completion.finish_reason
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish if finish != "abort" else "stop"}
    if logprobs:
        choice["logprobs"] = {"content": [
            {"token": tokenizer.decode([t], skip_special_tokens=False), "logprob": lp, "bytes": None, "top_logprobs": []}
            for t, lp in zip(completion.token_ids, completion.logprobs)]}
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [choice],
            "usage": {"prompt_tokens": completion.prompt_tokens, "completion_tokens": len(completion.token_ids),
                      "total_tokens": completion.prompt_tokens + len(completion.token_ids)}}


def chat_completion_chunks(response: dict[str, Any]) -> list[dict[str, Any]]:
    """A whole completion as the stream a streaming client expects: the message in one delta, then the finish."""
    choice = response["choices"][0]
    message = choice["message"]
    delta: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    if message.get("tool_calls"):
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
    base = {"id": response["id"], "object": "chat.completion.chunk", "created": response["created"],
            "model": response["model"]}
    return [{**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}],
             "usage": response["usage"]}]


# -- Anthropic Messages ----------------------------------------------------------------------------------------

def anthropic_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    converted = []
    for index, tool in enumerate(tools):
        if "name" not in tool:
            raise GatewayRequestError(f"tools[{index}] has no `name`; Anthropic tools are {{name, description, "
                                      "input_schema}}")
        converted.append({"type": "function", "function": {"name": tool["name"], "description": tool.get("description", ""),
                                                           "parameters": tool.get("input_schema") or {"type": "object"}}})
    return normal_tools(converted)


def _block_text(content: Any, where: str) -> str:
    if isinstance(content, list):
        return _content_text([b for b in content if not (isinstance(b, dict) and b.get("type") == "image")], where)
    return _content_text(content, where)


def anthropic_messages(request: MessagesRequest) -> list[Message]:
    out: list[Message] = []
    if request.system:
        out.append({"role": "system", "content": _content_text(request.system, "system")})
    names: dict[str, str] = {}
    for index, message in enumerate(request.messages):
        where = f"messages[{index}]"
        role, content = message.get("role"), message.get("content")
        if role not in ("user", "assistant"):
            raise GatewayRequestError(f"{where}: role must be user or assistant, got {role!r}")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        if role == "assistant":
            texts, calls = [], []
            for block in blocks:
                if block.get("type") == "text":
                    texts.append(block.get("text", ""))
                elif block.get("type") == "tool_use":
                    names[block.get("id")] = block.get("name")
                    calls.append({"id": block.get("id"), "type": "function",
                                  "function": {"name": block.get("name"),
                                               "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False)}})
                elif block.get("type") in ("thinking", "redacted_thinking"):
                    continue
                else:
                    raise GatewayRequestError(f"{where}: assistant block type {block.get('type')!r} is not supported")
            turn: Message = {"role": "assistant", "content": "".join(texts)}
            if calls:
                turn["tool_calls"] = calls
            out.append(turn)
            continue
        texts = []
        for block in blocks:
            if block.get("type") == "tool_result":
                call_id = block.get("tool_use_id")
                result = {"role": "tool", "tool_call_id": call_id}
                if call_id in names:
                    result["name"] = names[call_id]
                result["content"] = _block_text(block.get("content"), where)
                out.append(result)
            elif block.get("type") == "text":
                texts.append(block.get("text", ""))
            else:
                raise GatewayRequestError(f"{where}: user block type {block.get('type')!r} is not supported (text and "
                                          "tool_result only)")
        if texts:
            out.append({"role": "user", "content": "".join(texts)})
    return out


def anthropic_message(completion: Completion, model: str) -> dict[str, Any]:
    parsed = completion.parsed
    content: list[dict[str, Any]] = []
    if completion.content:
        content.append({"type": "text", "text": completion.content})
    for call in parsed.calls:
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments})
    if completion.finish_reason == "length":
        stop = "max_tokens"
    elif parsed.calls:
        stop = "tool_use"
    else:
        stop = "end_turn"
    return {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": completion.prompt_tokens, "output_tokens": len(completion.token_ids)}}
