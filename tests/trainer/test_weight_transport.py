"""Weights to the rollout in device buckets (`workers.weight_export` -> `engines.weight_import`): the buckets hold
every weight of the actor in the engine's dtype, tied weights once; a real paged engine takes them through the
driver's sync and then samples as the trained actor. CPU here (buckets by value); the CUDA IPC hand-over runs in
benchmarks/gpu (the host cannot open a handle it made itself, so no CPU test can)."""

import pytest
import torch

from agentgym.rollout.engines.paged import PagedEngine, PagedEngineConfig
from agentgym.rollout.engines.weight_import import BucketEntry, PackedWeights, WeightBucket, WeightMappingError
from agentgym.rollout.protocol import CallableRollout
from agentgym.trainer.driver import RLTrainer
from agentgym.trainer.workers.weight_export import export_weights
from agentgym.trainer.workers.model import load_hf_model


def _model(config):
    arr = config.actor_rollout_ref
    return load_hf_model(arr.model, arr.actor.fsdp_config)


def test_buckets_hold_every_weight_once_in_the_target_dtype(config_for):
    model = _model(config_for())
    torch.nn.init.normal_(model.model.norm.weight)  # no weight may be all ones/zeros: an unwritten slice shows
    state = model.state_dict()
    assert model.lm_head.weight is model.model.embed_tokens.weight  # the tiny model ties them
    largest = max(v.numel() for v in state.values())
    budget = 2 * largest * 2  # bf16: room for about two of the largest weights per bucket
    export = export_weights(model, dtype=torch.bfloat16, bucket_bytes=budget)
    packed = export.packed
    assert sorted(packed) == sorted(state) and len(packed) == len(state)
    assert len(packed.buckets) > 1
    for bucket in packed.buckets:
        flat = bucket.open()
        assert flat.dtype == torch.bfloat16
        assert flat.numel() * 2 <= budget or len({e.offset for e in bucket.entries}) == 1
    for name, value in state.items():
        assert packed[name].shape == value.shape
        torch.testing.assert_close(packed[name], value.to(torch.bfloat16), rtol=0, atol=0, msg=name)
    tied = [(b, e.offset) for b, bucket in enumerate(packed.buckets) for e in bucket.entries
            if e.name in ("lm_head.weight", "model.embed_tokens.weight")]
    assert len(tied) == 2 and tied[0] == tied[1]
    unique = {v.data_ptr(): v for v in state.values()}
    assert len(unique) == len(state) - 1
    assert sum(b.open().numel() for b in packed.buckets) == sum(v.numel() for v in unique.values())
    assert packed.nbytes == sum(b.open().numel() * 2 for b in packed.buckets)


def test_ipc_needs_a_gpu_and_bad_handles_say_so(config_for):
    export = export_weights(_model(config_for()), dtype=None)
    with pytest.raises(ValueError, match="host path"):
        export.share(ipc=True)

    def unopenable(*_):
        raise RuntimeError("invalid device context")

    bucket = WeightBucket((BucketEntry("w", (2,), 0),), ipc=(unopenable, ()))
    with pytest.raises(WeightMappingError, match="invalid device context"):
        PackedWeights([bucket])["w"]
    with pytest.raises(ValueError, match="either"):
        WeightBucket((), tensor=torch.zeros(1), ipc=(unopenable, ()))


async def test_device_sync_puts_the_trained_actor_into_a_paged_engine(config_for, trajectories, tiny_model_path):
    config = config_for("trainer.use_ray=false", "algorithm.adv_estimator=grpo")
    engine = PagedEngine(tiny_model_path, PagedEngineConfig(device="cpu", dtype="float32", block_size=4,
                                                            max_batch_size=4, max_model_len=64, num_blocks=64,
                                                            intra_op_threads=1))
    await engine.start()
    trainer = RLTrainer(config, rollout=CallableRollout(lambda rows, step: [], engine), weight_transport="device")
    try:
        await trainer.train_step(trajectories)
        expected = await trainer.actor_state_dict()
        before = {k: v.clone() for k, v in engine.model.state_dict().items()}
        assert any(not torch.equal(before[k], expected[k]) for k in expected)
        await trainer.sync_weights()
        got = engine.model.state_dict()
        for name, value in expected.items():
            torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=name)
        assert engine.stats.weight_version == 1
        assert trainer.workers.worker._export is None  # the buckets were released after the engine copied them
    finally:
        trainer.close()
        await engine.close()


def test_weight_transport_is_checked(config_for):
    with pytest.raises(ValueError, match="weight_transport"):
        RLTrainer(config_for(), weight_transport="nccl")
