"""Interactions: the simulated user that gives feedback turns and ends episodes."""

from agentgym.interactions.base import BaseInteraction

__all__ = ["BaseInteraction"]
