"""The token-exact multi-turn agent loop: many episodes in flight against one engine.

Model turns are appended as the engine's own ids (loss_mask 1, with their logprobs); tool and user turns are
rendered with the model's chat template as deltas (loss_mask 0). Nothing the model produced is re-tokenized.
"""

from __future__ import annotations

import asyncio
import time
import traceback
import zlib
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any, AsyncIterator, Callable, Mapping, Sequence
from uuid import uuid4

from agentgym.episode.environment import Environment, tool_dicts
from agentgym.episode.episode import AssistantTurn, EpisodeLimits, Message, run_episode
from agentgym.episode.session import Session, SessionConfig, tool_selection
from agentgym.interactions.base import BaseInteraction
from agentgym.models.chat import chat_delta_ids, chat_ids
from agentgym.multimodal.episode_images import EpisodeImages, image_parts
from agentgym.multimodal.images import with_image_parts
from agentgym.parsers import get_parser
from agentgym.rollout.engines.base import Engine, SamplingParams
from agentgym.rollout.policy_version import PolicyVersionGate
from agentgym.trajectory import NOT_SAMPLED, Trajectory, TurnSpan
from agentgym.tools.base_tool import BaseTool


_DELTA_STUB: list[Message] = [{"role": "user", "content": "."}, {"role": "assistant", "content": "."}]
_DELTA_CHECKS = 16


@dataclass(frozen=True)
class AgentLoopConfig:
    limits: EpisodeLimits = field(default_factory=EpisodeLimits)
    session: SessionConfig = field(default_factory=SessionConfig)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_response_tokens: int = 1024
    max_prompt_tokens: int | None = None
    parser: str = "hermes"
    max_concurrent_episodes: int = 256
    generate_timeout_s: float = 300.0
    # False leaves the tools' JSON schemas out of the rendered system turn: a model trained from scratch never
    # learned to read them, and for a tiny model they are most of every prompt's tokens.
    tool_schemas_in_prompt: bool = True
    image_key: str = "images"  # verl's data.image_key: the row column holding the prompt's images
    # Partial rollouts (trainer.partial_rollout): a model turn is generated in calls of at most this many tokens,
    # so a weight sync waits for one chunk, not a whole turn, and the rest of the turn runs with the new weights.
    # None: one call per turn.
    partial_rollout_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.partial_rollout_tokens is not None and self.partial_rollout_tokens < 1:
            raise ValueError(f"partial_rollout_tokens must be at least 1 (or None), got {self.partial_rollout_tokens}")


class _TokenTrack:
    """The TurnSource of a token-space episode: owns the growing ids, mask, logprobs and turn spans."""

    def __init__(self, loop: "AgentLoop", traj: Trajectory, tool_dicts: list[dict] | None):
        self.loop, self.traj, self.tool_dicts = loop, traj, tool_dicts
        self.images = EpisodeImages(loop.processor, traj)

    async def assistant_turn(self, messages: list[Message]) -> AssistantTurn:
        traj, cfg = self.traj, self.loop.config
        room = cfg.max_response_tokens - len(traj.response_ids)
        if room <= 0:
            return AssistantTurn("", "length")
        budget = min(cfg.sampling.max_new_tokens, room)
        chunk = min(cfg.partial_rollout_tokens or budget, budget)
        turn: list[int] = []
        while True:
            ask = min(chunk, budget - len(turn))
            out, version = await self._generate(ask)
            ids = list(out.token_ids)
            if len(out.logprobs) != len(ids):
                raise RuntimeError(f"engine returned {len(ids)} tokens but {len(out.logprobs)} logprobs")
            cut = self.images.first_placeholder(ids)
            if cut is not None:
                # A sampled image/video placeholder would make the trainer look for an image that is not there: keep
                # the turn up to it (still the policy's own sample) and end the episode.
                self._append("assistant", ids[:cut], list(out.logprobs)[:cut], trained=True, version=version)
                return AssistantTurn(self.loop.decode(turn + ids[:cut]), "vision_token")
            self._append("assistant", ids, list(out.logprobs), trained=True, version=version)
            turn += ids
            # A chunk that used its whole allowance ended, not the turn: go on (a weight sync may come between).
            if not (out.finish_reason == "length" and len(ids) == ask and len(turn) < budget):
                break
        text = self.loop.decode(turn)
        if out.finish_reason != "stop":
            return AssistantTurn(text, "length" if out.finish_reason == "length" else out.finish_reason)
        if not turn or turn[-1] != self.loop.end_of_turn_id:
            # The model stopped on another stop token; close its turn the way the template does (not trained on).
            self._append("assistant", [self.loop.end_of_turn_id], [0.0], trained=False)
        return AssistantTurn(text)

    async def _generate(self, max_new_tokens: int) -> tuple[Any, int]:
        """One engine call continuing the episode, and the policy version that sampled it."""
        traj, cfg = self.traj, self.loop.config
        sampling = replace(cfg.sampling, max_new_tokens=max_new_tokens)
        if sampling.seed is not None:
            # One seed per (episode, turn): samples of a group differ, and a rerun with the same seed repeats.
            sampling = replace(sampling, seed=zlib.crc32(f"{sampling.seed}/{traj.uid}/{len(traj.response_ids)}".encode()))
        images = self.images.inputs()
        extra = {"images": images} if images is not None else {}
        async with self.loop.gate.generation() as version:
            out = await asyncio.wait_for(
                self.loop.engine.generate(traj.prompt_ids + traj.response_ids, sampling, session_id=traj.uid, **extra),
                timeout=cfg.generate_timeout_s,
            )
        # A replica versions its own calls (it is paused and versioned where the sync lands): its word is the exact one.
        return out, version if out.policy_version is None else out.policy_version

    async def environment_turn(self, messages: list[Message], new: list[Message]) -> bool:
        delta = self.loop.delta_ids(messages, new, self.tool_dicts)
        room = self.loop.config.max_response_tokens - len(self.traj.response_ids)
        if image_parts(new):
            start = len(self.traj.prompt_ids) + len(self.traj.response_ids)
            delta = self.images.add_turn(delta, new, start, len(self.traj.turns), room=room)
        if len(delta) >= room:
            return False
        self._append(new[0]["role"], delta, [0.0] * len(delta), trained=False)
        return True

    def _append(self, role: str, ids: list[int], logprobs: list[float], *, trained: bool,
                version: int = NOT_SAMPLED) -> None:
        traj = self.traj
        start = len(traj.response_ids)
        traj.response_ids.extend(ids)
        traj.loss_mask.extend([1 if trained else 0] * len(ids))
        traj.rollout_logprobs.extend(logprobs if trained else [0.0] * len(ids))
        traj.token_versions.extend([version if trained else NOT_SAMPLED] * len(ids))
        if traj.turns and traj.turns[-1].role == role and traj.turns[-1].end == start:
            traj.turns[-1].end += len(ids)
        else:
            traj.turns.append(TurnSpan(role, start, start + len(ids)))


class AgentLoop:
    """Runs dataset rows as episodes. A failure in one episode marks that trajectory failed; the batch goes on."""

    def __init__(
        self,
        engine: Engine,
        tokenizer: Any,
        tools: Mapping[str, BaseTool],
        interactions: Mapping[str, BaseInteraction] | None = None,
        config: AgentLoopConfig | None = None,
        processor: Any = None,
        environment: Environment | None = None,
        gate: PolicyVersionGate | None = None,
    ):
        """`processor`: a `VisionProcessor` for vision-language models (rows with images, tools returning images);
        None for text-only models, which then refuse episodes with images instead of dropping them unseen.
        `environment`: where sessions come from instead of `tools` and `interactions` in this process (a
        `RemoteEnvironment` on an environment server); its tool schemas go into the prompt. `gate`: the policy
        version of each engine call, paused by weight syncs (loops sharing an engine share one)."""
        self.engine = engine
        self.gate = gate if gate is not None else PolicyVersionGate()
        self.processor = processor
        self.tokenizer = tokenizer
        self.tools = dict(tools)
        self.interactions = dict(interactions or {})
        self.config = config or AgentLoopConfig()
        self.environment = environment
        schemas = environment.tool_schemas() if environment is not None else [t.tool_schema for t in self.tools.values()]
        self.parser = get_parser(self.config.parser, schemas)
        self.tool_dicts = (tool_dicts(schemas) or None if self.config.tool_schemas_in_prompt else None)
        end_of_turn = tokenizer.eos_token
        self.end_of_turn_id = tokenizer.convert_tokens_to_ids(end_of_turn)
        self._fast_delta, self._delta_checks = True, 0
        self._strip = [t for t in {end_of_turn, getattr(tokenizer, "pad_token", None)} if t]
        if self.config.sampling.stop_token_ids is None:
            self.config = replace(self.config, sampling=replace(self.config.sampling, stop_token_ids=[self.end_of_turn_id]))

    def delta_ids(self, messages: list[Message], new: list[Message], tool_dicts: list[dict] | None = None) -> list[int]:
        """Ids of the environment's new turns plus the next generation prompt.

        Rendering the whole conversation per turn costs O(length); for templates that render a turn the same
        whatever came before (ChatML, Qwen), rendering the new turns after a two-message stub gives the same ids
        in O(1). The first episodes check that the two agree for this template, and keep the full render if not.
        """
        if not self._fast_delta:
            return chat_delta_ids(self.tokenizer, messages, new, tool_dicts, add_generation_prompt=True)
        fast = chat_delta_ids(self.tokenizer, _DELTA_STUB, new, None, add_generation_prompt=True)
        if self._delta_checks < _DELTA_CHECKS:
            self._delta_checks += 1
            full = chat_delta_ids(self.tokenizer, messages, new, tool_dicts, add_generation_prompt=True)
            if full != fast:
                self._fast_delta = False
                return full
        return fast

    def decode(self, ids: Sequence[int]) -> str:
        text = self.tokenizer.decode(list(ids), skip_special_tokens=False)
        for marker in self._strip:
            text = text.replace(marker, "")
        return text

    def row_tool_dicts(self, extra_info: Mapping[str, Any] | None) -> list[dict] | None:
        """The tool schemas the prompt shows for a row: its `extra_info.tool_selection`, or every tool."""
        chosen = tool_selection(extra_info)
        if self.tool_dicts is None or chosen is None:
            return self.tool_dicts
        return [d for d in self.tool_dicts if d["function"]["name"] in chosen] or None

    def prompt_ids(self, prompt: list[Message], extra_info: Mapping[str, Any] | None = None) -> list[int]:
        ids = chat_ids(self.tokenizer, prompt, self.row_tool_dicts(extra_info), add_generation_prompt=True)
        self._check_prompt_length(ids)
        return ids

    def _check_prompt_length(self, ids: list[int]) -> None:
        limit = self.config.max_prompt_tokens
        if limit is not None and len(ids) > limit:
            raise ValueError(f"prompt has {len(ids)} tokens, more than max_prompt_tokens={limit}; shorten it or raise the limit")

    def _check_engine_takes_images(self) -> None:
        if not self.engine.takes_images:
            raise TypeError(f"{type(self.engine).__name__} does not take images; serve vision-language models with "
                            "the in-process engines (rollout.name=transformers) or SGLang")

    async def run(self, row: Mapping[str, Any], *, group_id: str | None = None, uid: str | None = None) -> Trajectory:
        """One episode for one dataset row (verl layout: `prompt`, `extra_info`)."""
        extra_info = dict(row.get("extra_info") or {})
        row_info = {k: v for k, v in row.items() if k not in ("prompt", "extra_info", self.config.image_key)}
        traj = Trajectory(uid=uid or uuid4().hex, group_id=group_id or uuid4().hex, prompt_ids=[], extra_info=extra_info,
                          row_info=row_info)
        traj.messages = [dict(m) for m in row["prompt"]]
        started = time.perf_counter()
        try:
            track = _TokenTrack(self, traj, self.row_tool_dicts(extra_info))
            row_images = row.get(self.config.image_key) or []
            row_images = list(row_images) if isinstance(row_images, (list, tuple)) else [row_images]
            if row_images or image_parts(traj.messages):
                self._check_engine_takes_images()
                traj.messages = with_image_parts(traj.messages)
                traj.prompt_ids = track.images.add_prompt(self.prompt_ids(traj.messages, extra_info), traj.messages,
                                                          row_images)
                self._check_prompt_length(traj.prompt_ids)
            else:
                traj.prompt_ids = self.prompt_ids(traj.messages, extra_info)
            session = (Session(self.tools, extra_info=extra_info, interactions=self.interactions, config=self.config.session,
                               session_id=traj.uid) if self.environment is None else
                       self.environment.session(extra_info=extra_info, session_id=traj.uid, config=self.config.session))
            async with session:
                episode = await run_episode(session, track, self.parser, traj.messages, self.config.limits)
            track.images.finish(episode.messages)
            traj.messages = episode.messages
            traj.finish_reason = episode.finish_reason
            traj.final_score = episode.scores.total
            if episode.scores.reward_metrics:
                traj.extra_info = {**traj.extra_info, "reward_metrics": episode.scores.reward_metrics}
            traj.tool_rewards = [r.reward for r in episode.tool_results]
            traj.interaction_rewards = list(episode.turn_rewards)
            traj.tool_reward_turns = list(episode.tool_result_turns)
            traj.interaction_reward_turns = list(episode.turn_reward_turns)
            traj.num_tool_calls = len(episode.tool_results) + episode.parse_errors
            traj.tool_metrics = [
                {"name": r.name, "latency_s": r.latency_s, "error": r.error, "error_kind": r.error_kind,
                 "reward": r.reward, **r.metrics}
                for r in episode.tool_results
            ] + [{"name": None, "latency_s": 0.0, "error": e.message, "error_kind": "parse_error", "reward": 0.0,
                  "raw": e.raw} for e in episode.parse_failures]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            traj.finish_reason = "failed"
            reason = "engine did not answer in time" if isinstance(exc, asyncio.TimeoutError) else f"{type(exc).__name__}: {exc}"
            traj.error = reason
            traj.extra_info = {**traj.extra_info, "traceback": traceback.format_exc(limit=8)}
        traj.extra_info = {**traj.extra_info, "episode_seconds": time.perf_counter() - started}
        traj.check()
        return traj

    async def run_batch(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        n: int = 1,
        group_prefix: str | None = None,
        on_done: Callable[[Trajectory], None] | None = None,
        first_index: int = 0,
    ) -> list[Trajectory]:
        """`n` episodes per row (one GRPO group per row), at most `max_concurrent_episodes` in flight; row order kept.

        Group ids are `group_prefix` + the row's index counted from `first_index` (a random prefix when none is
        given); pass a fixed prefix, such as the training step, for runs that must repeat exactly under a fixed
        sampling seed. `plan_episodes` names the same episodes without running them.
        """
        return await self.run_episodes(plan_episodes(rows, n=n, group_prefix=group_prefix, first_index=first_index),
                                       on_done=on_done)

    async def run_episodes(self, episodes: Sequence[EpisodeSpec], *,
                           on_done: Callable[[Trajectory], None] | None = None) -> list[Trajectory]:
        """The episodes' trajectories in the episodes' order; `on_done` is called as each one ends."""
        out: list[Trajectory | None] = [None] * len(episodes)
        async with aclosing(self.stream_episodes(episodes)) as stream:
            async for index, traj in stream:
                if on_done is not None:
                    on_done(traj)
                out[index] = traj
        return [t for t in out if t is not None]  # every slot is filled: the stream yields each episode once

    async def stream_episodes(self, episodes: Sequence[EpisodeSpec]) -> AsyncIterator[tuple[int, Trajectory]]:
        """(index into `episodes`, trajectory) as each episode ends, at most `max_concurrent_episodes` in flight
        (started in the episodes' order). Leaving the iteration early cancels the episodes still running."""
        limiter = asyncio.Semaphore(self.config.max_concurrent_episodes)

        async def one(index: int, episode: EpisodeSpec) -> tuple[int, Trajectory]:
            async with limiter:
                return index, await self.run(episode.row, group_id=episode.group_id, uid=episode.uid)

        tasks = [asyncio.ensure_future(one(i, e)) for i, e in enumerate(episodes)]
        try:
            for finished in asyncio.as_completed(tasks):
                yield await finished
        finally:
            for task in tasks:
                task.cancel()


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to run: a dataset row, the GRPO group it belongs to and its sample index in the group. Its
    trajectory's uid is `<group_id>-<sample>` (the replica router reads the group back from it)."""

    row: Mapping[str, Any]
    group_id: str
    sample: int

    @property
    def uid(self) -> str:
        return f"{self.group_id}-{self.sample}"


def plan_episodes(rows: Sequence[Mapping[str, Any]], *, n: int = 1, group_prefix: str | None = None,
                  first_index: int = 0) -> list[EpisodeSpec]:
    """The episodes `AgentLoop.run_batch` runs for `rows`, row by row: `n` samples of group `<prefix><index>`,
    `index` counted from `first_index`. Whoever runs them (one loop, or agent workers given a share each), the ids
    are these."""
    prefix = group_prefix if group_prefix is not None else f"{uuid4().hex[:8]}-"
    return [EpisodeSpec(row, f"{prefix}{first_index + index}", k) for index, row in enumerate(rows) for k in range(n)]
