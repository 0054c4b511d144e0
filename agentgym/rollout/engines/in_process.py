"""What the in-process engines share: a worker thread for the model, a scheduler task, checked requests, and weight
updates that wait for running sequences to drain.

The model runs in one worker thread so the event loop (tools, sandbox calls, other episodes) never waits on it;
the scheduler task (`_serve`, each engine's own) hands it one step at a time.

Tensor parallelism (`tensor_parallel.py`): the group's leader serves as above and sends each step's inputs to
the other ranks before running it; the others run `_follow` instead of `_serve`, mirroring every step, and meet
the leader at each weight update, memory release and resume (`_quiesce`), so no rank steps on weights or a cache
the others have changed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from agentgym.rollout.engines.base import FINISH_ABORT, EngineContextMixin, EngineError
from agentgym.rollout.engines.requests import Request
from agentgym.rollout.engines.tensor_parallel import ShardedWeights, ShardSlices, StepChannel, TensorParallel, shard_model
from agentgym.rollout.engines.weights import load_state_dict_in_place, read_weights

log = logging.getLogger(__name__)

NOT_STARTED = "the engine is not started; use `async with engine:` or `await engine.start()`"
RELEASED = ("the engine's KV cache is released (release_memory_occupation: the trainer has the memory for its update); "
            "await engine.resume_memory_occupation() before generating (the colocated trainer does so after the weight sync)")


class _MirroredFuture:
    """The future of a request a tensor-parallel follower mirrors: nobody waits on it (the leader answers)."""

    def done(self) -> bool:
        return False

    def set_result(self, result: Any) -> None:
        pass

    def set_exception(self, exc: BaseException) -> None:
        pass


MIRRORED = _MirroredFuture()
# How long a follower waits for its leader's last message when closing (the leader closes at the same time).
FOLLOWER_CLOSE_TIMEOUT_S = 60.0


class InProcessEngine(EngineContextMixin):
    """Subclasses set `self.config` (with `intra_op_threads`) and `self.stats` (with `weight_version`), and give
    `_build` (load and place the model; runs in the worker thread), `_serve`, `_abandon` and `max_context`; for
    tensor parallelism also `_step_message` / `_mirror_step` (what a step's inputs look like on the wire)."""

    takes_images = True
    # A follower whose step failed waits this long for its leader's "reset" (the leader's step failed too) before it
    # concludes the leader is waiting inside that step's collectives for it, and leaves (see `_leave_broken_group`).
    follower_failure_grace_s = 20.0

    model: torch.nn.Module | None
    max_context: int

    def _init_runtime(self, tensor_parallel: TensorParallel | None = None) -> None:
        self.tp = tensor_parallel if tensor_parallel is not None and tensor_parallel.size > 1 else None
        self._channel = StepChannel(self.tp) if self.tp is not None else None
        self._tp_slices: ShardSlices = {}
        self._at_quiesce: asyncio.Event | None = None  # follower: the leader waits at a quiesce point
        self._quiesce_done: asyncio.Event | None = None  # follower: this rank's part of it is done
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
        if self.follows:
            self._at_quiesce, self._quiesce_done = asyncio.Event(), asyncio.Event()
            self._task = asyncio.create_task(self._follow(), name=f"{type(self).__name__}-follower")
        else:
            self._task = asyncio.create_task(self._serve(), name=f"{type(self).__name__}-scheduler")

    async def close(self) -> None:
        """Stop serving; requests still waiting or running finish with reason "abort" and their partial output."""
        task, self._task = self._task, None
        if task is None:
            return
        if self.follows:  # it ends on the leader's "stop"
            try:
                await asyncio.wait_for(asyncio.shield(task), FOLLOWER_CLOSE_TIMEOUT_S)
            except asyncio.TimeoutError:
                log.warning("tensor-parallel follower: no stop from leader rank %d in %.0f s; closing anyway",
                            self.tp.leader, FOLLOWER_CLOSE_TIMEOUT_S)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        if self._channel is not None and self.tp.is_leader and self._executor is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._channel.send, ("stop",))
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, True)  # let a step in flight finish its tensors
            self._executor = None
        for req in self._abandon():
            if not req.future.done():
                req.future.set_result(req.result(FINISH_ABORT))

    async def health(self) -> bool:
        return self._task is not None and not self._task.done()

    def _check_prompt(self, prompt_ids: list[int]) -> None:
        if self.follows:
            raise EngineError(f"this rank is not its tensor-parallel replica's leader; send requests to rank "
                              f"{self.tp.leader}, which schedules the replica's steps")
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
        if self.tp is not None:
            raise EngineError("images are not supported by tensor-parallel replicas yet "
                              "(actor_rollout_ref.rollout.tensor_model_parallel_size > 1); use 1 for vision-language rows")
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
        or shape mismatches raise ValueError before anything is changed. With tensor parallelism every rank of
        the group calls it (and the release / resume calls) with the same full weights, as the colocated trainer
        does; each keeps its slice.
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
                await self._quiesce()
                await loop.run_in_executor(self._executor, self._load_weights, tensors)
                self.stats.weight_version += 1
            finally:
                self._unquiesce()
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
                load_state_dict_in_place(self.model, self._local(dict(bucket)))
                count += len(bucket)
            return count

        async with self._update_lock:
            self._paused = True
            self._wake.set()
            try:
                await self._quiesce()
                count = await loop.run_in_executor(self._executor, load_all)
                self.stats.weight_version += 1
            finally:
                self._unquiesce()
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
                await self._quiesce()
                await loop.run_in_executor(self._executor, self._free_memory)
                self._released = True
            finally:
                self._unquiesce()
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
            try:
                if self.tp is not None:
                    await self._quiesce()
                await loop.run_in_executor(self._executor, self._restore_memory)
            finally:
                self._unquiesce()
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
        load_state_dict_in_place(self.model, self._local(tensors))

    # ---- tensor parallelism ------------------------------------------------------------------------------------

    @property
    def follows(self) -> bool:
        """Whether this engine is a tensor-parallel follower (it mirrors its leader's steps, takes no requests)."""
        return self.tp is not None and not self.tp.is_leader

    @property
    def shard_slices(self) -> ShardSlices:
        """Where each of this rank's sharded parameters sits in the full one ({} without tensor parallelism)."""
        return dict(self._tp_slices)

    def _shard(self, model: torch.nn.Module) -> None:
        """Keep this rank's shard of `model` (in place; before it moves to the device, so the full model never
        occupies it)."""
        if self.tp is not None:
            self._tp_slices = shard_model(model, self.tp)

    def _local(self, tensors: Any) -> Any:
        """Full weights as this rank's shards (views), or as they are without tensor parallelism."""
        return ShardedWeights(tensors, self._tp_slices) if self._tp_slices else tensors

    async def _run_step(self, *args: Any) -> Any:
        """The leader's (or a lone engine's) scheduler step, in the worker thread; a leader first sends its inputs."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._lead_step, args)

    def _lead_step(self, args: tuple) -> Any:
        if self._channel is None:
            return self._step(*args)
        args = self._step_args(*args)
        self._channel.send(("step", self._step_message(*args)))
        try:
            return self._step(*args)
        except Exception:  # the leader forgets its running batch: so do the others, whatever their step did
            self._channel.send(("reset",))
            raise

    async def _quiesce(self) -> None:
        """Before a weight update, release or resume: the running sequences drain; with tensor parallelism the
        leader then tells the group, and a follower waits until it has mirrored every step before that point (its
        follow loop stays there until `_unquiesce`)."""
        assert self._drained is not None
        if not self.follows:
            await self._drained.wait()
            if self._channel is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, self._channel.send, ("quiesce",))
            return
        assert self._at_quiesce is not None
        await self._at_quiesce.wait()
        self._at_quiesce.clear()

    def _unquiesce(self) -> None:
        if self.follows and self._quiesce_done is not None:
            self._quiesce_done.set()

    async def _follow(self) -> None:
        """A follower's loop: run every step its leader sends, in order, on the same inputs."""
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue = asyncio.Queue()

        def receive() -> None:  # a daemon thread: a blocked receive never holds up the process's exit
            while True:
                try:
                    message = self._channel.receive()
                except Exception as exc:  # the group broke (a peer died): stop following
                    message = ("error", repr(exc))
                loop.call_soon_threadsafe(inbox.put_nowait, message)
                if message[0] in ("stop", "error"):
                    return

        threading.Thread(target=receive, name="agentgym-tp-receive", daemon=True).start()
        while True:
            message = await inbox.get()
            kind = message[0]
            if kind == "step":
                try:
                    await loop.run_in_executor(self._executor, self._mirror_step, message[1])
                except Exception:
                    log.exception("tensor-parallel follower step failed")
                    self._reset_after_failure()
                    try:  # the leader's same step failed the same way and dropped its requests: it says "reset"
                        follow_up = await asyncio.wait_for(inbox.get(), self.follower_failure_grace_s)
                    except asyncio.TimeoutError:
                        follow_up = ("silence",)
                    if follow_up[0] != "reset":
                        self._leave_broken_group(follow_up[0])
            elif kind == "reset":
                self._reset_after_failure()
            elif kind == "quiesce":
                assert self._at_quiesce is not None and self._quiesce_done is not None
                self._at_quiesce.set()
                await self._quiesce_done.wait()
                self._quiesce_done.clear()
            else:
                if kind == "error":
                    log.error("tensor-parallel follower: the group's channel failed: %s", message[1])
                return

    def _leave_broken_group(self, seen: str) -> None:
        """Only this rank's step failed: the leader is blocked in a collective this rank will never join (or has
        gone on without it), and the group cannot be realigned. Ending the process makes the peers' collectives
        fail now (their connections close) instead of at the group's timeout, and the run stops with this log."""
        log.critical("tensor-parallel follower (rank %d): its step failed where leader rank %d's did not (next "
                     "message: %s); the replica's ranks can no longer run in lock-step, so this process exits "
                     "(code 70) and the others fail at once", self.tp.ranks[self.tp.rank], self.tp.leader, seen)
        logging.shutdown()
        os._exit(70)

    def _request_spec(self, req: Request) -> tuple:
        """What a follower needs to mirror a request."""
        return (req.uid, req.prompt_ids, req.sampling, sorted(req.stop_ids), req.max_total_len, req.seed)

    def _mirror_request(self, spec: tuple) -> Request:
        uid, prompt_ids, sampling, stop_ids, max_total_len, seed = spec
        return Request(prompt_ids=prompt_ids, sampling=sampling, future=MIRRORED, stop_ids=frozenset(stop_ids),
                       max_total_len=max_total_len, seed=seed, uid=uid)

    def _step_args(self, *args: Any) -> tuple:
        """The leader's step arguments with anything decided in the worker thread filled in (default: as is)."""
        return args

    def _step_message(self, *args: Any) -> Any:  # pragma: no cover - overridden by engines that do TP
        raise NotImplementedError

    def _mirror_step(self, message: Any) -> Any:  # pragma: no cover - overridden by engines that do TP
        raise NotImplementedError

    def _step(self, *args: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _reset_after_failure(self) -> None:
        """Forget the running batch, as the leader does when a step fails (engines override)."""

    # ---- for subclasses ----------------------------------------------------------------------------------------

    def _build(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def _serve(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _abandon(self) -> list[Request]:  # pragma: no cover - overridden
        """Every request not yet answered, forgotten by the engine (called once the worker has stopped)."""
        raise NotImplementedError
