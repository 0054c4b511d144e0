"""`use_torch_compile`: compiled blocks and head give the eager log-probs, entropies and gradients, share one
graph across identical layers, and leave parameter names alone. Runs through AOTAutograd with the eager backend
(Inductor's CPU code generation takes minutes on the CI machine; the GPU runs in benchmarks/ use Inductor)."""

import pytest
import torch
from torch._dynamo.backends.debugging import aot_eager

from agentgym.config import load_config
from agentgym.trainer.batching import pack
from agentgym.trainer.workers.compile import compile_model
from agentgym.trainer.workers.model import forward_policy, load_hf_model

from .test_fast_forward import _batch, _load


class CountingBackend:
    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return aot_eager(gm, example_inputs)


@pytest.mark.parametrize("with_entropy", [False, True])
def test_compiled_model_matches_eager(tiny_model_path, with_entropy):
    torch._dynamo.reset()
    batch = _batch()
    micro = pack(batch, list(range(len(batch))), ["loss_mask"], padded=False)
    eager = _load(tiny_model_path, remove_padding=True)
    compiled = _load(tiny_model_path, remove_padding=True)
    names = list(compiled.state_dict())
    backend = CountingBackend()
    layers = compiled.config.num_hidden_layers
    assert layers > 1
    assert compile_model(compiled, backend=backend) == layers
    assert list(compiled.state_dict()) == names

    results = []
    for model in (eager, compiled):
        lp, ent = forward_policy(model, micro, temperature=0.8, with_entropy=with_entropy)
        weights = torch.linspace(-1, 1, lp.numel())
        (lp * weights).sum().add(ent.sum() if with_entropy else 0).backward()
        results.append((lp, ent, {n: p.grad for n, p in model.named_parameters()}))
    (lp_e, ent_e, grads_e), (lp_c, ent_c, grads_c) = results
    torch.testing.assert_close(lp_c, lp_e, rtol=1e-5, atol=1e-5)
    if with_entropy:
        torch.testing.assert_close(ent_c, ent_e, rtol=1e-5, atol=1e-5)
    for name, grad in grads_e.items():
        torch.testing.assert_close(grads_c[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert backend.graphs > 0


def test_layers_share_one_compilation(tiny_model_path):
    """Twice the layers, the same number of graphs: identical blocks reuse one compiled function."""
    micro = pack(_batch(), list(range(4)), ["loss_mask"], padded=False)
    counts = []
    four_layers = "{num_hidden_layers: 4, layer_types: [full_attention, full_attention, full_attention, full_attention]}"
    for extra in ([], [f"actor_rollout_ref.model.override_config={four_layers}"]):
        torch._dynamo.reset()
        cfg = load_config(None, [f"actor_rollout_ref.model.path={tiny_model_path}",
                                 "actor_rollout_ref.model.use_remove_padding=true"] + extra)
        model = load_hf_model(cfg.actor_rollout_ref.model, cfg.actor_rollout_ref.actor.fsdp_config)
        backend = CountingBackend()
        compile_model(model, backend=backend)
        lp, _ = forward_policy(model, micro)
        lp.sum().backward()
        counts.append((model.config.num_hidden_layers, backend.graphs))
    (layers_a, graphs_a), (layers_b, graphs_b) = counts
    assert layers_b == 2 * layers_a
    assert graphs_a == graphs_b > 0


def test_compile_refuses_a_model_without_blocks():
    with pytest.raises(ValueError, match="use_torch_compile=false"):
        compile_model(torch.nn.Linear(3, 3))


def _micro(lens, seed):
    from agentgym.trajectory import Trajectory
    from agentgym.trainer.batching import SampleBatch

    from .conftest import VOCAB

    gen = torch.Generator().manual_seed(seed)
    trajs = []
    for i, (p, r) in enumerate(lens):
        ids = torch.randint(2, VOCAB, (p + r,), generator=gen).tolist()
        trajs.append(Trajectory(uid=str(i), group_id="g", prompt_ids=ids[:p], response_ids=ids[p:], loss_mask=[1] * r,
                                rollout_logprobs=[0.0] * r, final_score=0.0))
    batch = SampleBatch.from_trajectories(trajs)
    return pack(batch, list(range(len(batch))), ["loss_mask"], padded=False)


def test_new_lengths_in_later_steps_compile_nothing(tiny_model_path):
    """The RL step's order: no-grad log-probs, then training micro-batches, every step with new packed lengths.
    After step 1 has compiled each mode once, later steps reuse the graphs (before: step 2's log-prob pass
    recompiled, ~2 s at 0.5B on an H100). Step 1's first log-prob batch has 3 sequences (4 boundaries, as many
    as the tiny model's heads), which duck sizing would have tied together."""
    torch._dynamo.reset()
    model = _load(tiny_model_path, remove_padding=True)
    backend = CountingBackend()
    compile_model(model, backend=backend)
    steps = [
        ([(3, 5), (6, 2), (2, 9)], [[(4, 4), (5, 5)], [(2, 3)]]),
        ([(3, 7), (6, 3), (2, 11), (5, 5)], [[(4, 6), (5, 9)], [(3, 3), (2, 2), (7, 1)]]),
        ([(4, 7), (6, 3), (9, 11)], [[(4, 8)], [(3, 4), (2, 2)]]),
    ]
    graphs = []
    for step, (old, updates) in enumerate(steps):
        before = backend.graphs
        model.eval()
        with torch.no_grad():
            forward_policy(model, _micro(old, step), with_entropy=True)
        model.train()
        for k, lens in enumerate(updates):
            lp, _ = forward_policy(model, _micro(lens, 10 * step + k))
            lp.sum().backward()
        graphs.append(backend.graphs - before)
    assert graphs[0] > 0
    assert graphs[1:] == [0, 0], f"graphs compiled per step: {graphs}"
