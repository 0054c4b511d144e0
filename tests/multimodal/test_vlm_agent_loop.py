"""Images through the agent loop: prompt images encoded once, tool images appended as image parts with exact
pad-token expansion, spans recorded; the in-process engine takes the pixels at prefill."""

from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from agentgym.models.chat import chat_ids
from agentgym.multimodal.processor import ImageInputs, rope_positions
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.rollout.engines import DynamicCacheEngine
from agentgym.rollout.engines.base import SamplingParams
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.rollout.trajectory_io import read_jsonl, write_jsonl
from agentgym.tools.registry import build_tools, load_tool_specs


def _png(size=(120, 90)) -> bytes:
    img = Image.new("RGB", size, "white")
    for x in range(10, 40):
        for y in range(10, 30):
            img.putpixel((x, y), (255, 0, 0))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


class ImageScripted(ScriptedEngine):
    """The scripted engine with the image argument: records what it was given."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[ImageInputs | None] = []

    takes_images = True


    async def generate(self, prompt_ids, sampling, *, session_id=None, images=None):
        self.seen.append(images)
        return await super().generate(prompt_ids, sampling, session_id=session_id)


def _row(image: bytes) -> dict:
    return {"prompt": [{"role": "user", "content": "<image>How many red boxes?"}], "images": [image],
            "extra_info": {"tools_kwargs": {"image_zoom_in": {"create_kwargs": {"image": image}}}}}


def _zoom_script(box):
    def script(conversation: str, session_id):
        if "<tool_response>" not in conversation:
            return '<tool_call>\n{"name": "image_zoom_in", "arguments": {"bbox_2d": %s}}\n</tool_call>' % json.dumps(box)
        return "The answer is 1."
    return script


def _tools():
    return build_tools(load_tool_specs("tool_configs/image_zoom_in.yaml"))


async def test_tool_image_is_expanded_token_exactly_and_recorded(vision_processor, tmp_path):
    vp = vision_processor
    engine = ImageScripted(vp.tokenizer, _zoom_script([0, 0, 60, 45]))
    loop = AgentLoop(engine, vp.tokenizer, _tools(), config=AgentLoopConfig(max_response_tokens=400), processor=vp)
    traj = await loop.run(_row(_png()))
    assert traj.error is None, traj.error
    assert [len(x) if x else 0 for x in engine.seen] == [1, 2]  # the zoomed crop reaches the second turn
    assert len(traj.images) == 2 and all(u.startswith("data:image/png;base64,") for u in traj.images)
    prompt_span, tool_span = traj.image_spans
    assert prompt_span.turn is None and traj.turns[tool_span.turn].role == "tool"
    seq = traj.prompt_ids + traj.response_ids
    for span in traj.image_spans:
        assert set(seq[span.start:span.end]) == {vp.image_token_id}
    assert seq.count(vp.image_token_id) == sum(s.end - s.start for s in traj.image_spans)
    # Token-exact: the ids equal the template's rendering of the whole conversation, expanded by the processor.
    encoded = [vp.encode_image(_png())] + [vp.encode_image(engine.seen[1].images[1].png)]
    reference = vp.expand(chat_ids(vp.tokenizer, traj.messages, loop.tool_dicts), encoded)
    assert seq == reference[: len(seq)] and reference[len(seq):] == vp.tokenizer.encode("\n", add_special_tokens=False)
    tool_message = traj.messages[2]
    assert tool_message["content"][0] == {"type": "image", "image_index": 1}
    assert "Zoomed in on [0, 0, 60, 45]" in tool_message["content"][1]["text"]
    write_jsonl([traj], tmp_path / "t.jsonl")
    again = read_jsonl(tmp_path / "t.jsonl")[0]
    assert again.image_spans == traj.image_spans and again.images == traj.images


async def test_a_bad_box_is_answered_in_text(vision_processor):
    vp = vision_processor
    engine = ImageScripted(vp.tokenizer, _zoom_script([50, 10, 20, 40]))
    loop = AgentLoop(engine, vp.tokenizer, _tools(), config=AgentLoopConfig(max_response_tokens=400), processor=vp)
    traj = await loop.run(_row(_png()))
    assert traj.error is None
    assert "empty or inverted" in traj.messages[2]["content"] and len(traj.images) == 1
    engine = ImageScripted(vp.tokenizer, _zoom_script([0, 0, 500, 40]))
    loop = AgentLoop(engine, vp.tokenizer, _tools(), config=AgentLoopConfig(max_response_tokens=400), processor=vp)
    traj = await loop.run(_row(_png()))
    assert "reaches outside the 120x90 image" in traj.messages[2]["content"]


async def test_a_text_only_model_refuses_images_instead_of_dropping_them(vision_processor):
    engine = ImageScripted(vision_processor.tokenizer, _zoom_script([0, 0, 60, 45]))
    loop = AgentLoop(engine, vision_processor.tokenizer, _tools(), processor=None)
    traj = await loop.run(_row(_png()))
    assert traj.failed and "text-only" in traj.error and "dropped unseen" in traj.error


async def test_engine_takes_pixels_at_prefill_and_matches_a_full_forward(tiny_vlm_dir, vision_processor):
    vp = vision_processor
    image = vp.encode_image(_png())
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "count"}]}]
    prompt = vp.expand(chat_ids(vp.tokenizer, messages, add_generation_prompt=True), [image])
    text_prompt = chat_ids(vp.tokenizer, [{"role": "user", "content": "hello there"}], add_generation_prompt=True)
    inputs = ImageInputs((image,))
    sampling = SamplingParams(max_new_tokens=6, temperature=0.0, stop_token_ids=[])
    async with DynamicCacheEngine(tiny_vlm_dir) as engine:
        import asyncio

        together = await asyncio.gather(engine.generate(prompt, sampling, images=inputs),
                                        engine.generate(text_prompt, sampling))
        alone = await engine.generate(prompt, sampling, images=inputs)
        with pytest.raises(ValueError, match="image tokens"):
            await engine.generate(prompt + [vp.image_token_id], sampling, images=inputs)
    assert engine.stats.max_prefill_batch == 2
    assert together[0].token_ids == alone.token_ids
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir).eval()
    ids = torch.tensor([prompt + alone.token_ids])
    grid = inputs.image_grid_thw
    positions, _ = rope_positions(model, ids, grid)
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=inputs.pixel_values, image_grid_thw=grid, position_ids=positions).logits
    logprobs = torch.log_softmax(logits[0, len(prompt) - 1:-1].float(), -1)
    expected = logprobs.gather(-1, torch.tensor(alone.token_ids)[:, None])[:, 0]
    assert logprobs.argmax(-1).tolist() == alone.token_ids
    torch.testing.assert_close(torch.tensor(alone.logprobs), expected, atol=1e-4, rtol=1e-4)


async def test_sglang_engine_sends_image_data_with_expanded_ids(tiny_vlm_dir, vision_processor):
    from agentgym.rollout.engines.servers.sglang_engine import SGLangEngine, SGLangEngineConfig
    from tests.engines.sglang_test_server import FakeSGLangServer

    vp = vision_processor
    image = vp.encode_image(_png())
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "count"}]}]
    prompt = vp.expand(chat_ids(vp.tokenizer, messages, add_generation_prompt=True), [image])
    sampling = SamplingParams(max_new_tokens=4, temperature=0.0, stop_token_ids=[])
    server = await FakeSGLangServer(str(tiny_vlm_dir)).start()
    try:
        async with SGLangEngine(SGLangEngineConfig(urls=[server.url])) as engine:
            remote = await engine.generate(prompt, sampling, images=ImageInputs((image,)))
        async with DynamicCacheEngine(tiny_vlm_dir) as local_engine:
            local = await local_engine.generate(prompt, sampling, images=ImageInputs((image,)))
    finally:
        await server.close()
    body = server.calls("/generate")[-1]
    assert body["input_ids"] == prompt
    assert body["image_data"] == ["data:image/png;base64," + __import__("base64").b64encode(image.png).decode()]
    assert remote.token_ids == local.token_ids
