"""`python3 -m agentgym.services.gateway`: the run config's in-process engine behind the endpoint, as a user starts it."""

from __future__ import annotations

import httpx
import pytest
from openai import OpenAI

from tests.services.conftest import start_module_server, stop

pytestmark = pytest.mark.timeout(180)


def test_the_gateway_command_serves_and_scores_with_the_configured_reward(tiny_model_dir, tmp_path):
    reward = tmp_path / "reward.py"
    reward.write_text("def score(trajectory):\n    return 0.25 + 0 * len(trajectory.response_ids)\n")
    served = start_module_server("agentgym.services.gateway", "--model", str(tiny_model_dir), "trainer.device=cpu",
                                 "data.max_response_length=16", f"custom_reward_function.path={reward}",
                                 "custom_reward_function.name=score")
    try:
        client = OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0)
        assert [m.id for m in client.models.list()] == [tiny_model_dir.name]
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], user="u1")
        assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
        traj = httpx.get(f"{served.url}/v1/sessions/u1/trajectory").json()
        assert 0 < sum(traj["loss_mask"]) <= 16 and traj["final_score"] == 0.25, "the configured reward scored it"
        httpx.post(f"{served.url}/v1/sessions/u1/reward", json={"reward": 1.0}).raise_for_status()
        assert httpx.get(f"{served.url}/v1/sessions/u1/trajectory").json()["final_score"] == 1.0, "the agent's wins"
        assert httpx.delete(f"{served.url}/v1/sessions/u1").json() == {"deleted": True}
    finally:
        stop(served)
