"""Tools the model calls: the verl-compatible interface, schema models, the YAML registry, built-in tools."""

from agentgym.tools.base_tool import BaseTool
from agentgym.tools.sandbox_fusion import SandboxFusionTool
from agentgym.tools.search import SearchTool
from agentgym.tools.schemas import (
    OpenAIFunctionCallSchema,
    OpenAIFunctionParametersSchema,
    OpenAIFunctionParsedSchema,
    OpenAIFunctionPropertySchema,
    OpenAIFunctionSchema,
    OpenAIFunctionToolCall,
    OpenAIFunctionToolSchema,
    ToolResponse,
)

__all__ = [
    "BaseTool",
    "OpenAIFunctionCallSchema",
    "OpenAIFunctionParametersSchema",
    "OpenAIFunctionParsedSchema",
    "OpenAIFunctionPropertySchema",
    "OpenAIFunctionSchema",
    "OpenAIFunctionToolCall",
    "OpenAIFunctionToolSchema",
    "SandboxFusionTool",
    "SearchTool",
    "ToolResponse",
]
