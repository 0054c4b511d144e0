"""Fixtures for trainer tests: a tiny Qwen2 model saved to disk (loaded back through from_pretrained by the
workers, like a real run), toy trajectories, and one Ray runtime shared by the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from agentgym.config import load_config
from agentgym.trajectory import Trajectory

VOCAB = 48


def build_tiny_qwen2(out_dir: Path, seed: int = 0) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=0,
        eos_token_id=1, bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    return str(build_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2")))


def make_config(model_path: str, *overrides: str, **kw):
    base = [
        f"actor_rollout_ref.model.path={model_path}",
        "actor_rollout_ref.model.attn_implementation=eager",
        "trainer.device=cpu",
        "data.train_batch_size=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "actor_rollout_ref.actor.optim.lr=1e-2",
        "actor_rollout_ref.actor.optim.weight_decay=0.0",
        "data.max_response_length=8",
    ]
    return load_config(None, [*base, *overrides])


def toy_trajectories() -> list[Trajectory]:
    """Two prompts x two samples; in each group one response is rewarded. Multi-turn: a tool span (mask 0) sits
    between two model spans in some samples."""
    def traj(uid, group, prompt, response, mask, score):
        return Trajectory(uid=uid, group_id=group, prompt_ids=prompt, response_ids=response, loss_mask=mask,
                          rollout_logprobs=[0.0] * len(response), final_score=score)

    return [
        traj("a0", "a", [2, 3, 4], [5, 6, 7, 8], [1, 1, 1, 1], 1.0),
        traj("a1", "a", [2, 3, 4], [9, 10, 11], [1, 1, 1], 0.0),
        traj("b0", "b", [12, 13], [14, 15, 30, 31, 16, 17], [1, 1, 0, 0, 1, 1], 0.0),
        traj("b1", "b", [12, 13], [18, 19, 32, 20], [1, 1, 0, 1], 1.0),
    ]


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray runtime per test session (the CI box has 2 cores; starting Ray is the slow part)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}})
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def trajectories() -> list[Trajectory]:
    return toy_trajectories()


@pytest.fixture
def config_for(tiny_model_path):
    """config_for(*overrides) -> AgentGymConfig on the tiny model, CPU, tiny batch sizes."""
    return lambda *overrides: make_config(tiny_model_path, *overrides)
