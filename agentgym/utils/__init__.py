"""Helpers at verl's import paths (`verl.utils.*` -> `agentgym.utils.*`), so ported tools keep their imports."""
