"""agentgym: multi-turn agent environments, tool sandboxes and RL post-training for tool-using LLMs."""

__version__ = "0.1.0"
