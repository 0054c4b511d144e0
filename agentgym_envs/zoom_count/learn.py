"""The zoom-count task as the main job's VLM mode: `python3 -m agentgym quickstart --task zoom_count`.

The main job's flow (`agentgym.quickstart`: local model, warm-up SFT on transcripts the agent loop renders
token-exact, held-out accuracy, GRPO, held-out accuracy again) with a tiny Qwen2.5-VL built here, pictures of red
squares in the prompt, the `image_zoom_in` tool returning crops as images, and the VLM rewards. The warm-up teacher
always zooms (on the lattice box that holds the shapes) and then answers with the true count.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.console import Console

from agentgym.config.schema import AgentGymConfig
from agentgym.quickstart import EvalResult, Quickstart, QuickstartSettings
from agentgym.rewards.vlm import compute_score
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.trajectory import Trajectory
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym_envs.zoom_count.data import ZoomCountTaskConfig, box_holds, demonstration, make_rows

ENV_DIR = Path(__file__).resolve().parent
TRAIN_CONFIG = ENV_DIR / "quickstart.yaml"
TOOL_CONFIG = ENV_DIR.parents[1] / "tool_configs" / "image_zoom_in.yaml"
# Sized for the 2-core machine's 15 minutes: 299-589 s there (benchmarks/learning.md, "VLM quickstart"). Fewer warm-up
# steps (256 x 6) leave the SFT loss at 3.7 and the model without the transcripts' format.
DEFAULTS: dict[str, Any] = dict(environment="zoom_count", model_size="tiny-vl", sft_rows=512, sft_epochs=8,
                                direct_share=0.0, rl_steps=16, eval_rows=64, sft_lr=3e-3)


class TeacherEngine(ScriptedEngine):
    """The scripted teacher, taking (and not looking at) the images the agent loop passes a vision model."""

    takes_images = True

    async def generate(self, prompt_ids: list[int], sampling: Any, *, session_id: str | None = None,
                       images: Any = None) -> Any:
        return await super().generate(prompt_ids, sampling, session_id=session_id)


def teacher_script(rows: Sequence[dict[str, Any]], group_prefix: str, demonstrate: Callable[..., list[dict]],
                   direct_rows: set[int] = frozenset()) -> Callable[[str, str | None], str]:
    """Replays `demonstrate(row)` (`demonstrate(row, direct=True)` for `direct_rows`); rows may ask the same words,
    so the row is found by the episode's uid."""

    def script(conversation: str, session_id: str | None) -> str:
        index = int(str(session_id).removeprefix(group_prefix).split("-")[0])
        turns = demonstrate(rows[index], direct=True) if index in direct_rows else demonstrate(rows[index])
        return (turns[-1] if "<tool_response>" in conversation else turns[0])["content"]

    return script


def truth(traj: Trajectory) -> str:
    return str(traj.row_info["reward_model"]["ground_truth"])


def boxed_answer_right(traj: Trajectory) -> bool:
    """The final answer's last `\\boxed{}` holds the truth (strict: the rule reward's last-number fallback would
    also pay `\\box_, 1}`, which GRPO finds)."""
    import re

    boxed = re.findall(r"\\boxed\{([^{}]*)\}", final_answer(traj))
    return bool(boxed) and boxed[-1].strip() == truth(traj)


def final_answer(traj: Trajectory) -> str:
    replies = [m.get("content") for m in traj.messages if m["role"] == "assistant"]
    return replies[-1] if replies and isinstance(replies[-1], str) else ""


def called_a_tool(traj: Trajectory) -> bool:
    return any(message["role"] == "tool" for message in traj.messages)


def zoomed_on_region(traj: Trajectory) -> bool:
    """A zoom call returned a crop holding every shape (the tool's reply names the box it cropped)."""
    import re

    region = traj.extra_info["region"]
    for message in traj.messages:
        if message["role"] != "tool":
            continue
        parts = message.get("content")
        texts = [p.get("text", "") for p in parts if isinstance(p, dict)] if isinstance(parts, list) else [parts or ""]
        for text in texts:
            for box in re.findall(r"Zoomed in on \[(\d+), (\d+), (\d+), (\d+)\]", text):
                if box_holds([int(v) for v in box], region):
                    return True
    return False


class ZoomCountQuickstart(Quickstart):
    """The main job on zoom-count rows with a tiny vision-language model. Held-out rows come from their own split.

    Other zoom tasks (`agentgym_envs.zoom_color`) subclass it with their own rows, demonstrations and config."""

    train_config = TRAIN_CONFIG
    defaults: dict[str, Any] = DEFAULTS
    task_config: Any = ZoomCountTaskConfig
    make_rows = staticmethod(make_rows)
    demonstrate = staticmethod(demonstration)
    task_name = "zoom_count"
    answers_from_memory = False

    @classmethod
    def settings(cls, run_dir: Path, **given: Any) -> QuickstartSettings:
        """The job's settings for this task: `given` (the command line's) over this task's defaults."""
        return QuickstartSettings(run_dir=run_dir, **{**cls.defaults, **given})

    def __init__(self, settings: QuickstartSettings, console: Console):
        if settings.direct_share != 0.0 and not self.answers_from_memory:
            raise ValueError(f"{self.task_name}'s warm-up teacher always zooms (there is no answering from memory): "
                             f"leave --direct-share unset, got {settings.direct_share}")
        self.s = settings
        self.console = console
        self.tools = build_tools(load_tool_specs(TOOL_CONFIG))
        self.interactions = {}
        task = self.task_config(seed=settings.seed)
        self.eval_rows = self.make_rows(replace(task, num_rows=settings.eval_rows, split="test"))
        self.sft_rows = self.make_rows(replace(task, num_rows=settings.sft_rows, split="sft"))
        self.train_rows = self.make_rows(replace(task, num_rows=1024, split="train"))
        self.reward_kwargs: dict[str, Any] = {}

    def build_model(self) -> Path:
        from agentgym.models.vlm import build_tiny_vlm

        return build_tiny_vlm(self.s.run_dir / "models", size=self.s.model_size, seed=self.s.seed)

    def config(self, model_path: Path, stage: str, extra: Sequence[str] = ()) -> AgentGymConfig:
        cfg = super().config(model_path, stage, extra)
        self.reward_kwargs = dict(cfg.custom_reward_function.reward_kwargs or {})
        return cfg

    def demonstration_script(self, direct_rows: set[int]) -> Callable[[str, str | None], str]:
        return teacher_script(self.sft_rows, "sft-", self.demonstrate, direct_rows)

    def teacher_engine(self, tokenizer: Any, script: Callable[[str, str | None], str]) -> Any:
        return TeacherEngine(tokenizer, script)

    def failed_demonstrations(self, transcripts: Sequence[Trajectory]) -> list[Trajectory]:
        """A demonstration must end right, and zoom where the shapes are (or, from memory, not call the tool)."""
        return [t for t in transcripts if t.failed or not boxed_answer_right(t)
                or not (zoomed_on_region(t) if called_a_tool(t) else self.answers_from_memory)]

    def evaluate(self, trajs: Sequence[Trajectory]) -> EvalResult:
        """Accuracy: the final answer's boxed answer is right. The reward is the run's VLM mix. There is no retry, so
        first-try accuracy is the accuracy. Tool used correctly: a zoom held every shape."""
        n = max(len(trajs), 1)
        right = [boxed_answer_right(t) for t in trajs]
        rewards = [compute_score(f"agentgym/{self.task_name}", final_answer(t), truth(t), t.extra_info,
                                 **self.reward_kwargs)["score"] for t in trajs]
        return EvalResult(accuracy=sum(right) / n, first_try_accuracy=sum(right) / n,
                          tool_use_correct=sum(map(zoomed_on_region, trajs)) / n, mean_reward=sum(rewards) / n,
                          trajectories=list(trajs))
