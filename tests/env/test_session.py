"""Session: concurrency, timeouts, error messages the model sees, and release on every exit path."""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest

from agentgym.interactions.base import BaseInteraction
from agentgym.episode.session import Session, SessionConfig
from agentgym.tools.base_tool import BaseTool
from agentgym.tools.schemas import OpenAIFunctionToolSchema, ToolResponse


@dataclass
class Call:
    name: str
    arguments: Any
    id: str = ""


def schema(name: str, properties: dict | None = None, required: list[str] | None = None) -> OpenAIFunctionToolSchema:
    return OpenAIFunctionToolSchema.model_validate(
        {
            "type": "function",
            "function": {
                "name": name,
                "description": name,
                "parameters": {"type": "object", "properties": properties or {}, "required": required or []},
            },
        }
    )


class RecordingTool(BaseTool):
    """Sleeps `delay` seconds per call and records its lifecycle, so tests can see overlap and releases."""

    def __init__(self, name: str, *, delay: float = 0.0, fail: bool = False, create_delay: float = 0.0):
        super().__init__({}, schema(name, {"x": {"type": "integer"}}, ["x"]))
        self.delay, self.fail, self.create_delay = delay, fail, create_delay
        self.created: list[str] = []
        self.released: list[str] = []
        self.create_kwargs: list[dict] = []
        self.running = 0
        self.max_running = 0

    async def create(self, instance_id=None, **kwargs):
        await asyncio.sleep(self.create_delay)
        self.created.append(instance_id)
        self.create_kwargs.append(kwargs)
        return instance_id, ToolResponse()

    async def execute(self, instance_id, parameters, **kwargs):
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.sleep(self.delay)
            if self.fail:
                raise RuntimeError("disk on fire")
            return ToolResponse(text=f"{self.name}:{parameters['x'] * 2}"), 0.25, {"kw": kwargs}
        finally:
            self.running -= 1

    async def calc_reward(self, instance_id, **kwargs):
        return 1.0 if instance_id in self.created else 0.0

    async def release(self, instance_id, **kwargs):
        self.released.append(instance_id)


async def test_calls_run_concurrently_and_keep_order():
    tool = RecordingTool("slow", delay=0.2)
    async with Session({"slow": tool}, config=SessionConfig(max_parallel_calls=8)) as session:
        started = time.perf_counter()
        results = await session.run_calls([Call("slow", {"x": i}) for i in range(6)])
        elapsed = time.perf_counter() - started
    assert [r.text for r in results] == [f"slow:{2 * i}" for i in range(6)]
    assert tool.max_running == 6
    assert elapsed < 0.2 * 6 / 2
    assert tool.created == [f"{session.session_id}-slow"], "one instance per tool per episode"
    assert tool.released == tool.created


async def test_parallelism_is_bounded():
    tool = RecordingTool("slow", delay=0.05)
    async with Session({"slow": tool}, config=SessionConfig(max_parallel_calls=2)) as session:
        await session.run_calls([Call("slow", {"x": i}) for i in range(7)])
    assert tool.max_running == 2


async def test_row_kwargs_reach_the_tool():
    tool = RecordingTool("t")
    extra = {"tools_kwargs": {"t": {"create_kwargs": {"ground_truth": "7"}, "execute_kwargs": {"mode": "strict"}}}}
    async with Session({"t": tool}, extra_info=extra) as session:
        [result] = await session.run_calls([Call("t", {"x": 1})])
        scores = await session.scores()
    assert tool.create_kwargs == [{"ground_truth": "7"}]
    assert result.metrics == {"kw": {"mode": "strict"}} and result.reward == 0.25
    assert scores.tool_rewards == {"t": 1.0}


async def test_model_mistakes_become_messages_not_exceptions():
    tool = RecordingTool("double")
    async with Session({"double": tool}) as session:
        results = await session.run_calls(
            [
                Call("tripple", {"x": 1}),
                Call("double", {}),
                Call("double", {"x": "two"}),
                Call("double", "not a dict"),
                Call("double", {"x": 2}),
            ]
        )
    assert results[0].error == "Error: unknown tool `tripple`. Available tools: `double`."
    assert results[1].error == (
        "Error: invalid arguments for tool `double`: argument `x` is required but missing. "
        'Expected parameters: {"x": {"type": "integer"}}.'
    )
    assert results[2].error.startswith('Error: invalid arguments for tool `double`: argument `x` must be of type integer, got "two".')
    assert results[3].error == "Error: arguments for tool `double` must be a JSON object, got str."
    assert results[4].error is None and results[4].text == "double:4"
    assert all(r.text == r.error for r in results[:4])


async def test_tool_exception_and_timeout_are_reported():
    broken, stuck = RecordingTool("broken", fail=True), RecordingTool("stuck", delay=5)
    async with Session({"broken": broken, "stuck": stuck}, config=SessionConfig(tool_call_timeout=0.2)) as session:
        results = await session.run_calls([Call("broken", {"x": 1}), Call("stuck", {"x": 1})])
    assert results[0].error == "Error: tool `broken` failed: RuntimeError: disk on fire"
    assert "disk on fire" in results[0].metrics["traceback"]
    assert results[1].error == "Error: tool `stuck` did not finish within 0.2 s."
    assert broken.released == broken.created and stuck.released == stuck.created


async def test_tool_yaml_execute_timeout_replaces_the_session_default():
    patient = RecordingTool("patient", delay=0.4)
    patient.config = {"execute_timeout": 2}  # what `config: {execute_timeout: 2}` in the tool YAML gives
    hasty = RecordingTool("hasty", delay=0.4)
    hasty.config = {"execute_timeout": 0.1}
    async with Session({"patient": patient, "hasty": hasty}, config=SessionConfig(tool_call_timeout=0.2)) as session:
        results = await session.run_calls([Call("patient", {"x": 1}), Call("hasty", {"x": 1})])
    assert results[0].error is None and results[0].text == "patient:2"
    assert results[1].error == "Error: tool `hasty` did not finish within 0.1 s."


async def test_release_runs_when_the_episode_raises():
    tool = RecordingTool("t")
    with pytest.raises(KeyError):
        async with Session({"t": tool}) as session:
            await session.run_calls([Call("t", {"x": 1})])
            raise KeyError("engine crashed")
    assert tool.released == tool.created and len(tool.created) == 1


async def test_release_runs_when_the_episode_is_cancelled_mid_call():
    tool = RecordingTool("t", delay=10)
    entered = asyncio.Event()

    async def episode():
        async with Session({"t": tool}) as session:
            entered.set()
            await session.run_calls([Call("t", {"x": 1})])

    task = asyncio.create_task(episode())
    await entered.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tool.created and tool.released == tool.created


async def test_instance_whose_create_was_interrupted_is_still_released():
    tool = RecordingTool("t", create_delay=0.3)

    async def episode():
        async with Session({"t": tool}) as session:
            await session.run_calls([Call("t", {"x": 1})])

    task = asyncio.create_task(episode())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(tool.released) == 1 and tool.created == tool.released


def test_row_naming_unregistered_tool_is_rejected():
    with pytest.raises(ValueError, match=r"names tool\(s\) \['search'\] that are not registered; registered tools: \['t'\]"):
        Session({"t": RecordingTool("t")}, extra_info={"tools_kwargs": {"search": {}}})


def test_row_naming_unknown_interaction_is_rejected():
    with pytest.raises(ValueError, match=r"asks for interaction `tutor` but the registered interactions are \['coach'\]"):
        Session({}, extra_info={"interaction_kwargs": {"name": "tutor"}}, interactions={"coach": BaseInteraction({})})


async def test_one_failing_release_does_not_skip_the_others():
    class BadRelease(RecordingTool):
        async def release(self, instance_id, **kwargs):
            raise OSError("cannot delete sandbox")

    bad, good = BadRelease("bad"), RecordingTool("good")
    session = Session({"bad": bad, "good": good})
    async with session:
        await session.run_calls([Call("bad", {"x": 1}), Call("good", {"x": 1})])
    assert good.released == good.created
    assert [str(e) for e in session.release_errors] == ["cannot delete sandbox"]
