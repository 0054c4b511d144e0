"""The ideal policy for arithmetic rows: one calculator call with the task's expression, then the boxed result.

Its transcripts, rendered token-exact by the agent loop, are the warm-up SFT data of the main job.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Sequence

_RESPONSE = re.compile(r"<tool_response>\s*(.*?)\s*</tool_response>", re.S)


def calculator_call(expression: str) -> dict[str, Any]:
    return {"name": "calculator", "arguments": {"expression": expression}}


def ideal_reply(row: Mapping[str, Any], conversation: str, make_call=calculator_call) -> str:
    """Call the tool on the task's expression; once it answered, box the last line of its answer."""
    results = _RESPONSE.findall(conversation)
    if results:
        return f"\\boxed{{{results[-1].strip().splitlines()[-1].strip()}}}"
    return f"<tool_call>\n{json.dumps(make_call(row['extra_info']['expression']))}\n</tool_call>"


def ideal_script(rows: Sequence[Mapping[str, Any]], group_prefix: str, make_call=calculator_call):
    """A ScriptedEngine script for `AgentLoop.run_batch(rows, group_prefix=group_prefix)`: finds the row by uid."""

    def script(conversation: str, session_id: str | None) -> str:
        index = int(session_id.removeprefix(group_prefix).split("-")[0])
        return ideal_reply(rows[index], conversation, make_call)

    return script
