"""The main job's machinery: teach a small locally built model to use a tool, end to end, on one CPU machine.

Tasks subclass `Quickstart` with their rows, tools and teacher (`agentgym_envs.arithmetic.quickstart` is the default
task) and register the class under the `agentgym.quickstart_tasks` entry-point group (see `agentgym.quickstart.tasks`).

1. Build a small Qwen2-architecture model and its tokenizer from scratch (no downloads).
2. Warm-up SFT on tool-use transcripts of an arithmetic environment, rendered token-exact by the agent loop
   from the ideal policy (run the task's expression in the tool, answer with its result).
3. GRPO with the code interpreter (the sandbox; or the calculator) and the teacher interaction: rollouts by the
   in-process engine, updates by the FSDP actor in a local Ray worker, weights synced back after every step.
4. Held-out accuracy before and after RL (greedy and sampled), the share of episodes that used the tool correctly,
   trajectories, metrics and a reward-curve PNG in the run directory.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

from agentgym.config import load_config
from agentgym.config.schema import AgentGymConfig
from agentgym.rollout.agent_loop import AgentLoop
from agentgym.rollout.build import agent_loop_config
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.trajectory import Trajectory
from agentgym.rollout.trajectory_io import write_jsonl
from agentgym.tools.embedded_sandbox import stop_embedded_sandboxes
from agentgym.tools.sandbox_fusion import aclose_http_sessions
from agentgym.utils.console import StageProgress
from agentgym.utils.shutdown import run_until_signal, stop_ray


@dataclass(frozen=True)
class QuickstartEnvironment:
    """What the main job needs of an environment: its tools, its rows (from a task config) and the ideal policy's
    tool call."""

    tool_config: Path
    make_rows: Callable[[Any], list[dict[str, Any]]]
    make_call: Callable[[str], dict[str, Any]]


@dataclass(frozen=True)
class QuickstartSettings:
    run_dir: Path
    seed: int = 0
    environment: str = "code_arith"
    model_size: str = "mini"
    sft_rows: int = 2048
    sft_epochs: int = 16
    # share of warm-up demonstrations that answer from memory instead of calling the tool
    direct_share: float = 0.5
    sft_batch_size: int = 16
    sft_lr: float = 3e-3
    rl_steps: int = 40
    eval_rows: int = 256
    min_digits: int = 1
    max_digits: int = 2
    # >0: a greedy held-out evaluation every `eval_every` GRPO steps, written to curve.jsonl with the RL wall time
    # spent so far (evaluations excluded): accuracy against time, for comparing trainers
    eval_every: int = 0
    overrides: tuple[str, ...] = ()


@dataclass
class EvalResult:
    accuracy: float
    first_try_accuracy: float
    tool_use_correct: float
    mean_reward: float
    trajectories: list[Trajectory]


def eval_name(stage: str, mode: str) -> str:
    """The held-out evaluation's name in summary.json and its file, eval_<name>.jsonl: greedy is the plain one."""
    return stage if mode == "greedy" else f"{stage}_{mode}"


def question(row: dict[str, Any]) -> str:
    return row["prompt"][-1]["content"]


def tool_used_correctly(traj: Trajectory) -> bool:
    """At least one tool call printed the task's answer as the last line of its output."""
    truth = str((traj.extra_info.get("interaction_kwargs") or {}).get("ground_truth"))
    return any(m["role"] == "tool" and (m.get("content") or "").strip().splitlines()[-1:] == [truth] for m in traj.messages)


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
    """The main job's flow (model, warm-up SFT, held-out evaluation, GRPO, evaluation again). A task subclasses it:
    its `__init__` sets `self.tools`, `self.interactions`, `self.eval_rows`, `self.sft_rows`, `self.train_rows` (and
    `self.env` for the default teacher), and it replaces the parts named below as it needs (teacher, evaluation,
    and for a vision-language task the model builder, the scripted teacher engine and the run config).

    `options`: the `agentgym quickstart` options the task takes besides the common ones; `settings()` builds the
    task's settings from them (a task with defaults of its own overrides it)."""

    train_config: Path
    processor: Any = None  # the model's VisionProcessor when it is a vision-language model (set by `run`)
    options: frozenset[str] = frozenset()
    sft_warmup_steps: int = 50  # learning-rate warm-up of the SFT (a short warm-up SFT wants fewer)
    tools: dict[str, Any]
    interactions: dict[str, Any]
    env: QuickstartEnvironment
    eval_rows: list[dict[str, Any]]
    sft_rows: list[dict[str, Any]]
    train_rows: list[dict[str, Any]]

    @classmethod
    def settings(cls, run_dir: Path, **given: Any) -> QuickstartSettings:
        return QuickstartSettings(run_dir=run_dir, **given)

    def __init__(self, settings: QuickstartSettings, console: Console):
        self.s = settings
        self.console = console
        if not 0.0 <= settings.direct_share <= 1.0:
            raise ValueError(f"direct_share is the share of warm-up demonstrations without a tool call, a number "
                             f"from 0 to 1; got {settings.direct_share}")

    def config(self, model_path: Path, stage: str, extra: Sequence[str] = ()) -> AgentGymConfig:
        """The stage's run config. `extra` (what the job's own settings give the stage: the warm-up's learning
        rate and batch, the GRPO step count) comes after the dotted overrides and wins: those are for the RL
        trainer's config, and an `optim.lr` meant for RL must not silently become the warm-up's learning rate."""
        return load_config(
            self.train_config,
            [
                f"actor_rollout_ref.model.path={model_path}",
                f"trainer.default_local_dir={self.s.run_dir / stage}",
                f"data.seed={self.s.seed}",
                *self.s.overrides,
                *extra,
            ],
        )

    def sft_config(self, init_path: Path) -> AgentGymConfig:
        s = self.s
        return self.config(
            init_path, "sft", [f"actor_rollout_ref.actor.optim.lr={s.sft_lr}", f"data.train_batch_size={s.sft_batch_size}",
                               f"actor_rollout_ref.actor.ppo_mini_batch_size={s.sft_batch_size}",
                               f"actor_rollout_ref.actor.optim.lr_warmup_steps={self.sft_warmup_steps}",
                               "actor_rollout_ref.actor.optim.warmup_style=cosine",
                               "actor_rollout_ref.actor.optim.min_lr_ratio=0.1"]
        )

    def rl_config(self, model_path: Path) -> AgentGymConfig:
        return self.config(model_path, "rl", [f"trainer.total_training_steps={self.s.rl_steps}"])

    def demonstration_script(self, direct_rows: set[int]) -> Callable[[str, str | None], str]:
        """The warm-up teacher as a ScriptedEngine script over `self.sft_rows`; rows in `direct_rows` are answered
        without the tool."""
        raise NotImplementedError(f"{type(self).__name__} must define its warm-up teacher (demonstration_script)")

    def evaluate(self, trajs: Sequence[Trajectory]) -> EvalResult:
        return evaluate(trajs)

    def build_model(self) -> Path:
        from agentgym.models import build_tiny_model

        return build_tiny_model(self.s.run_dir / "models", size=self.s.model_size, seed=self.s.seed)

    def teacher_engine(self, tokenizer: Any, script: Callable[[str, str | None], str]) -> Any:
        """The engine that plays the warm-up teacher's script through the agent loop."""
        return ScriptedEngine(tokenizer, script)

    def failed_demonstrations(self, transcripts: Sequence[Trajectory]) -> list[Trajectory]:
        """Warm-up transcripts that did not solve their task (the teacher interaction judged them)."""
        return [t for t in transcripts if t.failed or t.final_score < 1.0]

    def loop(self, engine: Any, tokenizer: Any, cfg: AgentGymConfig, *, temperature: float) -> AgentLoop:
        config = agent_loop_config(cfg, temperature=temperature, seed=self.s.seed)
        return AgentLoop(engine, tokenizer, self.tools, self.interactions, config, processor=self.processor)

    async def warm_up(self, init_path: Path, tokenizer: Any, phase_done: Callable[[str], None]) -> Path:
        """Warm-up SFT on the teacher's transcripts; returns the warmed-up model's directory."""
        from agentgym.trainer.sft import SFTTrainer

        s, console = self.s, self.console
        sft_cfg = self.sft_config(init_path)
        direct = set(random.Random(s.seed).sample(range(len(self.sft_rows)), round(s.direct_share * len(self.sft_rows))))
        script = self.demonstration_script(direct)
        transcripts = await self.loop(self.teacher_engine(tokenizer, script), tokenizer, sft_cfg, temperature=1.0).run_batch(
            self.sft_rows, group_prefix="sft-"
        )
        bad = self.failed_demonstrations(transcripts)
        if bad:
            raise RuntimeError(f"{len(bad)} warm-up transcripts did not solve their task; first: {bad[0].error or bad[0].messages}")
        write_jsonl(transcripts, s.run_dir / "sft_transcripts.jsonl")
        phase_done("demonstrations")
        console.print(f"[bold]2. warm-up SFT[/bold] on {len(transcripts)} transcripts ({len(direct)} answer from memory, "
                      f"the rest call the tool), {s.sft_epochs} epochs")
        sft = SFTTrainer(sft_cfg, total_steps=s.sft_epochs * len(transcripts) // s.sft_batch_size)
        started = time.perf_counter()
        with StageProgress(console, "warm-up SFT epochs", s.sft_epochs, loss="") as progress:

            def epoch_done(epoch: int, metrics: dict[str, float]) -> None:
                progress.update(epoch + 1, loss=f"loss {metrics.get('sft/loss', float('nan')):.3f}")

            try:
                history = await sft.train(transcripts, batch_size=s.sft_batch_size, epochs=s.sft_epochs,
                                          shuffle_seed=s.seed, on_epoch=epoch_done)
                state = (await sft.workers.call("actor_state_dict"))[0]
            finally:
                sft.close()
        console.print("   SFT loss per epoch: " + ", ".join(f"{h.get('sft/loss', float('nan')):.3f}" for h in history)
                      + f" ({time.perf_counter() - started:.0f}s)")
        sft_path = save_model(init_path, state, s.run_dir / "models" / "sft")
        phase_done("sft")
        return sft_path

    async def run(self) -> dict[str, dict[str, EvalResult]]:
        from transformers import AutoTokenizer

        from agentgym.multimodal.processor import load_vision_processor
        from agentgym.rollout.engines.registry import make_engine
        from agentgym.trainer.driver import RLTrainer
        from agentgym.trainer.tracking import MetricsTracker

        s, console = self.s, self.console
        s.run_dir.mkdir(parents=True, exist_ok=True)
        self.phase_seconds: dict[str, float] = {}
        clock = [time.perf_counter()]

        def phase_done(name: str) -> None:
            now = time.perf_counter()
            self.phase_seconds[name] = round(now - clock[0], 1)
            clock[0] = now

        init_path = self.build_model()
        tokenizer = AutoTokenizer.from_pretrained(init_path)
        self.processor = load_vision_processor(init_path)
        console.print(f"[bold]1. model[/bold] {init_path}")
        phase_done("model")

        if s.sft_epochs == 0:
            # No warm-up: RL starts from the model as built (a pretrained instruct model, for instance).
            sft_path = init_path
            console.print("[bold]2. warm-up SFT[/bold]: skipped (sft_epochs=0), RL starts from the model as it is")
        else:
            sft_path = await self.warm_up(init_path, tokenizer, phase_done)

        rl_cfg = self.rl_config(sft_path)
        engine = make_engine(rl_cfg)
        await engine.start()
        try:
            greedy = self.loop(engine, tokenizer, rl_cfg, temperature=0.0)
            sampler = self.loop(engine, tokenizer, rl_cfg, temperature=rl_cfg.actor_rollout_ref.rollout.temperature)

            async def held_out(stage: str) -> dict[str, EvalResult]:
                results = {}
                for mode, loop in (("greedy", greedy), ("sampled", sampler)):
                    results[mode] = self.evaluate(await loop.run_batch(self.eval_rows, group_prefix="eval-"))
                    write_jsonl(results[mode].trajectories, s.run_dir / f"eval_{eval_name(stage, mode)}.jsonl")
                return results

            before = await held_out("before")
            phase_done("eval_before")
            console.print(f"[bold]3. held-out before RL[/bold]: accuracy {before['greedy'].accuracy:.1%} greedy, "
                          f"{before['sampled'].accuracy:.1%} sampled; tool used correctly {before['greedy'].tool_use_correct:.1%}")
            rollouts = s.run_dir / "rl_trajectories.jsonl"
            rollouts.unlink(missing_ok=True)
            curve = s.run_dir / "curve.jsonl"
            curve.unlink(missing_ok=True)
            rl_started, eval_seconds = time.perf_counter(), [0.0]

            async def point(step: int, results: dict[str, EvalResult] | None = None, at: float | None = None) -> None:
                """One point of accuracy against RL wall time (the time of the evaluations left out), greedy and
                sampled: a warm-up can saturate greedy accuracy while sampled accuracy still has room to rise."""
                started = time.perf_counter() if at is None else at
                if results is None:
                    results = {mode: self.evaluate(await loop.run_batch(self.eval_rows, group_prefix="eval-"))
                               for mode, loop in (("greedy", greedy), ("sampled", sampler))}
                wall = started - rl_started - eval_seconds[0]
                if at is None:
                    eval_seconds[0] += time.perf_counter() - started
                g, sampled = results["greedy"], results["sampled"]
                with curve.open("a") as f:
                    f.write(json.dumps({"step": step, "rl_seconds": round(wall, 2), "accuracy": g.accuracy,
                                        "tool_use_correct": g.tool_use_correct, "sampled_accuracy": sampled.accuracy,
                                        "sampled_tool_use_correct": sampled.tool_use_correct}) + "\n")

            if s.eval_every > 0:
                await point(0, before)

            async def collect(rows: list[dict[str, Any]], step: int) -> list[Trajectory]:
                if s.eval_every > 0 and step > 1 and (step - 1) % s.eval_every == 0:
                    await point(step - 1)
                trajs = await sampler.run_batch(rows, n=rl_cfg.actor_rollout_ref.rollout.n, group_prefix=f"step{step}-")
                write_jsonl(trajs, rollouts, append=True)
                return trajs

            trainer = RLTrainer(rl_cfg, collect=collect, engine=engine, dataset=self.train_rows)
            console.print(f"[bold]4. GRPO[/bold]: {s.rl_steps} steps x {rl_cfg.data.train_batch_size} prompts x "
                          f"{rl_cfg.actor_rollout_ref.rollout.n} samples")
            tracker = MetricsTracker.for_config(s.run_dir / "rl", rl_cfg, trainer.total_steps)
            try:
                await trainer.fit(tracker)
            finally:
                tracker.close()
                trainer.close()
            rl_ended = time.perf_counter()
            phase_done("rl")
            after = await held_out("after")
            if s.eval_every > 0:
                await point(s.rl_steps, after, at=rl_ended)
            phase_done("eval_after")
        finally:
            await engine.close()
            await aclose_http_sessions()
        return {"before": before, "after": after}


def save_model(init_path: Path, state_dict: dict[str, Any], out: Path) -> Path:
    """A loadable HF model directory holding the trained weights (config and tokenizer from the initial model)."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from agentgym.multimodal.processor import VisionProcessor

    auto = AutoModelForImageTextToText if VisionProcessor.is_vision_model(init_path) else AutoModelForCausalLM
    model = auto.from_pretrained(init_path)
    model.load_state_dict(state_dict, strict=True)
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    for item in Path(init_path).iterdir():
        if item.is_file() and not (out / item.name).exists():
            shutil.copy(item, out / item.name)
    return out


def run_quickstart(settings: QuickstartSettings, console: Console, job: Quickstart) -> int:
    """Run the job, then print and save its results."""
    started = time.perf_counter()
    results = run_until_signal(job.run(), what="the quickstart", on_interrupt=[stop_ray, stop_embedded_sandboxes])
    table = Table(title=f"held-out results ({settings.eval_rows} tasks never trained on)")
    for column in ("", "decoding", "accuracy", "first-try accuracy", "tool used correctly", "mean reward"):
        table.add_column(column)
    for stage, name in (("before", "after SFT, before RL"), ("after", "after RL")):
        for mode, result in results[stage].items():
            table.add_row(name, mode, f"{result.accuracy:.1%}", f"{result.first_try_accuracy:.1%}",
                          f"{result.tool_use_correct:.1%}", f"{result.mean_reward:.3f}")
    console.print(table)
    summary: dict[str, Any] = {
        eval_name(stage, mode): {k: v for k, v in vars(result).items() if k != "trajectories"}
        for stage, by_mode in results.items() for mode, result in by_mode.items()
    }
    summary.update(seconds=time.perf_counter() - started, phase_seconds=getattr(job, "phase_seconds", {}),
                   settings={k: str(v) for k, v in vars(settings).items()})
    (settings.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    try:
        from agentgym.trainer.plot import plot_run

        for png in plot_run(settings.run_dir / "rl", settings.run_dir):
            console.print(f"plot: {png}")
    except Exception as exc:  # a missing plot must not hide the results above
        console.print(f"[yellow]no plot: {exc}[/yellow]")
    from agentgym.report.viewer import write_view

    console.print(f"trajectory viewer: {write_view(settings.run_dir, limit=50)}")
    console.print(f"run directory: {settings.run_dir} ({summary['seconds']:.0f}s)")
    return 0
