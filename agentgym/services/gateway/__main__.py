"""`python3 -m agentgym.services.gateway --config RUN.yaml [key=value ...] [--port 8400]`.

Serves the run config's policy (`actor_rollout_ref.rollout.name`: the in-process engine, SGLang or vLLM) at
`/v1/chat/completions`, `/v1/messages` and `/v1/models`, recording each session's token-exact trajectory
(`GET /v1/sessions/{id}/trajectory`). Prints `gateway ready at http://HOST:PORT` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from agentgym.config import load_config
from agentgym.services.gateway.build import make_gateway
from agentgym.services.serving import start_server


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m agentgym.services.gateway",
                                description="OpenAI/Anthropic-compatible endpoint that records token-exact trajectories")
    p.add_argument("--config", help="run YAML (model, rollout engine, sampling, multi_turn.format)")
    p.add_argument("--model", help="shorthand for actor_rollout_ref.model.path=MODEL")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8400, help="0 picks a free port (printed in the ready line)")
    p.add_argument("--log-level", default="warning")
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. actor_rollout_ref.rollout.temperature=0.7")
    args = p.parse_args(argv)
    if not (args.config or args.model):
        p.error("name the policy: --config RUN.yaml or --model MODEL_DIR")
    return args


async def serve(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"actor_rollout_ref.model.path={args.model}"] if args.model else [])
    gateway = make_gateway(load_config(args.config, overrides))
    engine = gateway.recorder.engine
    await engine.start()
    try:
        running = await start_server(gateway.app(), args.host, args.port, log_level=args.log_level)
        print(f"gateway ready at {running.url} (model {gateway.config.model_name})", flush=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: setattr(running.server, "should_exit", True))
        await running.wait()
    finally:
        await engine.close()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.exit(asyncio.run(serve(args)))


if __name__ == "__main__":
    main()
