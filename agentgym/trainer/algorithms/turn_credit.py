"""Turn-level credit assignment: rewards on the turn that earned them, returns over turns, per-turn baselines.

A multi-turn trajectory's reward has parts earned by particular assistant turns (a tool call's step reward, an
interaction's judgement of the answer it just read) and an outcome for the whole episode. `outcome` mode (the
default, and verl's behaviour) puts the trajectory's score on its last model token. The turn modes put each
per-turn reward on the last model token of the assistant turn that earned it and the rest of the score
(score minus those parts) on the episode's last model token, so the total stays the score; then:

- `discounted`: the turn return G_k = sum_{j>=k} gamma^(j-k) r_j credits each turn with what came after it, and
  GRPO's baseline is the group's returns from the start, A_t = (G_k(t) - mean_g G_0) / (std_g G_0 + eps);
- `turn_grpo`: GRPO normalisation per turn index, A_t = (G_k(t) - mean G_k) / (std G_k + eps) over the group's
  samples that reached turn k (a turn reached by one sample alone uses the group's turn-0 statistics).

With gamma = 1, every first turn gets the outcome-mode GRPO advantage in both modes; later turns differ.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from agentgym.trajectory import Trajectory



@dataclass
class TurnLayout:
    token_turns: torch.Tensor  # (batch, len) long: index of the assistant turn of each model token, -1 elsewhere
    token_rewards: torch.Tensor  # (batch, len): each turn's reward on its last model token, the rest at the end


def _model_positions(traj: Trajectory) -> list[list[int]]:
    spans = [s for s in traj.turns if s.role == "assistant"]
    return [[p for p in range(s.start, s.end) if traj.loss_mask[p]] for s in spans]


def turn_layout(trajectories: Sequence[Trajectory], scores: Sequence[float], width: int) -> TurnLayout:
    """Per-turn rewards of each trajectory on the last model token of the turn that earned them.

    `scores` are the trajectories' scores (what outcome mode trains on); the part not earned by a particular turn
    goes on the last model token, so every row of `token_rewards` sums to its score.
    """
    turns = torch.full((len(trajectories), width), -1, dtype=torch.long)
    rewards = torch.zeros(len(trajectories), width, dtype=torch.float32)
    for i, (traj, score) in enumerate(zip(trajectories, scores)):
        pieces = [(traj.tool_rewards, traj.tool_reward_turns, "tool_rewards"),
                  (traj.interaction_rewards, traj.interaction_reward_turns, "interaction_rewards")]
        for values, where, name in pieces:
            if len(values) != len(where):
                raise ValueError(f"trajectory {traj.uid} has {len(values)} {name} but {len(where)} turn indices: it "
                                 f"does not record which turn earned them (the agent loop records them); use "
                                 f"algorithm.turn_credit.mode=outcome for it")
        positions = _model_positions(traj)
        if sum(map(len, positions)) != sum(1 for m in traj.loss_mask if m):
            raise ValueError(f"trajectory {traj.uid}: some model tokens (loss_mask 1) lie outside its assistant turn "
                             f"spans, so their turn is unknown; use algorithm.turn_credit.mode=outcome for it")
        ends = [p[-1] if p else None for p in positions]
        last = next((e for e in reversed(ends) if e is not None), None)
        if last is None:
            continue  # no model token: nothing to credit (and nothing trained)
        if last >= width:
            raise ValueError(f"trajectory {traj.uid}: model token {last} lies outside the batch width {width}")
        for k, p in enumerate(positions):
            turns[i, p] = k
        earned = 0.0
        for values, where, _ in pieces:
            for value, turn in zip(values, where):
                # the turn's last model token; a turn that produced none (no room left) passes it to an earlier one
                target = next((e for e in reversed(ends[: turn + 1]) if e is not None), last)
                rewards[i, target] += float(value)
                earned += float(value)
        rewards[i, last] += float(score) - earned
    return TurnLayout(turns, rewards)


def turn_returns(token_rewards: torch.Tensor, token_turns: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(G, reached): G[i, k] = sum over turns j >= k of gamma^(j-k) r[i, j], r[i, j] the sum of the rewards on
    turn j's tokens; reached[i, k] says trajectory i has model tokens in turn k. Turns without model tokens are
    skipped, not discounted."""
    batch = token_turns.shape[0]
    n_turns = int(token_turns.max().item()) + 1 if token_turns.numel() else 0
    n_turns = max(n_turns, 1)
    on_turn = token_turns >= 0
    index = token_turns.clamp_min(0)
    r = torch.zeros(batch, n_turns, dtype=torch.float32, device=token_rewards.device)
    r.scatter_add_(1, index, (token_rewards.float() * on_turn))
    reached = torch.zeros(batch, n_turns, dtype=torch.bool, device=token_rewards.device)
    rows, cols = on_turn.nonzero(as_tuple=True)
    reached[rows, token_turns[rows, cols]] = True
    G = torch.zeros_like(r)
    running = torch.zeros(batch, dtype=torch.float32, device=r.device)
    for k in reversed(range(n_turns)):
        step = r[:, k] + gamma * running
        running = torch.where(reached[:, k], step, running + r[:, k])
        G[:, k] = running
    return G, reached


def _groups(group_ids: Sequence[Hashable]) -> list[list[int]]:
    index: dict[Hashable, list[int]] = defaultdict(list)
    for i, gid in enumerate(group_ids):
        index[gid].append(i)
    return list(index.values())


def _per_token(turn_values: torch.Tensor, token_turns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return turn_values.gather(1, token_turns.clamp_min(0)) * (token_turns >= 0) * mask


def discounted_turn_grpo_advantage(
    token_rewards: torch.Tensor, token_turns: torch.Tensor, mask: torch.Tensor, group_ids: Sequence[Hashable],
    gamma: float = 1.0, norm_adv_by_std_in_grpo: bool = True, epsilon: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A_t = (G_k(t) - mean_g G_0) / (std_g G_0 + eps): each turn's discounted return against the group's
    returns from the start. A group of one gets 0, as in GRPO."""
    G, _ = turn_returns(token_rewards, token_turns, gamma)
    centred = torch.zeros_like(G)
    for members in _groups(group_ids):
        if len(members) == 1:
            continue
        idx = torch.tensor(members, device=G.device)
        start = G[idx, 0]
        value = G[idx] - start.mean()
        if norm_adv_by_std_in_grpo:
            value = value / (start.std() + epsilon)
        centred[idx] = value
    return _per_token(centred, token_turns, mask), _per_token(G, token_turns, mask)


def turn_grpo_advantage(
    token_rewards: torch.Tensor, token_turns: torch.Tensor, mask: torch.Tensor, group_ids: Sequence[Hashable],
    gamma: float = 1.0, norm_adv_by_std_in_grpo: bool = True, epsilon: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO normalised per turn index: turn k's return against the returns of the group's samples that reached
    turn k. A turn only one sample reached is compared with the group's turn-0 returns; a group of one gets 0."""
    G, reached = turn_returns(token_rewards, token_turns, gamma)
    adv = torch.zeros_like(G)
    for members in _groups(group_ids):
        if len(members) == 1:
            continue
        idx = torch.tensor(members, device=G.device)
        start = G[idx, 0]
        for k in range(G.shape[1]):
            at_k = idx[reached[idx, k]]
            if len(at_k) == 0:
                continue
            ref = G[at_k, k] if len(at_k) > 1 else start
            value = G[at_k, k] - ref.mean()
            if norm_adv_by_std_in_grpo:
                value = value / (ref.std() + epsilon)
            adv[at_k, k] = value
    return _per_token(adv, token_turns, mask), _per_token(G, token_turns, mask)
