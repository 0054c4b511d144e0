"""Token ids of chat turns computed with the model's own chat template.

The agent loop never re-tokenizes model output: after an assistant turn it appends only the ids of the turns the
environment adds (tool results, user replies) and the next generation prompt. `chat_delta_ids` computes those ids
by rendering the conversation with and without the new turns and keeping the difference.

Templates without tool support (SmolLM2's, and many small instruct models') ignore `tools=` and render only each
message's `content`: the model would never see a tool schema, its own past calls or the results as tool results.
For those, the conversation is rendered in the hermes layout that the hermes parser reads, as SGLang and vLLM
users do for such models: the tool schemas go into the system turn inside `<tools>...</tools>` with the
instruction to answer with `<tool_call>{json}</tool_call>`, an assistant turn's parsed calls are written back as
`<tool_call>` blocks, and consecutive tool results become one user turn of `<tool_response>` blocks. A template
that renders tools itself is used as it is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

Message = dict[str, Any]

# The tool prompt of Qwen2.5's template (the hermes layout): what the hermes parser expects the model to write.
HERMES_TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function "
    "signatures within <tools></tools> XML tags:\n<tools>"
)
HERMES_TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\n</tool_call>"
)
_PROBE_NAME = "agentgym_template_probe_7f3c"
_PROBE_TOOL = {"type": "function", "function": {"name": _PROBE_NAME, "description": "probe",
                                                "parameters": {"type": "object", "properties": {}}}}
# Memo of `template_renders_tools`, keyed by the template text: a pure function of it, computed once per template.
_RENDERS_TOOLS: dict[str, bool] = {}


class ChatTokenizer(Protocol):
    eos_token: str | None

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def encode(self, text: str, **kwargs: Any) -> list[int]: ...


def template_renders_tools(tokenizer: ChatTokenizer) -> bool:
    """Whether the tokenizer's chat template shows the `tools=` it is given (rendered once with a probe tool)."""
    template = getattr(tokenizer, "chat_template", None)
    key = template if isinstance(template, str) else repr(template)
    if key not in _RENDERS_TOOLS:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tools=[_PROBE_TOOL], tokenize=False)
        _RENDERS_TOOLS[key] = _PROBE_NAME in text
    return _RENDERS_TOOLS[key]


def hermes_tool_prompt(tools: Sequence[dict[str, Any]]) -> str:
    return HERMES_TOOLS_HEADER + "".join("\n" + json.dumps(tool, ensure_ascii=False) for tool in tools) + HERMES_TOOLS_FOOTER


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part if isinstance(part, str) else str(part.get("text", "")) for part in content)


def _call_block(call: dict[str, Any]) -> str:
    fn = call.get("function", call)
    args = fn.get("arguments", {})
    args = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return f'<tool_call>\n{{"name": {json.dumps(fn.get("name"), ensure_ascii=False)}, "arguments": {args}}}\n</tool_call>'


def hermes_messages(messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None) -> list[Message]:
    """`messages` in the hermes layout, for a template that only renders `role` and `content` (module docstring)."""
    out: list[Message] = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            block = f"<tool_response>\n{_text(message.get('content'))}\n</tool_response>"
            if out and out[-1].get("_tool_results"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool_results": True})
            continue
        content = _text(message.get("content"))
        if role == "assistant" and message.get("tool_calls"):
            blocks = "\n".join(_call_block(call) for call in message["tool_calls"])
            content = f"{content}\n{blocks}" if content else blocks
        out.append({"role": role, "content": content})
    if tools:
        prompt = hermes_tool_prompt(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{prompt}" if out[0]["content"] else prompt}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return [{k: v for k, v in m.items() if k != "_tool_results"} for m in out]


def template_inputs(
    tokenizer: ChatTokenizer, messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None
) -> tuple[list[Message], list[dict[str, Any]] | None]:
    """The messages and tools to hand the template: as given, or in the hermes layout for a template that cannot
    show tools (module docstring)."""
    if template_renders_tools(tokenizer):
        return list(messages), list(tools) if tools else None
    return hermes_messages(messages, tools), None


def chat_ids(
    tokenizer: ChatTokenizer,
    messages: Sequence[Message],
    tools: Sequence[dict[str, Any]] | None = None,
    *,
    add_generation_prompt: bool = False,
) -> list[int]:
    """The template's ids for `messages` (a plain list on transformers 4 and 5 alike)."""
    messages, tools = template_inputs(tokenizer, messages, tools)
    ids = tokenizer.apply_chat_template(
        messages,
        tools=tools,
        tokenize=True,
        add_generation_prompt=add_generation_prompt,
        return_dict=False,
    )
    return [int(i) for i in ids]


def chat_text(
    tokenizer: ChatTokenizer,
    messages: Sequence[Message],
    tools: Sequence[dict[str, Any]] | None = None,
    *,
    add_generation_prompt: bool = False,
) -> str:
    messages, tools = template_inputs(tokenizer, messages, tools)
    return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt)


def chat_delta_ids(
    tokenizer: ChatTokenizer,
    prev_messages: Sequence[Message],
    new_messages: Sequence[Message],
    tools: Sequence[dict[str, Any]] | None = None,
    *,
    add_generation_prompt: bool = True,
    end_of_turn: str | None = None,
) -> list[int]:
    """Ids to append to a conversation so that it continues with `new_messages` (and the generation prompt).

    When `prev_messages` ends with an assistant turn, the ids being continued are the engine's output, which
    stops at the end-of-turn token (`end_of_turn`, default the tokenizer's eos token, `<|im_end|>`). The
    template's separator after that token (the newline of `<|im_end|>\n`) is therefore part of the delta.
    Otherwise the delta starts right after the template's rendering of `prev_messages`.

    Guarantee (tested for the tiny models' template): the ids of `prev` cut after its last end-of-turn token,
    followed by the delta, equal `chat_ids(prev + new, add_generation_prompt=...)`. Only the delta text is
    tokenized; both cuts fall right before or after a special token, where byte-level BPE never merges across.
    Raises ValueError when the template rewrites earlier turns once new ones follow (for example templates that
    drop past reasoning): a delta cannot be computed for those by templating.
    """
    if not new_messages and not add_generation_prompt:
        return []
    prev_text = chat_text(tokenizer, prev_messages, tools)
    full_text = chat_text(tokenizer, [*prev_messages, *new_messages], tools, add_generation_prompt=add_generation_prompt)
    if not full_text.startswith(prev_text):
        first = next((i for i, (a, b) in enumerate(zip(prev_text, full_text)) if a != b), len(full_text))
        raise ValueError(
            "the chat template renders the earlier turns differently once new turns follow (first difference at "
            f"character {first}: {prev_text[first:first + 40]!r}), so the new turns cannot be appended as a delta; "
            "use a template whose rendering of past turns does not depend on later ones"
        )
    cut = len(prev_text)
    if prev_messages and prev_messages[-1].get("role") == "assistant":
        marker = end_of_turn if end_of_turn is not None else getattr(tokenizer, "eos_token", None)
        at = prev_text.rfind(marker) if marker else -1
        if at < 0:
            raise ValueError(
                f"the rendered assistant turn does not contain the end-of-turn marker {marker!r}; pass end_of_turn "
                "with the token the chat template closes a turn with"
            )
        cut = at + len(marker)
    return [int(i) for i in tokenizer.encode(full_text[cut:], add_special_tokens=False)]
