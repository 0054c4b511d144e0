"""Token ids of chat turns computed with the model's own chat template.

The agent loop never re-tokenizes model output: after an assistant turn it appends only the ids of the turns the
environment adds (tool results, user replies) and the next generation prompt. `chat_delta_ids` computes those ids
by rendering the conversation with and without the new turns and keeping the difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

Message = dict[str, Any]


class ChatTokenizer(Protocol):
    eos_token: str | None

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def encode(self, text: str, **kwargs: Any) -> list[int]: ...


def chat_ids(
    tokenizer: ChatTokenizer,
    messages: Sequence[Message],
    tools: Sequence[dict[str, Any]] | None = None,
    *,
    add_generation_prompt: bool = False,
) -> list[int]:
    """The template's ids for `messages` (a plain list on transformers 4 and 5 alike)."""
    ids = tokenizer.apply_chat_template(
        list(messages),
        tools=list(tools) if tools else None,
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
    return tokenizer.apply_chat_template(
        list(messages), tools=list(tools) if tools else None, tokenize=False, add_generation_prompt=add_generation_prompt
    )


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
