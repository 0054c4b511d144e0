"""What the in-process engines share: a worker thread for the model, a scheduler task, checked requests, and weight
updates that wait for running sequences to drain.

The model runs in one worker thread so the event loop (tools, sandbox calls, other episodes) never waits on it;
the scheduler task (`_serve`, each engine's own) hands it one step at a time.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from agentgym.rollout.engines.base import FINISH_ABORT, EngineContextMixin, EngineError
from agentgym.rollout.engines.requests import Request
from agentgym.rollout.engines.weights import load_state_dict_in_place, read_weights

NOT_STARTED = "the engine is not started; use `async with engine:` or `await engine.start()`"
RELEASED = ("the engine's KV cache is released (release_memory_occupation: the trainer has the memory for its update); "
            "await engine.resume_memory_occupation() before generating (the colocated trainer does so after the weight sync)")


class InProcessEngine(EngineContextMixin):
    """Subclasses set `self.config` (with `intra_op_threads`) and `self.stats` (with `weight_version`), and give
    `_build` (load and place the model; runs in the worker thread), `_serve`, `_abandon` and `max_context`."""

    takes_images = True

    model: torch.nn.Module | None
    max_context: int

    def _init_runtime(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None
        self._paused = False
        self._released = False
        self._update_lock: asyncio.Lock | None = None

    async def start(self) -> None:
        if self._task is not None:
            return
        threads = self.config.intra_op_threads
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"agentgym-{type(self).__name__}",
            # OpenMP thread counts are per calling thread: this leaves the rest of the process alone.
            initializer=(lambda: torch.set_num_threads(threads)) if threads else None,
        )
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._build)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._update_lock = asyncio.Lock()
        self._task = asyncio.create_task(self._serve(), name=f"{type(self).__name__}-scheduler")

    async def close(self) -> None:
        """Stop serving; requests still waiting or running finish with reason "abort" and their partial output."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, True)  # let a step in flight finish its tensors
            self._executor = None
        for req in self._abandon():
            if not req.future.done():
                req.future.set_result(req.result(FINISH_ABORT))

    async def health(self) -> bool:
        return self._task is not None and not self._task.done()

    def _check_prompt(self, prompt_ids: list[int]) -> None:
        if self._task is None or self._wake is None:
            raise EngineError(NOT_STARTED)
        if self._released:
            raise EngineError(RELEASED)
        if not prompt_ids:
            raise ValueError("prompt_ids is empty; a generation needs at least one prompt token")
        if len(prompt_ids) >= self.max_context:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens does not fit the engine's context of "
                             f"{self.max_context}; shorten the prompt (or give the engine a longer context)")
        vocab = self.model.config.get_text_config().vocab_size
        if min(prompt_ids) < 0 or max(prompt_ids) >= vocab:
            raise ValueError(f"prompt_ids must lie in [0, {vocab}); got ids outside it")

    def _check_image_tokens(self, prompt_ids: list[int], images: Any, image_token_id: int | None) -> None:
        """The prompt holds exactly the pad tokens its images need (`image_token_id`: None for a text model)."""
        if image_token_id is None:
            raise ValueError(f"the model ({type(self.model).__name__}) has no vision tower, so it cannot take images; "
                             "serve a vision-language model (e.g. Qwen2.5-VL) for rows or tools with images")
        pads = sum(1 for t in prompt_ids if t == image_token_id)
        if pads != images.num_tokens:
            raise ValueError(f"the prompt holds {pads} image tokens but its {len(images)} image(s) need "
                             f"{images.num_tokens}; expand each image's placeholder with the model's processor")

    async def update_weights(self, state_dict: dict[str, torch.Tensor] | None = None, *,
                             path: str | None = None) -> None:
        """Copy new weights into the model in place.

        Like SGLang's weight update, it waits for the running sequences to finish (new requests queue meanwhile),
        so every completion is produced by one weight version. Partial state dicts are allowed; unknown names
        or shape mismatches raise ValueError before anything is changed.
        """
        if (state_dict is None) == (path is None):
            raise ValueError("pass exactly one of state_dict or path")
        if self._task is None:
            raise EngineError(NOT_STARTED)
        assert self._update_lock is not None and self._drained is not None and self._wake is not None
        loop = asyncio.get_running_loop()
        async with self._update_lock:
            tensors = state_dict if state_dict is not None else await asyncio.to_thread(read_weights, path)
            self._paused = True
            self._wake.set()
            try:
                await self._drained.wait()
                await loop.run_in_executor(self._executor, self._load_weights, tensors)
                self.stats.weight_version += 1
            finally:
                self._paused = self._released  # a released engine stays paused until it resumes
                self._wake.set()

    async def update_weights_from_buckets(self, buckets: Iterable[Mapping[str, torch.Tensor]]) -> int:
        """Copy weights arriving in buckets (e.g. materialised from a trainer's shards one bucket at a time) into the
        model in place, as one update: the running sequences drain first, and every bucket is loaded before
        generation resumes. The buckets are produced in the model's worker thread. Returns the tensors copied."""
        if self._task is None:
            raise EngineError(NOT_STARTED)
        assert self._update_lock is not None and self._drained is not None and self._wake is not None
        loop = asyncio.get_running_loop()

        def load_all() -> int:
            count = 0
            for bucket in buckets:
                load_state_dict_in_place(self.model, dict(bucket))
                count += len(bucket)
            return count

        async with self._update_lock:
            self._paused = True
            self._wake.set()
            try:
                await self._drained.wait()
                count = await loop.run_in_executor(self._executor, load_all)
                self.stats.weight_version += 1
            finally:
                self._paused = self._released
                self._wake.set()
        return count

    # ---- memory hand-over (colocated with a trainer) ---------------------------------------------------------

    @property
    def released(self) -> bool:
        """Whether the KV cache is released (`release_memory_occupation`) and generation refused until resumed."""
        return self._released

    async def release_memory_occupation(self) -> None:
        """Give the memory generation needs (the KV cache, CUDA-graph pools) back to the device, so a trainer
        sharing it can use it for old log-probs and the update (SGLang's call of the same name; verl's
        `free_cache_engine`). The running sequences drain first; the weights stay; requests already queued wait
        and `generate` refuses new ones with an `EngineError` until `resume_memory_occupation`."""
        if self._task is None:
            raise EngineError(NOT_STARTED)
        assert self._update_lock is not None and self._drained is not None and self._wake is not None
        loop = asyncio.get_running_loop()
        async with self._update_lock:
            if self._released:
                return
            self._paused = True
            self._wake.set()
            try:
                await self._drained.wait()
                await loop.run_in_executor(self._executor, self._free_memory)
                self._released = True
            finally:
                self._paused = self._released
                self._wake.set()

    async def resume_memory_occupation(self) -> None:
        """Allocate what `release_memory_occupation` freed (an empty cache: its old contents came from the old
        weights) and serve again; a no-op when nothing is released."""
        if self._task is None:
            raise EngineError(NOT_STARTED)
        assert self._update_lock is not None and self._wake is not None
        loop = asyncio.get_running_loop()
        async with self._update_lock:
            if not self._released:
                return
            await loop.run_in_executor(self._executor, self._restore_memory)
            self._released = False
            self._paused = False
            self._wake.set()

    def _free_memory(self) -> None:
        """In the worker thread, with nothing running: free the generation memory. This engine keeps no cache
        between requests, so it only returns the allocator's cached blocks (paged engines override it)."""
        device = next(self.model.parameters()).device
        if device.type == "cuda":
            torch.cuda.empty_cache()

    def _restore_memory(self) -> None:
        """In the worker thread: allocate what `_free_memory` freed."""

    def _load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        load_state_dict_in_place(self.model, tensors)

    # ---- for subclasses ----------------------------------------------------------------------------------------

    def _build(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def _serve(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _abandon(self) -> list[Request]:  # pragma: no cover - overridden
        """Every request not yet answered, forgotten by the engine (called once the worker has stopped)."""
        raise NotImplementedError
