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
