"""Dataset rows checked against the registered tools and interactions before the first step.

A row the session would refuse (an unknown tool or interaction name, no prompt, `<image>` placeholders that do not
match the row's images) would otherwise fail one episode at a time, deep inside a rollout. Here every bad row is
named up front, grouped by problem, with the fix. Interactions are chosen by the session's own rule
(`agentgym.interactions.selection`), so a row passes here exactly when the session accepts it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agentgym.errors import ConfigError
from agentgym.interactions.selection import InteractionSelectionError, select_interaction

TOOL_KWARGS_KEYS = ("create_kwargs", "execute_kwargs", "calc_reward_kwargs", "release_kwargs")
_PLACEHOLDERS = (("<image>", "images"), ("<video>", "videos"))
_SHOWN_ROWS = 10


@dataclass(frozen=True)
class RowProblem:
    row: int
    message: str
    fix: str
    severity: Literal["error", "warning"] = "error"


@dataclass(frozen=True)
class Registered:
    """What the run registers. None: not known here (a custom rollout may bring its own), so rows are not checked
    against it."""

    tools: frozenset[str] | None
    interactions: frozenset[str] | None

    @classmethod
    def of(cls, tools: Collection[str] | None, interactions: Collection[str] | None) -> "Registered":
        return cls(None if tools is None else frozenset(tools), None if interactions is None else frozenset(interactions))


def _is_mapping_or_none(value: Any) -> bool:
    return value is None or isinstance(value, Mapping)


def _prompt_problems(row: Mapping[str, Any], index: int, prompt_key: str) -> list[RowProblem]:
    if prompt_key not in row:
        return [RowProblem(index, f"no `{prompt_key}` (it has: {', '.join(sorted(map(str, row))) or 'nothing'})",
                           "set data.prompt_key to the column with the chat messages, or add them to the row")]
    if row[prompt_key] is None:
        return [RowProblem(index, f"`{prompt_key}` is empty (null)", "give the row its chat messages")]
    messages = row[prompt_key]
    if not isinstance(messages, (list, tuple)) or not messages:
        return [RowProblem(index, f"`{prompt_key}` is not a non-empty list of chat messages (got {str(messages)[:80]!r})",
                           "store it as [{'role': 'user', 'content': '...'}, ...]")]
    for position, message in enumerate(messages):
        if not (isinstance(message, Mapping) and isinstance(message.get("role"), str) and "content" in message):
            return [RowProblem(index, f"`{prompt_key}[{position}]` is not a chat message with `role` and `content` "
                                      f"(got {str(message)[:80]!r})",
                               "write each message as {'role': 'system'|'user'|'assistant'|'tool', 'content': ...}")]
    return []


def _placeholder_problems(row: Mapping[str, Any], index: int, prompt_key: str,
                          image_key: str = "images") -> list[RowProblem]:
    messages = row.get(prompt_key)
    if not isinstance(messages, (list, tuple)):
        return []
    text = "".join(m["content"] for m in messages if isinstance(m, Mapping) and isinstance(m.get("content"), str))
    image_parts = sum(1 for m in messages if isinstance(m, Mapping) and isinstance(m.get("content"), (list, tuple))
                      for part in m["content"] if isinstance(part, Mapping) and part.get("type") == "image")
    problems = []
    for placeholder, column in _PLACEHOLDERS:
        column = image_key if column == "images" else column
        wanted = text.count(placeholder) + (image_parts if placeholder == "<image>" else 0)
        media = row.get(column)
        given = len(media) if isinstance(media, (list, tuple)) else (0 if media is None else 1)
        if wanted != given:
            problems.append(RowProblem(
                index, f"the prompt has {wanted} `{placeholder}` placeholder(s) but the row has {given} item(s) under "
                       f"`{column}`",
                f"put one `{placeholder}` in the prompt text per item of `{column}`, in order"))
        elif placeholder == "<image>" and given:
            problems += _image_problems(media if isinstance(media, (list, tuple)) else [media], index, column)
    return problems


def _image_problems(images: Sequence[Any], index: int, column: str) -> list[RowProblem]:
    """Each image entry is of a form the loader reads (bytes, an existing path, a {bytes, path} dict); bytes are
    checked by their header only, so a large dataset is not decoded twice."""
    from agentgym.multimodal.images import ImageLoadError, image_entry_problem

    problems = []
    for position, image in enumerate(images):
        try:
            image_entry_problem(image)
        except ImageLoadError as exc:
            problems.append(RowProblem(index, f"`{column}[{position}]`: {exc}",
                                       "store each image as PNG/JPEG bytes, a file path, or {'bytes': ..., 'path': ...}"))
    return problems


def _tool_problems(tools_kwargs: Any, index: int, registered: Registered) -> list[RowProblem]:
    if not _is_mapping_or_none(tools_kwargs):
        return [RowProblem(index, f"extra_info.tools_kwargs is a {type(tools_kwargs).__name__}, not a mapping",
                           "write it as {tool_name: {create_kwargs: {...}, execute_kwargs: {...}}}")]
    problems = []
    for name, kwargs in (tools_kwargs or {}).items():
        if kwargs is None:  # parquet fills absent struct fields with null: nothing asked of this tool
            continue
        if registered.tools and name not in registered.tools:  # no tools registered: the session ignores them
            shown = ", ".join(sorted(registered.tools)) or "none"
            problems.append(RowProblem(index, f"extra_info.tools_kwargs names tool `{name}`, which is not registered "
                                              f"(registered: {shown})",
                                       "register it in multi_turn.tool_config_path or fix the name in the row"))
        if not isinstance(kwargs, Mapping):
            problems.append(RowProblem(index, f"extra_info.tools_kwargs.{name} is not a mapping",
                                       f"write it as {{{', '.join(f'{k}: {{...}}' for k in TOOL_KWARGS_KEYS)}}}"))
            continue
        for key, value in kwargs.items():
            if key not in TOOL_KWARGS_KEYS:
                problems.append(RowProblem(index, f"extra_info.tools_kwargs.{name}.{key} is not a key the tool reads",
                                           f"use {', '.join(TOOL_KWARGS_KEYS)}"))
            elif not _is_mapping_or_none(value):
                problems.append(RowProblem(index, f"extra_info.tools_kwargs.{name}.{key} is not a mapping",
                                           f"write it as {key}: {{argument: value}}"))
    return problems


def _interaction_problems(interaction_kwargs: Any, index: int, registered: Registered) -> list[RowProblem]:
    if not _is_mapping_or_none(interaction_kwargs):
        return [RowProblem(index, f"extra_info.interaction_kwargs is a {type(interaction_kwargs).__name__}, not a "
                                  "mapping", "write it as {name: ..., ground_truth: ...}")]
    kwargs = dict(interaction_kwargs or {})
    if registered.interactions is None:
        return []
    if kwargs and not registered.interactions:
        if kwargs.get("name") is not None:
            return [RowProblem(index, f"extra_info.interaction_kwargs names interaction `{kwargs['name']}` but no "
                                      "interaction is registered, so the row runs without one",
                               "set multi_turn.interaction_config_path if the row needs it", "warning")]
        return []
    try:
        select_interaction(kwargs, registered.interactions)
    except InteractionSelectionError as exc:
        return [RowProblem(index, str(exc).split("; ")[0],
                           "set extra_info.interaction_kwargs.name to one of "
                           f"{', '.join(sorted(registered.interactions))}, or register the interaction")]
    return []


def check_row(row: Any, index: int, registered: Registered, *, prompt_key: str = "prompt",
              image_key: str = "images") -> list[RowProblem]:
    if not isinstance(row, Mapping):
        return [RowProblem(index, f"the row is a {type(row).__name__}, not a mapping of columns",
                           "write rows as records with `prompt` and `extra_info`")]
    problems = _prompt_problems(row, index, prompt_key) + _placeholder_problems(row, index, prompt_key, image_key)
    extra_info = row.get("extra_info")
    if not _is_mapping_or_none(extra_info):
        return problems + [RowProblem(index, f"extra_info is a {type(extra_info).__name__}, not a mapping",
                                      "write it as {tools_kwargs: {...}, interaction_kwargs: {...}}")]
    extra_info = extra_info or {}
    problems += _tool_problems(extra_info.get("tools_kwargs"), index, registered)
    problems += _interaction_problems(extra_info.get("interaction_kwargs"), index, registered)
    problems += _selection_problems(extra_info.get("tool_selection"), index, registered)
    return problems


def _selection_problems(selection: Any, index: int, registered: Registered) -> list[RowProblem]:
    if selection is None:
        return []
    if isinstance(selection, (str, bytes, Mapping)) or not hasattr(selection, "__iter__") or \
            not all(isinstance(name, str) for name in selection):
        return [RowProblem(index, f"extra_info.tool_selection must be a list of tool names, got {str(selection)[:80]!r}",
                           "write it as tool_selection: [tool_name, ...]")]
    if len(selection) == 0:
        return [RowProblem(index, "extra_info.tool_selection is empty, which (as in verl) offers every registered tool",
                           "list the tools the row should offer, or drop the key", "warning")]
    if not registered.tools:  # no tools registered (or a custom rollout's own): nothing to check the names against
        return []
    unknown = sorted(set(selection) - set(registered.tools))
    if not unknown:
        return []
    return [RowProblem(index, f"extra_info.tool_selection names tool(s) {', '.join(f'`{n}`' for n in unknown)} that "
                              f"are not registered (registered: {', '.join(sorted(registered.tools))})",
                       "register them or fix the names in the row")]


def check_rows(rows: Sequence[Any], registered: Registered, *, prompt_key: str = "prompt",
               image_key: str = "images") -> list[RowProblem]:
    return [p for index, row in enumerate(rows)
            for p in check_row(row, index, registered, prompt_key=prompt_key, image_key=image_key)]


def format_problems(problems: Sequence[RowProblem], *, source: str = "the dataset") -> str:
    """One line per distinct problem, with the rows that have it (the first few, then a count) and the fix."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for p in problems:
        groups.setdefault((p.severity, p.message, p.fix), []).append(p.row)
    lines = []
    for (severity, message, fix), rows in groups.items():
        shown = ", ".join(map(str, rows[:_SHOWN_ROWS])) + (f" and {len(rows) - _SHOWN_ROWS} more" if len(rows) > _SHOWN_ROWS else "")
        lines.append(f"{severity}: {len(rows)} row(s) of {source} (row {shown}): {message}. Fix: {fix}.")
    return "\n".join(lines)


class DataCheckError(ConfigError):
    """Rows that would fail in the rollout; raised before the first step."""

    def __init__(self, problems: Sequence[RowProblem], *, source: str = "the dataset"):
        self.problems = list(problems)
        super().__init__(f"{len({p.row for p in problems})} row(s) would fail in the rollout:\n"
                         + format_problems(problems, source=source))


def require_valid_rows(rows: Sequence[Any], registered: Registered, *, prompt_key: str = "prompt",
                       source: str = "the dataset", image_key: str = "images") -> list[RowProblem]:
    """Raise DataCheckError listing every error; return the warnings for the caller to show."""
    problems = check_rows(rows, registered, prompt_key=prompt_key, image_key=image_key)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise DataCheckError(errors, source=source)
    return problems
