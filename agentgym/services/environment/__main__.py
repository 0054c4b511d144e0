"""`python3 -m agentgym.services.environment --tools TOOLS.yaml [--interactions INTER.yaml] [--port 8300]`.

Prints `environment server ready at http://HOST:PORT` once it accepts connections (`--port 0` picks a free one).
Point a run at it with `actor_rollout_ref.rollout.multi_turn.environment_url=http://HOST:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from agentgym.interactions.registry import load_interactions
from agentgym.services.environment.server import EnvironmentServer, EnvironmentServerConfig
from agentgym.services.serving import start_server
from agentgym.tools.registry import load_all_tools


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = EnvironmentServerConfig()
    p = argparse.ArgumentParser(prog="python3 -m agentgym.services.environment",
                                description="Serve tools and interactions as sessions over HTTP (RemoteSession's server)")
    p.add_argument("--tools", help="tool YAML (verl format), as multi_turn.tool_config_path")
    p.add_argument("--function-tools", help="a .py file of @function_tool functions, as multi_turn.function_tool_path")
    p.add_argument("--interactions", help="interaction YAML, as multi_turn.interaction_config_path")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8300, help="0 picks a free port (printed in the ready line)")
    p.add_argument("--max-sessions", type=int, default=defaults.max_sessions,
                   help="sessions open at once; an open beyond it is answered 503 with Retry-After")
    p.add_argument("--max-concurrent-calls", type=int, default=defaults.max_concurrent_calls,
                   help="tool-call requests executing at once across all sessions (more wait)")
    p.add_argument("--idle-timeout", type=float, default=defaults.idle_timeout_s,
                   help="seconds without a request or heartbeat after which a session is released")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    if not (args.tools or args.function_tools or args.interactions):
        p.error("name at least one of --tools, --function-tools, --interactions: an environment with neither tools "
                "nor interactions has nothing to serve")
    return args


async def serve(args: argparse.Namespace) -> int:
    tools = load_all_tools(args.tools, args.function_tools)
    interactions = load_interactions(args.interactions) if args.interactions else {}
    config = EnvironmentServerConfig(max_sessions=args.max_sessions, idle_timeout_s=args.idle_timeout,
                                     max_concurrent_calls=args.max_concurrent_calls)
    server = EnvironmentServer(tools, interactions, config)
    running = await start_server(server.app(), args.host, args.port, log_level=args.log_level)
    print(f"environment server ready at {running.url} ({len(tools)} tools, {len(interactions)} interactions)", flush=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(running.server, "should_exit", True))
    await running.wait()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.exit(asyncio.run(serve(args)))


if __name__ == "__main__":
    main()
