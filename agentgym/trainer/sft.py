"""Supervised fine-tuning on trajectories (model turns only), on the same workers as RL.

Used to warm a model up before RL and for rejection-sampling fine-tuning: collect, keep the good trajectories
(`select_for_rejection_sampling`), train on them with `SFTTrainer.train`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from agentgym.config.schema import AgentGymConfig
from agentgym.trajectory import Trajectory
from agentgym.trainer.batching import SampleBatch, plan_update
from agentgym.trainer.workers.metrics_acc import MetricSums


def select_for_rejection_sampling(
    trajectories: Sequence[Trajectory],
    *,
    min_reward: float | None = None,
    best_per_group: int | None = None,
    reward_fn: Callable[[Trajectory], float] = lambda t: t.reward,
) -> list[Trajectory]:
    """Keep successful trajectories: reward >= `min_reward` and/or the `best_per_group` highest of each group.
    Failed ones (an error ended the episode) are never kept."""
    kept = [t for t in trajectories if not t.failed and (min_reward is None or reward_fn(t) >= min_reward)]
    if best_per_group is None:
        return kept
    groups: dict[str, list[Trajectory]] = defaultdict(list)
    for t in kept:
        groups[t.group_id].append(t)
    return [t for g in groups.values() for t in sorted(g, key=reward_fn, reverse=True)[:best_per_group]]


class SFTTrainer:
    """Masked next-token training. One optimizer step per `batch_size` trajectories; token-mean NLL over the
    model tokens of each step's batch, split into packed micro-batches by `ppo_max_token_len_per_gpu`."""

    def __init__(self, config: AgentGymConfig, *, workers: Any = None, total_steps: int = 1) -> None:
        self.config = config
        self.workers = workers
        self.total_steps = total_steps

    def start_workers(self) -> None:
        if self.workers is None:
            from agentgym.trainer.workers import start_worker_group

            self.workers = start_worker_group(self.config, total_steps=self.total_steps, roles=("actor",))

    async def train(self, trajectories: Sequence[Trajectory], *, batch_size: int, epochs: int = 1,
                    shuffle_seed: int | None = None,
                    on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
        """Returns one metrics dict per epoch (`sft/loss` is the mean of the per-step token-mean NLL);
        `on_epoch(epoch, metrics)` is called as each epoch ends, for progress displays."""
        self.start_workers()
        processor = None
        if any(t.image_spans for t in trajectories):  # vision-language demonstrations: the model's image processor
            from agentgym.multimodal.processor import load_vision_processor

            processor = load_vision_processor(self.config.actor_rollout_ref.model.path)
        batch = SampleBatch.from_trajectories(trajectories, processor)
        batch.group_ids = [t.uid for t in trajectories]
        actor = self.config.actor_rollout_ref.actor
        history = []
        for epoch in range(epochs):
            plans = plan_update(batch, ["loss_mask"], self.workers.world_size, groups_per_minibatch=batch_size,
                                max_token_len=actor.ppo_max_token_len_per_gpu if actor.use_dynamic_bsz else None,
                                micro_batch_size=actor.ppo_micro_batch_size_per_gpu,
                                shuffle_seed=None if shuffle_seed is None else shuffle_seed + epoch,
                                padded=not self.config.actor_rollout_ref.model.use_remove_padding)
            sums = MetricSums()
            for part in await self.workers.call("update_sft", [(p,) for p in plans]):
                sums.merge(part)
            history.append(sums.mean())
            if on_epoch is not None:
                on_epoch(epoch, history[-1])
        return history

    def close(self) -> None:
        if self.workers is not None:
            self.workers.shutdown()
            self.workers = None
