"""A sequence-classification reward model (verl's `reward_model.enable`): one scalar per conversation.

The model is any `AutoModelForSequenceClassification` directory with one label (`reward_model.model.path`). It
reads the trajectory's messages through its own tokenizer's chat template (so an RM with a vocabulary other than
the actor's works unchanged), keeps the end of a conversation longer than `reward_model.max_length`, and runs in
micro-batches of `reward_model.micro_batch_size_per_gpu`.

It runs as its own worker group: Ray actors separate from the trainer's ranks. With
`reward_model.enable_resource_pool=true` the group has `nnodes * n_gpus_per_node` actors with one GPU each (the
batch is split between them); otherwise one CPU actor. With `trainer.use_ray=false` the one worker runs in this
process, in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agentgym.errors import ConfigError
from agentgym.trajectory import Trajectory

log = logging.getLogger(__name__)


def conversation_text(tokenizer: Any, messages: Sequence[dict[str, Any]]) -> str:
    """The conversation as the reward model was trained to read it: its chat template, or role-tagged lines."""
    clean = [{"role": m.get("role", "user"), "content": m.get("content") or ""} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(clean, tokenize=False)
    return "\n".join(f"{m['role']}: {m['content']}" for m in clean)


class SequenceRewardWorker:
    """Holds the model on one device; `score` returns one float per conversation and what the work cost."""

    def __init__(self, path: str, *, device: str = "cpu", dtype: str = "float32", max_length: int | None = None,
                 micro_batch_size: int = 8, trust_remote_code: bool = False, num_threads: int | None = None) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.tokenizer.truncation_side = "left"  # the response is at the end: keep it
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code).to(self.device).eval()
        if self.model.config.num_labels != 1:
            raise ConfigError(f"reward model {path} has {self.model.config.num_labels} labels; a reward model "
                              f"gives one score per sequence (num_labels=1).", entry="reward_model.model.path")
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.max_length = max_length
        self.micro_batch_size = micro_batch_size

    def score(self, conversations: list[list[dict[str, Any]]]) -> tuple[list[float], int]:
        import torch

        texts = [conversation_text(self.tokenizer, c) for c in conversations]
        encoded = [self.tokenizer(t, add_special_tokens=False, truncation=self.max_length is not None,
                                  max_length=self.max_length)["input_ids"] for t in texts]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths share a micro-batch
        scores = [0.0] * len(encoded)
        with torch.no_grad():
            for start in range(0, len(order), self.micro_batch_size):
                chunk = order[start:start + self.micro_batch_size]
                batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in chunk]}, return_tensors="pt")
                logits = self.model(input_ids=batch["input_ids"].to(self.device),
                                    attention_mask=batch["attention_mask"].to(self.device)).logits
                for i, value in zip(chunk, logits[:, 0].float().tolist()):
                    scores[i] = value
        return scores, sum(len(e) for e in encoded)

    def ready(self) -> bool:
        return True


@dataclass
class SequenceRewardModel:
    """The reward model's worker group, as a reward component: batches go out split across its workers."""

    path: str
    num_workers: int = 1
    use_gpu: bool = False
    use_ray: bool = True
    worker_kwargs: dict[str, Any] = field(default_factory=dict)
    per_sample: bool = False
    _workers: list[Any] = field(default_factory=list, repr=False)
    _stats: list[tuple[int, int, float]] = field(default_factory=list, repr=False)

    @classmethod
    def from_config(cls, config: Any) -> SequenceRewardModel:
        rm = config.reward_model
        if not rm.model.path:
            raise ConfigError("a reward model needs a model.", entry="reward_model.model.path",
                              fix="set it to a local AutoModelForSequenceClassification directory (one label)")
        from agentgym.models.local_path import check_model_path

        check_model_path(rm.model.path, entry="reward_model.model.path")
        import torch

        use_gpu = rm.enable_resource_pool and config.trainer.device != "cpu" and torch.cuda.is_available()
        if rm.enable_resource_pool:
            num_workers = rm.nnodes * rm.n_gpus_per_node
            if num_workers < 1:
                raise ConfigError("reward_model.enable_resource_pool=true gives the reward model no GPUs.",
                                  entry="reward_model.n_gpus_per_node",
                                  fix="set reward_model.nnodes and reward_model.n_gpus_per_node to at least 1")
        else:
            num_workers = 1
        kwargs = {"device": "cuda" if use_gpu else "cpu", "dtype": "bfloat16" if use_gpu else "float32",
                  "max_length": rm.max_length, "micro_batch_size": rm.micro_batch_size_per_gpu or 8,
                  "trust_remote_code": rm.model.trust_remote_code}
        return cls(rm.model.path, num_workers, use_gpu, config.trainer.use_ray, kwargs)

    def _start(self) -> None:
        if self._workers:
            return
        if not self.use_ray:
            self._workers = [SequenceRewardWorker(self.path, **self.worker_kwargs)]
            return
        import ray

        if not ray.is_initialized():
            ray.init(include_dashboard=False)
        # A CPU reward worker shares the node with the trainer's ranks (which may hold every Ray CPU): it asks for
        # none, so it never waits behind them; GPU workers take their GPU and one CPU.
        remote = ray.remote(SequenceRewardWorker).options(num_cpus=1 if self.use_gpu else 0,
                                                          num_gpus=1 if self.use_gpu else 0)
        free = int(ray.available_resources().get("GPU", 0))
        if self.use_gpu and free < self.num_workers:
            raise ConfigError(f"the reward model asks for {self.num_workers} GPU(s) of its own but the Ray cluster "
                              f"has {free} free (the trainer's ranks hold theirs).",
                              entry="reward_model.n_gpus_per_node",
                              fix="lower reward_model.n_gpus_per_node/nnodes, or set enable_resource_pool=false")
        self._workers = [remote.remote(self.path, num_threads=None if self.use_gpu else 1, **self.worker_kwargs)
                         for _ in range(self.num_workers)]
        ray.get([w.ready.remote() for w in self._workers])

    async def score(self, trajectories: Sequence[Trajectory]) -> list[float]:
        if not trajectories:
            return []
        if not self._workers:
            await asyncio.to_thread(self._start)
        conversations = [list(t.messages) for t in trajectories]
        start = time.perf_counter()
        n = len(self._workers)
        size = -(-len(conversations) // n)
        chunks = [conversations[i:i + size] for i in range(0, len(conversations), size)]
        if self.use_ray:
            results = await asyncio.gather(*(w.score.remote(c) for w, c in zip(self._workers, chunks)))
        else:
            results = [await asyncio.to_thread(self._workers[0].score, chunks[0])]
        scores = [s for values, _ in results for s in values]
        self._stats.append((len(conversations), sum(tokens for _, tokens in results), time.perf_counter() - start))
        return scores

    def step_metrics(self) -> dict[str, float]:
        stats, self._stats = self._stats, []
        if not stats:
            return {}
        samples, tokens, seconds = (sum(s[i] for s in stats) for i in range(3))
        return {"reward_model/samples": float(samples), "reward_model/time_s": seconds,
                "reward_model/samples_per_s": samples / max(seconds, 1e-9),
                "reward_model/tokens_per_s": tokens / max(seconds, 1e-9)}

    def shutdown(self) -> None:
        if self.use_ray and self._workers:
            import ray

            for w in self._workers:
                ray.kill(w)
        self._workers = []
