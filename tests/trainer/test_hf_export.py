"""Checkpoints on shared storage: the directory is resolved once to an absolute path, a rank that cannot see it
stops the run at the start with the rank and host named, and `save_contents: [hf_model]` writes a Hugging Face
directory (bf16 safetensors, config, tokenizer, chat template) that loads back and gives the trainer's log-probs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from agentgym.errors import ConfigError
from agentgym.models import build_tiny_model
from agentgym.trainer.checkpoints import CheckpointManager
from agentgym.trainer.driver import RLTrainer
from agentgym.trainer.workers.worker import TrainWorker

from .test_resume import DATASET, SamplingEngine

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_with_tokenizer(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("hf_export_model"), size="tiny", seed=3)


def response_log_probs(model, trajectories) -> list[torch.Tensor]:
    out = []
    with torch.no_grad():
        for t in trajectories:
            ids = torch.tensor([t.prompt_ids + t.response_ids])
            logits = model(ids).logits[0].float()
            start = len(t.prompt_ids)
            picked = torch.log_softmax(logits[start - 1:-1], -1).gather(1, ids[0, start:, None])[:, 0]
            out.append(picked)
    return out


@pytest.mark.slow
async def test_hf_model_export_loads_back_with_the_trainers_log_probs(config_for, model_with_tokenizer, tmp_path,
                                                                      monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.chdir(tmp_path)  # a relative checkpoint directory is resolved here, once, by the driver
    config = config_for(f"actor_rollout_ref.model.path={model_with_tokenizer}", "trainer.use_ray=false",
                        "trainer.total_training_steps=2", "trainer.save_freq=2", "trainer.logger=[jsonl]",
                        "trainer.default_local_dir=ckpt",
                        "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]")
    engine = SamplingEngine(str(model_with_tokenizer))
    trainer = RLTrainer(config, collect=engine.collect, engine=engine, dataset=DATASET)
    try:
        assert trainer.checkpoint_root == tmp_path / "ckpt" and trainer.checkpoint_root.is_absolute()
        await trainer.fit()
        trajectories = engine.collect(DATASET[:2], 3)
        trainer_log_probs = await trainer.log_probs(trajectories)
        trainer_bf16 = await trainer.actor_state_dict(dtype="bfloat16")
    finally:
        trainer.close()

    hf = tmp_path / "ckpt" / "global_step_2" / "huggingface"
    names = {p.name for p in hf.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json"} <= names, names
    assert not (hf.parent / "huggingface.tmp").exists()
    saved_config = json.loads((hf / "config.json").read_text())
    assert saved_config.get("torch_dtype", saved_config.get("dtype")) == "bfloat16"

    tokenizer = AutoTokenizer.from_pretrained(hf)
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(model_with_tokenizer).chat_template
    assert "2+3" in tokenizer.apply_chat_template([{"role": "user", "content": "2+3"}], tokenize=False)

    model = AutoModelForCausalLM.from_pretrained(hf).eval()
    assert next(model.parameters()).dtype == torch.bfloat16
    exported = model.state_dict()
    for name, tensor in trainer_bf16.items():
        assert torch.equal(exported[name], tensor), name  # the trained weights, rounded to bf16, nothing else

    # The trainer's log-probs (fp32 weights) from the exported bf16 model: equal up to bf16 rounding of the weights.
    exported_log_probs = response_log_probs(model.float(), trajectories)
    for ours, theirs in zip(exported_log_probs, trainer_log_probs):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs.float(), atol=0.02, rtol=0.02)
    # ...and the export is the trained policy, not the initial one.
    initial = AutoModelForCausalLM.from_pretrained(model_with_tokenizer, dtype=torch.bfloat16).state_dict()
    assert any(not torch.equal(initial[name], exported[name]) for name in trainer_bf16)


class _TwoNodes:
    """Rank 0 in this process; rank 1 in a child process with its own mount namespace, where an empty tmpfs covers
    the checkpoint directory: a rank on a node that does not mount the shared storage."""

    async def call(self, method: str, **kwargs: Any) -> list[Any]:
        assert method == "probe_shared_dir"
        here = TrainWorker.probe_shared_dir(_Rank(0), **kwargs)
        code = ("import json, sys; from agentgym.trainer.workers.worker import TrainWorker\n"
                "class R: rank = 1\n"
                f"print(json.dumps(TrainWorker.probe_shared_dir(R(), {kwargs['directory']!r}, {kwargs['token']!r})))")
        child = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs none {kwargs['directory']} && "
                                f"exec {sys.executable} -c \"$0\"", code],
                               capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO)})
        assert child.returncode == 0, child.stderr
        return [here, json.loads(child.stdout)]


class _Rank:
    def __init__(self, rank: int):
        self.rank = rank


class _OneNode(_TwoNodes):
    async def call(self, method: str, **kwargs: Any) -> list[Any]:
        return [TrainWorker.probe_shared_dir(_Rank(0), **kwargs)]


async def test_a_rank_that_cannot_see_the_checkpoint_directory_stops_the_run_naming_it(config_for, tmp_path):
    config = config_for(f"trainer.default_local_dir={tmp_path / 'ckpt'}")
    ok = CheckpointManager(config, lambda: _OneNode())
    await ok.probe()
    assert list((tmp_path / "ckpt").iterdir()) == []  # the probe files are gone

    split = CheckpointManager(config, lambda: _TwoNodes())
    with pytest.raises(ConfigError) as caught:
        await split.probe()
    message = str(caught.value)
    assert f"the checkpoint directory {tmp_path / 'ckpt'} is not shared by every rank: rank 1 on " in message
    assert "FileNotFoundError" in message and "rank 0" not in message
    assert "trainer.default_local_dir" in message and "NFS" in message
    assert list((tmp_path / "ckpt").iterdir()) == []
