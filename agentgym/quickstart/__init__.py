"""The main job's machinery (warm-up SFT, held-out evaluation, GRPO, evaluation again) and the registry of tasks it
runs. The tasks themselves live in their own packages (`agentgym_envs.<task>.quickstart`)."""

from agentgym.quickstart.job import (EvalResult, Quickstart, QuickstartEnvironment, QuickstartSettings, eval_name,
                                     evaluate, question, run_quickstart, save_model, tool_used_correctly)
from agentgym.quickstart.tasks import load_task, task_names

__all__ = ["EvalResult", "Quickstart", "QuickstartEnvironment", "QuickstartSettings", "eval_name", "evaluate",
           "load_task", "question", "run_quickstart", "save_model", "task_names", "tool_used_correctly"]
