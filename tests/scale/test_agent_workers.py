"""Agent-loop workers (`actor_rollout_ref.rollout.agent.num_workers`) on a real local Ray: the episodes of a step
run in worker actors that call real engine replicas (the tiny model in a Ray actor, as a trainer rank hosts it),
give the same trajectories as the driver's one loop, survive a worker killed mid-step, and record the policy version
of every token when the replicas' weights are synced while the workers' episodes are in flight."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import pytest
import torch

from agentgym.config import load_config
from agentgym.rollout.build import AgentLoopRollout, rollout_parts
from agentgym.trajectory import Trajectory
from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG
from agentgym_envs.arithmetic.data import ArithmeticTaskConfig, make_rows

ray = pytest.importorskip("ray")
# The replica class below travels to its Ray worker by value: the worker cannot import this test module.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}})
    yield ray
    if started:
        ray.shutdown()


class TinyReplica:
    """An engine replica as a trainer rank hosts one (`ReplicaHost`: the config's in-process engine on its own
    event loop), behind the same `replica_generate` Ray method; `delay_s` makes every model turn slow."""

    def __init__(self, cfg: Any, delay_s: float = 0.0):
        from agentgym.trainer.workers.replica import ReplicaHost

        self.host = ReplicaHost(cfg)
        self.delay_s = delay_s

    def replica_generate(self, prompt_ids, sampling, session_id=None, images=None):
        time.sleep(self.delay_s)
        return self.host.generate(prompt_ids, sampling, session_id, images)

    def replica_counters(self) -> dict[str, float]:
        return self.host.counters()

    def load_weights(self, model_dir: str, version: int) -> int:
        """A weight sync as the trainer makes one (`ReplicaHost.load`): the calls in flight finish first."""
        from agentgym.rollout.engines.weights import read_weights

        return self.host.load([read_weights(model_dir)], version)


def config(model_dir, num_workers: int, max_num_seqs: int = 8, *overrides: str):
    # One sequence per engine batch: a sequence's numbers never depend on what else was in flight, so the one loop
    # and the workers must agree token for token (seeded sampling at temperature 1, and greedy).
    return load_config(None, [
        f"actor_rollout_ref.model.path={model_dir}", "actor_rollout_ref.model.attn_implementation=eager",
        "trainer.device=cpu", "actor_rollout_ref.rollout.n=2", "data.max_response_length=24", "data.seed=7",
        f"actor_rollout_ref.rollout.agent.num_workers={num_workers}",
        f"actor_rollout_ref.rollout.max_num_seqs={max_num_seqs}",
        "actor_rollout_ref.rollout.engine_kwargs.transformers.max_batch_size=1",
        "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=2",
        "actor_rollout_ref.rollout.multi_turn.tool_schemas_in_prompt=false",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={TOOL_CONFIG}",
        f"actor_rollout_ref.rollout.multi_turn.interaction_config_path={INTERACTION_CONFIG}", *overrides,
    ])


def replicas(cfg, count: int, delay_s: float = 0.0) -> list[Any]:
    remote = ray.remote(num_cpus=0, max_concurrency=16)(TinyReplica)
    handles = [remote.remote(cfg, delay_s) for _ in range(count)]
    ray.get([h.replica_counters.remote() for h in handles])
    return handles


async def started(cfg, handles) -> AgentLoopRollout:
    rollout = AgentLoopRollout(cfg, None, *rollout_parts(cfg))
    await rollout.start(handles)
    return rollout


def content(t: Trajectory) -> tuple:
    return (t.uid, t.group_id, t.prompt_ids, t.response_ids, t.loss_mask, t.rollout_logprobs, t.messages,
            t.finish_reason, t.error, [(s.role, s.start, s.end) for s in t.turns], t.num_tool_calls)


def test_workers_give_the_one_loops_trajectories(local_ray, tiny_model_dir):
    rows = make_rows(ArithmeticTaskConfig(num_rows=5, seed=1))
    handles = replicas(config(tiny_model_dir, 1), 2)

    async def go() -> tuple:
        one = await started(config(tiny_model_dir, 1), handles)
        two = await started(config(tiny_model_dir, 2), handles)
        assert one.workers is None and two.workers is not None and len(two.workers.actors) == 2
        try:
            done: list[Trajectory] = []
            ref, got = await one.collect(rows, 3), await two.collect(rows, 3, on_done=done.append)
            ref_greedy, got_greedy = await one.collect(rows, 3, greedy=True), await two.collect(rows, 3, greedy=True)
            return ref, got, done, ref_greedy, got_greedy, await one.step_metrics(), await two.step_metrics()
        finally:
            await one.close()
            await two.close()

    ref, got, done, ref_greedy, got_greedy, one_metrics, two_metrics = asyncio.run(go())
    assert [t.uid for t in ref] == [f"step3-{i}-{k}" for i in range(5) for k in range(2)]
    assert [content(t) for t in got] == [content(t) for t in ref]
    assert not any(t.failed for t in ref)
    assert len({tuple(t.response_ids) for t in ref}) > 1, "seeded samples differ (the comparison is not of copies)"
    assert sorted(id(t) for t in done) == sorted(id(t) for t in got), "on_done saw each returned trajectory once"
    assert [t.uid for t in got_greedy] == [f"step3-greedy-{i}-0" for i in range(5)]
    assert [content(t) for t in got_greedy] == [content(t) for t in ref_greedy]
    assert two_metrics["rollout/agent_workers/reruns"] == 0 and two_metrics["rollout/agent_workers/restarts"] == 0
    turns = sum(1 for t in ref + ref_greedy for s in t.turns if s.role == "assistant")
    for metrics in (one_metrics, two_metrics):
        assert sum(v for k, v in metrics.items() if k.startswith("rollout/replica_")) == turns


def test_a_worker_killed_mid_step_loses_no_trajectory(local_ray, tiny_model_dir):
    rows = make_rows(ArithmeticTaskConfig(num_rows=4, seed=2))
    # One episode at a time per worker, every model turn slow: when worker 0 has delivered its first trajectory it
    # still has three to run, so the kill lands mid-step, between what it delivered and what it had not.
    cfg = config(tiny_model_dir, 2, max_num_seqs=1)
    handles = replicas(cfg, 1, delay_s=0.15)

    async def go() -> tuple:
        rollout = await started(cfg, handles)
        try:
            ref = await rollout.collect(rows, 1)
            await rollout.step_metrics()
            doomed = rollout.workers.actors[0]
            first = asyncio.Event()
            done: list[Trajectory] = []

            def on_done(traj: Trajectory) -> None:
                done.append(traj)
                if traj.group_id in ("step1-0", "step1-1"):  # worker 0 holds the first half of the groups
                    first.set()

            async def kill() -> None:
                await first.wait()
                ray.kill(doomed)

            killer = asyncio.ensure_future(kill())
            got = await rollout.collect(rows, 1, on_done=on_done)
            await killer
            metrics = await rollout.step_metrics()
            replaced = rollout.workers.actors[0]
            after = await rollout.collect(rows, 2)
            return ref, got, done, metrics, doomed, replaced, after, await rollout.step_metrics()
        finally:
            await rollout.close()

    ref, got, done, metrics, doomed, replaced, after, after_metrics = asyncio.run(go())
    assert [content(t) for t in got] == [content(t) for t in ref], "every trajectory arrived, the same as without the kill"
    assert sorted(t.uid for t in done) == sorted(t.uid for t in got), "on_done once per trajectory, reruns included"
    assert metrics["rollout/agent_workers/restarts"] == 1
    assert 1 <= metrics["rollout/agent_workers/reruns"] <= 3, "only the killed worker's undelivered episodes ran again"
    assert replaced is not doomed
    assert len(after) == 8 and not any(t.failed for t in after)
    assert after_metrics["rollout/agent_workers/restarts"] == 0


def _response_logprobs(model, traj: Trajectory) -> torch.Tensor:
    ids = torch.tensor([traj.prompt_ids + traj.response_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(traj.prompt_ids) - 1: -1].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(traj.response_ids).unsqueeze(1)).squeeze(1)


def test_workers_record_the_version_each_replica_sampled_with(local_ray, tiny_model_dir, tmp_path):
    """Partial rollouts (chunks of 4 tokens) in two agent workers over two replicas; both replicas load other
    weights as version 1 while episodes run. Every sampled token records the version whose weights gave its
    logprob, the versions never go back within an episode, and the next collection samples version 1 only."""
    from transformers import AutoModelForCausalLM

    from agentgym.models import build_tiny_model

    new_dir = build_tiny_model(tmp_path, size="tiny", seed=1)
    cfg = config(tiny_model_dir, 2, 8, "trainer.rollout_mode=one_step_off", "trainer.partial_rollout=true",
                 "trainer.partial_rollout_tokens=4")
    handles = replicas(cfg, 2, delay_s=0.05)
    rows = make_rows(ArithmeticTaskConfig(num_rows=4, seed=3))

    async def go() -> tuple[list[Trajectory], list[Trajectory]]:
        rollout = await started(cfg, handles)
        try:
            first = asyncio.Event()
            collecting = asyncio.ensure_future(rollout.collect(rows, 1, on_done=lambda _: first.set()))
            await first.wait()  # one episode has ended on version 0; the others are in flight
            await asyncio.gather(*(h.load_weights.remote(str(new_dir), 1) for h in handles))
            return await collecting, await rollout.collect(rows, 2)
        finally:
            await rollout.close()

    during, after = asyncio.run(go())
    assert not any(t.failed for t in during + after)
    assert {v for t in during for v in t.sampled_versions} == {0, 1}, "the sync landed while episodes ran"
    assert {v for t in after for v in t.sampled_versions} == {1}
    models = {0: AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(),
              1: AutoModelForCausalLM.from_pretrained(new_dir).eval()}
    for traj in during:
        sampled = [v for v in traj.token_versions if v >= 0]
        assert sampled == sorted(sampled), f"{traj.uid}: versions went back"
        engine = torch.tensor(traj.rollout_logprobs)
        recomputed = {v: _response_logprobs(m, traj) for v, m in models.items()}
        for version in set(sampled):
            at = torch.tensor([v == version for v in traj.token_versions])
            assert torch.allclose(engine[at], recomputed[version][at], atol=1e-3), (traj.uid, version)
            assert not torch.allclose(engine[at], recomputed[1 - version][at], atol=1e-3), (traj.uid, version)
