"""The ideal policy for arithmetic rows: one calculator call with the task's expression, then the boxed result.

Its transcripts, rendered token-exact by the agent loop, are the warm-up SFT data of the main job. For chosen rows
it can instead answer from memory (the right answer, no tool), the way a teacher who does mental math would: a
model warmed up on that mix calls the tool only some of the time, and RL has to find out that the tool pays.
"""

from __future__ import annotations

import json
import re
from typing import Any, Collection, Mapping, Sequence

_RESPONSE = re.compile(r"<tool_response>\s*(.*?)\s*</tool_response>", re.S)


def calculator_call(expression: str) -> dict[str, Any]:
    return {"name": "calculator", "arguments": {"expression": expression}}


def ideal_reply(row: Mapping[str, Any], conversation: str, make_call=calculator_call, *, direct: bool = False) -> str:
    """Call the tool on the task's expression; once it answered, box the last line of its answer.
    `direct`: answer with the ground truth at once, without the tool."""
    if direct:
        return f"\\boxed{{{row['reward_model']['ground_truth']}}}"
    results = _RESPONSE.findall(conversation)
    if results:
        return f"\\boxed{{{results[-1].strip().splitlines()[-1].strip()}}}"
    return f"<tool_call>\n{json.dumps(make_call(row['extra_info']['expression']))}\n</tool_call>"


def ideal_script(rows: Sequence[Mapping[str, Any]], group_prefix: str, make_call=calculator_call,
                 direct_rows: Collection[int] = ()):
    """A ScriptedEngine script for `AgentLoop.run_batch(rows, group_prefix=group_prefix)`: finds the row by uid.
    Rows whose index is in `direct_rows` are answered without the tool."""

    def script(conversation: str, session_id: str | None) -> str:
        index = int(session_id.removeprefix(group_prefix).split("-")[0])
        return ideal_reply(rows[index], conversation, make_call, direct=index in direct_rows)

    return script
