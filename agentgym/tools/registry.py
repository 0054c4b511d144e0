"""Tool registrations from YAML, in verl's layout: `tools: [{class_name, config, tool_schema}]`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, SchemaError
from pydantic import ValidationError

from agentgym.errors import ConfigError
from agentgym.loading import import_class, read_yaml_list
from agentgym.tools.aliases import VERL_CLASS_ALIASES
from agentgym.tools.base_tool import BaseTool
from agentgym.tools.checks import create_returns_id_only, required_without_property
from agentgym.tools.mcp_tool import MCPEntry, build_mcp_tools, parse_mcp_entry
from agentgym.tools.schemas import OpenAIFunctionToolSchema

TOOL_YAML_EXAMPLE = """tools:
  - class_name: agentgym.tools.calculator.CalculatorTool
    config: {type: native}
    tool_schema:
      type: function
      function:
        name: calculator
        description: Evaluate an arithmetic expression.
        parameters:
          type: object
          properties:
            expression: {type: string, description: "e.g. 12*(3+4)"}
          required: [expression]"""


@dataclass(frozen=True)
class ToolSpec:
    """One validated YAML entry; building the tool object is separate so `agentgym tools validate` stays cheap."""

    class_name: str
    tool_class: type[BaseTool]
    config: dict[str, Any]
    tool_schema: OpenAIFunctionToolSchema
    warnings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.tool_schema.function.name


def load_tool_specs(path: str | Path) -> list[ToolSpec]:
    """Parse and check every entry of a tool YAML file; the first problem found raises ConfigError."""
    file = str(path)
    specs: list[ToolSpec] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(read_yaml_list(path, "tools", TOOL_YAML_EXAMPLE)):
        entry = f"tools[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError("each tool must be a mapping.", file=file, entry=entry, fix=f"write it as:\n{TOOL_YAML_EXAMPLE}")
        class_name = raw.get("class_name")
        if not isinstance(class_name, str) or not class_name:
            raise ConfigError(
                "`class_name` is missing.", file=file, entry=entry, fix="add `class_name: package.module.ToolClass`."
            )
        entry = f"tools[{index}] ({class_name})"
        config = raw.get("config") or {}
        if not isinstance(config, dict):
            raise ConfigError("`config` must be a mapping.", file=file, entry=entry, fix="write `config: {type: native}`.")
        if config.get("type") == "mcp":
            continue  # its tools come from its servers: load_mcp_entries
        schema = _parse_schema(raw.get("tool_schema"), file=file, entry=entry)
        tool_class = import_class(class_name, BaseTool, aliases=VERL_CLASS_ALIASES, file=file, entry=entry)
        name = schema.function.name
        if name in seen:
            raise ConfigError(
                f"tool name `{name}` is already used by tools[{seen[name]}].",
                file=file,
                entry=entry,
                fix="give every tool a distinct `tool_schema.function.name`.",
            )
        seen[name] = index
        warnings = ()
        if create_returns_id_only(tool_class):
            warnings = (f"{entry}: `{class_name}.create` is annotated to return only an instance id (older verl "
                        "tools do); agentgym accepts that and uses the id, but verl's current signature returns "
                        "`(instance_id, ToolResponse)`: write `return instance_id, ToolResponse()`.",)
        specs.append(ToolSpec(class_name=class_name, tool_class=tool_class, config=config, tool_schema=schema,
                              warnings=warnings))
    return specs


def build_tools(specs: list[ToolSpec]) -> dict[str, BaseTool]:
    """Instantiate tools, keyed by the name the model calls them by."""
    return {spec.name: spec.tool_class(spec.config, spec.tool_schema) for spec in specs}


def load_mcp_entries(path: str | Path) -> list[MCPEntry]:
    """The entries of type `mcp` of a tool YAML file, checked (their servers are not contacted here)."""
    file = str(path)
    return [parse_mcp_entry(raw, index, file) for index, raw in enumerate(read_yaml_list(path, "tools", TOOL_YAML_EXAMPLE))
            if isinstance(raw, dict) and isinstance(raw.get("config"), dict) and raw["config"].get("type") == "mcp"]


def load_all_tools(tool_config_path: str | Path | None = None,
                   function_tool_path: str | Path | None = None) -> dict[str, BaseTool]:
    """The tools of a tool YAML (its MCP entries' tools listed from their servers) and of a `@function_tool` file
    together (verl's `load_all_tools`); a name used twice is an error."""
    tools = build_tools(load_tool_specs(tool_config_path)) if tool_config_path else {}
    for entry in load_mcp_entries(tool_config_path) if tool_config_path else []:
        served = build_mcp_tools(entry)
        clash = sorted(set(served) & set(tools))
        if clash:
            raise ConfigError(f"MCP tool name(s) {clash} are already used by other tools of this file.",
                              file=str(tool_config_path), entry=f"tools[{entry.index}] (mcp)",
                              fix="drop them with mcp.tool_selected_list, or rename the other tools")
        tools.update(served)
    if function_tool_path:
        from agentgym.tools.function_tool import load_function_tools

        functions = load_function_tools(function_tool_path)
        clash = sorted(set(functions) & set(tools))
        if clash:
            raise ConfigError(f"function tool name(s) {clash} are also tools in {tool_config_path}.",
                              file=str(function_tool_path), entry="multi_turn.function_tool_path",
                              fix="every tool name must be unique across tool_config_path and function_tool_path; "
                                  "rename one of them")
        tools.update(functions)
    return tools


def initialize_tools_from_config(tools_config_file: str | Path) -> list[BaseTool]:
    """verl's entry point name, kept so verl-style launch code works unchanged."""
    return list(build_tools(load_tool_specs(tools_config_file)).values())


def _parse_schema(raw: Any, *, file: str, entry: str) -> OpenAIFunctionToolSchema:
    if not isinstance(raw, dict):
        raise ConfigError(
            "`tool_schema` is missing or not a mapping.",
            file=file,
            entry=entry,
            fix="add `tool_schema: {type: function, function: {name, description, parameters}}`.",
        )
    try:
        schema = OpenAIFunctionToolSchema.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"`tool_schema.{'.'.join(str(p) for p in err['loc'])}`: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(
            f"invalid tool_schema: {problems}.", file=file, entry=entry, fix=f"follow this layout:\n{TOOL_YAML_EXAMPLE}"
        ) from None
    parameters = raw.get("function", {}).get("parameters", {})
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as exc:
        location = "/".join(str(p) for p in exc.path) or "(top level)"
        raise ConfigError(
            f"`tool_schema.function.parameters` is not valid JSON Schema at {location}: {exc.message}.",
            file=file,
            entry=entry,
            fix="use JSON Schema types (string, number, integer, boolean, array, object, null).",
        ) from None
    problems = required_without_property(parameters)
    if problems:
        raise ConfigError(
            f"`tool_schema.function.parameters` asks for arguments it never describes: {'; '.join(problems)}. "
            "The model only sees `properties`, so every call would be rejected for the missing argument.",
            file=file,
            entry=entry,
            fix="add each required name to `properties` (with its type and description), or drop it from `required`.",
        )
    return schema
