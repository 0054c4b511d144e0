"""Trainer side of vision-language trajectories: pixels and multimodal rotary positions through packed and padded
micro-batches; the trainer's log-probs equal the engine's on the same tokens (CPU, fp32)."""

from __future__ import annotations

import torch

from agentgym.config.schema import FSDPConfig, ModelConfig
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.rollout.engines import DynamicCacheEngine
from agentgym.rollout.engines.base import SamplingParams
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym.trainer.batching import SampleBatch, plan_forward, plan_update
from agentgym.trainer.workers.model import forward_policy, load_hf_model, transformer_blocks

from tests.multimodal.test_vlm_agent_loop import _png, _row


class ZoomThenModel:
    """First turn: a scripted zoom call (so a tool image sits mid-sequence); later turns: the real engine."""

    def __init__(self, tokenizer, real: DynamicCacheEngine):
        box = '<tool_call>\n{"name": "image_zoom_in", "arguments": {"bbox_2d": [0, 0, 60, 45]}}\n</tool_call>'
        self.scripted = ScriptedEngine(tokenizer, lambda text, sid: box)
        self.real = real

    takes_images = True


    async def generate(self, prompt_ids, sampling, *, session_id=None, images=None):
        if "<tool_response>" not in self.scripted.tokenizer.decode(prompt_ids[-60:]):
            return await self.scripted.generate(prompt_ids, sampling, session_id=session_id)
        return await self.real.generate(prompt_ids, sampling, session_id=session_id, images=images)


async def _trajectories(tiny_vlm_dir, vp):
    tools = build_tools(load_tool_specs("tool_configs/image_zoom_in.yaml"))
    config = AgentLoopConfig(max_response_tokens=300, sampling=SamplingParams(max_new_tokens=48, temperature=1.0, seed=3))
    async with DynamicCacheEngine(tiny_vlm_dir) as real:
        loop = AgentLoop(ZoomThenModel(vp.tokenizer, real), vp.tokenizer, tools, config=config, processor=vp)
        with_tool = await loop.run(_row(_png()))
        plain = await AgentLoop(real, vp.tokenizer, {}, config=config, processor=vp).run(
            {"prompt": [{"role": "user", "content": "no picture here"}]})
    return [with_tool, plain]


def _engine_positions(traj):
    """Response positions the real engine produced (all but the scripted first assistant turn)."""
    assistant = [t for t in traj.turns if t.role == "assistant"]
    skip = assistant[0] if len(assistant) > 1 else None
    return [i for i, m in enumerate(traj.loss_mask) if m and not (skip and skip.start <= i < skip.end)]


async def test_trainer_logprobs_match_the_engine_packed_and_padded(tiny_vlm_dir, vision_processor):
    trajs = await _trajectories(tiny_vlm_dir, vision_processor)
    assert all(t.error is None for t in trajs), [t.error for t in trajs]
    assert len(trajs[0].image_spans) == 2 and not trajs[1].image_spans
    batch = SampleBatch.from_trajectories(trajs, vision_processor)
    assert batch.multimodal[1] is None and batch.multimodal[0]["image_grid_thw"].shape == (2, 3)
    for remove_padding in (True, False):
        model = load_hf_model(ModelConfig(path=str(tiny_vlm_dir), use_remove_padding=remove_padding), FSDPConfig()).eval()
        [plan] = plan_forward(batch, ["loss_mask"], 1, micro_batch_size=2, padded=not remove_padding)
        assert len(plan) == 1 and plan[0].multimodal["images_per_seq"].tolist() == [2, 0]
        with torch.no_grad():
            out, _ = forward_policy(model, plan[0])
        for traj, got in zip(trajs, torch.split(out, plan[0].response_lens)):
            where = _engine_positions(traj)
            assert where
            torch.testing.assert_close(got[where], torch.tensor(traj.rollout_logprobs)[where], atol=2e-4, rtol=1e-4)


async def test_update_backpropagates_into_the_vision_tower(tiny_vlm_dir, vision_processor):
    trajs = await _trajectories(tiny_vlm_dir, vision_processor)
    batch = SampleBatch.from_trajectories(trajs, vision_processor)
    model = load_hf_model(ModelConfig(path=str(tiny_vlm_dir)), FSDPConfig())
    [[micros]] = plan_update(batch, [], 1, groups_per_minibatch=2, micro_batch_size=1)
    assert [m.multimodal is not None for m in micros] == [True, False]
    log_probs, _ = forward_policy(model, micros[0])
    (-(log_probs * micros[0].fields["loss_mask"]).sum()).backward()
    grad = model.model.visual.patch_embed.proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    names = {type(b).__name__ for b in transformer_blocks(model)}
    assert names == {"Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"}  # FSDP shards the vision blocks too


def test_a_micro_batch_without_images_still_runs_the_vision_tower_when_sharded(tiny_vlm_dir):
    from agentgym.trainer.batching import MicroBatch
    from agentgym.trainer.workers.model import _idle_vision_tower

    model = load_hf_model(ModelConfig(path=str(tiny_vlm_dir)), FSDPConfig())
    text_only = MicroBatch(torch.tensor([[1, 2, 3]]), torch.tensor([[0, 1, 2]]), torch.tensor([0, 1]),
                           torch.tensor([2, 3]), [2], [0], {"loss_mask": torch.ones(2)})
    assert _idle_vision_tower(model, text_only) is None  # one process: nothing to keep in step
    tie = _idle_vision_tower(model, text_only, force=True)
    assert float(tie.detach()) == 0.0
    tie.backward()
    assert all(p.grad is not None for p in model.model.visual.parameters())  # every block took part
