"""The models one trainer rank holds: policy (actor or frozen reference) and value (critic).

Each works unsharded in a single process or FSDP2-sharded when a process group is up. Micro-batch losses are
scaled so that, after FSDP's gradient averaging across ranks, gradients equal those of the whole mini-batch in one
process: every piece divides by mini-batch-wide normalisers and is multiplied by the world size.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor

from agentgym.config.schema import ActorConfig, CriticConfig, FSDPConfig, ModelConfig, OptimConfig
from agentgym.trainer.algorithms.kl import kl_penalty
from agentgym.trainer.algorithms.losses import agg_loss, compute_value_loss
from agentgym.trainer.algorithms.policy_losses import PolicyLossSettings, get_policy_loss
from agentgym.trainer.algorithms.masked import masked_mean
from agentgym.trainer.batching import MicroBatch, unflatten
from agentgym.trainer.workers.compile import compile_model
from agentgym.trainer.workers.metrics_acc import MetricSums
from agentgym.trainer.workers.model import (
    forward_policy,
    forward_values,
    load_hf_model,
    resolve_dtype,
    shard_with_fsdp2,
    world,
)
from agentgym.trainer.workers.offload import OptimizerOffload
from agentgym.trainer.workers.optim import build_optimizer, build_scheduler


def _receive_from_rank0(model: torch.nn.Module, full: dict[str, torch.Tensor], device: torch.device, rank: int) -> None:
    """Every rank's shards of rank 0's loaded weights (a broadcast per tensor, each rank keeping its shard), and
    rank 0's buffers (rotary frequencies and other buffers that no state dict holds)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if rank != 0:
        model.to_empty(device=device)
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    for _, buffer in model.named_buffers():
        torch.distributed.broadcast(buffer, src=0)


class ModelRole:
    """Model + optional optimizer/scheduler, with the pieces shared by policy and value models."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        fsdp_cfg: FSDPConfig,
        *,
        device: torch.device,
        optim_cfg: OptimConfig | None = None,
        total_steps: int = 1,
        value_head: bool = False,
        use_torch_compile: bool | None = None,
        fsdp_entry: str = "actor_rollout_ref.actor.fsdp_config",
    ) -> None:
        self.device = device
        self.rank, self.world_size = world()
        self.sharded = torch.distributed.is_available() and torch.distributed.is_initialized()
        # Several ranks: only rank 0 reads the weights; the others start on the meta device and receive their shards
        # from it, so the host holds one copy of the model instead of one per rank.
        from_rank0 = self.sharded and self.world_size > 1
        self.read_from_disk = not from_rank0 or self.rank == 0
        model = load_hf_model(model_cfg, fsdp_cfg, value_head=value_head, weights=self.read_from_disk)
        full = model.state_dict() if from_rank0 and self.rank == 0 else {}  # the loaded tensors, kept on the CPU
        if not from_rank0 or self.rank == 0:
            model.to(device)
        if use_torch_compile is None:
            use_torch_compile = device.type == "cuda"
        if use_torch_compile:
            compile_model(model)  # before sharding: FSDP2 renames the block classes
        if self.sharded:
            model = shard_with_fsdp2(model, fsdp_cfg, device_type=device.type, entry=fsdp_entry)
        if from_rank0:
            _receive_from_rank0(model, full, device, self.rank)
        del full
        self.model = model
        self._autocast_dtype = (
            resolve_dtype(fsdp_cfg.mixed_precision.param_dtype)
            if fsdp_cfg.mixed_precision is not None and not self.sharded
            else None
        )
        self.optimizer = build_optimizer(model.parameters(), optim_cfg) if optim_cfg is not None else None
        self.scheduler = build_scheduler(self.optimizer, optim_cfg, total_steps) if self.optimizer else None
        # verl's optimizer_offload: the state in host memory between updates. Under FSDP2's CPU offload
        # (param_offload) the state already lives in host memory, so there is nothing to move.
        offload = self.optimizer is not None and fsdp_cfg.optimizer_offload and not (self.sharded and fsdp_cfg.param_offload)
        self.optimizer_offload = OptimizerOffload(self.optimizer, device) if offload else None
        if self.optimizer is None:
            model.requires_grad_(False)
            model.eval()

    @contextlib.contextmanager
    def optimizer_resident(self):
        """The optimizer state on the device for the block (an update, a checkpoint), offloaded after it when
        `fsdp_config.optimizer_offload` is on."""
        if self.optimizer_offload is None:
            yield
            return
        with self.optimizer_offload.on_device():
            yield

    def autocast(self):
        if self._autocast_dtype is None or self._autocast_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)

    def optimizer_step(self, grad_clip: float | None) -> float:
        """Clip, step if the gradient is finite (a NaN step would corrupt the weights for good); returns the norm."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip and grad_clip > 0 else float("inf"))
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        norm_value = float(norm)
        if math.isfinite(norm_value):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm_value

    def full_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Unsharded weights on CPU under Hugging Face names (rank 0 gets them; other ranks get {})."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        if dtype is not None:
            state = {k: v.to(dtype) for k, v in state.items()}
        return state

    def full_param_buckets(self, dtype: torch.dtype | None = None, bucket_bytes: int = 256 << 20,
                           ) -> Iterator[dict[str, torch.Tensor]]:
        """The unsharded parameters, on this rank's device, in buckets of about `bucket_bytes`, under Hugging Face
        names: every rank gets them (each all-gathers its peers' shards), so a rank can copy them into the engine
        it hosts without the driver, rank 0 or the CPU in the path. Collective: every rank must iterate together."""
        bucket: dict[str, torch.Tensor] = {}
        size = 0
        for name, param in self.model.named_parameters():
            tensor = param.detach()
            if isinstance(tensor, DTensor):  # FSDP2's shard: gather the whole parameter
                tensor = tensor.full_tensor()
            if dtype is not None:
                tensor = tensor.to(dtype)
            bucket[name] = tensor
            size += tensor.numel() * tensor.element_size()
            if size >= bucket_bytes:
                yield bucket
                bucket, size = {}, 0
        if bucket:
            yield bucket

    def save(self, path: Path, with_optimizer: bool = True) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        path.mkdir(parents=True, exist_ok=True)
        optimizer = self.optimizer if with_optimizer else None
        model_sd, optim_sd = get_state_dict(self.model, optimizer if optimizer is not None else [])
        state = {"model": model_sd}
        if optimizer is not None:
            state["optimizer"] = optim_sd
        dcp.save(state, checkpoint_id=str(path))
        if self.scheduler is not None and self.rank == 0:
            torch.save(self.scheduler.state_dict(), path / "scheduler.pt")

    def load(self, path: Path, with_optimizer: bool = True) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        optimizer = self.optimizer if with_optimizer else None
        model_sd, optim_sd = get_state_dict(self.model, optimizer if optimizer is not None else [])
        state = {"model": model_sd}
        if optimizer is not None:
            state["optimizer"] = optim_sd
        dcp.load(state, checkpoint_id=str(path))
        set_state_dict(self.model, optimizer if optimizer is not None else [],
                       model_state_dict=state["model"], optim_state_dict=state.get("optimizer", {}))
        if self.scheduler is not None and (path / "scheduler.pt").exists():
            self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))


class PolicyRole(ModelRole):
    @torch.no_grad()
    def compute_log_prob(
        self, micro_batches: list[MicroBatch], *, temperature: float = 1.0, with_entropy: bool = False
    ) -> list[dict[str, torch.Tensor]]:
        was_training = self.model.training
        self.model.eval()
        results = []
        for micro in micro_batches:
            with self.autocast():
                log_probs, entropy = forward_policy(self.model, micro.to(self.device), temperature=temperature,
                                                    with_entropy=with_entropy)
            out = {"log_probs": log_probs.float().cpu()}
            if entropy is not None:
                out["entropy"] = entropy.float().cpu()
            results.append(out)
        self.model.train(was_training)
        return results

    def update_policy(
        self, minibatches: list[list[MicroBatch]], cfg: ActorConfig, *, temperature: float, loss_scale_factor: float
    ) -> dict[str, list[float]]:
        """PPO-clip epochs over the mini-batches (one optimizer step each); returns MetricSums.export()."""
        self.model.train()
        sums = MetricSums()
        clip_low = cfg.clip_ratio_low if cfg.clip_ratio_low is not None else cfg.clip_ratio
        clip_high = cfg.clip_ratio_high if cfg.clip_ratio_high is not None else cfg.clip_ratio
        need_entropy = cfg.entropy_coeff != 0
        pl = cfg.policy_loss
        policy_loss = get_policy_loss(pl.loss_mode)
        settings = PolicyLossSettings(
            clip_ratio_low=clip_low, clip_ratio_high=clip_high, clip_ratio_c=cfg.clip_ratio_c,
            loss_agg_mode=cfg.loss_agg_mode, clip_cov_ratio=pl.clip_cov_ratio, clip_cov_lb=pl.clip_cov_lb,
            clip_cov_ub=pl.clip_cov_ub, kl_cov_ratio=pl.kl_cov_ratio, ppo_kl_coef=pl.ppo_kl_coef,
            tau_pos=cfg.tau_pos, tau_neg=cfg.tau_neg)
        for _ in range(cfg.ppo_epochs):
            for mini in minibatches:
                for micro in mini:
                    micro = micro.to(self.device)
                    with self.autocast():
                        log_probs, entropy = forward_policy(self.model, micro, temperature=temperature,
                                                            with_entropy=need_entropy)
                    if micro.is_empty:
                        (log_probs.sum() * self.world_size).backward()
                        continue
                    lens = micro.response_lens
                    mask = micro.padded("loss_mask")
                    logp = unflatten(log_probs, lens)
                    agg = dict(num_tokens=micro.num_tokens, num_seqs=micro.num_seqs,
                               loss_scale_factor=loss_scale_factor, norm_seq_mean=cfg.norm_seq_mean)
                    weights = micro.padded("rollout_is_weights") if "rollout_is_weights" in micro.fields else None
                    out = policy_loss(micro.padded("old_log_probs"), logp, micro.padded("advantages"), mask,
                                      settings, token_weights=weights, **agg)
                    loss = out.loss
                    tokens = mask.sum()
                    if need_entropy:
                        ent = unflatten(entropy, lens)
                        loss = loss - cfg.entropy_coeff * agg_loss(ent, mask, cfg.loss_agg_mode, **agg)
                        sums.add_device("actor/entropy_update", masked_mean(ent.detach(), mask), tokens)
                    if cfg.use_kl_loss:
                        kl = kl_penalty(logp, micro.padded("ref_log_probs"), cfg.kl_loss_type)
                        kl_loss = agg_loss(kl, mask, cfg.loss_agg_mode, **agg)
                        loss = loss + cfg.kl_loss_coef * kl_loss
                        sums.add_device("actor/kl_loss", masked_mean(kl.detach(), mask), tokens)
                    (loss * self.world_size).backward()
                    sums.add_device_sum("actor/pg_loss", out.loss)
                    sums.add_device("actor/pg_clipfrac", out.clipfrac, tokens)
                    sums.add_device("actor/pg_clipfrac_lower", out.clipfrac_lower, tokens)
                    sums.add_device("actor/ppo_kl", out.ppo_kl, tokens)
                sums.sums["actor/pg_loss"][1] += 1.0 / self.world_size
                sums.add("actor/grad_norm", self.optimizer_step(cfg.grad_clip), 1.0 / self.world_size)
        sums.add("actor/lr", self.scheduler.get_last_lr()[0], 1.0 / self.world_size)
        self.scheduler.step()
        return sums.export()

    def update_sft(self, minibatches: list[list[MicroBatch]], grad_clip: float) -> dict[str, list[float]]:
        """Masked next-token NLL over model turns only (token-mean over each mini-batch), one step per mini-batch."""
        self.model.train()
        sums = MetricSums()
        for mini in minibatches:
            for micro in mini:
                micro = micro.to(self.device)
                with self.autocast():
                    log_probs, _ = forward_policy(self.model, micro)
                if micro.is_empty:
                    (log_probs.sum() * self.world_size).backward()
                    continue
                mask = micro.fields["loss_mask"]
                loss = -(log_probs * mask).sum() / micro.num_tokens
                (loss * self.world_size).backward()
                sums.add_device_sum("sft/loss", loss)
            sums.sums["sft/loss"][1] += 1.0 / self.world_size
            sums.add("sft/grad_norm", self.optimizer_step(grad_clip), 1.0 / self.world_size)
        sums.add("sft/lr", self.scheduler.get_last_lr()[0], 1.0 / self.world_size)
        self.scheduler.step()
        return sums.export()


class ValueRole(ModelRole):
    @torch.no_grad()
    def compute_values(self, micro_batches: list[MicroBatch]) -> list[torch.Tensor]:
        self.model.eval()
        out = []
        for micro in micro_batches:
            with self.autocast():
                out.append(forward_values(self.model, micro.to(self.device)).float().cpu())
        return out

    def update_critic(self, minibatches: list[list[MicroBatch]], cfg: CriticConfig, loss_agg_mode: str,
                      ppo_epochs: int, loss_scale_factor: float) -> dict[str, list[float]]:
        self.model.train()
        sums = MetricSums()
        for _ in range(ppo_epochs):
            for mini in minibatches:
                for micro in mini:
                    micro = micro.to(self.device)
                    with self.autocast():
                        vpreds = forward_values(self.model, micro)
                    if micro.is_empty:
                        (vpreds.sum() * self.world_size).backward()
                        continue
                    mask = micro.padded("loss_mask")
                    vpred = unflatten(vpreds, micro.response_lens)
                    loss, clipfrac = compute_value_loss(
                        vpred, micro.padded("values"), micro.padded("returns"), mask,
                        cliprange_value=cfg.cliprange_value, loss_agg_mode=loss_agg_mode,
                        num_tokens=micro.num_tokens, num_seqs=micro.num_seqs, loss_scale_factor=loss_scale_factor,
                    )
                    (loss * self.world_size).backward()
                    tokens = mask.sum()
                    sums.add_device_sum("critic/vf_loss", loss)
                    sums.add_device("critic/vf_clipfrac", clipfrac, tokens)
                    sums.add_device("critic/vpred_mean", masked_mean(vpred.detach(), mask), tokens)
                sums.sums["critic/vf_loss"][1] += 1.0 / self.world_size
                sums.add("critic/grad_norm", self.optimizer_step(cfg.grad_clip), 1.0 / self.world_size)
        sums.add("critic/lr", self.scheduler.get_last_lr()[0], 1.0 / self.world_size)
        self.scheduler.step()
        return sums.export()


