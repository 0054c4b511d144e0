"""Hypothesis strategies for tool calls, with the markup of every format mixed into names, keys and strings."""

from __future__ import annotations

import string

from hypothesis import strategies as st

MARKUP = [
    "<tool_call>", "</tool_call>", "<|python_tag|>", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]",
    "<|im_end|>", "<|eot_id|>", "</s>", "{", "}", "[", "]", '"', "\\", ";", ",", ":", "\n", " ",
]  # fmt: skip
ALL_MARKERS = ("<tool_call>", "<|python_tag|>", "[TOOL_CALLS]", "<|", "</s>")

markup_soup = st.lists(st.sampled_from(MARKUP) | st.text(max_size=4), max_size=12).map("".join)
strings = st.text(max_size=20) | markup_soup
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | strings,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(strings, children, max_size=4),
    max_leaves=10,
)
arguments = st.dictionaries(strings, json_values, max_size=4)
names = strings.filter(lambda name: name.strip())
compact_names = st.text(
    alphabet=st.characters(blacklist_categories=("Z", "C"), blacklist_characters="[{"), min_size=1, max_size=40
)
mistral_ids = st.text(alphabet=string.ascii_letters + string.digits, min_size=9, max_size=9)


def contents(*, llama: bool = False) -> st.SearchStrategy[str]:
    """Assistant text as a parser reports it: stripped, and free of every format's markers."""
    text = (st.text() | markup_soup).map(str.strip).filter(lambda t: not any(marker in t for marker in ALL_MARKERS))
    return text.filter(lambda t: not t.startswith("{")) if llama else text


def openai_calls(name_strategy: st.SearchStrategy[str] = names) -> st.SearchStrategy[list[dict]]:
    call = st.fixed_dictionaries(
        {"id": mistral_ids, "type": st.just("function"), "function": st.fixed_dictionaries({"name": name_strategy, "arguments": arguments})}
    )
    return st.lists(call, max_size=3)
