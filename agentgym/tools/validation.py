"""Checking a call's arguments against the tool's JSON schema, phrased for the model to read and fix."""

from __future__ import annotations

from functools import lru_cache
import json
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from agentgym.tools.schemas import OpenAIFunctionToolSchema


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json))


def argument_errors(tool_schema: OpenAIFunctionToolSchema, arguments: dict[str, Any]) -> list[str]:
    """Every way `arguments` breaks the schema, one readable sentence each, in a stable order."""
    schema_json = json.dumps(tool_schema.parameters_json_schema(), sort_keys=True)
    errors = sorted(_validator(schema_json).iter_errors(arguments), key=lambda e: (list(map(str, e.path)), e.message))
    return [_describe(error) for error in errors]


def _describe(error: ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        target = f"{path}.{missing}" if path else missing
        return f"argument `{target}` is required but missing"
    if error.validator == "additionalProperties":
        return f"{'argument `' + path + '`: ' if path else ''}{error.message}"
    expected = error.schema.get(error.validator) if isinstance(error.schema, dict) else None
    if error.validator == "type":
        return f"argument `{path}` must be of type {expected}, got {json.dumps(error.instance)}"
    if error.validator == "enum":
        return f"argument `{path}` must be one of {json.dumps(expected)}, got {json.dumps(error.instance)}"
    return f"argument `{path or '(all)'}`: {error.message}"


def format_argument_error(tool_name: str, problems: list[str], tool_schema: OpenAIFunctionToolSchema) -> str:
    """The tool message the model sees instead of a result."""
    params = json.dumps(tool_schema.parameters_json_schema().get("properties", {}), ensure_ascii=False)
    return (
        f"Error: invalid arguments for tool `{tool_name}`: {'; '.join(problems)}. "
        f"Expected parameters: {params}."
    )
