"""The tool's config: verl's keys, ours, derived timeouts, and errors that name the key."""

from __future__ import annotations

import pytest

from agentgym.errors import ConfigError
from agentgym.tools.aliases import VERL_CLASS_ALIASES
from agentgym.tools.sandbox_fusion.tool import VerlSandboxFusionTool
from agentgym.tools.sandbox_fusion import SandboxFusionTool, SandboxFusionToolConfig
from agentgym.tools.sandbox_fusion.config import run_code_endpoint


def test_verl_keys_and_defaults():
    c = SandboxFusionToolConfig.from_tool_config(
        {
            "type": "native",
            "sandbox_fusion_url": "http://sandbox:8080/run_code",
            "num_workers": 4,
            "rate_limit": 5,
            "default_timeout": 20,
            "default_language": "bash",
            "memory_limit_mb": 512,
            "enable_global_rate_limit": False,
        }
    )
    assert (c.num_workers, c.rate_limit, c.default_timeout, c.default_language, c.memory_limit_mb) == (
        4, 5, 20, "bash", 512,
    )
    assert c.run_code_url == "http://sandbox:8080/run_code"
    d = SandboxFusionToolConfig.from_tool_config({})
    assert (d.effective_num_workers, d.effective_rate_limit, d.default_timeout, d.default_language, d.memory_limit_mb) == (
        10, 10, 30, "python", 1024,
    )
    assert d.enable_global_rate_limit is True and d.sandbox_fusion_url is None


def test_derived_timeouts_and_burst():
    c = SandboxFusionToolConfig.from_tool_config({"default_timeout": 10, "request_timeout_margin": 5, "rate_limit": 2.5})
    assert c.request_timeout_for(10) == 25  # compile (defaults to run) + run + margin
    assert c.deadline_for(10) == 50
    assert c.effective_burst == 3 and c.effective_max_timeout == 10
    c = SandboxFusionToolConfig.from_tool_config({"compile_timeout": 3, "deadline": 9, "burst": 1})
    assert c.request_timeout_for(30) == 43 and c.deadline_for(30) == 9 and c.effective_burst == 1


@pytest.mark.parametrize(
    "url,endpoint",
    [
        ("http://h:1", "http://h:1/run_code"),
        ("http://h:1/", "http://h:1/run_code"),
        ("http://h:1/run_code", "http://h:1/run_code"),
        ("https://gw.example/prefix/run_code/", "https://gw.example/prefix/run_code"),
    ],
)
def test_both_url_forms(url, endpoint):
    assert run_code_endpoint(url) == endpoint


@pytest.mark.parametrize(
    "config,message",
    [
        ({"rate_limt": 5}, "unknown key 'rate_limt'"),
        ({"num_workers": 0}, "num_workers: Input should be greater than or equal to 1"),
        ({"sandbox_fusion_url": "sandbox:8080"}, "must start with http:// or https://"),
        ({"retry_initial_backoff": 5, "retry_max_backoff": 1}, "retry_max_backoff must be >= retry_initial_backoff"),
    ],
)
def test_bad_config_names_the_key(config, message):
    with pytest.raises(ConfigError, match="SandboxFusionTool") as info:
        SandboxFusionTool(config, None)
    assert message in str(info.value)
    assert "known keys:" in str(info.value)


def test_verl_class_path_alias_defaults_to_verls_output_format():
    assert VERL_CLASS_ALIASES["verl.tools.sandbox_fusion_tools.SandboxFusionTool"] == (
        "agentgym.tools.sandbox_fusion.tool.VerlSandboxFusionTool"
    )
    url = {"sandbox_fusion_url": "http://127.0.0.1:1"}
    assert VerlSandboxFusionTool(url, None).settings.output_format == "verl"
    assert VerlSandboxFusionTool({**url, "output_format": "agentgym"}, None).settings.output_format == "agentgym"
    assert SandboxFusionTool(url, None).settings.output_format == "agentgym"


def test_default_schema_is_verls_code_interpreter():
    tool = SandboxFusionTool({"sandbox_fusion_url": "http://127.0.0.1:1"}, None)
    schema = tool.get_openai_tool_schema()
    assert tool.name == "code_interpreter"
    assert schema.function.parameters.required == ["code"]
    assert set(schema.function.parameters.properties) == {"code", "language"}


async def test_reward_and_instance_lifecycle():
    tool = SandboxFusionTool({"sandbox_fusion_url": "http://127.0.0.1:1"}, None)
    iid, resp = await tool.create(ground_truth="42")
    assert resp.is_empty()
    assert await tool.calc_reward(iid) == 0.0
    await tool.release(iid)
    await tool.release(iid)  # releasing twice is harmless: the session releases on every path
