"""An engine whose answers come from a function of the conversation so far, tokenized with the real tokenizer.

For what needs exact control over what the "model" says: tests of the agent loop's token bookkeeping, and
benchmarks of the environment layer without generation cost ("an engine that answers instantly").
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from agentgym.rollout.engines.base import GenerateOutput, SamplingParams

ScriptFn = Callable[[str, str | None], str]


class ScriptedEngine:
    takes_images = False
    """`script(conversation_text, session_id) -> reply_text`; the reply is encoded and closed with `end_of_turn`.

    Logprobs are a fixed value per token (`logprob`); `delay_s` simulates generation time without using CPU.
    """

    def __init__(self, tokenizer: Any, script: ScriptFn, *, end_of_turn: str | None = None, logprob: float = -0.25, delay_s: float = 0.0):
        self.tokenizer = tokenizer
        self.script = script
        self.end_of_turn_id = tokenizer.convert_tokens_to_ids(end_of_turn or tokenizer.eos_token)
        self.logprob = logprob
        self.delay_s = delay_s
        self.calls = 0

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams, *, session_id: str | None = None) -> GenerateOutput:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        text = self.script(self.tokenizer.decode(prompt_ids, skip_special_tokens=False), session_id)
        ids = list(self.tokenizer.encode(text, add_special_tokens=False)) + [self.end_of_turn_id]
        finish = "stop"
        if len(ids) > sampling.max_new_tokens:
            ids, finish = ids[: sampling.max_new_tokens], "length"
        return GenerateOutput(ids, [self.logprob] * len(ids), finish)

    async def update_weights(self, state_dict: Any = None, *, path: str | None = None) -> None:
        return None

    async def health(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> "ScriptedEngine":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None
