"""Images in the paged engine (tiny Qwen2.5-VL, CPU, fp32): logprobs against the model's own full forward pass
(pixels, 3-D rotary positions), prefix-cache keys that tell images apart, a tool image in the next turn,
preemption and chunked prefill through an image, and bad input."""

from __future__ import annotations

import asyncio
import io
import shutil

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from agentgym.models.chat import chat_ids
from agentgym.multimodal.processor import ImageInputs, rope_positions
from agentgym.rollout.engines import SamplingParams, DynamicCacheEngine
from agentgym.rollout.engines.paged import PagedEngine, PagedEngineConfig


def config(**overrides) -> PagedEngineConfig:
    base = dict(device="cpu", dtype="float32", block_size=4, max_batch_size=8, max_model_len=512, num_blocks=600,
                intra_op_threads=1)
    return PagedEngineConfig(**{**base, **overrides})


def png(colour: tuple[int, int, int], size=(96, 72), box=(10, 10, 40, 30)) -> bytes:
    img = Image.new("RGB", size, "white")
    img.paste(colour, box)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def sharp_vlm_dir(tiny_vlm_dir, tmp_path_factory):
    """The tiny VLM with its queries and keys scaled up: a random tiny model attends almost uniformly, so a
    wrong rotary position would move logprobs by less than the tolerance; sharp attention makes it visible."""
    out = tmp_path_factory.mktemp("sharp-vlm")
    for f in tiny_vlm_dir.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors"):
            shutil.copy(f, out / f.name)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir)
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                proj.weight.mul_(4.0)
                proj.bias.mul_(4.0)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def reference(sharp_vlm_dir):
    return AutoModelForImageTextToText.from_pretrained(sharp_vlm_dir).eval()


def full_forward_logprobs(model, prompt: list[int], output: list[int], images: ImageInputs, temperature: float):
    ids = torch.tensor([prompt + output])
    grid = images.image_grid_thw
    positions, _ = rope_positions(model, ids, grid)
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=images.pixel_values, image_grid_thw=grid,
                       position_ids=positions).logits[0, len(prompt) - 1 : -1].float()
    logprobs = torch.log_softmax(logits / (temperature if temperature > 0 else 1.0), -1)
    return logprobs.gather(1, torch.tensor(output)[:, None])[:, 0]


def image_prompt(vp, images, text="how many red squares?") -> list[int]:
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]
    ids = chat_ids(vp.tokenizer, [{"role": "user", "content": content}], add_generation_prompt=True)
    return vp.expand(ids, images)


@pytest.mark.parametrize("sampling", [
    SamplingParams(max_new_tokens=12, temperature=0.0, stop_token_ids=[]),
    SamplingParams(max_new_tokens=12, temperature=1.0, seed=7, stop_token_ids=[]),
])
async def test_logprobs_match_the_models_full_forward_with_pixels(sharp_vlm_dir, vision_processor, reference, sampling):
    vp = vision_processor
    red, blue = vp.encode_image(png((255, 0, 0))), vp.encode_image(png((0, 0, 255), size=(64, 128)))
    one, two = ImageInputs((red,)), ImageInputs((red, blue))
    prompts = [(image_prompt(vp, [red]), one), (image_prompt(vp, [red, blue], "which is bigger?"), two),
               (chat_ids(vp.tokenizer, [{"role": "user", "content": "no image here"}], add_generation_prompt=True), None)]
    async with PagedEngine(sharp_vlm_dir, config()) as engine:
        engine.eos_token_ids = frozenset()
        outs = await asyncio.gather(*(engine.generate(p, sampling, images=im) for p, im in prompts))
        assert engine.stats.images_encoded == 3
    for (prompt, images), out in zip(prompts, outs):
        assert len(out.token_ids) == 12
        if images is None:
            continue
        expected = full_forward_logprobs(reference, prompt, out.token_ids, images, sampling.temperature)
        torch.testing.assert_close(torch.tensor(out.logprobs), expected, atol=1e-4, rtol=1e-4)
    if sampling.temperature == 0.0:
        async with DynamicCacheEngine(sharp_vlm_dir) as dynamic:
            dynamic.eos_token_ids = frozenset()
            same = await asyncio.gather(*(dynamic.generate(p, sampling, images=im) for p, im in prompts))
        assert [o.token_ids for o in same] == [o.token_ids for o in outs]


async def test_the_prefix_cache_tells_images_of_one_size_apart(tiny_vlm_dir, vision_processor):
    """Every pad token has the same id; keyed by token ids alone, the blue image would reuse the red one's
    blocks and the model would see red."""
    vp = vision_processor
    red, blue = vp.encode_image(png((255, 0, 0))), vp.encode_image(png((0, 0, 255)))
    assert red.num_tokens == blue.num_tokens
    prompt = image_prompt(vp, [red])
    assert prompt == image_prompt(vp, [blue])  # identical ids: only the pixels differ
    sampling = SamplingParams(max_new_tokens=8, temperature=1.0, seed=3, stop_token_ids=[])
    async with PagedEngine(tiny_vlm_dir, config()) as fresh:
        blue_alone = await fresh.generate(prompt, sampling, images=ImageInputs((blue,)))
    async with PagedEngine(tiny_vlm_dir, config()) as engine:
        await engine.generate(prompt, sampling, images=ImageInputs((red,)))
        cached_before = engine.stats.cached_tokens
        blue_after_red = await engine.generate(prompt, sampling, images=ImageInputs((blue,)))
        first_pad = prompt.index(vp.image_token_id)
        assert engine.stats.cached_tokens - cached_before <= first_pad  # only the text before the image
        encoded = engine.stats.images_encoded
        cached_before = engine.stats.cached_tokens
        again = await engine.generate(prompt, sampling, images=ImageInputs((blue,)))
        assert engine.stats.cached_tokens - cached_before >= first_pad + blue.num_tokens  # the same image is shared
        assert engine.stats.images_encoded == encoded  # and not encoded again
    assert blue_after_red.logprobs == pytest.approx(blue_alone.logprobs, abs=1e-5)
    assert again.logprobs == pytest.approx(blue_alone.logprobs, abs=1e-5)


async def test_a_tool_image_in_the_next_turn_reuses_the_first_turn(sharp_vlm_dir, vision_processor, reference):
    vp = vision_processor
    scene, crop = vp.encode_image(png((255, 0, 0))), vp.encode_image(png((0, 160, 0), size=(48, 48), box=(4, 4, 20, 20)))
    first = image_prompt(vp, [scene])
    sampling = SamplingParams(max_new_tokens=6, temperature=1.0, seed=11, stop_token_ids=[])
    async with PagedEngine(sharp_vlm_dir, config()) as engine:
        engine.eos_token_ids = frozenset()
        turn1 = await engine.generate(first, sampling, images=ImageInputs((scene,)))
        tool = chat_ids(vp.tokenizer, [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "zoomed"}]}],
                        add_generation_prompt=True)
        second = first + turn1.token_ids + vp.expand(tool, [crop])
        both = ImageInputs((scene, crop))
        prefilled = engine.stats.prefilled_tokens
        turn2 = await engine.generate(second, sampling, images=both)
        assert engine.stats.prefilled_tokens - prefilled < len(second) - len(first)  # the first turn came from cache
    expected = full_forward_logprobs(reference, second, turn2.token_ids, both, 1.0)
    torch.testing.assert_close(torch.tensor(turn2.logprobs), expected, atol=1e-4, rtol=1e-4)


async def test_preemption_and_chunked_prefill_through_an_image_change_nothing(tiny_vlm_dir, vision_processor):
    vp = vision_processor
    colours = [(255, 0, 0), (0, 0, 255), (0, 160, 0), (200, 200, 0), (90, 0, 90), (0, 90, 90)]
    inputs = [ImageInputs((vp.encode_image(png(c)),)) for c in colours]
    prompts = [image_prompt(vp, list(im.images), f"question {i}") for i, im in enumerate(inputs)]
    sampling = SamplingParams(max_new_tokens=30, temperature=1.0, seed=5, stop_token_ids=[])

    async def run(**overrides):
        async with PagedEngine(tiny_vlm_dir, config(**overrides)) as engine:
            engine.eos_token_ids = frozenset()
            outs = await asyncio.gather(*(engine.generate(p, sampling, images=im) for p, im in zip(prompts, inputs)))
            assert engine._scheduler.pool.available == engine.stats.num_blocks - 1
            return outs, engine.stats

    roomy, _ = await run()
    tight, stats = await run(num_blocks=len(prompts[0]) // 4 * 3, max_prefill_tokens=7)
    assert stats.preemptions > 0
    for a, b in zip(roomy, tight):
        assert b.token_ids == a.token_ids
        assert b.logprobs == pytest.approx(a.logprobs, abs=1e-4)


async def test_images_the_model_cannot_take_are_refused(tiny_vlm_dir, tiny_model_dir, vision_processor):
    vp = vision_processor
    image = vp.encode_image(png((255, 0, 0)))
    prompt = image_prompt(vp, [image])
    greedy = SamplingParams(max_new_tokens=2, temperature=0.0)
    async with PagedEngine(tiny_vlm_dir, config()) as engine:
        with pytest.raises(ValueError, match="image tokens"):
            await engine.generate(prompt + [vp.image_token_id, 5], greedy, images=ImageInputs((image,)))
        with pytest.raises(ValueError, match="ends inside an image"):
            await engine.generate(prompt[: prompt.index(vp.image_token_id) + image.num_tokens], greedy,
                                  images=ImageInputs((image,)))
        assert await engine.health()
    async with PagedEngine(tiny_model_dir, config()) as text_only:
        with pytest.raises(ValueError, match="no vision tower"):
            await text_only.generate([5, 6, 7], greedy, images=ImageInputs((image,)))
