"""The paged in-process engine: continuous batching over a paged KV cache with prefix reuse and CUDA graphs.

Same protocol and logprob convention as the other engines (`engines.base`). What it adds over the dynamic
engine: a conversation's next turn, and the other samples of a GRPO group, prefill only what is not already
cached; decode steps are CUDA graphs on a GPU; running out of cache preempts and later recomputes a sequence
instead of failing it. Scheduling and the forward passes run in one worker thread, so the event loop (tools,
sandbox calls, other episodes) never waits on the GPU.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from agentgym.multimodal.vision_attention import use_vision_attention
from agentgym.rollout.engines.base import (
    FINISH_LENGTH,
    EngineError,
    GenerateOutput,
    SamplingParams,
)
from agentgym.rollout.engines.in_process import InProcessEngine
from agentgym.rollout.engines.loading import load_causal_lm
from agentgym.rollout.engines.paged import images as paged_images
from agentgym.rollout.engines.paged.blocks import BlockPool
from agentgym.rollout.engines.paged.runner import DecodeRow, PagedModelRunner, PrefillBatch, attention_shape
from agentgym.rollout.engines.paged.sampler import uniform_for
from agentgym.rollout.engines.paged.scheduler import (
    Scheduler,
    SchedulerConfig,
    SchedulerStats,
    Sequence,
)
from agentgym.rollout.engines.requests import Request
from agentgym.rollout.engines.tensor_parallel import TensorParallel

log = logging.getLogger(__name__)


@dataclass
class PagedEngineConfig:
    """How the paged engine runs.

    The KV cache holds `num_blocks` blocks of `block_size` tokens; left unset, it is sized to
    `gpu_memory_utilization` of the device's memory minus the weights (on CPU: room for `kv_cache_sequences`
    sequences of `max_model_len`, `max_batch_size` of them when unset), never more than that room. On CPU the
    cache is host memory taken up front: sized for 1,024 sequences of a real model it is tens of GB, so the run
    config sets `kv_cache_sequences` to what one step's batch needs (`registry.in_process_engine_config`); more
    sequences than that still run, queued or preempted by the scheduler. `max_model_len` defaults to the model's
    `max_position_embeddings`. `max_prefill_tokens` bounds the tokens of one prefill pass (longer prompts are
    prefilled in chunks). `cuda_graphs` captures decode steps on CUDA (every batch bucket at start with
    `capture_on_start`, else on first use); `fuse_elementwise` compiles the norms, rope and
    activation into single kernels there (`paged/fused.py`). `decode_steps`: tokens each sequence
    samples per decode call (one graph replay, one host copy); more spreads the host's per-call work over more
    tokens, at the cost of up to `decode_steps - 1` discarded forwards for a sequence that stops mid-call. `prefill_max_wait_steps`: while
    sequences decode, a small prefill waits up to this many steps for company (fewer, larger passes).
    """

    device: str = "cuda"
    dtype: str = "bfloat16"
    block_size: int = 16
    max_batch_size: int = 256
    max_prefill_tokens: int = 8192
    max_model_len: int | None = None
    num_blocks: int | None = None
    kv_cache_sequences: int | None = None
    gpu_memory_utilization: float = 0.35
    cuda_graphs: bool = True
    capture_on_start: bool = True
    fuse_elementwise: bool = True
    decode_steps: int = 4
    prefill_max_wait_steps: int = 4
    intra_op_threads: int | None = None
    attn_implementation: str = "sdpa"

    def __post_init__(self) -> None:
        if self.block_size < 1 or self.max_batch_size < 1 or self.max_prefill_tokens < 1:
            raise ValueError("block_size, max_batch_size and max_prefill_tokens must be positive")
        if self.kv_cache_sequences is not None and self.kv_cache_sequences < 1:
            raise ValueError(f"kv_cache_sequences must be positive (or unset), got {self.kv_cache_sequences}")
        if not 1 <= self.decode_steps <= self.block_size:
            raise ValueError(f"decode_steps must be between 1 and block_size ({self.block_size}), got {self.decode_steps}")
        if not 0.0 < self.gpu_memory_utilization < 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1), got {self.gpu_memory_utilization}")


@dataclass
class PagedEngineStats:
    """What the engine did, for tests and benchmarks (prefix reuse: `prefilled_tokens` vs `context_tokens`)."""

    requests_finished: int = 0
    tokens_generated: int = 0
    prefill_passes: int = 0
    decode_steps: int = 0  # forward steps, `decode_steps` per call
    decode_calls: int = 0
    max_decode_batch: int = 0
    decode_batch_sizes: Counter = field(default_factory=Counter)
    images_encoded: int = 0  # images through the vision tower (an image whose pads are all cached is not)
    weight_version: int = 0
    num_blocks: int = 0
    block_size: int = 0
    kv_cache_bytes: int = 0
    graph_captures: int = 0
    capture_seconds: float = 0.0
    kv_releases: int = 0  # release_memory_occupation cycles (colocated with a trainer)
    kv_resume_seconds: float = 0.0  # of which re-allocating the cache and re-capturing graphs
    decode_attention: str = ""
    fused_elementwise: bool = False
    busy_seconds: float = 0.0  # wall time inside scheduler steps (worker thread)
    decode_seconds: float = 0.0  # of which in decode calls (graph replay up to the host copy)
    handoff_seconds: float = 0.0  # wall time between a step and the next while work was waiting (event loop)
    scheduler: SchedulerStats = field(default_factory=SchedulerStats)

    def counters(self) -> dict[str, float]:
        """The cumulative counters every engine reports (`EngineCounters` names)."""
        return {"context_tokens": self.context_tokens, "cached_tokens": self.cached_tokens,
                "prefilled_tokens": self.prefilled_tokens, "generated_tokens": self.tokens_generated,
                "preemptions": self.preemptions}

    @property
    def context_tokens(self) -> int:
        return self.scheduler.context_tokens

    @property
    def cached_tokens(self) -> int:
        return self.scheduler.cached_tokens

    @property
    def prefilled_tokens(self) -> int:
        return self.scheduler.prefilled_tokens

    @property
    def preemptions(self) -> int:
        return self.scheduler.preemptions

    def as_dict(self) -> dict:
        return {
            "requests_finished": self.requests_finished, "tokens_generated": self.tokens_generated,
            "prefill_passes": self.prefill_passes, "decode_steps": self.decode_steps,
            "decode_calls": self.decode_calls,
            "max_decode_batch": self.max_decode_batch, "context_tokens": self.context_tokens,
            "cached_tokens": self.cached_tokens, "prefilled_tokens": self.prefilled_tokens,
            "preemptions": self.preemptions, "num_blocks": self.num_blocks, "block_size": self.block_size,
            "kv_cache_gib": self.kv_cache_bytes / 2**30, "graph_captures": self.graph_captures, "capture_seconds": self.capture_seconds,
            "decode_attention": self.decode_attention, "fused_elementwise": self.fused_elementwise,
            "kv_releases": self.kv_releases, "kv_resume_seconds": self.kv_resume_seconds,
            "busy_seconds": self.busy_seconds, "decode_seconds": self.decode_seconds, "handoff_seconds": self.handoff_seconds,
            "weight_version": self.weight_version, "images_encoded": self.images_encoded,
        }


class PagedEngine(InProcessEngine):
    """Engine over a local Llama/Qwen-family or Qwen2.5-VL model directory (see `runner.unsupported_reason`);
    a vision-language model takes images with its prompts (`paged/images.py`). `tensor_parallel`: this rank's
    group when the replica spans several ranks (`engines.tensor_parallel`): each rank holds its heads' weights and
    KV cache and runs the leader's steps."""

    def __init__(self, model_path: str | Path | None, config: PagedEngineConfig | None = None, *,
                 tensor_parallel: TensorParallel | None = None):
        self.model_path = str(model_path) if model_path is not None else None
        self.config = config or PagedEngineConfig()
        self.stats = PagedEngineStats()
        self.model: torch.nn.Module | None = None
        self.eos_token_ids: frozenset[int] = frozenset()
        self.max_context = 0
        self._runner: PagedModelRunner | None = None
        self._scheduler: Scheduler | None = None
        self._arrivals: list[Request] = []
        self._init_runtime(tensor_parallel)

    @classmethod
    def from_model(cls, model: torch.nn.Module, *, eos_token_ids: list[int], config: PagedEngineConfig | None = None,
                   tensor_parallel: TensorParallel | None = None) -> PagedEngine:
        engine = cls(None, config, tensor_parallel=tensor_parallel)
        engine.model = model
        engine.eos_token_ids = frozenset(int(i) for i in eos_token_ids)
        return engine

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def _build(self) -> None:
        if self.model is None:
            if self.model_path is None:
                raise EngineError("PagedEngine needs a model path (or use PagedEngine.from_model)")
            model, eos = load_causal_lm(self.model_path, self.config.attn_implementation)
            self.model = model
            self.eos_token_ids = frozenset(int(i) for i in eos)
        cfg = self.config
        self._shard(self.model)
        model = self.model.to(device=cfg.device, dtype=getattr(torch, cfg.dtype)).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        use_vision_attention(model)  # a vision tower's windows in one kernel (no-op for text models)
        max_len = cfg.max_model_len or int(getattr(model.config.get_text_config(), "max_position_embeddings", 4096))
        blocks_per_seq = -(-max_len // cfg.block_size)
        num_blocks = cfg.num_blocks or self._size_cache(model, blocks_per_seq)
        graphs = cfg.cuda_graphs
        if graphs and self.tp is not None and cfg.device.startswith("cuda"):
            # Capturing the all-reduces and the token broadcast in decode graphs is not built (nor tested) yet.
            log.warning("paged engine: tensor parallelism runs decode steps eagerly (no CUDA graphs) for now")
            graphs = False
        try:
            runner = PagedModelRunner(model, num_blocks=num_blocks, block_size=cfg.block_size,
                                      max_batch=cfg.max_batch_size, max_blocks_per_seq=blocks_per_seq,
                                      cuda_graphs=graphs, decode_steps=cfg.decode_steps,
                                      fuse=cfg.fuse_elementwise)
        except ValueError as exc:
            raise EngineError(str(exc)) from exc
        if self._channel is not None:
            runner.share_tokens = self._channel.share_tokens
        self._runner = runner
        if cfg.capture_on_start:
            runner.capture_all()
            self.stats.graph_captures, self.stats.capture_seconds = runner.graph_captures, runner.capture_seconds
        self.max_context = min(max_len, (num_blocks - 1) * cfg.block_size)
        pool = BlockPool(num_blocks, cfg.block_size)
        self._scheduler = Scheduler(pool, SchedulerConfig(
            max_batch=cfg.max_batch_size, max_prefill_tokens=cfg.max_prefill_tokens,
            prefill_max_wait_steps=cfg.prefill_max_wait_steps, decode_steps=cfg.decode_steps))
        self.stats.scheduler = self._scheduler.stats
        self.stats.num_blocks, self.stats.block_size = num_blocks, cfg.block_size
        self.stats.kv_cache_bytes = runner.kv.numel() * runner.kv.element_size()
        self.stats.decode_attention = runner.decode_attention_kind
        self.stats.fused_elementwise = runner.fused_elementwise
        log.info("paged engine: %d KV blocks of %d tokens (%.2f GiB), max context %d, graphs %s",
                 num_blocks, cfg.block_size, self.stats.kv_cache_bytes / 2**30, self.max_context, runner.cuda_graphs)

    def _size_cache(self, model: torch.nn.Module, blocks_per_seq: int) -> int:
        cfg = model.config.get_text_config()
        _, kv_heads, head_dim = attention_shape(cfg)
        kv_heads //= self.tp.size if self.tp is not None else 1  # this rank's heads
        itemsize = torch.empty(0, dtype=getattr(torch, self.config.dtype)).element_size()
        per_block = cfg.num_hidden_layers * 2 * kv_heads * head_dim * self.config.block_size * itemsize
        if self.config.device.startswith("cuda"):
            wanted = self.config.max_batch_size * blocks_per_seq + 1
            device = torch.device(self.config.device)
            total = torch.cuda.get_device_properties(device).total_memory
            weights = sum(p.numel() * p.element_size() for p in model.parameters())
            budget = self.config.gpu_memory_utilization * total - weights
            affordable = int(budget // per_block)
            if affordable < blocks_per_seq + 1:
                raise EngineError(
                    f"gpu_memory_utilization={self.config.gpu_memory_utilization} leaves room for {affordable} KV "
                    f"blocks, fewer than one sequence of max_model_len needs ({blocks_per_seq}); raise it, or lower "
                    "max_model_len, or set num_blocks")
            return min(wanted, affordable)
        return (self.config.kv_cache_sequences or self.config.max_batch_size) * blocks_per_seq + 1

    def _abandon(self) -> list[Request]:
        pending, self._arrivals = self._arrivals, []
        if self._scheduler is not None:
            pending += [s.request for s in self._scheduler.drop_all()]
        return pending

    # ---- requests ----------------------------------------------------------------------------------------------

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams, *,
                       session_id: str | None = None, images: Any = None) -> GenerateOutput:
        """Queue one request and wait for its completion (`session_id` is unused: the prefix cache finds the
        conversation's earlier turns by their tokens). `images` (an `ImageInputs`, vision-language models) are
        the images whose pad tokens `prompt_ids` holds, in order."""
        self._check_prompt(prompt_ids)
        if images is not None and len(images):
            self._check_images(prompt_ids, images)
        else:
            images = None
        request = Request(
            prompt_ids=list(prompt_ids), sampling=sampling, future=asyncio.get_running_loop().create_future(),
            stop_ids=self.eos_token_ids | frozenset(sampling.stop_token_ids or ()), max_total_len=self.max_context,
            seed=sampling.seed if sampling.seed is not None else secrets.randbits(63), images=images,
        )
        self._arrivals.append(request)
        self._wake.set()
        return await request.future

    def _check_images(self, prompt_ids: list[int], images: Any) -> None:
        pad = self._runner.image_token_id if self._runner is not None else None
        self._check_image_tokens(prompt_ids, images, pad)
        if prompt_ids[-1] == pad:
            raise ValueError("the prompt ends inside an image; end it with the text that follows the image "
                             "(e.g. the chat template's generation prompt)")

    def _load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        """In place, so the captured graphs stay valid; the prefix cache is emptied, since its keys and values
        came from the old weights."""
        super()._load_weights(tensors)
        self._scheduler.pool.clear_cache()

    def _free_memory(self) -> None:
        """Nothing runs (the engine drained): forget the prefix cache, whose blocks are about to lose their
        contents, and free the cache tensors and graphs."""
        assert not self._scheduler.busy, "release_memory_occupation runs only once the running sequences drained"
        self._scheduler.pool.clear_cache()
        self._runner.release_cache()
        self.stats.kv_releases += 1

    def _restore_memory(self) -> None:
        started = time.perf_counter()
        self._runner.restore_cache()
        if self.config.capture_on_start:
            self._runner.capture_all()
        self.stats.graph_captures, self.stats.capture_seconds = self._runner.graph_captures, self._runner.capture_seconds
        self.stats.kv_resume_seconds += time.perf_counter() - started

    # ---- scheduler loop ----------------------------------------------------------------------------------------

    async def _serve(self) -> None:
        assert self._wake is not None and self._drained is not None
        scheduler = self._scheduler
        last_end: float | None = None
        while True:
            busy = scheduler.busy
            work = busy or ((bool(self._arrivals) or bool(scheduler.waiting)) and not self._paused)
            if not busy:
                self._drained.set()
            if not work:
                last_end = None
                self._wake.clear()
                await self._wake.wait()
                continue
            self._drained.clear()
            arrivals, self._arrivals = self._arrivals, []
            started = time.perf_counter()
            if last_end is not None:
                self.stats.handoff_seconds += started - last_end
            try:
                finished = await self._run_step(arrivals, self._paused)
            except Exception as exc:  # a failing forward fails its requests, never the engine
                log.exception("paged engine step failed")
                error = EngineError(f"generation failed inside the model: {exc!r}")
                for req in arrivals + [s.request for s in scheduler.drop_all()]:
                    if not req.future.done():
                        req.future.set_exception(error)
                continue
            last_end = time.perf_counter()
            for req in finished:
                self.stats.requests_finished += 1
                if not req.future.done():
                    req.future.set_result(req.result())

    # ---- worker thread -----------------------------------------------------------------------------------------

    def _step(self, arrivals: list[Request], paused: bool, dropped: set[int] | None = None) -> list[Request]:
        """One scheduler step. `dropped`: the requests (by uid) whose callers gave up, as a tensor-parallel leader
        decided them for its group; None asks each request's future now."""
        started = time.perf_counter()
        try:
            return self._step_inner(arrivals, paused, dropped)
        finally:
            self.stats.busy_seconds += time.perf_counter() - started

    # ---- tensor parallelism: what a follower needs to run the leader's step -----------------------------------

    def _step_args(self, arrivals: list[Request], paused: bool) -> tuple:
        seqs = list(self._scheduler.running) + list(self._scheduler.waiting)
        dropped = {r.uid for r in [s.request for s in seqs] + arrivals if r.future.done()}
        return arrivals, paused, dropped

    def _step_message(self, arrivals: list[Request], paused: bool, dropped: set[int]) -> tuple:
        return [self._request_spec(r) for r in arrivals], paused, sorted(dropped)

    def _mirror_step(self, message: tuple) -> list[Request]:
        specs, paused, dropped = message
        return self._step([self._mirror_request(spec) for spec in specs], paused, set(dropped))

    def _reset_after_failure(self) -> None:
        self._scheduler.drop_all()

    def _step_inner(self, arrivals: list[Request], paused: bool, dropped: set[int] | None) -> list[Request]:
        scheduler, runner = self._scheduler, self._runner
        for req in arrivals:
            prompt_len = len(req.prompt_ids)
            tokens, media = list(req.prompt_ids), None
            if req.images is not None:
                tokens, media = paged_images.prepare(self.model, req.prompt_ids, req.images, runner.image_token_id)
            scheduler.add(Sequence(req, tokens=tokens, prompt_len=prompt_len, media=media,
                                   max_len=min(prompt_len + req.sampling.max_new_tokens, req.max_total_len)))
        for seq in list(scheduler.running) + list(scheduler.waiting):
            gave_up = seq.request.future.done() if dropped is None else seq.request.uid in dropped
            if gave_up:  # the caller gave up (cancelled): free its blocks now
                scheduler.drop(seq)
        finished: list[Request] = []
        with torch.inference_mode():
            plan = scheduler.plan(admit=True, only_resumed=paused)
            for seq in plan.out_of_room:
                seq.request.finish_reason = FINISH_LENGTH
                scheduler.drop(seq)
                finished.append(seq.request)
            if plan.prefill:
                batch = self._prefill_batch(plan.prefill)
                runner.prefill(batch)
                for chunk in plan.prefill:
                    scheduler.computed(chunk.seq, chunk.end)
                scheduler.stats.prefilled_tokens += len(batch.tokens)
                self.stats.prefill_passes += 1
            if plan.decode:
                finished += self._decode(plan.decode)
        self.stats.graph_captures = runner.graph_captures
        self.stats.capture_seconds = runner.capture_seconds
        return finished

    def _prefill_batch(self, chunks: list) -> PrefillBatch:
        scheduler, runner = self._scheduler, self._runner
        self._encode_images(chunks)
        batch = PrefillBatch([], [], [], [], [], [])
        multimodal = any(chunk.seq.media is not None for chunk in chunks)
        if multimodal:
            batch.mrope = [[], [], []]
        for chunk in chunks:
            seq, start, end = chunk.seq, chunk.start, chunk.end
            media = seq.media
            offset = len(batch.tokens)
            if media is None:
                batch.tokens += seq.tokens[start:end]
            else:
                pad = runner.image_token_id
                batch.tokens += [pad if t < 0 else t for t in seq.tokens[start:end]]
                first, last = media.pads_in(start, end)
                if last > first:
                    batch.embed_index += [offset + p - start for p in media.pad_positions[first:last]]
                    batch.embeds.append(media.embeds[first:last])
            batch.positions += range(start, end)
            if multimodal:
                rows = media.rope_positions(start, end) if media is not None else [list(range(start, end))] * 3
                for out, row in zip(batch.mrope, rows):
                    out += row
            batch.slots += scheduler.slots(seq, start, end)
            batch.context_slots += scheduler.slots(seq, 0, end)
            batch.query_lens.append(end - start)
            batch.context_lens.append(end)
        return batch

    def _encode_images(self, chunks: list) -> None:
        """Run the vision tower, in one pass, for the sequences whose chunk reaches a pad not yet encoded."""
        needing = []
        for chunk in chunks:
            media = chunk.seq.media
            if media is not None and media.embeds is None:
                first, last = media.pads_in(chunk.start, chunk.end)
                if last > first:
                    needing.append(media)
        if not needing:
            return
        pixels = torch.cat([m.inputs.pixel_values for m in needing])
        grid = torch.cat([m.inputs.image_grid_thw for m in needing])
        per_image = self._runner.image_embeddings(pixels, grid)
        self.stats.images_encoded += len(per_image)
        at = 0
        for media in needing:
            n = len(media.inputs)
            media.embeds = torch.cat(per_image[at : at + n])
            at += n

    def _decode(self, seqs: list[Sequence]) -> list[Request]:
        scheduler, runner = self._scheduler, self._runner
        rows, filtered = [], False
        for seq in seqs:
            p = seq.request.sampling
            first = seq.output_len
            rows.append(DecodeRow(
                token=seq.tokens[-1], position=len(seq.tokens) - 1, table_row=seq.row,
                inv_temperature=1.0 if p.greedy else 1.0 / p.temperature, greedy=p.greedy,
                top_k=runner.vocab if p.top_k == -1 else p.top_k, top_p=p.top_p, steps=seq.steps,
                uniforms=[uniform_for(seq.request.seed, first + j) for j in range(seq.steps)],
                rope_delta=seq.media.delta if seq.media is not None else 0))
            filtered = filtered or (not p.greedy and (p.top_k != -1 or p.top_p < 1.0))
        updates = []
        for seq in seqs:
            if seq.synced_blocks < len(seq.blocks):
                updates.append((seq.row, seq.synced_blocks, seq.blocks[seq.synced_blocks :]))
                seq.synced_blocks = len(seq.blocks)
        runner.set_table_rows(updates)
        started = time.perf_counter()
        sampled = runner.decode(rows, filtered=filtered)
        self.stats.decode_seconds += time.perf_counter() - started
        self.stats.decode_steps += runner.decode_steps
        self.stats.decode_calls += 1
        self.stats.decode_batch_sizes[len(seqs)] += 1
        self.stats.max_decode_batch = max(self.stats.max_decode_batch, len(seqs))
        done = []
        for seq, pairs in zip(seqs, sampled, strict=True):
            for token, logprob in pairs:
                seq.tokens.append(token)
                seq.request.add(token, logprob)
                self.stats.tokens_generated += 1
                if seq.request.finish_reason:
                    break
            # Every token but the newest was fed, so its keys/values are cached (and full blocks shareable).
            scheduler.computed(seq, len(seq.tokens) - 1)
            if seq.request.finish_reason:
                scheduler.drop(seq)
                done.append(seq.request)
        return done
