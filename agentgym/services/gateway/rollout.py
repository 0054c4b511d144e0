"""Training an agent that already exists: a `Rollout` that launches it against the gateway, once per sample.

For each dataset row and sample the rollout registers a gateway session, launches the user's agent (a command,
or a Python callable) with the session's base URL, waits for it up to `timeout_s`, and takes the session's
recorded trajectory: the engine's own ids for the model's turns, template-rendered ids for the rest. The agent
runs its own tools; the trainer never sees them, only the token-exact conversation. Scores come from the agent
(its return value, or `POST /v1/sessions/{id}/reward`), from the row's interaction judging the recorded
conversation, or, when `custom_reward_function` is set, from that function, which the trainer applies to these
trajectories as to any other.

    python3 -m agentgym.trainer.main_ppo --config run.yaml --rollout agentgym.services.gateway.rollout:make_rollout \
        actor_rollout_ref.rollout.external_agent.command="python3 my_agent.py"

The gateway listens inside the trainer's event loop (it must share the in-process engine's loop), so an agent
written with a blocking client runs in a worker thread (`ThreadAgent`) or as a subprocess (`CommandAgent`).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from agentgym.config.schema import AgentGymConfig
from agentgym.episode.environment import Environment, LocalEnvironment
from agentgym.episode.remote import RemoteEnvironment
from agentgym.episode.session import SessionConfig
from agentgym.errors import AgentGymError, ConfigError
from agentgym.models.chat import chat_ids
from agentgym.rollout.build import load_environment
from agentgym.rollout.engines.base import Engine
from agentgym.rollout.protocol import OnDone, unversioned_sync
from agentgym.services.gateway.recorder import TrajectoryRecorder
from agentgym.services.gateway.server import Gateway, GatewayConfig
from agentgym.services.serving import RunningServer, start_server
from agentgym.trajectory import Trajectory

RewardSource = Literal["auto", "agent", "environment"]


class AgentFailed(AgentGymError):
    """The external agent exited with an error; its trajectory is marked failed with this message."""


@dataclass(frozen=True)
class AgentContext:
    """What an agent is launched with. `base_url` is an OpenAI base URL for this session
    (`OpenAI(base_url=ctx.base_url)`), `anthropic_base_url` an Anthropic one; `row` is the dataset row (its
    `prompt` is the conversation to start from). `reward_url` takes `POST {"reward": float}`."""

    gateway_url: str
    session_id: str
    row: Mapping[str, Any]
    model: str

    @property
    def base_url(self) -> str:
        return f"{self.gateway_url}/sessions/{self.session_id}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return f"{self.gateway_url}/sessions/{self.session_id}"

    @property
    def reward_url(self) -> str:
        return f"{self.gateway_url}/v1/sessions/{self.session_id}/reward"


class ExternalAgent(Protocol):
    async def run(self, ctx: AgentContext) -> float | None:
        """Run one episode through the gateway; return the agent's own score, or None."""
        ...


@dataclass
class ThreadAgent:
    """A blocking function (the sync `openai` client, most frameworks) run in a worker thread."""

    fn: Callable[[AgentContext], float | None]

    async def run(self, ctx: AgentContext) -> float | None:
        return await asyncio.to_thread(self.fn, ctx)


@dataclass
class AsyncAgent:
    """A coroutine function (`openai.AsyncOpenAI`), run in the trainer's event loop."""

    fn: Callable[[AgentContext], Awaitable[float | None]]

    async def run(self, ctx: AgentContext) -> float | None:
        return await self.fn(ctx)


@dataclass
class CommandAgent:
    """A command line per episode (a coding-agent harness, a script in another language or virtualenv).

    Placeholders {base_url}, {session_id}, {row_file}, {gateway_url} are filled in; the environment carries
    OPENAI_BASE_URL, OPENAI_API_KEY, ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY, AGENTGYM_SESSION_ID,
    AGENTGYM_GATEWAY_URL, AGENTGYM_REWARD_URL and AGENTGYM_ROW_FILE (the row as JSON). A non-zero exit fails the
    episode with the tail of its stderr; a timeout kills its whole process group.
    """

    command: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None

    async def run(self, ctx: AgentContext) -> float | None:
        with tempfile.TemporaryDirectory(prefix="agentgym-agent-") as tmp:
            row_file = Path(tmp) / "row.json"
            row_file.write_text(json.dumps(dict(ctx.row), default=str))
            values = {"base_url": ctx.base_url, "session_id": ctx.session_id, "row_file": str(row_file),
                      "gateway_url": ctx.gateway_url}
            argv = [part.format(**values) for part in shlex.split(self.command)]
            env = {**os.environ, **self.env, "OPENAI_BASE_URL": ctx.base_url, "OPENAI_API_KEY": "agentgym",
                   "ANTHROPIC_BASE_URL": ctx.anthropic_base_url, "ANTHROPIC_API_KEY": "agentgym",
                   "AGENTGYM_SESSION_ID": ctx.session_id, "AGENTGYM_GATEWAY_URL": ctx.gateway_url,
                   "AGENTGYM_REWARD_URL": ctx.reward_url, "AGENTGYM_ROW_FILE": str(row_file)}
            process = await asyncio.create_subprocess_exec(*argv, env=env, cwd=self.cwd, stdout=asyncio.subprocess.DEVNULL,
                                                           stderr=asyncio.subprocess.PIPE, start_new_session=True)
            try:
                _, stderr = await process.communicate()
            except BaseException:  # timeout or cancellation: nothing of the agent outlives its episode
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                await process.wait()
                raise
            if process.returncode != 0:
                tail = stderr.decode(errors="replace")[-1500:]
                raise AgentFailed(f"agent command {argv[0]!r} exited with {process.returncode}: {tail}")
        return None


def load_agent(cfg: AgentGymConfig) -> ExternalAgent:
    ea = cfg.actor_rollout_ref.rollout.external_agent
    entry = "actor_rollout_ref.rollout.external_agent"
    if bool(ea.command) == bool(ea.callable):
        raise ConfigError("the external-agent rollout needs exactly one agent.", entry=entry,
                          fix="set external_agent.command (a command line) or external_agent.callable "
                              "(module:function or file.py:function), not both")
    if ea.command:
        return CommandAgent(ea.command)
    from agentgym.rewards.functions import load_function

    path, _, name = str(ea.callable).rpartition(":")
    if not path:
        raise ConfigError(f"external_agent.callable {ea.callable!r} must look like module:function or file.py:function.",
                          entry=f"{entry}.callable")
    fn = load_function(path, name, entry=f"{entry}.callable")
    return ThreadAgent(fn) if ea.callable_kind == "thread" else AsyncAgent(fn)


class ExternalAgentRollout:
    """The `Rollout` for agents written elsewhere (see the module docstring)."""

    samples_greedy = False  # the agent's requests are served at the run's sampling settings
    reports_done = True

    def __init__(self, agent: ExternalAgent, engine: Engine, recorder: TrajectoryRecorder, *, n: int = 1,
                 timeout_s: float = 600.0, max_concurrent: int = 64, reward: RewardSource = "auto",
                 environment: Environment | None = None, model_name: str = "agentgym-policy",
                 host: str = "127.0.0.1", port: int = 0):
        self.agent = agent
        self.engine = engine
        self.recorder = recorder
        self.gateway = Gateway(recorder, GatewayConfig(model_name=model_name, open_sessions=False))
        self.n, self.timeout_s, self.max_concurrent = n, timeout_s, max_concurrent
        self.reward, self.environment = reward, environment
        self.host, self.port = host, port
        self.server: RunningServer | None = None
        self._lock: asyncio.Lock | None = None
        self._counters: dict[str, float] = {}
        self._step: dict[str, float] = {}

    async def ensure_started(self) -> str:
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if self.server is None:
                await self.engine.start()
                self.server = await start_server(self.gateway.app(), self.host, self.port)
        return self.server.url

    async def start(self, replicas: Sequence[Any] = ()) -> None:
        if replicas:
            raise ConfigError("the external-agent rollout serves its own engine behind the gateway; it cannot use "
                              "replicas hosted by the trainer ranks.", entry="actor_rollout_ref.rollout.placement",
                              fix="set actor_rollout_ref.rollout.placement=driver")
        await self.ensure_started()

    async def collect(self, rows: list[dict[str, Any]], step: int, *, greedy: bool = False,
                      on_done: OnDone | None = None) -> list[Trajectory]:
        if greedy:
            raise ValueError("the external-agent rollout cannot sample greedy baselines (the agent picks its own "
                             "requests); use an estimator without a greedy baseline")
        url = await self.ensure_started()
        limiter = asyncio.Semaphore(self.max_concurrent)
        self._step = {"agent_failures": 0.0, "agent_timeouts": 0.0, "unscored": 0.0}

        async def one(index: int, row: dict[str, Any], k: int) -> Trajectory:
            group_id = f"step{step}-{index}"
            session_id = f"{group_id}-{k}"  # the agent loop's uid for the same sample: same seeds, same samples
            async with limiter:
                traj = await self._episode(url, session_id, group_id, row)
            if on_done is not None:
                on_done(traj)
            return traj

        return list(await asyncio.gather(*(one(i, row, k) for i, row in enumerate(rows) for k in range(self.n))))

    async def _episode(self, url: str, session_id: str, group_id: str, row: dict[str, Any]) -> Trajectory:
        self.gateway.register(session_id, row=row, group_id=group_id)
        ctx = AgentContext(url, session_id, row, self.gateway.config.model_name)
        error = None
        reported: float | None = None
        try:
            reported = await asyncio.wait_for(self.agent.run(ctx), self.timeout_s)
        except asyncio.TimeoutError:
            error = f"the agent did not finish within {self.timeout_s:g} s (external_agent.timeout_s)"
            self._step["agent_timeouts"] += 1
        except asyncio.CancelledError:
            self.recorder.drop(session_id)
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._step["agent_failures"] += 1
        record = self.recorder.sessions[session_id]
        async with record.lock:  # a request of a timed-out agent may still be generating
            if reported is not None:
                self.gateway.report_reward(session_id, reported)
            traj = self.recorder.trajectory(session_id)
        self.recorder.drop(session_id)
        if traj is None:
            traj = Trajectory(uid=session_id, group_id=group_id,
                              prompt_ids=chat_ids(self.recorder.tokenizer, row.get("prompt") or [], None,
                                                  add_generation_prompt=True) if row.get("prompt") else [],
                              messages=[dict(m) for m in row.get("prompt") or []], extra_info=dict(row.get("extra_info") or {}),
                              row_info={k: v for k, v in row.items() if k not in ("prompt", "extra_info")})
            error = error or "the agent made no request to the gateway"
        if error is not None:
            traj.error, traj.finish_reason = error, "failed"
            return traj
        await self._score(traj, record.reported_reward)
        return traj

    async def _score(self, traj: Trajectory, reported: float | None) -> None:
        use_agent = self.reward == "agent" or (self.reward == "auto" and reported is not None)
        if use_agent or self.environment is None:
            if reported is None:
                self._step["unscored"] += 1
            traj.final_score = reported or 0.0
            return
        async with self.environment.session(extra_info=traj.extra_info, session_id=traj.uid,
                                            config=SessionConfig()) as session:
            turn = await session.user_turn([dict(m) for m in traj.messages])
            scores = await session.scores()
        if turn is not None:
            traj.interaction_rewards = [turn.reward]
            traj.interaction_reward_turns = [max(sum(1 for s in traj.turns if s.role == "assistant") - 1, 0)]
        traj.final_score = scores.total if scores.interaction_score is not None else (turn.reward if turn else 0.0)

    async def update_weights(self, state_dict: Any = None, *, path: str | None = None) -> None:
        await self.ensure_started()
        await self.engine.update_weights(state_dict, path=path)

    def agent_counts(self) -> dict[str, float]:
        """The last collection's failed, timed-out and unscored episodes."""
        return dict(self._step)

    def weight_sync(self, version: int) -> AbstractAsyncContextManager[None]:
        """The agent's requests are not paused at a sync; the trainer stamps versions per trajectory."""
        return unversioned_sync(version)

    async def step_metrics(self) -> dict[str, float]:
        out = {f"rollout/external_agent/{k}": v for k, v in self._step.items()}
        now = self.engine.stats.counters()
        before, self._counters = self._counters, now
        out.update({f"rollout/engine/{k}": v - before.get(k, 0.0) for k, v in now.items()})
        return out

    async def close(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None
            await self.engine.close()


def make_rollout(cfg: AgentGymConfig) -> ExternalAgentRollout:
    """`--rollout agentgym.services.gateway.rollout:make_rollout`: the run config's engine behind a gateway, and the
    agent `actor_rollout_ref.rollout.external_agent` names; the run's tools/interactions (or environment server)
    score episodes when `external_agent.reward` asks the environment."""
    from agentgym.services.gateway.build import make_recorder

    if cfg.colocated_rollout or cfg.separate_rollout:
        raise ConfigError("the external-agent rollout serves its own engine behind the gateway.",
                          entry="actor_rollout_ref.rollout.placement", fix="set actor_rollout_ref.rollout.placement=driver")
    model = cfg.actor_rollout_ref.model
    recorder = make_recorder(cfg)
    mt = cfg.actor_rollout_ref.rollout.multi_turn
    environment: Environment | None = None
    if mt.environment_url:
        environment = RemoteEnvironment.connect(mt.environment_url)
    elif mt.interaction_config_path or mt.tool_config_path or mt.function_tool_path:
        environment = LocalEnvironment(*load_environment(cfg))
    ea = cfg.actor_rollout_ref.rollout.external_agent
    return ExternalAgentRollout(load_agent(cfg), recorder.engine, recorder, n=cfg.actor_rollout_ref.rollout.n,
                                timeout_s=ea.timeout_s, max_concurrent=ea.max_concurrent, reward=ea.reward,
                                environment=environment, model_name=os.path.basename(str(model.path)) or "agentgym-policy",
                                host=ea.host, port=ea.port)
