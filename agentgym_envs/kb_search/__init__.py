"""Questions about a generated knowledge base of made-up people and companies, answered through a search tool.

Every fact (a birth year, an employer, a founding year) is drawn at random per entity, so nothing in a question
gives its answer away: the model has to search the corpus (`retrieval_server`) and read the documents. Two-hop
questions need a second search for the entity the first document names.
"""

from pathlib import Path

ENV_DIR = Path(__file__).resolve().parent
TOOL_CONFIG = ENV_DIR / "tools.yaml"
INTERACTION_CONFIG = ENV_DIR / "interaction.yaml"
