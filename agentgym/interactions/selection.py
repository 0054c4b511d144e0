"""Which registered interaction a dataset row gets: one rule, shared by the session and the data check.

verl's rules, written once: with no interaction registered, a row's `interaction_kwargs` are ignored (a tool-only
run on rows made for a tool + interaction recipe); with exactly one registered, a row that names none gets it;
with several, the row must name one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any


class InteractionSelectionError(ValueError):
    """The row's `interaction_kwargs` do not pick one of the registered interactions."""


def select_interaction(interaction_kwargs: Mapping[str, Any] | None, registered: Collection[str]) -> str | None:
    """The name of the interaction the row runs with, or None when the row runs without one."""
    if not registered or not interaction_kwargs or all(v is None for v in interaction_kwargs.values()):
        return None  # all-null kwargs are a parquet file's filler for a row that asks for no interaction
    name = interaction_kwargs.get("name")
    if name is None:
        if len(registered) == 1:
            return next(iter(registered))
        raise InteractionSelectionError(
            f"the row's extra_info.interaction_kwargs has no `name`, and several interactions are registered "
            f"({', '.join(sorted(registered))}); set extra_info.interaction_kwargs.name to one of them."
        )
    if name not in registered:
        raise InteractionSelectionError(
            f"the row asks for interaction `{name}` but the registered interactions are {sorted(registered)}; "
            "set extra_info.interaction_kwargs.name to one of them or register it in the interaction config."
        )
    return str(name)
