"""The zoom-colour task as the main job's VLM mode: `python3 -m agentgym quickstart --task zoom_color`.

The zoom-count job's flow (`agentgym_envs.zoom_count.learn`) on zoom-colour rows. Some warm-up demonstrations answer
at once from the whole picture, which the tiny model cannot read; GRPO has to learn that zooming on the named
quarter pays. This is the VLM task that learns on the 2-core machine (benchmarks/learning.md, "VLM quickstart").
"""

from __future__ import annotations

from typing import Any

from agentgym_envs.zoom_color.data import ZoomColorTaskConfig, demonstration, make_rows
from agentgym_envs.zoom_count.learn import ZoomCountQuickstart

# Sized for the 2-core machine: ~6 minutes there (benchmarks/learning.md, "VLM quickstart"). With half as many
# warm-up steps (512 x 8) the warm-up model samples broken text at temperature 1 and GRPO gets no signal.
DEFAULTS: dict[str, Any] = dict(environment="zoom_color", model_size="tiny-vl", sft_rows=1024, sft_epochs=8,
                                direct_share=0.5, rl_steps=24, eval_rows=64, sft_lr=3e-3)


class ZoomColorQuickstart(ZoomCountQuickstart):
    """The main job on zoom-colour rows: zoom on the quarter the question names, answer the square's colour. The
    run config is zoom_count's (`agentgym_envs/zoom_count/quickstart.yaml`): the same tool, rewards and GRPO."""

    defaults = DEFAULTS
    task_config = ZoomColorTaskConfig
    make_rows = staticmethod(make_rows)
    demonstrate = staticmethod(demonstration)
    task_name = "zoom_color"
    answers_from_memory = True
