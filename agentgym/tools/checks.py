"""Load-time checks that a tool YAML can pass JSON Schema's meta-schema and still be unusable at run time."""

from __future__ import annotations

import inspect
from typing import Any


def required_without_property(schema: Any, path: str = "parameters") -> list[str]:
    """Each `required` name that its object's `properties` does not define, as `(where, name)` sentences.

    JSON Schema allows it, but the model only sees `properties`: it can never supply such an argument, and every
    call is then rejected for missing it.
    """
    problems: list[str] = []
    if isinstance(schema, dict):
        properties = schema.get("properties")
        required = schema.get("required")
        if isinstance(required, list) and (properties is None or isinstance(properties, dict)):
            defined = properties or {}
            for name in required:
                if name not in defined:
                    shown = ", ".join(f"`{p}`" for p in defined) or "none"
                    problems.append(f"`{path}.required` lists `{name}`, which `{path}.properties` does not define "
                                    f"(defined: {shown})")
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):
                for name, sub in value.items():
                    problems.extend(required_without_property(sub, f"{path}.properties.{name}"))
            elif key in ("items", "additionalProperties", "not", "if", "then", "else") and isinstance(value, dict):
                problems.extend(required_without_property(value, f"{path}.{key}"))
            elif key in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(value, list):
                for index, sub in enumerate(value):
                    problems.extend(required_without_property(sub, f"{path}.{key}[{index}]"))
            elif key in ("$defs", "definitions") and isinstance(value, dict):
                for name, sub in value.items():
                    problems.extend(required_without_property(sub, f"{path}.{key}.{name}"))
    return problems


def create_returns_id_only(tool_class: type) -> bool:
    """Whether `create` is annotated to return a bare instance id (older verl tools), not `(id, ToolResponse)`."""
    try:
        annotation = inspect.signature(tool_class.create).return_annotation
    except (TypeError, ValueError):
        return False
    return annotation is str or annotation in ("str", "'str'")
