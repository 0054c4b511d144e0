import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentgym.models import chat_delta_ids, chat_ids, chat_text

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate an arithmetic expression.",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
        },
    }
]

CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is 6 * 7?"},
    {
        "role": "assistant",
        "content": "Let me compute.",
        "tool_calls": [{"type": "function", "function": {"name": "calculator", "arguments": {"expression": "6*7"}}}],
    },
    {"role": "tool", "content": "42"},
    {"role": "assistant", "content": "It is 42."},
]


def test_template_renders_tools_calls_and_responses_in_qwen25_layout(tiny_tokenizer_loaded):
    text = chat_text(tiny_tokenizer_loaded, CONVERSATION, TOOLS, add_generation_prompt=False)
    system, rest = text.split("<|im_end|>\n", 1)
    assert system.startswith("<|im_start|>system\nAnswer briefly.\n\n# Tools\n\n")
    assert "\n<tools>\n" + json.dumps(TOOLS[0]) + "\n</tools>\n" in system
    assert rest == (
        "<|im_start|>user\nWhat is 6 * 7?<|im_end|>\n"
        "<|im_start|>assistant\nLet me compute.\n<tool_call>\n"
        '{"name": "calculator", "arguments": {"expression": "6*7"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\nIt is 42.<|im_end|>\n"
    )


def test_template_defaults_and_generation_prompt(tiny_tokenizer_loaded):
    text = chat_text(tiny_tokenizer_loaded, [{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_template_groups_consecutive_tool_results_and_accepts_string_arguments(tiny_tokenizer_loaded):
    messages = [
        {"role": "user", "content": "two calls"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"type": "function", "function": {"name": "a", "arguments": '{"x": 1}'}},
                {"type": "function", "function": {"name": "b", "arguments": {}}},
            ],
        },
        {"role": "tool", "content": "one"},
        {"role": "tool", "content": [{"type": "text", "text": "two"}]},
    ]
    text = chat_text(tiny_tokenizer_loaded, messages)
    assert text.endswith(
        "<|im_start|>assistant\n<tool_call>\n"
        '{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n<tool_call>\n{"name": "b", "arguments": {}}\n'
        "</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\none\n</tool_response>\n<tool_response>\ntwo\n</tool_response>"
        "<|im_end|>\n"
    )


def test_tokenized_template_decodes_back_to_rendered_text(tiny_tokenizer_loaded):
    tok = tiny_tokenizer_loaded
    ids = tok.apply_chat_template(CONVERSATION, tools=TOOLS, tokenize=True, return_dict=False)
    assert ids == chat_ids(tok, CONVERSATION, TOOLS)
    assert tok.decode(ids) == chat_text(tok, CONVERSATION, TOOLS)
    turns = ids[ids.index(tok.eos_token_id) + 1 :]  # after the system turn, which describes the markup
    assert turns.count(tok.convert_tokens_to_ids("<tool_call>")) == 1
    assert turns.count(tok.convert_tokens_to_ids("<tool_response>")) == 1


def _check_delta(tok, prev, new, tools, add_generation_prompt=True):
    delta = chat_delta_ids(tok, prev, new, tools, add_generation_prompt=add_generation_prompt)
    prev_ids = chat_ids(tok, prev, tools)
    if prev and prev[-1]["role"] == "assistant":
        # The engine's output stops at <|im_end|>; the template's trailing newline belongs to the delta.
        last_end = max(i for i, t in enumerate(prev_ids) if t == tok.eos_token_id)
        prev_ids = prev_ids[: last_end + 1]
    assert prev_ids + delta == chat_ids(tok, [*prev, *new], tools, add_generation_prompt=add_generation_prompt)
    return delta


def test_delta_after_assistant_turn_starts_with_the_turn_separator(tiny_tokenizer_loaded):
    tok = tiny_tokenizer_loaded
    delta = _check_delta(tok, CONVERSATION[:3], [CONVERSATION[3]], TOOLS)
    assert tok.decode(delta) == (
        "\n<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    without_prompt = _check_delta(tok, CONVERSATION[:3], [CONVERSATION[3]], TOOLS, add_generation_prompt=False)
    assert tok.decode(without_prompt).endswith("</tool_response><|im_end|>\n")


text_st = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=40
).filter(lambda s: "<|" not in s and "<tool" not in s and "</tool" not in s)
call_st = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": st.sampled_from(["calculator", "search", "python"]),
             "arguments": st.dictionaries(st.sampled_from(["x", "q", "code"]), text_st | st.integers(), max_size=2)}
        ),
    }
)
assistant_st = st.builds(
    lambda content, calls: {"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})},
    text_st,
    st.lists(call_st, max_size=2),
)
env_turn_st = st.one_of(
    st.lists(st.builds(lambda c: {"role": "tool", "content": c}, text_st), min_size=1, max_size=3),
    st.builds(lambda c: [{"role": "user", "content": c}], text_st),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    system=st.none() | text_st,
    first_user=text_st,
    rounds=st.lists(st.tuples(assistant_st, env_turn_st), min_size=1, max_size=3),
    use_tools=st.booleans(),
)
def test_delta_property_over_random_conversations(tiny_tokenizer_loaded, system, first_user, rounds, use_tools):
    tok = tiny_tokenizer_loaded
    tools = TOOLS if use_tools else None
    messages = ([{"role": "system", "content": system}] if system is not None else [])
    messages.append({"role": "user", "content": first_user})
    for assistant, env_turn in rounds:
        messages.append(assistant)
        _check_delta(tok, messages, env_turn, tools)
        messages.extend(env_turn)


def test_delta_refuses_templates_that_rewrite_history(tiny_tokenizer_loaded):
    tok = tiny_tokenizer_loaded
    original = tok.chat_template
    # Renders only the latest message: appending a turn rewrites everything before it.
    tok.chat_template = "{% for m in messages %}{% if loop.last %}{{ m.content }}<|im_end|>{% endif %}{% endfor %}"
    try:
        with pytest.raises(ValueError, match="renders the earlier turns differently"):
            chat_delta_ids(tok, [{"role": "assistant", "content": "a"}], [{"role": "user", "content": "b"}])
    finally:
        tok.chat_template = original
