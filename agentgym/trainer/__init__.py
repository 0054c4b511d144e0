"""RL and SFT training on agent trajectories: algorithms, packed batching, FSDP2 workers in Ray, the driver.

Entry points: `RLTrainer` (collect -> update -> weight sync loop), `SFTTrainer`, `main_ppo.main`, `plot.plot_run`.
Imports are lazy so `import agentgym.trainer` stays cheap (no Ray, no transformers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentgym.trainer.driver import RLTrainer
    from agentgym.trainer.plot import plot_run
    from agentgym.trainer.sft import SFTTrainer, select_for_rejection_sampling

_LAZY = {
    "RLTrainer": "agentgym.trainer.driver",
    "SFTTrainer": "agentgym.trainer.sft",
    "select_for_rejection_sampling": "agentgym.trainer.sft",
    "plot_run": "agentgym.trainer.plot",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'agentgym.trainer' has no attribute {name!r}")


__all__ = list(_LAZY)
