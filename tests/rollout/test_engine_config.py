"""Where the in-process engine runs follows the trainer (CUDA: rollout.dtype, torch threading; CPU: fp32, one
thread), and `rollout.engine_kwargs.transformers` overrides it or is refused naming the bad key."""

import pytest

from agentgym.config import load_config
from agentgym.errors import ConfigError
from agentgym.rollout.engines.registry import in_process_engine_config


def test_cpu_keeps_the_engine_defaults():
    cfg = in_process_engine_config(load_config(None, ["trainer.device=cpu"]))
    assert (cfg.device, cfg.dtype, cfg.intra_op_threads) == ("cpu", "float32", 1)


def test_cuda_trainer_puts_the_engine_on_cuda_in_rollout_dtype():
    cfg = in_process_engine_config(load_config(None, ["trainer.device=cuda", "actor_rollout_ref.rollout.dtype=fp16"]))
    assert (cfg.device, cfg.dtype, cfg.intra_op_threads) == ("cuda", "float16", None)
    cfg = in_process_engine_config(load_config(None, ["trainer.device=cuda"]))
    assert cfg.dtype == "bfloat16"


def test_engine_kwargs_override_and_unknown_keys_are_refused():
    cfg = in_process_engine_config(load_config(None, [
        "trainer.device=cuda", "+actor_rollout_ref.rollout.engine_kwargs.transformers.max_batch_size=256",
        "+actor_rollout_ref.rollout.engine_kwargs.transformers.dtype=float32"]))
    assert (cfg.max_batch_size, cfg.dtype, cfg.device) == (256, "float32", "cuda")
    with pytest.raises(ConfigError, match="max_batchsize"):
        in_process_engine_config(load_config(None, [
            "+actor_rollout_ref.rollout.engine_kwargs.transformers.max_batchsize=2"]))


def test_paged_engine_on_cpu_reserves_kv_for_one_steps_batch_not_max_num_seqs():
    """On CPU the KV cache is host memory taken at start: sized by max_num_seqs (1,024) for a real model it is tens of
    GB (a SmolLM2 run was killed for memory), so it defaults to train_batch_size * n sequences; the key overrides."""
    paged = "+actor_rollout_ref.rollout.engine_kwargs.transformers.backend=paged"
    cfg = in_process_engine_config(load_config(None, [
        "trainer.device=cpu", paged, "data.train_batch_size=8", "actor_rollout_ref.rollout.n=2"]))
    assert (cfg.kv_cache_sequences, cfg.max_batch_size) == (16, 1024)
    cfg = in_process_engine_config(load_config(None, [
        "trainer.device=cpu", paged, "data.train_batch_size=8", "actor_rollout_ref.rollout.n=2",
        "+actor_rollout_ref.rollout.engine_kwargs.transformers.kv_cache_sequences=2"]))
    assert cfg.kv_cache_sequences == 2
    cfg = in_process_engine_config(load_config(None, [
        "trainer.device=cpu", paged, "data.train_batch_size=64", "actor_rollout_ref.rollout.n=8",
        "actor_rollout_ref.rollout.max_num_seqs=100"]))
    assert cfg.kv_cache_sequences == 100  # never more than the engine may run at once
    cuda = in_process_engine_config(load_config(None, ["trainer.device=cuda"]))
    assert cuda.kv_cache_sequences is None  # on CUDA gpu_memory_utilization sizes it
