"""The one place agentgym makes a rich Console.

Piped or redirected, rich assumes 80 columns and cuts table cells ("scor…") and wraps lines. Output that is not
a terminal has no width to fit, so it gets a wide one (or `COLUMNS`, when set) and keeps every character.
"""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console

PIPED_WIDTH = 1000


def make_console(**kwargs: Any) -> Console:
    console = Console(**kwargs)
    if "width" not in kwargs and not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = PIPED_WIDTH
    return console
