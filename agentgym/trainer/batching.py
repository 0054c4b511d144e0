"""Trajectories -> ragged sample batch -> per-rank, per-mini-batch packed micro-batches.

No padding to the longest sequence: each micro-batch is one packed row (position ids restart at every sequence,
which transformers turns into a block-diagonal causal mask) whose size is bounded by a token budget
(`ppo_max_token_len_per_gpu`) or by a fixed number of sequences. Every rank gets the same number of micro-batches
(FSDP collectives need lock-step forward/backward); a rank with less work runs empty ones.
"""

from __future__ import annotations

import heapq
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.nn.utils.rnn import pad_sequence

from agentgym.trajectory import Trajectory


@dataclass
class SampleBatch:
    """Driver-side batch: one entry per trajectory, response-aligned fields ragged (one 1D tensor per sample)."""

    input_ids: list[torch.Tensor]
    prompt_lens: list[int]
    group_ids: list[str]
    fields: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    # Vision-language samples: per sample None or {"pixel_values", "image_grid_thw"} of the images its tokens hold.
    multimodal: list[dict[str, torch.Tensor] | None] = field(default_factory=list)

    @classmethod
    def from_trajectories(cls, trajectories: Sequence[Trajectory], processor=None) -> "SampleBatch":
        """`processor` (a `VisionProcessor`) encodes the images of vision-language trajectories; required when any
        trajectory holds images."""
        batch = cls._from_token_fields(trajectories)
        if any(t.image_spans for t in trajectories):
            from agentgym.multimodal.training_inputs import trajectory_pixels

            batch.multimodal = [trajectory_pixels(t, processor) for t in trajectories]
        return batch

    @classmethod
    def _from_token_fields(cls, trajectories: Sequence[Trajectory]) -> "SampleBatch":
        if not trajectories:
            raise ValueError("cannot train on an empty list of trajectories")
        input_ids, prompt_lens, groups, masks, rollout_lp = [], [], [], [], []
        for traj in trajectories:
            traj.check()
            if not traj.prompt_ids:
                raise ValueError(f"trajectory {traj.uid} has no prompt tokens; the first response token needs context")
            input_ids.append(torch.tensor(list(traj.prompt_ids) + list(traj.response_ids), dtype=torch.long))
            prompt_lens.append(len(traj.prompt_ids))
            groups.append(traj.group_id)
            masks.append(torch.tensor(traj.loss_mask, dtype=torch.float32))
            rollout_lp.append(torch.tensor(traj.rollout_logprobs, dtype=torch.float32))
        return cls(input_ids, prompt_lens, groups, {"loss_mask": masks, "rollout_log_probs": rollout_lp})

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def response_lens(self) -> list[int]:
        return [len(ids) - p for ids, p in zip(self.input_ids, self.prompt_lens)]

    @property
    def seq_lens(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    def padded(self, name: str) -> torch.Tensor:
        """(batch, max_response_len) view of a response field, zero-padded."""
        return pad_sequence(self.fields[name], batch_first=True) if self.fields[name] else torch.zeros(0, 0)

    def set_padded(self, name: str, values: torch.Tensor) -> None:
        self.fields[name] = [values[i, :n].detach().cpu().float() for i, n in enumerate(self.response_lens)]

    def set_ragged(self, name: str, values: list[torch.Tensor]) -> None:
        if [len(v) for v in values] != self.response_lens:
            raise ValueError(f"field {name}: lengths do not match the response lengths")
        self.fields[name] = [v.detach().cpu().float() for v in values]

    def num_model_tokens(self) -> int:
        return int(sum(m.sum().item() for m in self.fields["loss_mask"]))


@dataclass
class MicroBatch:
    """One packed row. Response-aligned fields are flat over all response tokens of its sequences, in order."""

    input_ids: torch.Tensor  # (1, T)
    position_ids: torch.Tensor  # (1, T)
    logit_positions: torch.Tensor  # (N,) row positions whose logits predict the response tokens
    labels: torch.Tensor  # (N,) the response tokens
    response_lens: list[int]
    sample_indices: list[int]
    fields: dict[str, torch.Tensor]
    num_tokens: float = 1.0  # model tokens in the whole mini-batch (all ranks): token-mean denominator
    num_seqs: float = 1.0  # sequences in the whole mini-batch (all ranks): seq-mean denominator
    attention_mask: torch.Tensor | None = None  # (b, L) when padded; None for one packed row
    # Vision-language micro-batches: pixel_values and image_grid_thw of every image, in sequence order, and
    # images_per_seq (how many belong to each sequence), from which the worker computes rotary positions.
    multimodal: dict[str, torch.Tensor] | None = None

    @property
    def is_empty(self) -> bool:
        return not self.sample_indices

    @property
    def total_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    def padded(self, name: str) -> torch.Tensor:
        return unflatten(self.fields[name], self.response_lens)

    def to(self, device: torch.device | str) -> "MicroBatch":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return MicroBatch(
            move(self.input_ids), move(self.position_ids), move(self.logit_positions), move(self.labels),
            self.response_lens, self.sample_indices, {k: move(v) for k, v in self.fields.items()},
            self.num_tokens, self.num_seqs, None if self.attention_mask is None else move(self.attention_mask),
            None if self.multimodal is None else {k: move(v) for k, v in self.multimodal.items()},
        )


def unflatten(flat: torch.Tensor, lens: Sequence[int]) -> torch.Tensor:
    """Flat per-token values -> (num_seqs, max_len), zero-padded."""
    if not lens:
        return flat.new_zeros(0, 0)
    return pad_sequence(list(torch.split(flat, list(lens))), batch_first=True)


def pack(batch: SampleBatch, indices: Sequence[int], field_names: Sequence[str], padded: bool = False) -> MicroBatch:
    micro = _pack_tokens(batch, indices, field_names, padded)
    if batch.multimodal and indices:
        from agentgym.multimodal.training_inputs import pack_pixels

        micro.multimodal = pack_pixels([batch.multimodal[i] for i in indices])
    return micro


def _pack_tokens(batch: SampleBatch, indices: Sequence[int], field_names: Sequence[str], padded: bool) -> MicroBatch:
    """Concatenate the chosen samples into one row with restarting position ids (`padded=False`), or right-pad
    them into a (b, max_len) batch with an attention mask. `logit_positions` index the flattened layout either way.

    The packed row is the right layout with varlen attention kernels (flash-attention); with dense-mask SDPA
    (CPU, no flash-attn) attention over a packed row costs O(T^2), so a padded batch of similar lengths is faster.
    """
    if not indices:
        empty = torch.zeros(1, 0, dtype=torch.long)
        return MicroBatch(empty, empty.clone(), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                          [], [], {n: torch.zeros(0) for n in field_names})
    if padded:
        width = max(batch.seq_lens[i] for i in indices)
        ids = torch.zeros(len(indices), width, dtype=torch.long)
        attn = torch.zeros(len(indices), width, dtype=torch.long)
        logit_pos, labels = [], []
        for row, i in enumerate(indices):
            seq, p = batch.input_ids[i], batch.prompt_lens[i]
            ids[row, : len(seq)] = seq
            attn[row, : len(seq)] = 1
            logit_pos.append(torch.arange(row * width + p - 1, row * width + len(seq) - 1, dtype=torch.long))
            labels.append(seq[p:])
        fields = {name: torch.cat([batch.fields[name][i] for i in indices]) for name in field_names}
        positions = (attn.cumsum(-1) - 1).clamp_min(0)
        return MicroBatch(ids, positions, torch.cat(logit_pos), torch.cat(labels),
                          [batch.response_lens[i] for i in indices], list(indices), fields, attention_mask=attn)
    ids, pos, logit_pos, labels = [], [], [], []
    offset = 0
    for i in indices:
        seq = batch.input_ids[i]
        n, p = len(seq), batch.prompt_lens[i]
        ids.append(seq)
        pos.append(torch.arange(n, dtype=torch.long))
        logit_pos.append(torch.arange(offset + p - 1, offset + n - 1, dtype=torch.long))
        labels.append(seq[p:])
        offset += n
    fields = {name: torch.cat([batch.fields[name][i] for i in indices]) for name in field_names}
    return MicroBatch(
        torch.cat(ids)[None], torch.cat(pos)[None], torch.cat(logit_pos), torch.cat(labels),
        [batch.response_lens[i] for i in indices], list(indices), fields,
    )


def balance_across_ranks(lengths: dict[int, int], world_size: int) -> list[list[int]]:
    """Longest-first greedy assignment so every rank gets about the same number of tokens (attention and MLP
    cost both grow with tokens); ties keep sample order so the plan is deterministic."""
    heap = [(0, rank) for rank in range(world_size)]
    shards: list[list[int]] = [[] for _ in range(world_size)]
    for idx in sorted(lengths, key=lambda i: (-lengths[i], i)):
        load, rank = heapq.heappop(heap)
        shards[rank].append(idx)
        heapq.heappush(heap, (load + lengths[idx], rank))
    return [sorted(s) for s in shards]


def split_micro(
    indices: Sequence[int], lengths: dict[int, int], max_token_len: int | None, micro_batch_size: int | None,
    padded: bool = False,
) -> list[list[int]]:
    """Token-budget bins (first-fit decreasing; for padded batches, runs of similar length whose padded size
    b*max_len fits) or fixed-size chunks. A sequence longer than the budget gets a bin of its own rather than
    being cut (cutting would change what is learned)."""
    if max_token_len is None:
        size = micro_batch_size or max(len(indices), 1)
        return [list(indices[i : i + size]) for i in range(0, len(indices), size)]
    if padded:
        runs: list[list[int]] = []
        for idx in sorted(indices, key=lambda i: (-lengths[i], i)):
            if runs and (len(runs[-1]) + 1) * lengths[runs[-1][0]] <= max_token_len:
                runs[-1].append(idx)
            else:
                runs.append([idx])
        return [sorted(r) for r in runs]
    bins: list[list[int]] = []
    loads: list[int] = []
    for idx in sorted(indices, key=lambda i: (-lengths[i], i)):
        for b, load in enumerate(loads):
            if load + lengths[idx] <= max_token_len:
                bins[b].append(idx)
                loads[b] += lengths[idx]
                break
        else:
            bins.append([idx])
            loads.append(lengths[idx])
    return [sorted(b) for b in bins]


def plan_forward(
    batch: SampleBatch,
    field_names: Sequence[str],
    world_size: int,
    *,
    max_token_len: int | None = None,
    micro_batch_size: int | None = None,
    indices: Sequence[int] | None = None,
    padded: bool = False,
) -> list[list[MicroBatch]]:
    """Per rank, the micro-batches covering `indices` (default: the whole batch), same count on every rank."""
    indices = list(range(len(batch))) if indices is None else list(indices)
    lengths = {i: batch.seq_lens[i] for i in indices}
    shards = balance_across_ranks(lengths, world_size)
    micro = [split_micro(shard, lengths, max_token_len, micro_batch_size, padded) for shard in shards]
    count = max(len(m) for m in micro)
    plans = []
    for rank_bins in micro:
        rank_bins = rank_bins + [[] for _ in range(count - len(rank_bins))]
        plans.append([pack(batch, b, field_names, padded) for b in rank_bins])
    return plans


def group_minibatches(group_ids: Sequence[str], groups_per_minibatch: int, seed: int | None) -> list[list[int]]:
    """Sample indices per mini-batch, whole GRPO groups kept together; shuffled by `seed` when given."""
    members: dict[str, list[int]] = defaultdict(list)
    for i, gid in enumerate(group_ids):
        members[gid].append(i)
    order = list(members)
    if seed is not None:
        random.Random(seed).shuffle(order)
    return [
        sorted(i for gid in order[s : s + groups_per_minibatch] for i in members[gid])
        for s in range(0, len(order), groups_per_minibatch)
    ]


def plan_update(
    batch: SampleBatch,
    field_names: Sequence[str],
    world_size: int,
    *,
    groups_per_minibatch: int,
    max_token_len: int | None = None,
    micro_batch_size: int | None = None,
    shuffle_seed: int | None = None,
    padded: bool = False,
) -> list[list[list[MicroBatch]]]:
    """[rank][mini-batch][micro-batch]; each micro-batch carries its mini-batch's global loss normalisers."""
    if "loss_mask" not in field_names:
        field_names = ["loss_mask", *field_names]
    per_rank: list[list[list[MicroBatch]]] = [[] for _ in range(world_size)]
    for mb_indices in group_minibatches(batch.group_ids, groups_per_minibatch, shuffle_seed):
        num_tokens = float(sum(batch.fields["loss_mask"][i].sum().item() for i in mb_indices))
        num_seqs = float(len(mb_indices))
        plans = plan_forward(batch, field_names, world_size, max_token_len=max_token_len,
                             micro_batch_size=micro_batch_size, indices=mb_indices, padded=padded)
        for rank, micro in enumerate(plans):
            for m in micro:
                m.num_tokens, m.num_seqs = max(num_tokens, 1.0), num_seqs
            per_rank[rank].append(micro)
    return per_rank


def gather_outputs(plans: list[list[MicroBatch]], outputs: list[list[torch.Tensor]], batch_size: int) -> list[torch.Tensor]:
    """Per-rank, per-micro-batch flat outputs -> one 1D tensor per sample in batch order."""
    result: list[torch.Tensor | None] = [None] * batch_size
    for rank_plan, rank_out in zip(plans, outputs):
        for micro, flat in zip(rank_plan, rank_out):
            for idx, piece in zip(micro.sample_indices, torch.split(flat.cpu(), micro.response_lens)):
                result[idx] = piece
    missing = [i for i, r in enumerate(result) if r is None]
    if missing:
        raise RuntimeError(f"no output for samples {missing[:5]}: the forward plan did not cover the batch")
    return result  # type: ignore[return-value]
