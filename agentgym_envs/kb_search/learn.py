"""The knowledge-base search task as a learning run on one CPU: the main job's machinery (`agentgym.quickstart`:
local model, warm-up SFT on rendered transcripts, GRPO, held-out evaluation before and after RL) with this
environment's rows, teacher and search tool, against a retrieval server started for the run.

    python -m agentgym_envs.kb_search.learn --run-dir runs/kb_search_learn [--rl-steps 20] [--two-hop-share 0.5]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from rich.console import Console

from agentgym.interactions.registry import load_interactions
from agentgym.quickstart import EvalResult, QuickstartEnvironment, QuickstartSettings, run_quickstart
from agentgym_envs.arithmetic.quickstart import ArithmeticQuickstart
from agentgym.trajectory import Trajectory
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym_envs.kb_search import INTERACTION_CONFIG, TOOL_CONFIG
from agentgym_envs.kb_search.data import KbSearchTaskConfig, make_rows, write_corpus
from agentgym_envs.kb_search.solver import found_answer, ideal_script, search_call

# Episode lengths for two searches of one document each, an answer and one retry (the main job's yaml is sized
# for one calculator call).
LENGTH_OVERRIDES = (
    "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=4",
    "actor_rollout_ref.rollout.multi_turn.max_tool_response_length=200",
    "data.max_response_length=384",
)


class SearchQuickstart(ArithmeticQuickstart):
    """The main job on kb_search rows: the teacher searches every entity on the question's path (or, for
    `direct_share` of the warm-up rows, answers from memory), and held-out questions ask about people that no
    training question mentions."""

    def __init__(self, settings: QuickstartSettings, console: Console, *, retrieve_url: str,
                 two_hop_share: float = 0.5, topk: int = 1):
        if not 0.0 <= settings.direct_share <= 1.0:
            raise ValueError(f"direct_share is a share from 0 to 1, got {settings.direct_share}")
        self.s = settings
        self.console = console
        self.env = QuickstartEnvironment(TOOL_CONFIG, make_rows, search_call)
        specs = [replace(spec, config={**spec.config, "retrieval_service_url": retrieve_url, "topk": topk,
                                       "enable_global_rate_limit": False})
                 for spec in load_tool_specs(TOOL_CONFIG)]
        self.tools = build_tools(specs)
        self.interactions = load_interactions(INTERACTION_CONFIG)
        task = KbSearchTaskConfig(seed=settings.seed, two_hop_share=two_hop_share)
        self.eval_rows = make_rows(replace(task, num_rows=settings.eval_rows, split="test"))
        self.sft_rows = make_rows(replace(task, num_rows=settings.sft_rows, split="sft"))
        self.train_rows = make_rows(replace(task, num_rows=1024, split="train"))

    def demonstration_script(self, direct_rows: set[int]) -> Callable[[str, str | None], str]:
        return ideal_script(self.sft_rows, "sft-", direct_rows=direct_rows)

    def evaluate(self, trajs: Sequence[Trajectory]) -> EvalResult:
        """As the main job's, with "tool used correctly" meaning: a search returned the document with the answer."""
        result = super().evaluate(trajs)
        truth = [str((t.extra_info.get("interaction_kwargs") or {}).get("ground_truth")) for t in trajs]
        result.tool_use_correct = sum(found_answer(t.messages, g) for t, g in zip(trajs, truth)) / max(len(trajs), 1)
        return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m agentgym_envs.kb_search.learn", description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sft-rows", type=int, default=1536)
    p.add_argument("--sft-epochs", type=int, default=12)
    p.add_argument("--direct-share", type=float, default=0.1,
                   help="share of warm-up demonstrations that answer from memory instead of searching")
    p.add_argument("--rl-steps", type=int, default=20)
    p.add_argument("--eval-rows", type=int, default=128)
    p.add_argument("--two-hop-share", type=float, default=0.5)
    p.add_argument("--model-size", default="mini")
    p.add_argument("overrides", nargs="*", help="config overrides, key=value (verl names)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from retrieval_server.launch import RetrievalServerProcess

    args = parse_args(argv)
    settings = QuickstartSettings(
        run_dir=args.run_dir, seed=args.seed, environment="kb_search", model_size=args.model_size,
        sft_rows=args.sft_rows, sft_epochs=args.sft_epochs, direct_share=args.direct_share, rl_steps=args.rl_steps,
        eval_rows=args.eval_rows, overrides=(*LENGTH_OVERRIDES, *args.overrides),
    )
    console = Console()
    args.run_dir.mkdir(parents=True, exist_ok=True)
    corpus = write_corpus(args.run_dir / "corpus.jsonl")
    with RetrievalServerProcess(corpus) as server:
        console.print(f"[bold]0. retrieval server[/bold] {server.base_url} over {corpus}")
        job = SearchQuickstart(settings, console, retrieve_url=server.retrieve_url, two_hop_share=args.two_hop_share)
        return run_quickstart(settings, console, job)


if __name__ == "__main__":
    raise SystemExit(main())
