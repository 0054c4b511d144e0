"""The RL driver: rollout -> rewards -> (old/ref log-probs, values) -> advantages -> critic/actor update -> weight sync.

The rollout side plugs in through the `Rollout` protocol (agentgym.rollout.protocol): `collect(rows, step)` returns
`actor_rollout_ref.rollout.n` trajectories per row, the samples of one row sharing a `group_id`, and
`update_weights(state_dict)` receives the actor's full weights after each step. A plain function is one through
`CallableRollout` (`RLTrainer(config, collect=fn, engine=...)` wraps it so).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agentgym.config.schema import AgentGymConfig
from agentgym.errors import ConfigError
from agentgym.trainer import algorithms as algo
from agentgym.trainer.batching import SampleBatch, gather_outputs, plan_forward, plan_update
from agentgym.rollout.protocol import CallableRollout, CollectFn, Rollout, WeightReceiver, check_groups
from agentgym.rows import PromptBatches
from agentgym.trainer.baselines import GreedyBaselines
from agentgym.trainer.checkpoints import CheckpointManager, complete_steps
from agentgym.trainer.dynamic_sampling import collect_informative
from agentgym.trainer.failures import check_failures
from agentgym.trainer.group_lanes import GroupCall, run_by_group
from agentgym.trainer.overlap import RolloutPipeline, stamp_versions, staleness_metrics
from agentgym.trainer.rewards import RewardScorer
from agentgym.trainer.rollout_data import tool_call_metrics, write_step_trajectories
from agentgym.trainer.tracking import MetricsTracker
from agentgym.trainer.weight_sync import WeightSync, WeightTransport
from agentgym.trainer.workers.memory import max_over_ranks
from agentgym.trainer.workers.metrics_acc import MetricSums
from agentgym.trajectory import Trajectory
from agentgym.utils.console import say

__all__ = ["CollectFn", "RLTrainer", "WeightReceiver"]


class _Timer:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start


def _stats(prefix: str, values: torch.Tensor) -> dict[str, float]:
    if values.numel() == 0:
        return {}
    values = values.float()
    return {f"{prefix}/mean": float(values.mean()), f"{prefix}/max": float(values.max()),
            f"{prefix}/min": float(values.min())}


class RLTrainer:
    """Owns the worker group, the KL controller and the prompt iterator; `fit()` runs the loop and
    `train_step(trajectories)` runs one update on trajectories collected elsewhere. Checkpoints are the
    `CheckpointManager`'s; greedy baselines, when the estimator asks for them, `GreedyBaselines`'.

    The weights reach the rollout through `WeightSync` (trainer/weight_sync.py; `weight_transport` is its
    transport for a rollout with its own engine)."""

    def __init__(
        self,
        config: AgentGymConfig,
        *,
        rollout: Rollout | None = None,
        collect: CollectFn | None = None,
        engine: WeightReceiver | None = None,
        dataset: Sequence[dict[str, Any]] | None = None,
        reward_fn: Callable[[Trajectory], float] | None = None,
        workers: Any = None,
        weight_transport: WeightTransport = "auto",
    ) -> None:
        if rollout is not None and collect is not None:
            raise ValueError("pass either rollout= or collect= (a function, wrapped in CallableRollout), not both")
        self.config = config
        self.rollout: Rollout | None = rollout if collect is None else CallableRollout(collect, engine)
        self.rewards = RewardScorer.from_config(config, reward_fn=reward_fn)
        self.batches = (PromptBatches(dataset, config.data.train_batch_size, shuffle=config.data.shuffle,
                                      seed=config.data.seed) if dataset is not None else None)
        kl = config.algorithm.kl_ctrl
        self.kl_ctrl = algo.make_kl_controller(kl.type, kl.kl_coef, kl.target_kl, kl.horizon)
        self.global_step = 0
        # The weights the rollout holds: 0 at the start, +1 at each weight sync after an update (every update, or
        # every trainer.trigger_parameter_sync_step in async mode); what every sampled token records.
        self.policy_version = 0
        self._drawn: dict[int, list[int]] = {}  # launch (the step a collection is for) -> the row indices it drew
        self.total_steps = self._total_steps()
        self.workers = workers
        # The groups of a critic or reference that trainer.mapping puts on a pool of its own, by role ("ref",
        # "critic"); a role not here runs in the actor's ranks (`self.workers`).
        self.role_groups: dict[str, Any] = {}
        self.weights = WeightSync(config, lambda: self.workers, weight_transport)
        self.checkpoints = CheckpointManager(config, lambda: self.workers, lambda: self._own_role_groups())
        self._check_config()
        self.baselines = (GreedyBaselines(config, self.rewards, self.rollout)
                          if algo.needs_greedy_baseline(config.algorithm.adv_estimator) else None)

    # ---- setup ----
    def _total_steps(self) -> int:
        t = self.config.trainer
        if t.total_training_steps:
            return t.total_training_steps
        if self.batches is not None:
            return t.total_epochs * self.batches.batches_per_epoch
        return 1

    def _vision_processor(self, trajectories: Sequence[Trajectory]) -> Any:
        """The model's image processor, loaded on the first batch with images (text runs never load it)."""
        if not any(t.image_spans for t in trajectories):
            return None
        if getattr(self, "_processor", None) is None:
            from agentgym.multimodal.processor import load_vision_processor

            self._processor = load_vision_processor(self.config.actor_rollout_ref.model.path)
        return self._processor

    def _check_config(self) -> None:
        cfg = self.config
        if cfg.algorithm.adv_estimator == "gae" and not cfg.use_critic:
            raise ConfigError("adv_estimator=gae needs a critic.", entry="critic.enable", fix="set critic.enable=true")
        mode = cfg.trainer.rollout_mode
        if mode != "sync" and algo.needs_greedy_baseline(cfg.algorithm.adv_estimator):
            raise ConfigError(f"adv_estimator={cfg.algorithm.adv_estimator} collects a greedy baseline per step, "
                              f"which trainer.rollout_mode={mode} would mix across overlapping steps.",
                              entry="trainer.rollout_mode", fix="set trainer.rollout_mode=sync or another estimator")

    def start_workers(self) -> None:
        """The actor's ranks, and a worker group on its own pool for each critic or reference that
        `trainer.mapping` places away from the actor (a group passed in as `workers=` is used as it is)."""
        if self.workers is None:
            from agentgym.trainer.workers import start_role_groups, start_worker_group

            self.workers = start_worker_group(self.config, total_steps=self.total_steps)
            try:
                self.role_groups = start_role_groups(self.config, total_steps=self.total_steps)
            except BaseException:
                self.workers.shutdown()
                self.workers = None
                raise

    @property
    def world_size(self) -> int:
        return self.workers.world_size

    def group_of(self, role: str) -> Any:
        """The worker group whose ranks hold `role`'s model ("actor", "ref", "critic")."""
        return self.role_groups.get(role, self.workers)

    def _own_role_groups(self) -> list[Any]:
        """The critic's and reference's groups of their own, each once (two roles may share one pool)."""
        return list({id(g): g for g in self.role_groups.values()}.values())

    def _trainer_groups(self) -> list[Any]:
        """Every group of trainer ranks: the actor's, then each critic's or reference's of its own."""
        return [self.workers, *self._own_role_groups()]

    def _concurrent_pools(self) -> bool:
        """Whether groups of their own run their forwards and updates beside the actor's (`trainer.concurrent_pools`;
        unset: on GPUs, where each pool has devices of its own, and not on CPU, where each group's ranks take every
        core as threads and running two groups at once oversubscribes them: 2.5x slower per step or worse on 2 cores,
        benchmarks/role_pools_bench.py)."""
        chosen = self.config.trainer.concurrent_pools
        if not self.role_groups:  # one group: nothing to run beside anything
            return False
        return self.workers.on_gpu if chosen is None else chosen

    # ---- one step on given trajectories ----
    async def _forward(self, group: Any, batch: SampleBatch, method: str, max_len: int, micro: int | None,
                       dynamic: bool, padded: bool, **kwargs) -> tuple[list, list]:
        """A forward pass over the batch, split over the ranks of `group` (the group that holds the model)."""
        plans = plan_forward(batch, ["loss_mask"], group.world_size, max_token_len=max_len if dynamic else None,
                             micro_batch_size=micro, padded=padded)
        outs = await group.call(method, [(p,) for p in plans], **kwargs)
        return plans, outs

    async def train_step(self, trajectories: Sequence[Trajectory], step: int | None = None) -> dict[str, float]:
        """One RL update on `trajectories`; returns the step's metrics."""
        step = self.global_step + 1 if step is None else step
        cfg = self.config
        report = check_failures(trajectories, step, cfg.trainer.max_failed_fraction)
        if report.failed:
            say(report.summary(step))
        if self.workers is None:
            self.start_workers()
        arr = cfg.actor_rollout_ref
        timer = _Timer()
        metrics: dict[str, float] = {}
        with timer.phase("step"):
            with timer.phase("reward"):
                batch = SampleBatch.from_trajectories(trajectories, self._vision_processor(trajectories))
                values, reward_metrics = await self.rewards.score(trajectories)
                scores = torch.tensor(values)
                metrics.update(reward_metrics)
                if cfg.reward_model.overlong_buffer.enable:
                    scores = self._shape_overlong(batch, scores, metrics)
            mask = batch.padded("loss_mask")
            if not arr.actor.recompute_old_log_prob:
                with timer.phase("old_log_prob"):
                    batch.fields["old_log_probs"] = list(batch.fields["rollout_log_probs"])
            with timer.phase("forwards"):  # old log-probs, reference log-probs, values: concurrent across groups
                await self._forwards(batch, mask, timer, metrics)
            if cfg.algorithm.rollout_correction.rollout_is is not None:
                self._rollout_is_weights(batch, mask, metrics)
            with timer.phase("adv"):
                self._compute_advantages(batch, scores, mask, metrics, trajectories)
            with timer.phase("updates"):  # the critic's and the actor's: concurrent across groups
                await self._updates(batch, step, timer, metrics)
            metrics.update(await self.memory_mark("update"))  # ref, values, critic and actor updates
        total_tokens = sum(batch.seq_lens)
        metrics.update(_stats("critic/score", scores))
        metrics.update(_stats("response_length", torch.tensor(batch.response_lens, dtype=torch.float32)))
        metrics.update(_stats("prompt_length", torch.tensor(batch.prompt_lens, dtype=torch.float32)))
        metrics["response/model_tokens"] = float(batch.num_model_tokens())
        metrics["response/failed_fraction"] = float(np.mean([t.failed for t in trajectories]))
        metrics["rollout/tool_calls/mean"] = float(np.mean([t.num_tool_calls for t in trajectories]))
        metrics["rollout/tool_use_share"] = float(np.mean([t.num_tool_calls > 0 for t in trajectories]))
        metrics.update(tool_call_metrics(trajectories))
        metrics["perf/total_tokens"] = float(total_tokens)
        for name, seconds in timer.times.items():
            metrics[f"timing_s/{name}"] = seconds
        if timer.times.get("update_actor"):
            metrics["perf/update_tokens_per_s"] = total_tokens * arr.actor.ppo_epochs / timer.times["update_actor"]
        metrics["perf/tokens_per_s"] = total_tokens / max(timer.times["step"], 1e-9)
        self.global_step = step
        return metrics

    async def _forwards(self, batch: SampleBatch, mask: torch.Tensor, timer: _Timer, metrics: dict[str, float]) -> None:
        """The actor's old log-probs, the reference's log-probs and the critic's values: each needs only the batch, so
        a group of their own runs its forwards while the actor's ranks run theirs (`trainer.concurrent_pools`).

        Each group takes its `old_log_prob` memory mark after its old log-probs (the actor's) and before its other
        forwards, so the reference's and the values' peaks count under `update` whichever group runs them."""
        cfg = self.config
        arr = cfg.actor_rollout_ref
        padded = not arr.model.use_remove_padding
        marks: list[dict[str, float]] = []

        async def old_log_prob() -> None:
            with timer.phase("old_log_prob"):
                plans, outs = await self._forward(
                    self.workers, batch, "compute_log_prob", arr.rollout.log_prob_max_token_len_per_gpu,
                    arr.rollout.log_prob_micro_batch_size_per_gpu, arr.rollout.log_prob_use_dynamic_bsz,
                    padded, role="actor", with_entropy=True)
                batch.set_ragged("old_log_probs", gather_outputs(plans, [[o["log_probs"] for o in r] for r in outs], len(batch)))
                batch.set_ragged("entropy", gather_outputs(plans, [[o["entropy"] for o in r] for r in outs], len(batch)))
                metrics["actor/entropy"] = float(algo.masked_mean(batch.padded("entropy"), mask))
                metrics.update(_logprob_gap(batch.padded("old_log_probs"), batch.padded("rollout_log_probs"), mask))
                # proximal (recomputed) over behaviour (engine) probabilities: what decoupled PPO weights by
                metrics.update(_stats("rollout_corr/behaviour_ratio", torch.exp(
                    batch.padded("old_log_probs") - batch.padded("rollout_log_probs"))[mask > 0]))

        def mark(group: Any) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                marks.extend(await group.call("memory_mark", phase="old_log_prob"))
            return run

        async def ref() -> None:
            with timer.phase("ref"):
                plans, outs = await self._forward(
                    self.group_of("ref"), batch, "compute_log_prob", arr.ref.log_prob_max_token_len_per_gpu,
                    arr.ref.log_prob_micro_batch_size_per_gpu, arr.ref.log_prob_use_dynamic_bsz, padded, role="ref")
                batch.set_ragged("ref_log_probs", gather_outputs(plans, [[o["log_probs"] for o in r] for r in outs], len(batch)))

        async def values() -> None:
            c = cfg.critic
            with timer.phase("values"):
                plans, outs = await self._forward(
                    self.group_of("critic"), batch, "compute_values", c.forward_max_token_len_per_gpu or c.ppo_max_token_len_per_gpu,
                    c.ppo_micro_batch_size_per_gpu, c.use_dynamic_bsz, not c.model.use_remove_padding)
                batch.set_ragged("values", gather_outputs(plans, outs, len(batch)))

        calls = [GroupCall(self.workers, old_log_prob)] if arr.actor.recompute_old_log_prob else []
        calls += [GroupCall(group, mark(group)) for group in self._trainer_groups()]
        calls += [GroupCall(self.group_of("ref"), ref)] if cfg.use_reference else []
        calls += [GroupCall(self.group_of("critic"), values)] if cfg.use_critic else []
        await run_by_group(calls, concurrent=self._concurrent_pools())
        metrics.update(max_over_ranks(marks))

    async def _updates(self, batch: SampleBatch, step: int, timer: _Timer, metrics: dict[str, float]) -> None:
        """The critic's update (values and returns) and the actor's (advantages): neither reads what the other
        writes, so a critic on a group of its own updates while the actor's ranks do (`trainer.concurrent_pools`).
        Each keeps its own phase timer (`timing_s/update_critic`, `timing_s/update_actor`)."""
        cfg = self.config
        arr = cfg.actor_rollout_ref
        groups_per_mb = arr.actor.ppo_mini_batch_size

        async def update_critic() -> dict[str, float]:
            c = cfg.critic
            critic_group = self.group_of("critic")
            with timer.phase("update_critic"):
                plans = plan_update(batch, ["values", "returns"], critic_group.world_size,
                                    groups_per_minibatch=c.ppo_mini_batch_size or groups_per_mb,
                                    max_token_len=c.ppo_max_token_len_per_gpu if c.use_dynamic_bsz else None,
                                    micro_batch_size=c.ppo_micro_batch_size_per_gpu,
                                    shuffle_seed=cfg.data.seed + step if c.shuffle else None,
                                    padded=not c.model.use_remove_padding)
                return self._merge(await critic_group.call("update_critic", [(p,) for p in plans]))

        async def update_actor() -> dict[str, float]:
            fields = ["old_log_probs", "advantages"] + (["ref_log_probs"] if arr.actor.use_kl_loss else [])
            fields += ["rollout_is_weights"] if "rollout_is_weights" in batch.fields else []
            with timer.phase("update_actor"):
                plans = plan_update(batch, fields, self.world_size, groups_per_minibatch=groups_per_mb,
                                    max_token_len=arr.actor.ppo_max_token_len_per_gpu if arr.actor.use_dynamic_bsz else None,
                                    micro_batch_size=arr.actor.ppo_micro_batch_size_per_gpu,
                                    shuffle_seed=cfg.data.seed + step if arr.actor.shuffle else None,
                                    padded=not arr.model.use_remove_padding)
                return self._merge(await self.workers.call("update_actor", [(p,) for p in plans]))

        calls = [GroupCall(self.group_of("critic"), update_critic)] if cfg.use_critic else []
        calls += [GroupCall(self.workers, update_actor)] if step > cfg.trainer.critic_warmup else []
        for merged in await run_by_group(calls, concurrent=self._concurrent_pools()):
            metrics.update(merged)

    def _merge(self, per_rank: list[dict[str, list[float]]]) -> dict[str, float]:
        total = MetricSums()
        for sums in per_rank:
            total.merge(sums)
        return total.mean()

    def _shape_overlong(self, batch: SampleBatch, scores: torch.Tensor, metrics: dict[str, float]) -> torch.Tensor:
        ob = self.config.reward_model.overlong_buffer
        penalty = algo.overlong_penalty(torch.tensor(batch.response_lens), self.config.data.max_response_length,
                                        ob.len, ob.penalty_factor)
        if ob.log:
            metrics.update(_stats("reward/overlong_penalty", penalty))
            metrics["reward/overlong_fraction"] = float((penalty < 0).float().mean())
        return scores + penalty

    def _rollout_is_weights(self, batch: SampleBatch, mask: torch.Tensor, metrics: dict[str, float]) -> None:
        rc = self.config.algorithm.rollout_correction
        weights = algo.rollout_is_weights(batch.padded("old_log_probs"), batch.padded("rollout_log_probs"), mask,
                                          rc.rollout_is, rc.rollout_is_threshold)
        batch.set_padded("rollout_is_weights", weights)
        model = mask > 0
        metrics.update(_stats("rollout_corr/is_weights", weights[model]))
        metrics["rollout_corr/truncated_fraction"] = float(
            (weights[model] >= rc.rollout_is_threshold * (1 - 1e-6)).float().mean()) if model.any() else 0.0

    def _compute_advantages(self, batch: SampleBatch, scores: torch.Tensor, mask: torch.Tensor,
                            metrics: dict[str, float], trajectories: Sequence[Trajectory] | None = None) -> None:
        cfg = self.config
        a = cfg.algorithm
        token_turns = None
        if a.turn_credit.mode == "outcome":
            token_rewards = algo.place_outcome_rewards(scores, mask)
        else:
            if trajectories is None:
                raise ValueError(f"algorithm.turn_credit.mode={a.turn_credit.mode} needs the batch's trajectories")
            layout = algo.turn_layout(trajectories, scores.tolist(), mask.shape[1])
            token_rewards, token_turns = layout.token_rewards, layout.token_turns
            metrics["critic/turns/mean"] = float((token_turns.max(dim=1).values + 1).float().mean())
        if a.use_kl_in_reward:
            token_rewards, mean_kl = algo.apply_kl_in_reward(
                token_rewards, batch.padded("old_log_probs"), batch.padded("ref_log_probs"), mask,
                beta=self.kl_ctrl.value, kind=a.kl_penalty)
            metrics["actor/reward_kl"] = float(mean_kl)
            metrics["actor/reward_kl_coef"] = self.kl_ctrl.value
            self.kl_ctrl.update(float(mean_kl), n_steps=len(batch))
        inputs = algo.AdvantageInputs(
            token_rewards, mask, batch.group_ids, batch.padded("values") if cfg.use_critic else None,
            a.gamma, a.lam, a.norm_adv_by_std_in_grpo,
            reward_baselines=self.baselines.for_groups(batch.group_ids) if self.baselines is not None else None,
            token_turns=token_turns, turn_mode=a.turn_credit.mode, turn_gamma=a.turn_credit.gamma)
        try:
            estimator = algo.get_adv_estimator(a.adv_estimator)
        except ValueError as e:
            raise ConfigError(str(e), entry="algorithm.adv_estimator") from None
        adv, returns = estimator(inputs)
        batch.set_padded("advantages", adv)
        batch.set_padded("returns", returns)
        model = mask > 0
        metrics.update(_stats("critic/rewards", token_rewards.sum(-1)))
        metrics.update(_stats("critic/advantages", adv[model]))
        metrics.update(_stats("critic/returns", returns[model]))
        if cfg.use_critic:
            metrics.update(_stats("critic/values", batch.padded("values")[model]))

    async def log_probs(self, trajectories: Sequence[Trajectory]) -> list[torch.Tensor]:
        """The actor's log-probs of each trajectory's response tokens, as the update computes them (the check that
        an engine, or a model exported with hf_model, agrees with the trainer)."""
        if self.workers is None:
            self.start_workers()
        arr = self.config.actor_rollout_ref
        batch = SampleBatch.from_trajectories(trajectories, self._vision_processor(trajectories))
        plans, outs = await self._forward(self.workers, batch, "compute_log_prob",
                                          arr.rollout.log_prob_max_token_len_per_gpu,
                                          arr.rollout.log_prob_micro_batch_size_per_gpu,
                                          arr.rollout.log_prob_use_dynamic_bsz, not arr.model.use_remove_padding,
                                          role="actor")
        return list(gather_outputs(plans, [[o["log_probs"] for o in r] for r in outs], len(batch)))

    # ---- memory hand-over and memory per phase ----
    async def memory_mark(self, phase: str) -> dict[str, float]:
        """`memory/<phase>/...` figures (the peak since the previous phase ended), the max over the ranks of every
        trainer group (the actor's and any critic's or reference's of its own)."""
        marks = await asyncio.gather(*(g.call("memory_mark", phase=phase) for g in self._trainer_groups()))
        return max_over_ranks([m for group in marks for m in group])

    async def release_rollout_memory(self) -> None:
        await self.weights.release_memory()

    # ---- weights ----
    @property
    def rollout_pool(self) -> Any:
        return self.weights.pool

    async def actor_state_dict(self, dtype: str | None = None) -> dict[str, torch.Tensor]:
        return await self.weights.actor_state_dict(dtype)

    async def start_rollout(self) -> None:
        assert self.rollout is not None
        await self.weights.start(self.rollout, self.policy_version)

    async def sync_weights(self) -> None:
        await self.weights.sync(self.rollout, self.policy_version)

    # ---- checkpoints ----
    @property
    def checkpoint_root(self) -> Path:
        return self.checkpoints.root

    @property
    def resumed_from(self) -> Path | None:
        return self.checkpoints.resumed_from

    async def save_checkpoint(self, pipeline: RolloutPipeline | None = None, *, synced: bool = True) -> Path:
        """`pipeline`: the overlapped run's collections; the rows its unfinished ones drew are saved to be collected
        again first by a resumed run (the collections themselves are not). `synced`: whether the rollout holds this
        step's weights; if not, a resumed run, whose rollout starts from them, counts them as the next version."""
        carry = self._rows_in_flight(pipeline) if pipeline is not None else []
        return await self.checkpoints.save(self.global_step, {
            "data": self.batches.state_dict(carry) if self.batches is not None else None,
            "kl_coef": self.kl_ctrl.value,
            "policy_version": self.policy_version + (0 if synced else 1),
        })

    def _rows_in_flight(self, pipeline: RolloutPipeline) -> list[int]:
        """The row indices of the launches not yet trained, less the groups of them already taken (group j of a
        collection is row j when it returned one group per row drawn, as the default rollout does; otherwise its
        rows are all collected again)."""
        rows: list[int] = []
        for index, launch in pipeline.open_launches().items():
            drawn = self._drawn.get(index, [])
            skip = launch.consumed if launch.groups == len(drawn) else frozenset()
            rows += [row for j, row in enumerate(drawn) if j not in skip]
        return rows

    async def load_checkpoint(self, path: str | Path | None = None) -> bool:
        state = await self.checkpoints.load(path)
        if state is None:
            return False
        self.global_step = int(state["global_step"])
        self.policy_version = int(state.get("policy_version", self.global_step))
        if self.batches is not None and state.get("data"):
            self.batches.load_state_dict(state["data"])
        self.kl_ctrl.value = float(state["kl_coef"])
        return True

    def _announce_start(self) -> None:
        """One line saying where this run starts, so a re-run in the same directory is never silent."""
        t = self.config.trainer
        where = f"{self.checkpoint_root} (trainer.resume_mode={t.resume_mode})"
        if self.resumed_from is None:
            say(f"starting at step 0 of {self.total_steps} in {where}")
        elif self.global_step >= self.total_steps:
            say(f"already finished: {self.resumed_from} is step {self.global_step} of {self.total_steps}; nothing "
                 f"to train. Use a new trainer.default_local_dir, trainer.resume_mode=disable, or raise "
                 f"trainer.total_training_steps to train more.")
        else:
            say(f"resuming from step {self.global_step} of {self.total_steps}: {self.resumed_from}, in {where}")

    # ---- the loop ----
    async def fit(self, tracker: MetricsTracker | None = None) -> list[dict[str, float]]:
        """Resume if a checkpoint exists, then collect -> train -> sync for the remaining steps."""
        if self.rollout is None or self.batches is None:
            raise ConfigError("fit() needs a rollout and a dataset.",
                              fix="pass rollout=... (or collect=...) and dataset=... (or data.train_files) to RLTrainer")
        self.start_workers()
        await self.checkpoints.probe()
        await self.load_checkpoint()
        self._announce_start()
        own_tracker = tracker is None
        if tracker is None:
            tracker = MetricsTracker.for_config(self.checkpoint_root, self.config, self.total_steps,
                                                start_step=self.global_step)
        # Steps logged after the checkpoint this run starts from were undone by the resume: they are logged again.
        tracker.resume_at(self.global_step)
        history = []
        pipeline: RolloutPipeline | None = None
        try:
            await self.start_rollout()
            async with self.rollout.weight_sync(self.policy_version):
                pass  # the weights the rollout starts from (a resumed run's): the version its tokens record
            first_step = self.global_step
            pipeline = self._overlap_pipeline()
            while self.global_step < self.total_steps:
                step = self.global_step + 1
                start = iteration_start = time.perf_counter()
                if pipeline is None:
                    trajectories, sampling_metrics = await self._collect_step(step)
                    stamp_versions(trajectories, self.policy_version)
                    sampling_metrics.update(staleness_metrics(trajectories, self.policy_version))  # 0, for comparison
                    rollout_s = time.perf_counter() - start
                    rollout_memory = await self.memory_mark("rollout")
                    await self.release_rollout_memory()
                else:
                    # The next rollouts keep running through this step's update: their KV caches stay.
                    taken = await pipeline.take()
                    trajectories, sampling_metrics = taken.trajectories, taken.metrics
                    rollout_s = sampling_metrics.pop("timing_s/rollout", time.perf_counter() - start)
                    rollout_memory = await self.memory_mark("rollout")
                if self.config.trainer.rollout_data_dir:
                    write_step_trajectories(trajectories, step, self.config.trainer.rollout_data_dir,
                                            parquet=self.config.trainer.rollout_data_parquet)
                metrics = await self.train_step(trajectories, step)
                metrics.update(await self.rollout.step_metrics())
                start = paused = time.perf_counter()
                # trainer.trigger_parameter_sync_step: a sync every k updates from the run's start, and after the last
                synced = (step - first_step) % self.config.trainer.trigger_parameter_sync_step == 0 \
                    or step == self.total_steps
                if synced:
                    self.policy_version += 1
                    async with self.rollout.weight_sync(self.policy_version):  # episodes in flight pause
                        paused = time.perf_counter()
                        await self.sync_weights()
                metrics["timing_s/weight_sync"] = time.perf_counter() - paused
                if pipeline is not None:
                    metrics["timing_s/weight_sync_pause"] = paused - start
                    if synced:
                        pipeline.synced(self.policy_version)
                    self._drawn = {i: rows for i, rows in self._drawn.items() if i in pipeline.open_launches()}
                else:
                    self._drawn.clear()
                metrics["timing_s/iteration"] = time.perf_counter() - iteration_start  # collect (or wait) to synced
                metrics.update(rollout_memory)
                metrics.update(await self.memory_mark("weight_sync"))
                metrics["timing_s/rollout"] = rollout_s
                metrics.update(sampling_metrics)
                metrics["training/epoch"] = float(self.batches.epoch)
                tracker.log(step, metrics)
                tracker.log_trajectories(step, trajectories)
                history.append(metrics)
                save_freq = self.config.trainer.save_freq
                if save_freq > 0 and (step % save_freq == 0 or step == self.total_steps):
                    await self.save_checkpoint(pipeline, synced=synced)
        except asyncio.CancelledError:
            saved = complete_steps(self.checkpoint_root) if self.checkpoint_root.is_dir() else []
            last = max(saved) if saved else None
            say(f"step {self.global_step + 1} of {self.total_steps} interrupted; " + (
                f"the last checkpoint is step {last}: the same command resumes from it" if last else
                "no checkpoint was saved yet (trainer.save_freq)"))
            raise
        finally:
            if pipeline is not None:
                await pipeline.close()
            if own_tracker:
                tracker.close()
        return history

    def _overlap_pipeline(self) -> RolloutPipeline | None:
        """trainer.rollout_mode one_step_off or async: the collections that run ahead of the updates, started."""
        t = self.config.trainer
        if t.rollout_mode == "sync":
            return None
        pipeline = RolloutPipeline(self._collect_step, t.rollout_mode, t.max_staleness,
                                   groups_per_step=self.config.data.train_batch_size,
                                   steps=self.total_steps - self.global_step, version=self.policy_version,
                                   first_index=self.global_step + 1, updates_per_sync=t.trigger_parameter_sync_step)
        pipeline.start()
        return pipeline

    async def _collect_step(self, step: int) -> tuple[list[Trajectory], dict[str, float]]:
        """One step's trajectories; with algorithm.filter_groups, only groups whose rewards differ."""
        assert self.rollout is not None
        rollout = self.rollout
        fg = self.config.algorithm.filter_groups
        if self.baselines is not None:
            self.baselines.start_step()
        # With reward_model.launch_reward_fn_async, the scorer takes each trajectory as its episode ends.
        on_done = self.rewards.submit if self.rewards.launch_async and rollout.reports_done else None
        batches = 0
        drawn = self._drawn.setdefault(step, [])

        def next_rows() -> list[dict[str, Any]]:
            indices = self.batches.next_indices()
            drawn.extend(indices)  # a checkpoint saves the rows of collections still in flight
            return [self.batches.rows[i] for i in indices]

        async def collect(rows: list[dict[str, Any]]) -> list[Trajectory]:
            nonlocal batches
            trajectories = await rollout.collect(rows, step, on_done=on_done)
            check_groups(rows, trajectories)
            batches += 1
            if batches > 1:  # dynamic sampling's next batch: collect(rows, step) may reuse the step's group ids
                for traj in trajectories:
                    traj.group_id, traj.uid = f"{traj.group_id}~{batches}", f"{traj.uid}~{batches}"
            if fg.enable:
                await self.rewards.prefetch(trajectories)  # dynamic sampling reads the scores
            if self.baselines is not None:
                await self.baselines.collect(rows, trajectories, step)
            return trajectories

        if not fg.enable:
            trajectories = await collect(next_rows())
            metrics: dict[str, float] = {}
        else:
            target = self.config.data.train_batch_size
            batch = await collect_informative(next_rows, collect, self.rewards, target,
                                              fg.max_num_gen_batches)
            trajectories, metrics = batch.trajectories, batch.metrics(target)
        if self.baselines is not None:
            metrics.update(self.baselines.metrics())
        return trajectories, metrics

    def close(self) -> None:
        for group in self._own_role_groups():
            group.shutdown()
        self.role_groups = {}
        self.weights.close()
        if self.workers is not None:
            self.workers.shutdown()
            self.workers = None

    async def aclose(self, *, abandon_workers: bool = False) -> None:
        """Close what the trainer started: the reward engines (the judge's engine, reward-model workers) and the
        ranks. `abandon_workers`: the caller is about to stop Ray, which ends the ranks; do not wait for them to
        finish the call they are in (an interrupted step)."""
        await self.rewards.aclose()
        if abandon_workers:
            self.workers = None
            self.role_groups = {}
        self.close()


def _logprob_gap(trainer: torch.Tensor, rollout: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """How far the engine's sampled-token logprobs are from the trainer's recomputation (verl reports the same
    as rollout_probs_diff): a large gap means the rollout is off-policy for reasons other than the update."""
    trained = mask.bool()
    if not trained.any():
        return {}
    gap = (trainer - rollout).abs()[trained]
    return {"rollout/logprob_diff/mean": float(gap.mean()), "rollout/logprob_diff/max": float(gap.max())}
