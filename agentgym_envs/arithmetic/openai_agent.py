"""An agent written the way users write one: the official `openai` client, a tool loop, tools run client-side.

It knows nothing of agentgym: it gets a base URL and a conversation, and returns its final answer. The trainer
launches it once per sample against the gateway (agentgym_envs/README.md, "Train an agent you already have"):
as a command (`python3 agentgym_envs/arithmetic/openai_agent.py`, reading OPENAI_BASE_URL and AGENTGYM_ROW_FILE)
or as a callable (`agent(ctx)`).
"""

from __future__ import annotations

import ast
import json
import operator
from typing import Any

from openai import OpenAI

CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate arithmetic exactly.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string", "description": 'e.g. "12*(3+4)"'}},
                       "required": ["expression"]},
    },
}
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def calculator(expression: str) -> str:
    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.BinOp):
            return _OPS[type(node.op)](value(node.left), value(node.right))
        raise ValueError(f"unsupported expression {expression!r}")

    return str(value(ast.parse(expression, mode="eval").body))


def run_agent(base_url: str, messages: list[dict[str, Any]], *, max_turns: int = 8, stream: bool = False) -> str | None:
    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    messages = list(messages)
    for _ in range(max_turns):
        if stream:
            text, calls = "", {}
            for chunk in client.chat.completions.create(model="policy", messages=messages, tools=[CALCULATOR], stream=True):
                delta = chunk.choices[0].delta if chunk.choices else None
                if delta is None:
                    continue
                text += delta.content or ""
                for call in delta.tool_calls or []:
                    calls[call.index] = call
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if calls:
                message["tool_calls"] = [{"id": c.id, "type": "function",
                                          "function": {"name": c.function.name, "arguments": c.function.arguments}}
                                         for c in calls.values()]
            messages.append(message)
            tool_calls = [(c.id, c.function.name, c.function.arguments) for c in calls.values()]
            content = text
        else:
            reply = client.chat.completions.create(model="policy", messages=messages, tools=[CALCULATOR])
            msg = reply.choices[0].message
            messages.append(msg.model_dump(exclude_none=True))
            tool_calls = [(c.id, c.function.name, c.function.arguments) for c in msg.tool_calls or []]
            content = msg.content
        if not tool_calls:
            return content
        for call_id, name, arguments in tool_calls:
            try:
                if name != "calculator":
                    raise ValueError(f"unknown tool {name}")
                result = calculator(**json.loads(arguments))
            except Exception as exc:  # the model sees its mistake, as users' agents do it
                result = f"Error: {exc}"
            messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
    return None


def agent(ctx) -> None:
    """The callable form (external_agent.callable=agentgym_envs/arithmetic/openai_agent.py:agent): no score of its
    own, so the task's teacher judges the recorded answer (external_agent.reward=auto)."""
    run_agent(ctx.base_url, list(ctx.row["prompt"]))


def brief_agent(ctx) -> float:
    """The same agent reporting its own score, one that prefers short answers: a signal the samples of a tiny
    random model differ on (the tests' GRPO run)."""
    answer = run_agent(ctx.base_url, list(ctx.row["prompt"])) or ""
    return 1.0 / (1.0 + len(answer))


if __name__ == "__main__":  # a command agent: the trainer passes the URL and the row in the environment
    import os

    row = json.loads(open(os.environ["AGENTGYM_ROW_FILE"]).read())
    answer = run_agent(os.environ["OPENAI_BASE_URL"], row["prompt"])
    print(answer)
