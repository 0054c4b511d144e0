"""The trainer's fast forward path gives the same log-probs, entropies and gradients as full logits and dense
attention: the chunked log-prob head (several chunks, temperature, entropy) and varlen attention over packed rows."""

import copy

import pytest
import torch

from agentgym.config import load_config
from agentgym.trainer.batching import SampleBatch, pack
from agentgym.trainer.algorithms.losses import entropy_from_logits, logprobs_from_logits
from agentgym.trainer.workers import fast_forward
from agentgym.trainer.workers.fast_forward import HeadRequest, LogprobLinear, install_logprob_head, segment_bounds
from agentgym.trainer.workers.model import forward_policy, load_hf_model

from .conftest import VOCAB


def _load(path, attn="sdpa", remove_padding=False):
    cfg = load_config(None, [f"actor_rollout_ref.model.path={path}", f"actor_rollout_ref.model.attn_implementation={attn}",
                             f"actor_rollout_ref.model.use_remove_padding={str(remove_padding).lower()}"])
    return load_hf_model(cfg.actor_rollout_ref.model, cfg.actor_rollout_ref.actor.fsdp_config)


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    from agentgym.trajectory import Trajectory

    trajs = []
    for i, (p, r) in enumerate([(3, 5), (6, 2), (2, 9), (4, 4)]):
        ids = torch.randint(2, VOCAB, (p + r,), generator=gen).tolist()
        trajs.append(Trajectory(uid=str(i), group_id="g", prompt_ids=ids[:p], response_ids=ids[p:], loss_mask=[1] * r,
                                rollout_logprobs=[0.0] * r, final_score=0.0))
    return SampleBatch.from_trajectories(trajs)


@pytest.mark.parametrize("with_entropy", [False, True])
def test_logprob_head_matches_full_logits(with_entropy):
    torch.manual_seed(0)
    plain = torch.nn.Linear(16, 50, bias=False)
    head = copy.deepcopy(plain)
    head.__class__ = LogprobLinear
    head.chunk_tokens = lambda: 7  # several chunks, one ragged
    hidden = torch.randn(2, 15, 16, requires_grad=True)
    hidden2 = hidden.detach().clone().requires_grad_(True)
    positions = torch.tensor([0, 3, 4, 5, 9, 14, 15, 16, 20, 21, 22, 23, 24, 29, 28, 1, 2, 17, 18, 19])
    labels = torch.randint(0, 50, (len(positions),))
    temperature = 0.7

    logits = plain(hidden).reshape(-1, 50)[positions] / temperature
    ref_lp = logprobs_from_logits(logits, labels)
    ref_ent = entropy_from_logits(logits)
    with head.request(HeadRequest(positions, labels, temperature, with_entropy)):
        out = head(hidden2)[0]
    assert out.shape == (len(positions), 2 if with_entropy else 1)
    torch.testing.assert_close(out[:, 0], ref_lp, rtol=1e-5, atol=1e-5)
    loss_ref = (ref_lp * torch.linspace(-1, 1, len(positions))).sum()
    loss = (out[:, 0] * torch.linspace(-1, 1, len(positions))).sum()
    if with_entropy:
        torch.testing.assert_close(out[:, 1], ref_ent, rtol=1e-5, atol=1e-5)
        loss_ref = loss_ref + 0.3 * ref_ent.sum()
        loss = loss + 0.3 * out[:, 1].sum()
    loss_ref.backward()
    loss.backward()
    torch.testing.assert_close(hidden2.grad, hidden.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(head.weight.grad, plain.weight.grad, rtol=1e-4, atol=1e-6)
    # Without a request it is the plain layer.
    torch.testing.assert_close(head(hidden.detach()), plain(hidden.detach()))


def test_install_keeps_parameter_names(tiny_model_path):
    model = _load(tiny_model_path)
    assert isinstance(model.get_output_embeddings(), LogprobLinear)
    fresh = _load(tiny_model_path)
    assert list(model.state_dict()) == list(fresh.state_dict())
    assert not install_logprob_head(torch.nn.Module())


def test_segment_bounds():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 0, 1, 2, 3]])
    assert segment_bounds(pos).tolist() == [0, 3, 5, 6, 10]


@pytest.mark.parametrize("with_entropy", [False, True])
def test_packed_varlen_equals_padded_dense(tiny_model_path, with_entropy):
    """Log-probs and gradients: packed rows under varlen attention (per-sequence SDPA on CPU) == padded eager
    batch with full logits (the reference path, no log-prob head)."""
    batch = _batch()
    idx = list(range(len(batch)))
    ref_model = _load(tiny_model_path, attn="eager")
    ref_model.get_output_embeddings().__class__ = torch.nn.Linear  # full-logits reference path
    fast_model = _load(tiny_model_path, attn="sdpa", remove_padding=True)
    assert fast_model.config._attn_implementation == fast_forward.VARLEN_ATTENTION

    padded = pack(batch, idx, ["loss_mask"], padded=True)
    packed = pack(batch, idx, ["loss_mask"], padded=False)
    ref_lp, ref_ent = forward_policy(ref_model, padded, temperature=0.9, with_entropy=with_entropy)
    lp, ent = forward_policy(fast_model, packed, temperature=0.9, with_entropy=with_entropy)
    torch.testing.assert_close(lp, ref_lp, rtol=1e-4, atol=1e-5)
    weights = torch.linspace(-1, 1, lp.numel())
    (ref_lp * weights).sum().add(ref_ent.sum() if with_entropy else 0).backward()
    (lp * weights).sum().add(ent.sum() if with_entropy else 0).backward()
    if with_entropy:
        torch.testing.assert_close(ent, ref_ent, rtol=1e-4, atol=1e-5)
    for (name, p_ref), (_, p) in zip(ref_model.named_parameters(), fast_model.named_parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-3, atol=1e-5, msg=name)


def test_padded_batches_keep_sdpa_and_the_head(tiny_model_path):
    batch = _batch(1)
    model = _load(tiny_model_path, attn="sdpa", remove_padding=False)
    assert model.config._attn_implementation == "sdpa"
    ref = _load(tiny_model_path, attn="eager")
    ref.get_output_embeddings().__class__ = torch.nn.Linear
    micro = pack(batch, list(range(len(batch))), ["loss_mask"], padded=True)
    with torch.no_grad():
        lp, _ = forward_policy(model, micro)
        ref_lp, _ = forward_policy(ref, micro)
    torch.testing.assert_close(lp, ref_lp, rtol=1e-4, atol=1e-5)


def test_flash_dtype_follows_autocast_and_refuses_fp32():
    """Under autocast, rotary embeddings promote query and key to fp32 while value stays in the autocast dtype;
    the flash kernel must get one half dtype (or not run: fp32 goes to the per-sequence SDPA loop)."""
    q32, k32 = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 6, 8)
    v16 = torch.randn(1, 2, 6, 8, dtype=torch.bfloat16)
    assert fast_forward.flash_dtype(q32, k32, q32[:, :2]) is None
    assert fast_forward.flash_dtype(q32, k32, v16) is None
    assert fast_forward.flash_dtype(q32.bfloat16(), k32.bfloat16(), v16) == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast_forward.flash_dtype(q32, k32, v16) == torch.bfloat16
