"""Typed run configuration with verl key names, loaded from one YAML plus dotted overrides."""

from agentgym.config.loader import all_keys, apply_override, dump_config, load_config, parse_override
from agentgym.config.schema import AgentGymConfig

__all__ = ["AgentGymConfig", "all_keys", "apply_override", "dump_config", "load_config", "parse_override"]
