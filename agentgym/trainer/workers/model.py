"""Loading Hugging Face models for the trainer, FSDP2 sharding, and packed forward passes."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from agentgym.config.schema import FSDPConfig, ModelConfig
from agentgym.devices import resolve_dtype
from agentgym.errors import ConfigError
from agentgym.trainer.algorithms.losses import entropy_from_logits, logprobs_from_logits
from agentgym.trainer.batching import MicroBatch
from agentgym.trainer.workers.fast_forward import (
    HeadRequest,
    install_logprob_head,
    logprob_head,
    segment_bounds,
    use_varlen_attention,
)

def load_hf_model(model_cfg: ModelConfig, fsdp_cfg: FSDPConfig, *, value_head: bool = False,
                  weights: bool = True) -> nn.Module:
    """A causal LM (actor, reference) or a one-label token classifier on the same backbone (critic).

    `weights=False` builds it on the meta device from the config alone, reading no weight file: the ranks that
    get their shards from rank 0 (`ModelRole`) start so, and a node holds one copy of the model, not one per rank."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoModelForTokenClassification

    from agentgym.multimodal.processor import VisionProcessor
    from agentgym.multimodal.vision_attention import use_vision_attention

    if not model_cfg.path:
        raise ConfigError("no model path given.", entry="actor_rollout_ref.model.path",
                          fix="set actor_rollout_ref.model.path (and critic.model.path for PPO) to a local model directory")
    from transformers import AutoConfig

    try:
        hf_config = AutoConfig.from_pretrained(model_cfg.path, trust_remote_code=model_cfg.trust_remote_code)
        for key, value in model_cfg.override_config.items():
            setattr(hf_config, key, value)
        kwargs = dict(config=hf_config, dtype=resolve_dtype(fsdp_cfg.model_dtype),
                      trust_remote_code=model_cfg.trust_remote_code, attn_implementation=model_cfg.attn_implementation)
        if value_head and VisionProcessor.is_vision_model(model_cfg.path):
            raise ConfigError("a critic on a vision-language model is not supported yet.", entry="critic.model.path",
                              fix="use algorithm.adv_estimator=grpo (no critic) for vision-language models")
        if value_head:
            hf_config.num_labels = 1
            if "classifier_dropout" not in model_cfg.override_config:
                hf_config.classifier_dropout = 0.0
            auto = AutoModelForTokenClassification
        elif VisionProcessor.is_vision_model(model_cfg.path):
            auto = AutoModelForImageTextToText
        else:
            auto = AutoModelForCausalLM
        if weights:
            model = auto.from_pretrained(model_cfg.path, **kwargs)
        else:
            with torch.device("meta"):
                model = auto.from_config(hf_config, dtype=kwargs["dtype"], trust_remote_code=model_cfg.trust_remote_code,
                                         attn_implementation=model_cfg.attn_implementation)
    except OSError as exc:
        raise ConfigError(f"cannot load a model from '{model_cfg.path}': {exc}",
                          fix="point the model path at a directory written by save_pretrained") from exc
    model.config.use_cache = False
    if not value_head:
        install_logprob_head(model)
    if model_cfg.use_remove_padding and model_cfg.attn_implementation == "sdpa":
        # Packed rows under dense-mask SDPA cost O(T^2) in the row length; per-sequence attention is exact and cheaper.
        use_varlen_attention(model)
    use_vision_attention(model)  # after the line above, which switches every sub-model
    if model_cfg.enable_gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated layers a transformers model names in `_no_split_modules` (the units FSDP shards and compile
    compiles)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def fsdp_mesh(fsdp_size: int, device_type: str, entry: str = "actor_rollout_ref.actor.fsdp_config.fsdp_size"):
    """The device mesh FSDP2 shards over: None (every rank in one shard group) for `fsdp_size` -1 or the world
    size; else HSDP's 2-D mesh, `replicate` x `shard`, each shard group `fsdp_size` consecutive ranks (the ranks of
    one node, as the trainer numbers them node by node), the groups holding replicas of each other."""
    world_size = dist.get_world_size()
    if fsdp_size == -1 or fsdp_size == world_size:
        return None
    if fsdp_size < 1 or world_size % fsdp_size:
        raise ConfigError(f"fsdp_size={fsdp_size} does not divide the {world_size} trainer ranks into equal shard groups.",
                          entry=entry, fix=f"use -1 (shard over all ranks) or a divisor of {world_size}, e.g. the GPUs "
                                           "per node (trainer.n_gpus_per_node)")
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device_type, (world_size // fsdp_size, fsdp_size), mesh_dim_names=("replicate", "shard"))


def shard_with_fsdp2(model: nn.Module, fsdp_cfg: FSDPConfig, *, device_type: str,
                     entry: str = "actor_rollout_ref.actor.fsdp_config") -> nn.Module:
    """`fully_shard` every transformer block, then the root (embeddings, norm, head, tied weights); over all ranks,
    or HSDP when `fsdp_size` groups them (`fsdp_mesh`). `device_type`: the rank's device ("cuda", "cpu")."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    kwargs: dict = {"reshard_after_forward": fsdp_cfg.reshard_after_forward}
    mesh = fsdp_mesh(fsdp_cfg.fsdp_size, device_type, entry=f"{entry}.fsdp_size")
    if mesh is not None:
        kwargs["mesh"] = mesh
    if fsdp_cfg.mixed_precision is not None:
        kwargs["mp_policy"] = MixedPrecisionPolicy(
            param_dtype=resolve_dtype(fsdp_cfg.mixed_precision.param_dtype),
            reduce_dtype=resolve_dtype(fsdp_cfg.mixed_precision.reduce_dtype),
        )
    if fsdp_cfg.param_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    blocks = transformer_blocks(model)
    if not blocks:
        raise ConfigError(f"cannot find the transformer blocks of {type(model).__name__} to shard",
                          fix="use a transformers model that declares _no_split_modules")
    for block in blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def _dummy_inputs(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    zeros = torch.zeros(1, 1, dtype=torch.long, device=device)
    return zeros, zeros


def forward_policy(
    model: nn.Module, micro: MicroBatch, *, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (and entropies) of every response token of a packed micro-batch, flat (N,).

    An empty micro-batch still runs the model (FSDP ranks must stay in lock-step) and returns empty tensors that
    are tied to the graph so backward also runs its collectives.
    """
    device = next(model.parameters()).device
    if micro.is_empty:
        ids, pos = _dummy_inputs(device)
        logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits
        tie = logits.sum() * 0.0
        vision = _idle_vision_tower(model, micro)
        if vision is not None:
            tie = tie + vision
        empty = tie.reshape(1)[:0]
        return empty, (empty if with_entropy else None)
    tie = _idle_vision_tower(model, micro)
    head = logprob_head(model)
    if head is not None:
        request = HeadRequest(micro.logit_positions, micro.labels, temperature, with_entropy)
        with head.request(request):
            out = model(**_model_inputs(micro, model), use_cache=False).logits[0]
        if tie is not None:
            out = out + tie
        return out[:, 0], (out[:, 1] if with_entropy else None)
    if micro.attention_mask is None:
        out = model(**_model_inputs(micro, model), use_cache=False, logits_to_keep=micro.logit_positions)
        logits = out.logits[0]
    else:
        out = model(**_model_inputs(micro, model), use_cache=False)
        logits = out.logits.reshape(-1, out.logits.shape[-1])[micro.logit_positions]
    if tie is not None:
        logits = logits + tie
    if temperature != 1.0:
        logits = logits / temperature
    log_probs = logprobs_from_logits(logits, micro.labels)
    entropy = entropy_from_logits(logits) if with_entropy else None
    return log_probs, entropy


def _idle_vision_tower(model: nn.Module, micro: MicroBatch, *, force: bool = False) -> torch.Tensor | None:
    """A zero that depends on every vision-tower parameter, for a micro-batch without images on a sharded VLM.

    FSDP all-gathers each vision block in forward and reduces its gradients in backward; a rank whose micro-batch
    has no image would skip both while a rank with images waits for it. One tiny image through the tower, times
    zero, keeps the ranks in lock-step and changes nothing."""
    visual = getattr(getattr(model, "model", None), "visual", None)
    if visual is None or micro.multimodal is not None:
        return None
    if not force and world()[1] == 1:
        return None
    config = visual.config
    merge, patch, temporal = config.spatial_merge_size, config.patch_size, config.temporal_patch_size
    grid = torch.tensor([[1, merge, merge]], device=next(model.parameters()).device)
    pixels = torch.zeros(merge * merge, config.in_channels * temporal * patch * patch, device=grid.device,
                         dtype=next(visual.parameters()).dtype)
    out = visual(pixels, grid_thw=grid)
    hidden = out.pooler_output if hasattr(out, "pooler_output") else out
    return hidden.float().sum() * 0.0


def _model_inputs(micro: MicroBatch, model: nn.Module | None = None) -> dict:
    """Model kwargs for a micro-batch: a padded batch with its mask, or one packed row with its sequence bounds
    (flash-attention's kwarg names, read by varlen attention; dense-mask SDPA ignores them). Vision-language
    micro-batches add their pixels and the model's multimodal rotary positions."""
    if micro.attention_mask is not None:
        inputs = dict(input_ids=micro.input_ids, attention_mask=micro.attention_mask, position_ids=micro.position_ids)
    else:
        cu = segment_bounds(micro.position_ids)
        max_len = int((cu[1:] - cu[:-1]).max()) if cu.numel() > 1 else 0
        inputs = dict(input_ids=micro.input_ids, position_ids=micro.position_ids, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                      max_length_q=max_len, max_length_k=max_len)
    if micro.multimodal is not None and model is not None:
        from agentgym.multimodal.training_inputs import vision_model_inputs

        inputs.update(vision_model_inputs(model, micro.input_ids, micro.position_ids, micro.attention_mask,
                                          micro.multimodal))
    return inputs


def forward_values(model: nn.Module, micro: MicroBatch) -> torch.Tensor:
    """Critic value of the state before each response token (read at the preceding position), flat (N,)."""
    device = next(model.parameters()).device
    if micro.is_empty:
        ids, pos = _dummy_inputs(device)
        return (model(input_ids=ids, position_ids=pos, use_cache=False).logits.sum() * 0.0).reshape(1)[:0]
    out = model(**_model_inputs(micro, model), use_cache=False)
    return out.logits.reshape(-1)[micro.logit_positions].float()


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
