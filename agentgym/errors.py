"""Errors a user acts on. Each message says what was wrong, where, and how to fix it."""


class AgentGymError(Exception):
    """Base class for every error agentgym raises on purpose."""


class ConfigError(AgentGymError):
    """A YAML file, a registry entry or a config value is wrong.

    Carries the file and the entry so the message can point at the exact place to edit.
    """

    def __init__(self, message: str, *, file: str | None = None, entry: str | None = None, fix: str | None = None):
        self.file = file
        self.entry = entry
        self.fix = fix
        where = []
        if file:
            where.append(f"file {file}")
        if entry:
            where.append(f"entry {entry}")
        text = f"{', '.join(where)}: {message}" if where else message
        if fix:
            text += f" Fix: {fix}"
        super().__init__(text)


def validation_problems(exc) -> str:
    """A pydantic ValidationError of a YAML `config:` mapping as one sentence: each problem by its key."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(config)"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key {key!r}")
        elif err["type"] == "missing":
            problems.append(f"{key} is required")
        else:
            problems.append(f"{key}: {err['msg']}")
    return "; ".join(problems) + "."


class RolloutFailed(AgentGymError):
    """Too many trajectories of a step ended in an error for the step to be worth training on."""
