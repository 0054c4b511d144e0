"""verl class paths that resolve to agentgym classes, so a verl tool YAML loads unchanged."""

VERL_CLASS_ALIASES: dict[str, str] = {}
