"""The engine protocol: what the agent loop needs from an inference backend, whichever it is.

Logprob convention (both engines, and what the trainer must reproduce): the logprob of a sampled token is taken
from `log_softmax(logits / temperature)` over the full vocabulary, before top-k/top-p filtering; a greedy
request (temperature 0) uses `log_softmax(logits)`. This is what SGLang's `/generate` reports by default
(`SGLANG_RETURN_ORIGINAL_LOGPROB` unset).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch

from agentgym.errors import AgentGymError

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_ABORT = "abort"

# Below this a temperature means greedy decoding (SGLang uses the same threshold idea).
GREEDY_TEMPERATURE = 1e-5


@dataclass
class SamplingParams:
    """Per-request sampling settings (SGLang's names and meanings).

    `temperature` 0 is greedy. `top_k` -1 and `top_p` 1.0 disable those filters. `stop_token_ids` end the
    generation in addition to the model's eos ids; the stop token is kept in the output. `seed` makes a sampled
    request reproducible (SGLang honours it only with `--enable-deterministic-inference`).
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    stop_token_ids: list[int] | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k == 0 or self.top_k < -1:
            raise ValueError(f"top_k must be -1 (off) or a positive count, got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_TEMPERATURE


class GenerateOutput(NamedTuple):
    """One completion: the engine's exact token ids, their logprobs, and why it ended.

    finish_reason: "stop" (an eos or stop token ended it; that token is the last of `token_ids`), "length"
    (`max_new_tokens` or the context limit reached) or "abort" (the engine was closed or aborted the request;
    `token_ids` holds what was produced before).
    policy_version: the policy version of the weights that produced it, when the engine knows it (a replica the
    trainer syncs with versions, `trainer.workers.replica.ReplicaHost`); None: the caller's gate decides.
    """

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    policy_version: int | None = None


class EngineError(AgentGymError):
    """The engine could not serve a request (bad request, no healthy server, failed weight update)."""


@runtime_checkable
class Engine(Protocol):
    # Whether `generate` accepts `images` (an `ImageInputs`): the agent loop refuses image episodes otherwise,
    # instead of dropping the pictures unseen.
    takes_images: bool

    async def generate(
        self, prompt_ids: list[int], sampling: SamplingParams, *, session_id: str | None = None, images: Any = None
    ) -> GenerateOutput:
        """Continue `prompt_ids`. `session_id` (the trajectory id) keeps a multi-turn episode on one server."""
        ...

    async def update_weights(
        self, state_dict: dict[str, torch.Tensor] | None = None, *, path: str | None = None
    ) -> None:
        """Load new policy weights, from tensors or from a saved model directory."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def health(self) -> bool: ...

    async def __aenter__(self) -> Engine: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class EngineContextMixin:
    """`async with engine:` starts it and closes it."""

    async def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        await self.close()
