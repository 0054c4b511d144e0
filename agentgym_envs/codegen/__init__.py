"""Code generation: write a Python function; the reward runs hidden unit tests in the sandbox.

The teacher (`UnitTestInteraction`) runs the submitted code against the tests, answers with what failed, and scores
the share of tests passed; the model may also try code with the code interpreter before submitting.
"""

from pathlib import Path

ENV_DIR = Path(__file__).resolve().parent
TOOL_CONFIG = ENV_DIR / "tools.yaml"
INTERACTION_CONFIG = ENV_DIR / "interaction.yaml"
