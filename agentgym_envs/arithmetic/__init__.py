"""Multi-step arithmetic with large numbers: exact answers need the calculator; a teacher gives feedback turns."""

from pathlib import Path

ENV_DIR = Path(__file__).resolve().parent
TOOL_CONFIG = ENV_DIR / "tools.yaml"
INTERACTION_CONFIG = ENV_DIR / "interaction.yaml"
