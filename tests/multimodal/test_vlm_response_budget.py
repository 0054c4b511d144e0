"""A tool image that does not fit in the response budget ends the episode cleanly: it is stored as never seen,
with no token span (it used to get a span past the end of the sequence, and `Trajectory.check` raised)."""

from __future__ import annotations

import io
import json

from PIL import Image

from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.tools.registry import build_tools, load_tool_specs


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (120, 90), "red").save(out, format="PNG")
    return out.getvalue()


class ImageScripted(ScriptedEngine):
    takes_images = True

    async def generate(self, prompt_ids, sampling, *, session_id=None, images=None):
        return await super().generate(prompt_ids, sampling, session_id=session_id)


def _zoom(conversation: str, session_id) -> str:
    call = {"name": "image_zoom_in", "arguments": {"bbox_2d": [0, 0, 60, 45]}}
    return "\\boxed{1}" if "<tool_response>" in conversation else "<tool_call>\n" + json.dumps(call) + "\n</tool_call>"


async def test_a_tool_image_past_the_response_budget_is_not_given_a_span(vision_processor):
    vp = vision_processor
    image = _png()
    row = {"prompt": [{"role": "user", "content": "<image>How many?"}], "images": [image],
           "extra_info": {"tools_kwargs": {"image_zoom_in": {"create_kwargs": {"image": image}}}}}
    tools = build_tools(load_tool_specs("tool_configs/image_zoom_in.yaml"))
    call_tokens = len(vp.tokenizer.encode(_zoom("", None), add_special_tokens=False)) + 1
    loop = AgentLoop(ImageScripted(vp.tokenizer, _zoom), vp.tokenizer, tools,
                     config=AgentLoopConfig(max_response_tokens=call_tokens + 8), processor=vp)
    traj = await loop.run(row)
    assert traj.error is None, traj.error
    assert len(traj.response_ids) == call_tokens  # the call, and nothing of the tool's reply
    assert [s.turn for s in traj.image_spans] == [None]  # the prompt image only
    assert len(traj.images) == 2  # the crop is kept in the transcript, unseen
    roomy = AgentLoop(ImageScripted(vp.tokenizer, _zoom), vp.tokenizer, tools,
                      config=AgentLoopConfig(max_response_tokens=400), processor=vp)
    full = await roomy.run(row)
    assert len(full.image_spans) == 2 and full.error is None


async def test_a_sampled_image_placeholder_ends_the_turn_before_it(vision_processor):
    """A weakly trained VLM can sample `<|image_pad|>`; kept, it has no image behind it and training stops with
    "image tokens and recorded image spans disagree". The turn keeps the tokens before it and the episode ends."""
    from agentgym.trainer.batching import SampleBatch

    vp = vision_processor
    image = _png()
    row = {"prompt": [{"role": "user", "content": "<image>How many?"}], "images": [image],
           "extra_info": {"tools_kwargs": {"image_zoom_in": {"create_kwargs": {"image": image}}}}}
    tools = build_tools(load_tool_specs("tool_configs/image_zoom_in.yaml"))
    loop = AgentLoop(ImageScripted(vp.tokenizer, lambda conversation, sid: "two <|image_pad|> squares"),
                     vp.tokenizer, tools, config=AgentLoopConfig(max_response_tokens=400), processor=vp)
    traj = await loop.run(row)
    assert traj.error is None and traj.finish_reason == "vision_token"
    assert vp.image_token_id not in traj.response_ids
    assert vp.tokenizer.decode(traj.response_ids).strip() == "two"
    SampleBatch.from_trajectories([traj], vp)  # trains without the mismatch
