"""The main job: teach a small locally built model to use a tool, end to end, on one CPU machine.

1. Build a small Qwen2-architecture model and its tokenizer from scratch (no downloads).
2. Warm-up SFT on tool-use transcripts of the arithmetic environment, rendered token-exact by the agent loop
   from the ideal policy (call the calculator with the task's expression, answer with its result).
3. GRPO with the calculator tool and the teacher interaction: rollouts by the in-process engine, updates by
   the FSDP actor in a local Ray worker, weights synced back to the engine after every step.
4. Held-out accuracy before and after RL (greedy), the share of episodes that used the tool correctly,
   trajectories, metrics and a reward-curve PNG in the run directory.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

from agentgym.config import load_config
from agentgym.config.schema import AgentGymConfig
from agentgym.interactions.registry import load_interactions
from agentgym.rollout.agent_loop import AgentLoop
from agentgym.rollout.collect import agent_loop_config
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.rollout.trajectory import Trajectory
from agentgym.rollout.trajectory_io import write_jsonl
from agentgym.tools.registry import build_tools, load_tool_specs
from environments.arithmetic import ENV_DIR, INTERACTION_CONFIG, TOOL_CONFIG
from environments.arithmetic.data import ArithmeticTaskConfig, make_rows
from environments.arithmetic.solver import ideal_script

TRAIN_CONFIG = ENV_DIR / "quickstart.yaml"


@dataclass(frozen=True)
class QuickstartSettings:
    run_dir: Path
    seed: int = 0
    model_size: str = "tiny"
    sft_rows: int = 512
    sft_epochs: int = 12
    sft_batch_size: int = 16
    sft_lr: float = 2e-3
    rl_steps: int = 12
    eval_rows: int = 64
    min_digits: int = 1
    max_digits: int = 2
    overrides: tuple[str, ...] = ()


@dataclass
class EvalResult:
    accuracy: float
    first_try_accuracy: float
    tool_use_correct: float
    mean_reward: float
    trajectories: list[Trajectory]


def tool_used_correctly(traj: Trajectory) -> bool:
    """At least one tool call ran without error and returned the task's answer."""
    truth = str((traj.extra_info.get("interaction_kwargs") or {}).get("ground_truth"))
    return any(m["role"] == "tool" and (m.get("content") or "").strip() == truth for m in traj.messages)


def evaluate(trajs: Sequence[Trajectory]) -> EvalResult:
    n = max(len(trajs), 1)
    return EvalResult(
        accuracy=sum(t.final_score > 0 for t in trajs) / n,
        first_try_accuracy=sum(t.final_score >= 1.0 for t in trajs) / n,
        tool_use_correct=sum(tool_used_correctly(t) for t in trajs) / n,
        mean_reward=sum(t.reward for t in trajs) / n,
        trajectories=list(trajs),
    )


class Quickstart:
    def __init__(self, settings: QuickstartSettings, console: Console):
        self.s = settings
        self.console = console
        self.tools = build_tools(load_tool_specs(TOOL_CONFIG))
        self.interactions = load_interactions(INTERACTION_CONFIG)
        task = dict(min_digits=settings.min_digits, max_digits=settings.max_digits, seed=settings.seed)
        self.sft_rows = make_rows(ArithmeticTaskConfig(num_rows=settings.sft_rows, split="sft", **task))
        self.train_rows = make_rows(ArithmeticTaskConfig(num_rows=256, split="train", **task))
        self.eval_rows = make_rows(ArithmeticTaskConfig(num_rows=settings.eval_rows, split="test", **task))

    def config(self, model_path: Path, stage: str, extra: Sequence[str] = ()) -> AgentGymConfig:
        return load_config(
            TRAIN_CONFIG,
            [
                f"actor_rollout_ref.model.path={model_path}",
                f"trainer.default_local_dir={self.s.run_dir / stage}",
                f"data.seed={self.s.seed}",
                *extra,
                *self.s.overrides,
            ],
        )

    def loop(self, engine: Any, tokenizer: Any, cfg: AgentGymConfig, *, temperature: float) -> AgentLoop:
        config = agent_loop_config(cfg, temperature=temperature, seed=self.s.seed)
        return AgentLoop(engine, tokenizer, self.tools, self.interactions, config)

    async def run(self) -> tuple[EvalResult, EvalResult]:
        from transformers import AutoTokenizer

        from agentgym.models import build_tiny_model
        from agentgym.rollout.engines.transformers_engine import TransformersEngine
        from agentgym.trainer.driver import RLTrainer
        from agentgym.trainer.sft import SFTTrainer
        from agentgym.trainer.tracking import MetricsTracker

        s, console = self.s, self.console
        s.run_dir.mkdir(parents=True, exist_ok=True)
        init_path = build_tiny_model(s.run_dir / "models", size=s.model_size, seed=s.seed)
        tokenizer = AutoTokenizer.from_pretrained(init_path)
        console.print(f"[bold]1. model[/bold] {init_path}")

        sft_cfg = self.config(
            init_path, "sft", [f"actor_rollout_ref.actor.optim.lr={s.sft_lr}", f"data.train_batch_size={s.sft_batch_size}",
                               f"actor_rollout_ref.actor.ppo_mini_batch_size={s.sft_batch_size}"]
        )
        transcripts = await self.loop(
            ScriptedEngine(tokenizer, ideal_script(self.sft_rows, "sft-")), tokenizer, sft_cfg, temperature=1.0
        ).run_batch(self.sft_rows, group_prefix="sft-")
        bad = [t for t in transcripts if t.failed or t.final_score < 1.0]
        if bad:
            raise RuntimeError(f"{len(bad)} warm-up transcripts did not solve their task; first: {bad[0].error or bad[0].messages}")
        write_jsonl(transcripts, s.run_dir / "sft_transcripts.jsonl")
        console.print(f"[bold]2. warm-up SFT[/bold] on {len(transcripts)} tool-use transcripts, {s.sft_epochs} epochs")
        sft = SFTTrainer(sft_cfg, total_steps=s.sft_epochs * len(transcripts) // s.sft_batch_size)
        started = time.perf_counter()
        try:
            history = await sft.train(transcripts, batch_size=s.sft_batch_size, epochs=s.sft_epochs, shuffle_seed=s.seed)
            state = (await sft.workers.call("actor_state_dict"))[0]
        finally:
            sft.close()
        console.print("   SFT loss per epoch: " + ", ".join(f"{h.get('sft/loss', float('nan')):.3f}" for h in history)
                      + f" ({time.perf_counter() - started:.0f}s)")
        sft_path = save_model(init_path, state, s.run_dir / "models" / "sft")

        rl_cfg = self.config(sft_path, "rl", [f"trainer.total_training_steps={s.rl_steps}"])
        engine = TransformersEngine(sft_path)
        await engine.start()
        try:
            greedy = self.loop(engine, tokenizer, rl_cfg, temperature=0.0)
            before = evaluate(await greedy.run_batch(self.eval_rows, group_prefix="eval-"))
            console.print(f"[bold]3. held-out before RL[/bold]: accuracy {before.accuracy:.1%}, tool used correctly {before.tool_use_correct:.1%}")

            sampler = self.loop(engine, tokenizer, rl_cfg, temperature=rl_cfg.actor_rollout_ref.rollout.temperature)
            rollouts = s.run_dir / "rl_trajectories.jsonl"
            rollouts.unlink(missing_ok=True)

            async def collect(rows: list[dict[str, Any]], step: int) -> list[Trajectory]:
                trajs = await sampler.run_batch(rows, n=rl_cfg.actor_rollout_ref.rollout.n, group_prefix=f"step{step}-")
                write_jsonl(trajs, rollouts, append=True)
                return trajs

            trainer = RLTrainer(rl_cfg, collect=collect, engine=engine, dataset=self.train_rows)
            console.print(f"[bold]4. GRPO[/bold]: {s.rl_steps} steps x {rl_cfg.data.train_batch_size} prompts x {rl_cfg.actor_rollout_ref.rollout.n} samples")
            tracker = MetricsTracker(s.run_dir / "rl", rl_cfg.trainer.logger, trainer.total_steps)
            try:
                await trainer.fit(tracker)
            finally:
                tracker.close()
                trainer.close()
            after = evaluate(await greedy.run_batch(self.eval_rows, group_prefix="eval-"))
        finally:
            await engine.close()
        write_jsonl(before.trajectories, s.run_dir / "eval_before.jsonl")
        write_jsonl(after.trajectories, s.run_dir / "eval_after.jsonl")
        return before, after


def save_model(init_path: Path, state_dict: dict[str, Any], out: Path) -> Path:
    """A loadable HF model directory holding the trained weights (config and tokenizer from the initial model)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(init_path)
    model.load_state_dict(state_dict, strict=True)
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    for item in Path(init_path).iterdir():
        if item.is_file() and not (out / item.name).exists():
            shutil.copy(item, out / item.name)
    return out


def run_quickstart(settings: QuickstartSettings, console: Console) -> int:
    started = time.perf_counter()
    before, after = asyncio.run(Quickstart(settings, console).run())
    table = Table(title=f"held-out results ({settings.eval_rows} tasks, greedy)")
    for column in ("", "accuracy", "first-try accuracy", "tool used correctly", "mean reward"):
        table.add_column(column)
    for name, result in (("after SFT, before RL", before), ("after RL", after)):
        table.add_row(name, f"{result.accuracy:.1%}", f"{result.first_try_accuracy:.1%}", f"{result.tool_use_correct:.1%}", f"{result.mean_reward:.3f}")
    console.print(table)
    summary = {
        "before": {k: v for k, v in vars(before).items() if k != "trajectories"},
        "after": {k: v for k, v in vars(after).items() if k != "trajectories"},
        "seconds": time.perf_counter() - started,
        "settings": {k: str(v) for k, v in vars(settings).items()},
    }
    (settings.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    try:
        from agentgym.trainer.plot import plot_run

        for png in plot_run(settings.run_dir / "rl", settings.run_dir):
            console.print(f"plot: {png}")
    except Exception as exc:  # a missing plot must not hide the results above
        console.print(f"[yellow]no plot: {exc}[/yellow]")
    from agentgym.viewer import write_view

    console.print(f"trajectory viewer: {write_view(settings.run_dir, limit=50)}")
    console.print(f"run directory: {settings.run_dir} ({summary['seconds']:.0f}s)")
    return 0
