"""Tensor-parallel in-process engines: one replica's model split Megatron-style over a group of ranks.

Splitting (`shard_model`): in every decoder layer, q/k/v and gate/up are column-parallel (each rank keeps its
heads' rows, its share of the MLP's hidden units), o_proj and down_proj row-parallel (the matching input columns)
followed by an all-reduce of their partial outputs over the group; embeddings, norms and the LM head stay whole on
every rank. So each rank computes only its heads' attention and keeps only its heads' keys and values, and the
residual stream is identical on every rank after each all-reduce. Plain sliced `nn.Linear` weights plus one
`all_reduce` were chosen over `torch.distributed.tensor.parallel`: the engines call the projections directly (the
paged runner's own attention, CUDA-graph-friendly plain tensors, in-place weight copies by name), and DTensor
parameters would change the names, the types and the in-place copy path the weight sync relies on.

Lock-step (`StepChannel`): the group's leader runs the engine (requests, scheduler, sampling); before each engine
step it broadcasts the step's inputs (the requests that arrived, the ones given up, the pause flag) to the other
ranks, which run the same deterministic scheduler step on them; the tokens each step samples are broadcast from
the leader, so a rank whose logits differ in the last bit still feeds the leader's tokens. Broadcasting the step
inputs is simpler than broadcasting each step's batch layout: the engines' schedulers are already deterministic
functions of their inputs, and the only non-determinism (arrival timing, cancellations, sampling) is exactly
what the messages carry. Steps of a replica's ranks therefore never diverge.

Weight sync (`ShardedWeights`): each rank reads its own slice of the full parameters it was handed (views, no
copy, no extra traffic) and copies it in place.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from agentgym.errors import ConfigError

TP_KEY = "actor_rollout_ref.rollout.tensor_model_parallel_size"

# name -> (dim, start, length): the rank's slice of a full parameter
ShardSlices = dict[str, tuple[int, int, int]]


@dataclass
class TensorParallel:
    """This rank's place in one replica's tensor-parallel group: `ranks` are global ranks, the first the leader."""

    ranks: tuple[int, ...]
    rank: int  # index in `ranks`
    device_group: Any  # all-reduces and the token broadcast (NCCL on GPU, gloo on CPU)
    control_group: Any  # gloo: the step messages (Python objects)

    @property
    def size(self) -> int:
        return len(self.ranks)

    @property
    def leader(self) -> int:
        return self.ranks[0]

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    @classmethod
    def consecutive(cls, size: int, *, device: str | torch.device = "cpu") -> TensorParallel:
        """Split the default process group into groups of `size` consecutive ranks (one replica each) and return
        this rank's. Collective: every rank of the world calls it, in the same order."""
        if not dist.is_initialized():
            raise RuntimeError("tensor parallelism needs torch.distributed initialised (the trainer's process group)")
        world, me = dist.get_world_size(), dist.get_rank()
        check_world(world, size)
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        mine = None
        for start in range(0, world, size):
            ranks = tuple(range(start, start + size))
            device_group = dist.new_group(list(ranks), backend=backend)
            control_group = dist.new_group(list(ranks), backend="gloo")
            if me in ranks:
                mine = cls(ranks, ranks.index(me), device_group, control_group)
        assert mine is not None
        return mine


def check_world(world_size: int, size: int) -> None:
    if size < 1 or world_size % size:
        raise ConfigError(f"{size} does not divide the {world_size} trainer ranks; each replica is a group of that many "
                          "consecutive ranks.", entry=TP_KEY,
                          fix="use a divisor of trainer.nnodes x trainer.n_gpus_per_node")


def check_shardable(config: Any, size: int) -> None:
    """A ConfigError naming the key unless the model's heads, key/value heads and MLP width divide by `size`."""
    text = config.get_text_config()
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    for name, value in (("num_attention_heads", heads), ("num_key_value_heads", kv_heads),
                        ("intermediate_size", text.intermediate_size)):
        if value % size:
            raise ConfigError(f"the model's {name} ({value}) does not divide by {size}: each rank of a replica holds "
                              "an equal share of the heads and of the MLP.", entry=TP_KEY,
                              fix=f"use a size that divides {name} ({value})")


class _RowParallelLinear(torch.nn.Linear):
    """A row-parallel projection: this rank's input columns, then the partial outputs summed over the group (the
    bias, replicated, added once after the sum)."""

    tp_group: Any

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight)
        dist.all_reduce(out, group=self.tp_group)
        return out if self.bias is None else out + self.bias


def _decoder_layers(model: torch.nn.Module) -> tuple[str, list[torch.nn.Module]]:
    for prefix in ("model.language_model.layers", "model.layers"):
        holder: Any = model
        for part in prefix.split("."):
            holder = getattr(holder, part, None)
            if holder is None:
                break
        if holder is not None:
            return prefix, list(holder)
    raise ValueError(f"{type(model).__name__} has no model.layers: tensor parallelism supports Llama/Qwen-family "
                     "decoders")


def shard_model(model: torch.nn.Module, tp: TensorParallel) -> ShardSlices:
    """Keep this rank's slice of every decoder layer's projections, in place (see the module docstring), and return
    where each sharded parameter's slice sits in the full one. The model keeps its parameter names."""
    check_shardable(model.config, tp.size)
    prefix, layers = _decoder_layers(model)
    slices: ShardSlices = {}
    with torch.no_grad():
        for index, layer in enumerate(layers):
            attn, mlp = layer.self_attn, layer.mlp
            for owner, path, names, parallel in ((attn, "self_attn", ("q_proj", "k_proj", "v_proj"), "col"),
                                                 (attn, "self_attn", ("o_proj",), "row"),
                                                 (mlp, "mlp", ("gate_proj", "up_proj"), "col"),
                                                 (mlp, "mlp", ("down_proj",), "row")):
                for name in names:
                    linear = getattr(owner, name)
                    base = f"{prefix}.{index}.{path}.{name}"
                    _shard_linear(linear, parallel, tp, base, slices)
    return slices


def _shard_linear(linear: torch.nn.Linear, parallel: str, tp: TensorParallel, base: str, slices: ShardSlices) -> None:
    dim = 0 if parallel == "col" else 1
    full = linear.weight.shape[dim]
    length = full // tp.size
    start = tp.rank * length
    linear.weight = torch.nn.Parameter(linear.weight.narrow(dim, start, length).clone(), requires_grad=False)
    slices[f"{base}.weight"] = (dim, start, length)
    if parallel == "col":
        linear.out_features = length
        if linear.bias is not None:
            linear.bias = torch.nn.Parameter(linear.bias.narrow(0, start, length).clone(), requires_grad=False)
            slices[f"{base}.bias"] = (0, start, length)
    else:
        linear.in_features = length
        linear.__class__ = _RowParallelLinear
        linear.tp_group = tp.device_group


class ShardedWeights(Mapping[str, torch.Tensor]):
    """Full weights (a state dict or a trainer's bucket) seen through a rank's slices: each sharded name reads as
    its slice (a view), the rest as is."""

    def __init__(self, full: Mapping[str, torch.Tensor], slices: ShardSlices):
        self.full, self.slices = full, slices

    def __getitem__(self, name: str) -> torch.Tensor:
        tensor = self.full[name]
        where = self.slices.get(name)
        return tensor if where is None else tensor.narrow(*where)

    def __iter__(self) -> Iterator[str]:
        return iter(self.full)

    def __len__(self) -> int:
        return len(self.full)


class StepChannel:
    """The leader's messages to the group's other ranks, and the tokens each step samples.

    Messages go over the gloo control group (from the leader's engine thread; the others read them on a thread of
    their own); tokens over the device group from inside the step, so the two never interleave on one group."""

    def __init__(self, tp: TensorParallel):
        self.tp = tp
        self._lock = threading.Lock()

    def send(self, message: Any) -> None:
        assert self.tp.is_leader
        with self._lock:
            dist.broadcast_object_list([message], src=self.tp.leader, group=self.tp.control_group)

    def receive(self) -> Any:
        box = [None]
        dist.broadcast_object_list(box, src=self.tp.leader, group=self.tp.control_group)
        return box[0]

    def share_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The leader's tokens on every rank (in place: the tensor must be contiguous)."""
        dist.broadcast(tokens, src=self.tp.leader, group=self.tp.device_group)
        return tokens
