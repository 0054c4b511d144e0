"""Argument validation against the tool's JSON schema, phrased for the model."""

from agentgym.tools.schemas import OpenAIFunctionToolSchema
from agentgym.tools.validation import argument_errors, format_argument_error

SCHEMA = OpenAIFunctionToolSchema.model_validate(
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "d",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "limit": {"type": "integer", "minimum": 1},
                    "mode": {"type": "string", "enum": ["fast", "exact"]},
                },
                "required": ["query"],
                "additionalProperties": False,
            },
        },
    }
)


def test_valid_arguments_have_no_errors():
    assert argument_errors(SCHEMA, {"query": "x", "limit": 3, "mode": "fast"}) == []


def test_each_problem_is_named():
    problems = argument_errors(SCHEMA, {"limit": "3", "mode": "slow", "extra": 1})
    assert problems == [
        "argument `query` is required but missing",
        "Additional properties are not allowed ('extra' was unexpected)",
        'argument `limit` must be of type integer, got "3"',
        'argument `mode` must be one of ["fast", "exact"], got "slow"',
    ]


def test_message_shows_expected_parameters():
    text = format_argument_error("search", ["argument `query` is required but missing"], SCHEMA)
    assert text.startswith("Error: invalid arguments for tool `search`: argument `query` is required but missing. Expected parameters: {")
    assert '"limit": {"type": "integer", "minimum": 1}' in text
