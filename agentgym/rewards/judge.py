"""A generative judge (`reward_model.judge`): a model reads a prompt built from a template and writes a score.

The template is jinja2 with `prompt` (the row's first user message), `response` (the last assistant message),
`ground_truth` (the row's reward_model.ground_truth, or None), `messages` (the whole conversation) and
`max_score`. It is sent as one user message through the judge's own chat template, decoded greedily, and the
score is the last match of `score_pattern` (default: "Score: N"), divided by `max_score`. A judgement without
a score gives that trajectory 0 and an error record saying what the judge wrote.

The judge is served by our engines: the in-process one (`engine: transformers`) or SGLang (`engine: sglang`, a
running server at `url`, or one launched for `model_path`). Requests go out concurrently (up to
`max_concurrent`), so the engine batches them; `step_metrics` reports the throughput.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from agentgym.errors import ConfigError
from agentgym.rewards.functions import Scored
from agentgym.rollout.engines.base import SamplingParams
from agentgym.trajectory import Trajectory

DEFAULT_TEMPLATE = """Grade the assistant's answer to the question.

Question:
{{ prompt }}
{% if ground_truth is not none %}
Reference answer: {{ ground_truth }}
{% endif %}
Assistant's answer:
{{ response }}

Give a grade from 0 to {{ max_score }}; end with a line "Score: <grade>"."""

DEFAULT_SCORE_PATTERN = r"score\s*[:=]\s*\**\s*([-+]?\d+(?:\.\d+)?)"


def parse_score(text: str, pattern: re.Pattern[str]) -> float | None:
    """The last match's first group as a number, or None when the judgement holds no score."""
    matches = pattern.findall(text)
    if not matches:
        return None
    last = matches[-1]
    try:
        return float(last[0] if isinstance(last, tuple) else last)
    except ValueError:
        return None


def judge_inputs(traj: Trajectory) -> dict[str, Any]:
    messages = list(traj.messages)
    prompt = next((m.get("content") or "" for m in messages if m.get("role") == "user"), "")
    response = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "assistant"), "")
    reward_model = (traj.row_info or {}).get("reward_model")
    truth = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
    return {"prompt": prompt, "response": response, "ground_truth": truth, "messages": messages}


@dataclass
class GenerativeJudge:
    engine: Any
    tokenizer: Any
    template: jinja2.Template
    pattern: re.Pattern[str]
    max_score: float = 10.0
    max_new_tokens: int = 256
    max_concurrent: int = 32
    per_sample: bool = True
    _started: bool = False
    _lock: asyncio.Lock | None = None
    _slots: asyncio.Semaphore | None = None
    _log: list[tuple[float, float, int, bool]] = field(default_factory=list, repr=False)

    @classmethod
    def from_config(cls, config: Any) -> GenerativeJudge:
        from transformers import AutoTokenizer

        judge = config.reward_model.judge
        if not judge.model_path:
            raise ConfigError("the judge needs a model.", entry="reward_model.judge.model_path",
                              fix="set it to a local HF model directory (with engine=sglang, the served model's)")
        template_text = judge.template
        if judge.template_path:
            path = Path(judge.template_path).expanduser()
            if not path.exists():
                raise ConfigError(f"judge template {path} does not exist.", entry="reward_model.judge.template_path")
            template_text = path.read_text()
        try:
            template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(
                template_text or DEFAULT_TEMPLATE)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"the judge template does not parse: {exc}.", entry="reward_model.judge.template") from exc
        try:
            pattern = re.compile(judge.score_pattern or DEFAULT_SCORE_PATTERN, re.IGNORECASE)
        except re.error as exc:
            raise ConfigError(f"bad score_pattern: {exc}.", entry="reward_model.judge.score_pattern") from exc
        if pattern.groups < 1:
            raise ConfigError("score_pattern has no group for the score.", entry="reward_model.judge.score_pattern",
                              fix=r"put the number in parentheses, e.g. 'grade: (\d+)'")
        return cls(judge_engine(config), AutoTokenizer.from_pretrained(judge.model_path), template, pattern,
                   judge.max_score, judge.max_new_tokens, judge.max_concurrent)

    async def _ensure_started(self) -> None:
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if not self._started:
                await self.engine.start()
                self._started = True
                self._slots = asyncio.Semaphore(self.max_concurrent)

    async def _one(self, traj: Trajectory) -> Scored:
        try:
            text = self.template.render(max_score=self.max_score, **judge_inputs(traj))
        except jinja2.TemplateError as exc:
            return Scored(0.0, {}, f"the judge template failed on this trajectory: {exc}")
        ids = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                 tokenize=True, return_dict=False)
        sampling = SamplingParams(max_new_tokens=self.max_new_tokens, temperature=0.0)
        assert self._slots is not None
        async with self._slots:
            start = time.perf_counter()
            out = await self.engine.generate(list(ids), sampling, session_id=f"judge-{traj.uid}")
            end = time.perf_counter()
        judgement = self.tokenizer.decode(out.token_ids, skip_special_tokens=True)
        value = parse_score(judgement, self.pattern)
        self._log.append((start, end, len(out.token_ids), value is not None))
        if value is None:
            return Scored(0.0, {}, f"the judge's answer holds no score (score_pattern): {judgement[-200:]!r}")
        return Scored(value / self.max_score)

    async def score(self, trajectories: Sequence[Trajectory]) -> list[Scored]:
        await self._ensure_started()
        return list(await asyncio.gather(*(self._one(t) for t in trajectories)))

    def step_metrics(self) -> dict[str, float]:
        log, self._log = self._log, []
        if not log:
            return {}
        span = max(e for _, e, _, _ in log) - min(s for s, _, _, _ in log)
        tokens = sum(n for _, _, n, _ in log)
        return {"judge/requests": float(len(log)), "judge/time_s": span,
                "judge/requests_per_s": len(log) / max(span, 1e-9),
                "judge/generated_tokens_per_s": tokens / max(span, 1e-9),
                "judge/unparsed_fraction": sum(not ok for *_, ok in log) / len(log)}

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self.engine.close()


def judge_engine(config: Any) -> Any:
    """The judge's engine, built as the rollout's is (same checks and messages) from the judge's settings."""
    from agentgym.rollout.engines.registry import make_engine

    judge = config.reward_model.judge
    rollout = config.actor_rollout_ref.rollout
    engine_kwargs = dict(rollout.engine_kwargs)
    if judge.engine == "sglang" and judge.url:
        engine_kwargs["sglang"] = {"urls": [judge.url]}
    elif judge.engine == "sglang":
        engine_kwargs["sglang"] = {}
    judge_cfg = config.model_copy(deep=True)
    judge_cfg.actor_rollout_ref.model.path = judge.model_path
    judge_cfg.actor_rollout_ref.model.tokenizer_path = None
    judge_cfg.actor_rollout_ref.rollout.name = judge.engine
    judge_cfg.actor_rollout_ref.rollout.engine_kwargs = engine_kwargs
    return make_engine(judge_cfg)
