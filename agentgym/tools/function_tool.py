"""Plain Python functions as tools: `@function_tool`, and the files `multi_turn.function_tool_path` names.

The JSON Schema the model sees comes from the signature through pydantic (so `Literal`, enums, `Optional`,
`list[...]`, nested pydantic models and defaults all work) and the parameter descriptions from the docstring
(Google, NumPy or reST style, read by `docstring_parser`). The decorator only marks the function; nothing is
registered globally: the loader collects the marked functions of the file it imports.

A function tool is stateless (each call is `fn(**arguments)`, sync functions in a worker thread). It returns a
`ToolResponse`, a string, anything JSON can hold (sent as JSON), or `(response, reward)` / `(response, reward,
metrics)`, as verl's function tools do. For per-trajectory state, write a `BaseTool`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

import docstring_parser
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.json_schema import GenerateJsonSchema

from agentgym.errors import ConfigError
from agentgym.tools.base_tool import BaseTool
from agentgym.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

MARK = "__agentgym_function_tool__"


@dataclass(frozen=True)
class FunctionToolSpec:
    """What `@function_tool` attaches to a function: its tool name, schema and argument model."""

    name: str
    fn: Callable[..., Any]
    tool_schema: OpenAIFunctionToolSchema
    arguments_model: type[BaseModel] | None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


def function_tool(name: str | Callable[..., Any] | None = None, *, description: str | None = None,
                  schema: OpenAIFunctionToolSchema | dict[str, Any] | None = None) -> Any:
    """Mark `fn` as a tool: `@function_tool`, `@function_tool("name")` or `@function_tool(description=..., schema=...)`.

    The function comes back unchanged (still callable as before). `schema` skips inference and is used as given.
    A parameter without a type hint, `*args`/`**kwargs`, or a docstring entry for a parameter the function does
    not have is an error here, at import time.
    """

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        tool_name = name if isinstance(name, str) else fn.__name__
        setattr(fn, MARK, build_spec(fn, tool_name, description=description, schema=schema))
        return fn

    if callable(name):
        return mark(name)
    return mark


def build_spec(fn: Callable[..., Any], name: str, *, description: str | None = None,
               schema: OpenAIFunctionToolSchema | dict[str, Any] | None = None) -> FunctionToolSpec:
    where = f"@function_tool {name!r} ({fn.__module__}.{fn.__qualname__})"
    if schema is not None:
        try:
            given = schema if isinstance(schema, OpenAIFunctionToolSchema) else OpenAIFunctionToolSchema.model_validate(schema)
        except ValidationError as exc:
            raise ConfigError(f"{where}: `schema` is not an OpenAI tool schema: {exc.errors()[0]['msg']}.",
                              fix="pass {'type': 'function', 'function': {'name', 'description', 'parameters'}}") from None
        return FunctionToolSpec(name, fn, given, None)
    doc = docstring_parser.parse(inspect.getdoc(fn) or "")
    arg_docs = {p.arg_name: (p.description or "").strip() for p in doc.params}
    signature = inspect.signature(fn)
    try:
        hints = get_type_hints(fn, include_extras=True)
    except Exception as exc:  # an annotation naming something the module does not define
        raise ConfigError(f"{where}: its type hints cannot be resolved ({type(exc).__name__}: {exc}).",
                          fix="import every type the annotations name in the tool's module") from None
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"{where}: *{param.name} / **{param.name} cannot be shown to a model as JSON Schema.",
                              fix="use named parameters (a `list[...]` parameter for many values)")
        if param.kind == param.POSITIONAL_ONLY:
            raise ConfigError(f"{where}: parameter {param.name!r} is positional-only; tools are called by keyword.",
                              fix="remove the `/` from the signature")
        if param.name not in hints:
            raise ConfigError(f"{where}: parameter {param.name!r} has no type hint, so its JSON type is unknown.",
                              fix=f"annotate it, e.g. `{param.name}: str`")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints[param.name], Field(default, description=arg_docs.get(param.name) or None))
    stray = sorted(set(arg_docs) - set(fields))
    if stray:
        raise ConfigError(f"{where}: the docstring describes argument(s) {stray} that the function does not take.",
                          fix=f"rename them to the function's parameters: {sorted(fields)}")
    model = create_model(f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
    try:
        parameters = model.model_json_schema(schema_generator=_NoTitles)
    except Exception as exc:  # pydantic: a type with no JSON Schema (a callable, an arbitrary class)
        raise ConfigError(f"{where}: its parameters have no JSON Schema ({exc}).",
                          fix="use JSON-like types: str, int, float, bool, list, dict, Literal, Enum, pydantic models") from None
    parameters = _inline_refs(parameters)
    parameters.setdefault("properties", {})
    parameters.setdefault("required", [])
    parameters.pop("additionalProperties", None)
    text = description if description is not None else "\n\n".join(
        part for part in (doc.short_description, doc.long_description) if part)
    tool_schema = OpenAIFunctionToolSchema.model_validate(
        {"type": "function", "function": {"name": name, "description": text or "", "parameters": parameters}})
    return FunctionToolSpec(name, fn, tool_schema, model)


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Nested models and enums written in place rather than as `$ref`s into `$defs` (small models and chat
    templates read a schema top-down); a recursive model keeps its `$defs`."""
    defs = schema.get("$defs") or {}

    def inline(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [inline(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            key = ref.removeprefix("#/$defs/")
            if key in seen or key not in defs:
                raise RecursionError(key)
            target = {k: v for k, v in defs[key].items() if k != "title"}
            return inline({**target, **{k: v for k, v in node.items() if k != "$ref"}}, (*seen, key))
        return {k: inline(v, seen) for k, v in node.items() if k != "$defs"}

    if not defs:
        return schema
    try:
        return inline(schema, ())
    except RecursionError:
        return schema


class _NoTitles(GenerateJsonSchema):
    """Tool schemas carry descriptions, not pydantic's generated titles (noise in every prompt)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def generate(self, schema: Any, mode: Any = "validation") -> dict[str, Any]:
        result = super().generate(schema, mode)
        result.pop("title", None)
        return result


class FunctionTool(BaseTool):
    """A `@function_tool` function behind the `BaseTool` interface (no instance state)."""

    def __init__(self, spec: FunctionToolSpec, config: dict | None = None):
        self.spec = spec
        super().__init__(config or {}, spec.tool_schema)

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any) -> tuple[ToolResponse, float, dict]:
        arguments = dict(parameters)
        if self.spec.arguments_model is not None:
            try:
                checked = self.spec.arguments_model.model_validate(parameters)
            except ValidationError as exc:
                problems = "; ".join(f"`{'.'.join(map(str, e['loc'])) or '(arguments)'}`: {e['msg']}" for e in exc.errors())
                return ToolResponse(text=f"Error: invalid arguments for `{self.name}`: {problems}."), 0.0, {}
            arguments = {key: getattr(checked, key) for key in self.spec.arguments_model.model_fields}
        if self.spec.is_async:
            result = await self.spec.fn(**arguments)
        else:
            result = await asyncio.to_thread(self.spec.fn, **arguments)
        return tool_result(result, self.name)


def tool_result(value: Any, name: str) -> tuple[ToolResponse, float, dict]:
    """`(ToolResponse, reward, metrics)` from what a function tool returned."""
    if isinstance(value, tuple):
        if not 1 <= len(value) <= 3:
            raise TypeError(f"function tool {name!r} returned a tuple of {len(value)} items; return a response, "
                            "(response, reward) or (response, reward, metrics)")
        reward = 0.0 if len(value) < 2 or value[1] is None else float(value[1])
        metrics = {} if len(value) < 3 or value[2] is None else dict(value[2])
        return _response(value[0]), reward, metrics
    return _response(value), 0.0, {}


def _response(value: Any) -> ToolResponse:
    if isinstance(value, ToolResponse):
        return value
    if isinstance(value, str):
        return ToolResponse(text=value)
    try:
        return ToolResponse(text=json.dumps(value, ensure_ascii=False, default=_jsonable))
    except (TypeError, ValueError):
        return ToolResponse(text=str(value))


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(type(value).__name__)


def load_function_tools(path: str | Path) -> dict[str, FunctionTool]:
    """The `@function_tool` functions defined or imported at the top level of the Python file `path`, by tool name."""
    file = Path(path).expanduser().resolve()
    entry = "actor_rollout_ref.rollout.multi_turn.function_tool_path"
    if not file.is_file():
        raise ConfigError(f"function tool file {path} does not exist.", entry=entry,
                          fix="point it at a .py file whose functions carry @function_tool")
    module_name = "agentgym_function_tools_" + "_".join(file.with_suffix("").parts[1:]).replace(".", "_").replace("-", "_")
    module = sys.modules.get(module_name)
    if module is None or getattr(module, "__file__", None) != str(file):
        spec = importlib.util.spec_from_file_location(module_name, file)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot import {file} as a Python module.", entry=entry, fix="give it a .py name")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # so the file's own relative lookups (dataclasses, pickling) find it
        try:
            spec.loader.exec_module(module)
        except ConfigError:
            sys.modules.pop(module_name, None)
            raise
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise ConfigError(f"importing {file} failed: {type(exc).__name__}: {exc}", entry=entry,
                              fix="run `python3 <file>` to see the full error") from exc
    tools: dict[str, FunctionTool] = {}
    for value in vars(module).values():
        spec_ = getattr(value, MARK, None)
        if not isinstance(spec_, FunctionToolSpec):
            continue
        other = tools.get(spec_.name)
        if other is not None and other.spec.fn is not spec_.fn:
            raise ConfigError(f"two functions in {file} are both tool {spec_.name!r}.", entry=entry,
                              fix="give one of them another name: @function_tool(\"other_name\")")
        tools[spec_.name] = FunctionTool(spec_)
    if not tools:
        raise ConfigError(f"{file} defines no @function_tool functions.", entry=entry,
                          fix="decorate the tool functions: `from agentgym import function_tool` then `@function_tool`")
    return tools
