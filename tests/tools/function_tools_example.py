"""@function_tool functions that tests load through multi_turn.function_tool_path (sync, async, rewards, models)."""

from __future__ import annotations

import asyncio
import enum
import threading
from typing import Literal, Optional

from pydantic import BaseModel

from agentgym import ToolResponse, function_tool


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Box(BaseModel):
    width: int
    height: int = 1


@function_tool
def get_weather(city: str, unit: Unit = Unit.CELSIUS, days: Optional[int] = None) -> dict:
    """Get the weather for a city.

    Args:
        city: The city to look up, e.g. "Oslo".
        unit: Temperature unit.
        days: How many days ahead; today when left out.
    """
    temperature = 17.3 if unit is Unit.CELSIUS else 63.1
    return {"city": city, "temperature": temperature, "days": days, "thread": threading.current_thread().name}


@function_tool("area")
async def box_area(box: Box, scale: Literal[1, 10] = 1) -> tuple[str, float, dict]:
    """Area of a box, rewarded when it is large.

    Args:
        box: The box to measure.
        scale: Multiply the area by this.
    """
    await asyncio.sleep(0)
    area = box.width * box.height * scale
    return f"area={area}", 1.0 if area > 10 else 0.0, {"area": area}


@function_tool(description="Echo the text back as a ToolResponse.")
def echo(text: str) -> ToolResponse:
    return ToolResponse(text=text)


@function_tool
def fail(reason: str) -> str:
    """Always raises.

    Args:
        reason: The message of the error.
    """
    raise RuntimeError(reason)


def not_a_tool(x: int) -> int:
    return x
