"""In-process engine: a transformers causal LM behind continuous batching, the embedded default for CPU and tests.

A scheduler task collects requests; each scheduler step runs in one worker thread (so the event loop stays
free): newly arrived requests are prefilled together, join the running batch, and every running sequence then
advances one token. Finished sequences leave the batch at once and their callers resume.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from agentgym.rollout.engines.base import (
    EngineError,
    GenerateOutput,
    SamplingParams,
)
from agentgym.rollout.engines.in_process import InProcessEngine
from agentgym.rollout.engines.kv_batch import KVBatch, cache_kwarg, new_cache
from agentgym.rollout.engines.loading import load_causal_lm
from agentgym.rollout.engines.requests import Request
from agentgym.rollout.engines.sampling import sample_tokens
from agentgym.rollout.engines.tensor_parallel import TensorParallel

log = logging.getLogger(__name__)

@dataclass
class DynamicCacheEngineConfig:
    """How the in-process engine runs.

    `max_batch_size` bounds the sequences decoded together; `max_prefill_tokens` bounds one prefill forward
    (padded prompt tokens), so a burst of long prompts is prefilled in several passes. `intra_op_threads` is
    torch's thread count inside the engine's worker thread only (None leaves torch's default): on a shared
    CPU, small matmuls spread over busy cores wait on each other, and one thread was 20x faster on the
    2-core CI machine under load.
    """

    device: str = "cpu"
    dtype: str = "float32"
    max_batch_size: int = 64
    max_prefill_tokens: int = 16384
    attn_implementation: str = "sdpa"
    intra_op_threads: int | None = 1


@dataclass
class EngineStats:
    """Counters of what the scheduler actually did (tests assert batching from these)."""

    requests_finished: int = 0
    tokens_generated: int = 0
    prefill_passes: int = 0
    decode_steps: int = 0
    max_decode_batch: int = 0
    max_prefill_batch: int = 0
    decode_batch_sizes: Counter = field(default_factory=Counter)
    weight_version: int = 0

    def counters(self) -> dict[str, float]:
        """The cumulative counters every engine reports (this engine keeps no prefix cache)."""
        return {"generated_tokens": self.tokens_generated}


class DynamicCacheEngine(InProcessEngine):
    """Engine over a local `AutoModelForCausalLM` directory. See `engines.base` for the logprob convention.

    `tensor_parallel`: this rank's group when the replica spans several ranks (`engines.tensor_parallel`); the
    model's projections are split over it and every rank runs the leader's steps."""

    def __init__(self, model_path: str | Path | None, config: DynamicCacheEngineConfig | None = None, *,
                 tensor_parallel: TensorParallel | None = None):
        self.model_path = str(model_path) if model_path is not None else None
        self.config = config or DynamicCacheEngineConfig()
        self.stats = EngineStats()
        self.model: torch.nn.Module | None = None
        self.eos_token_ids: frozenset[int] = frozenset()
        self.max_context: int = 0
        self._cache_kwarg = "past_key_values"
        self._waiting: deque[Request] = deque()
        self._batch: KVBatch | None = None
        self._in_step: list[Request] = []
        self._init_runtime(tensor_parallel)

    @classmethod
    def from_model(
        cls, model: torch.nn.Module, *, eos_token_ids: list[int], config: DynamicCacheEngineConfig | None = None,
        tensor_parallel: TensorParallel | None = None,
    ) -> DynamicCacheEngine:
        """Serve an already-loaded model (for example one a trainer process also holds; with `tensor_parallel` it
        is split in place)."""
        engine = cls(None, config, tensor_parallel=tensor_parallel)
        engine._adopt(model, eos_token_ids)
        return engine

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def _build(self) -> None:
        if self.model is None:
            self._adopt(*self._load())

    def _abandon(self) -> list[Request]:
        pending = list(self._waiting) + list(self._in_step) + (self._batch.rows if self._batch else [])
        self._waiting.clear()
        self._in_step = []
        self._batch = None
        return pending

    def _load(self) -> tuple[torch.nn.Module, list[int]]:
        if self.model_path is None:
            raise EngineError("DynamicCacheEngine needs a model path (or use DynamicCacheEngine.from_model)")
        return load_causal_lm(self.model_path, self.config.attn_implementation)

    def _adopt(self, model: torch.nn.Module, eos_token_ids: list[int]) -> None:
        dtype = getattr(torch, self.config.dtype)
        self._shard(model)
        model = model.to(device=self.config.device, dtype=dtype).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        self.eos_token_ids = frozenset(int(i) for i in eos_token_ids)
        self.max_context = int(getattr(model.config.get_text_config(), "max_position_embeddings", 1 << 30))
        self.image_token_id = getattr(model.config, "image_token_id", None)
        self._cache_kwarg = cache_kwarg(model)

    # ---- requests ----------------------------------------------------------------------------------------------

    async def generate(
        self, prompt_ids: list[int], sampling: SamplingParams, *, session_id: str | None = None,
        images: Any = None,
    ) -> GenerateOutput:
        """Queue one request and wait for its completion (`session_id` is unused: there is one replica).

        `images` (an `ImageInputs`, for vision-language models) are the images whose pad tokens `prompt_ids`
        holds, in order; their pixels enter the model at prefill."""
        self._check_prompt(prompt_ids)
        if images is not None and len(images):
            self._check_images(prompt_ids, images)
        seed = sampling.seed if sampling.seed is not None else secrets.randbits(63)
        request = Request(
            prompt_ids=list(prompt_ids),
            sampling=sampling,
            future=asyncio.get_running_loop().create_future(),
            stop_ids=self.eos_token_ids | frozenset(sampling.stop_token_ids or ()),
            generator=torch.Generator(device=self.config.device).manual_seed(seed),
            seed=seed,
            max_total_len=self.max_context,
            images=images if images is not None and len(images) else None,
        )
        self._waiting.append(request)
        self._wake.set()
        return await request.future

    def _check_images(self, prompt_ids: list[int], images: Any) -> None:
        self._check_image_tokens(prompt_ids, images, self.image_token_id)

    # ---- scheduler ---------------------------------------------------------------------------------------------

    async def _serve(self) -> None:
        assert self._wake is not None and self._drained is not None
        while True:
            self._drop_cancelled_waiting()
            running = len(self._batch) if self._batch else 0
            admit = bool(self._waiting) and not self._paused and running < self.config.max_batch_size
            if running == 0:
                self._drained.set()
                if not admit:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
            newcomers = self._admit() if admit else []
            if newcomers:
                self._drained.clear()
            cancelled = [i for i, r in enumerate(self._batch.rows) if r.future.done()] if self._batch else []
            self._in_step = newcomers
            try:
                finished = await self._run_step(newcomers, cancelled)
            except Exception as exc:  # a failing forward fails its requests, never the engine
                log.exception("engine step failed")
                failed = newcomers + (self._batch.rows if self._batch else [])
                self._batch = None
                error = EngineError(f"generation failed inside the model: {exc!r}")
                for req in failed:
                    if not req.future.done():
                        req.future.set_exception(error)
                continue
            finally:
                self._in_step = []
            for req in finished:
                self.stats.requests_finished += 1
                if not req.future.done():
                    req.future.set_result(req.result())

    def _drop_cancelled_waiting(self) -> None:
        if any(r.future.done() for r in self._waiting):
            self._waiting = deque(r for r in self._waiting if not r.future.done())

    def _admit(self) -> list[Request]:
        room = self.config.max_batch_size - (len(self._batch) if self._batch else 0)
        chosen: list[Request] = []
        longest = 0
        while self._waiting and len(chosen) < room:
            nxt = self._waiting[0]
            padded = max(longest, len(nxt.prompt_ids)) * (len(chosen) + 1)
            if chosen and padded > self.config.max_prefill_tokens:
                break
            longest = max(longest, len(nxt.prompt_ids))
            chosen.append(self._waiting.popleft())
        return chosen

    # ---- tensor parallelism: what a follower needs to run the leader's step -----------------------------------

    def _step_message(self, newcomers: list[Request], cancelled: list[int]) -> tuple:
        return [self._request_spec(r) for r in newcomers], cancelled

    def _mirror_step(self, message: tuple) -> list[Request]:
        specs, cancelled = message
        newcomers = []
        for spec in specs:
            req = self._mirror_request(spec)
            req.generator = torch.Generator(device=self.config.device).manual_seed(req.seed)
            newcomers.append(req)
        return self._step(newcomers, cancelled)

    def _reset_after_failure(self) -> None:
        self._batch = None

    # ---- worker thread -----------------------------------------------------------------------------------------

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any, **vision: Any):
        return self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_kwarg: cache},
            **vision,
        ).logits[:, -1, :]

    def _step(self, newcomers: list[Request], cancelled: list[int]) -> list[Request]:
        finished: list[Request] = []
        with torch.inference_mode():
            if cancelled and self._batch is not None:
                dead = set(cancelled)
                self._batch.keep([i for i in range(len(self._batch)) if i not in dead])
            if newcomers:
                joined, done = self._prefill(newcomers)
                finished += done
                if joined is not None:
                    if self._batch is None or len(self._batch) == 0:
                        self._batch = joined
                    else:
                        self._batch.merge(joined)
            if self._batch is not None and len(self._batch):
                finished += self._decode(self._batch)
            if self._batch is not None and len(self._batch) == 0:
                self._batch = None
        return finished

    def _prefill(self, requests: list[Request]) -> tuple[KVBatch | None, list[Request]]:
        device = self.config.device
        width = max(len(r.prompt_ids) for r in requests)
        ids = torch.zeros((len(requests), width), dtype=torch.long, device=device)
        mask = torch.zeros((len(requests), width), dtype=torch.long, device=device)
        for row, req in enumerate(requests):
            n = len(req.prompt_ids)
            ids[row, width - n :] = torch.tensor(req.prompt_ids, dtype=torch.long)
            mask[row, width - n :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        next_positions = mask.sum(-1)
        vision: dict[str, Any] = {}
        with_images = [r.images for r in requests if r.images is not None]
        if with_images:
            # Multimodal rotary positions the model's way; text after an image continues from the image's extent.
            from agentgym.multimodal.processor import rope_positions

            grid = torch.cat([im.image_grid_thw for im in with_images]).to(device)
            positions, delta = rope_positions(self.model, ids, grid, mask)
            next_positions = next_positions + delta.reshape(-1).to(device)
            vision = dict(pixel_values=torch.cat([im.pixel_values for im in with_images]).to(device),
                          image_grid_thw=grid)
        cache = new_cache(self.model)
        logits = self._forward(ids, mask, positions, cache, **vision)
        self.stats.prefill_passes += 1
        self.stats.max_prefill_batch = max(self.stats.max_prefill_batch, len(requests))
        batch = KVBatch(
            rows=list(requests),
            cache=cache,
            mask=mask,
            positions=next_positions,
            last_tokens=torch.zeros(len(requests), dtype=torch.long, device=device),
        )
        done = self._sample_into(batch, logits)
        return (batch if len(batch) else None), done

    def _decode(self, batch: KVBatch) -> list[Request]:
        ones = torch.ones((len(batch), 1), dtype=batch.mask.dtype, device=batch.mask.device)
        batch.mask = torch.cat([batch.mask, ones], dim=1)
        logits = self._forward(batch.last_tokens.unsqueeze(1), batch.mask, batch.positions.unsqueeze(1), batch.cache)
        batch.positions = batch.positions + 1
        self.stats.decode_steps += 1
        self.stats.decode_batch_sizes[len(batch)] += 1
        self.stats.max_decode_batch = max(self.stats.max_decode_batch, len(batch))
        return self._sample_into(batch, logits)

    def _sample_into(self, batch: KVBatch, logits: torch.Tensor) -> list[Request]:
        """Sample each row's next token, record it, and remove rows that finished."""
        rows: list[Request] = batch.rows
        tokens, logprobs = sample_tokens(logits, [r.sampling for r in rows], [r.generator for r in rows])
        if self._channel is not None:  # every rank feeds the leader's tokens, whatever its last logit bits
            shared = torch.tensor(tokens, dtype=torch.long, device=logits.device)
            tokens = self._channel.share_tokens(shared).tolist()
        self.stats.tokens_generated += len(tokens)
        keep: list[int] = []
        done: list[Request] = []
        for i, (req, token, logprob) in enumerate(zip(rows, tokens, logprobs, strict=True)):
            req.add(token, logprob)
            if req.finish_reason:
                done.append(req)
            else:
                keep.append(i)
        batch.last_tokens = torch.tensor(tokens, dtype=torch.long, device=batch.mask.device)
        batch.keep(keep)
        return done
