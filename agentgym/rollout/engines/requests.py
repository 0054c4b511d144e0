"""A generation request as the in-process engines track it: what was asked, what came out, and when it ends."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import torch

from agentgym.rollout.engines.base import (
    FINISH_ABORT,
    FINISH_LENGTH,
    FINISH_STOP,
    GenerateOutput,
    SamplingParams,
)

# Request numbers, unique in the process: a tensor-parallel leader names requests by them in its step messages.
_UIDS = itertools.count()


@dataclass(eq=False)
class Request:
    prompt_ids: list[int]
    sampling: SamplingParams
    future: asyncio.Future
    stop_ids: frozenset[int]
    max_total_len: int
    seed: int = 0
    generator: torch.Generator | None = None
    output_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    images: Any = None  # agentgym.multimodal.processor.ImageInputs of the prompt, for vision-language models
    uid: int = field(default_factory=lambda: next(_UIDS))

    def add(self, token: int, logprob: float) -> None:
        self.output_ids.append(token)
        self.logprobs.append(logprob)
        if token in self.stop_ids:
            self.finish_reason = FINISH_STOP
        elif len(self.output_ids) >= self.sampling.max_new_tokens:
            self.finish_reason = FINISH_LENGTH
        elif len(self.prompt_ids) + len(self.output_ids) >= self.max_total_len:
            self.finish_reason = FINISH_LENGTH

    def result(self, reason: str | None = None) -> GenerateOutput:
        return GenerateOutput(list(self.output_ids), list(self.logprobs), reason or self.finish_reason or FINISH_ABORT)
