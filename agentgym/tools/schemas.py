"""Pydantic models of the OpenAI function-tool schema and of parsed tool calls.

Field names and shapes follow verl's `verl.tools.schemas` so tool code written for verl keeps working.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator


class OpenAIFunctionPropertySchema(BaseModel):
    """One property of a function's parameters; extra JSON Schema keywords (items, minimum, ...) are kept."""

    model_config = ConfigDict(extra="allow")

    type: Optional[str | list[str]] = None
    description: Optional[str] = None
    enum: Optional[list[Any]] = None


class OpenAIFunctionParametersSchema(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = "object"
    properties: dict[str, OpenAIFunctionPropertySchema] = Field(default_factory=dict)
    required: list[str] = Field(default_factory=list)


class OpenAIFunctionSchema(BaseModel):
    name: str
    description: str = ""
    parameters: OpenAIFunctionParametersSchema = Field(default_factory=OpenAIFunctionParametersSchema)
    strict: bool = False


class OpenAIFunctionToolSchema(BaseModel):
    """What a tool shows the model: `{"type": "function", "function": {name, description, parameters}}`."""

    type: Literal["function"] = "function"
    function: OpenAIFunctionSchema

    def parameters_json_schema(self) -> dict[str, Any]:
        """The parameters as a plain JSON Schema document, for validation with `jsonschema`."""
        return self.function.parameters.model_dump(exclude_none=True)


class OpenAIFunctionParsedSchema(BaseModel):
    """A call as the model wrote it: arguments still a JSON string."""

    name: str
    arguments: str


class OpenAIFunctionCallSchema(BaseModel):
    name: str
    arguments: dict[str, Any]

    @staticmethod
    def from_openai_function_parsed_schema(
        parsed_schema: OpenAIFunctionParsedSchema,
    ) -> tuple["OpenAIFunctionCallSchema", bool]:
        """Decode the argument string; the flag says whether it had to be replaced by `{}`."""
        try:
            arguments = json.loads(parsed_schema.arguments)
        except json.JSONDecodeError:
            return OpenAIFunctionCallSchema(name=parsed_schema.name, arguments={}), True
        if not isinstance(arguments, dict):
            return OpenAIFunctionCallSchema(name=parsed_schema.name, arguments={}), True
        return OpenAIFunctionCallSchema(name=parsed_schema.name, arguments=arguments), False


class OpenAIFunctionToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: OpenAIFunctionCallSchema


class ToolResponse(BaseModel):
    """What a tool hands back to the conversation. Text for the model; images/videos for multimodal models."""

    text: Optional[str] = None
    image: Optional[list[Any]] = None
    video: Optional[list[Any]] = None

    @model_validator(mode="before")
    @classmethod
    def _wrap_single_media(cls, values: Any) -> Any:
        if isinstance(values, dict):
            for key in ("image", "video"):
                if values.get(key) is not None and not isinstance(values[key], list):
                    values = {**values, key: [values[key]]}
        return values

    def is_empty(self) -> bool:
        return not self.text and not self.image and not self.video
