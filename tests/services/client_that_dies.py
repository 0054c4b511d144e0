"""A rollout worker that opens a session, creates a tool instance, says so, and waits to be killed (the leak test)."""

import asyncio
import sys

from agentgym.episode.remote import RemoteEnvironment
from agentgym.episode.session import SessionConfig
from agentgym.parsers import ParsedToolCall


async def main(url: str) -> None:
    env = RemoteEnvironment.connect(url)
    session = env.session(extra_info={}, session_id="doomed", config=SessionConfig())
    await session.start()
    call = ParsedToolCall(name="marker", arguments={"text": "hi"}, id="c1", raw="", index=1)
    [result] = await session.run_calls([call])
    print("created", result.text, flush=True)
    # the slow call is in flight when the process is killed
    await session.run_calls([ParsedToolCall(name="marker", arguments={"text": "slow", "sleep_s": 0.8}, id="c2", raw="", index=1)])
    await asyncio.sleep(3600)


asyncio.run(main(sys.argv[1]))
