"""The tasks `agentgym quickstart --task NAME` (and `agentgym demo --task NAME`) can run, found through the
`agentgym.quickstart_tasks` (and `agentgym.demos`) entry-point groups: the library imports no task.
A package adds one with, in its pyproject.toml,

    [project.entry-points."agentgym.quickstart_tasks"]
    my_task = "my_package.quickstart:MyQuickstart"

where `MyQuickstart` subclasses `agentgym.quickstart.Quickstart`. The task is loaded only when it is run.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from agentgym.errors import AgentGymError

if TYPE_CHECKING:
    from agentgym.quickstart.job import Quickstart

GROUP = "agentgym.quickstart_tasks"
DEMO_GROUP = "agentgym.demos"  # `agentgym demo --task NAME`: a function (console, seed, episodes) -> exit code
DEFAULT_TASK = "arithmetic"


def _entries(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def task_names(group: str = GROUP) -> list[str]:
    names = sorted(_entries(group))
    return ([DEFAULT_TASK] if DEFAULT_TASK in names else []) + [n for n in names if n != DEFAULT_TASK]


def load_entry(group: str, name: str) -> Any:
    entries = _entries(group)
    if name not in entries:
        known = ", ".join(task_names(group)) or "none"
        raise AgentGymError(f"no task named {name!r} in the `{group}` entry-point group (installed: {known}). A "
                            f"package registers its tasks there in its pyproject.toml; reinstall the package that "
                            f"provides it (`pip install -e .` here) if it was added since")
    return entries[name].load()


def load_task(name: str) -> type[Quickstart]:
    from agentgym.quickstart.job import Quickstart

    job = load_entry(GROUP, name)
    if not (isinstance(job, type) and issubclass(job, Quickstart)):
        raise AgentGymError(f"the quickstart task {name!r} is {job!r}, not a Quickstart subclass")
    return job
