"""Dataset rows, in one place: reading them (parquet, JSON lines), writing Parquet that reads back exactly, checking
them against a run's tools and interactions, and the seeded batch iterator the trainer draws prompts from."""

from agentgym.rows.read import PromptBatches, read_records, read_rows

__all__ = ["PromptBatches", "read_records", "read_rows"]
