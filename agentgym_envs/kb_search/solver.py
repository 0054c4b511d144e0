"""The ideal policy: search each entity on the row's path in turn, then box the year the last document gives.

Its transcripts, rendered token-exact by the agent loop through the real search tool and retrieval server, are
the warm-up SFT data of `agentgym_envs.kb_search.learn`. For chosen rows it answers from memory instead (the
right year, no search), as the arithmetic teacher does: RL then has to find out that searching pays.
"""

from __future__ import annotations

import json
import re
from typing import Any, Collection, Mapping, Sequence

_RESPONSE = re.compile(r"<tool_response>\s*(.*?)\s*</tool_response>", re.S)
_YEAR = re.compile(r"(?:born|founded) in (\d{4})")


def search_call(query: str) -> dict[str, Any]:
    return {"name": "search", "arguments": {"query_list": [query]}}


def ideal_reply(row: Mapping[str, Any], conversation: str, *, direct: bool = False) -> str:
    if direct:
        return f"\\boxed{{{row['reward_model']['ground_truth']}}}"
    path = row["extra_info"]["search_path"]
    results = _RESPONSE.findall(conversation)
    if len(results) < len(path):
        return f"<tool_call>\n{json.dumps(search_call(path[len(results)]))}\n</tool_call>"
    year = _YEAR.search(results[-1])
    return f"\\boxed{{{year.group(1) if year else 'unknown'}}}"


def ideal_script(rows: Sequence[Mapping[str, Any]], group_prefix: str, direct_rows: Collection[int] = ()):
    """A ScriptedEngine script for `AgentLoop.run_batch(rows, group_prefix=group_prefix)`."""

    def script(conversation: str, session_id: str | None) -> str:
        index = int(session_id.removeprefix(group_prefix).split("-")[0])
        return ideal_reply(rows[index], conversation, direct=index in direct_rows)

    return script


def found_answer(messages: Sequence[Mapping[str, Any]], truth: str) -> bool:
    """Some search of the episode returned a document stating the answer."""
    return any(m.get("role") == "tool" and re.search(rf"(?:born|founded) in {re.escape(truth)}\b", m.get("content") or "")
               for m in messages)
