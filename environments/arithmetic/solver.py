"""The ideal policy for arithmetic rows: one calculator call with the task's expression, then the boxed result.

Its transcripts, rendered token-exact by the agent loop, are the warm-up SFT data of the main job.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Sequence

_RESPONSE = re.compile(r"<tool_response>\s*(.*?)\s*</tool_response>", re.S)


def ideal_reply(row: Mapping[str, Any], conversation: str) -> str:
    results = _RESPONSE.findall(conversation)
    if results:
        return f"\\boxed{{{results[-1]}}}"
    call = {"name": "calculator", "arguments": {"expression": row["extra_info"]["expression"]}}
    return f"<tool_call>\n{json.dumps(call)}\n</tool_call>"


def ideal_script(rows: Sequence[Mapping[str, Any]], group_prefix: str):
    """A ScriptedEngine script for `AgentLoop.run_batch(rows, group_prefix=group_prefix)`: finds the row by uid."""

    def script(conversation: str, session_id: str | None) -> str:
        index = int(session_id.removeprefix(group_prefix).split("-")[0])
        return ideal_reply(rows[index], conversation)

    return script
