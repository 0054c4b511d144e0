"""Does a greedy request's output depend on the requests it shares the in-process engine's batch with?

Prints, for one prompt generated alone, batched with two others, and joining a batch already decoding, whether
the token ids and the log-probs are bitwise the same. (The quickstart's held-out figures depend on this: see
benchmarks/learning.md, "What is and is not reproducible".)

    python3 benchmarks/engine_batch_invariance.py [MODEL_DIR]
"""

import asyncio
import sys

from agentgym.models import build_tiny_model
from agentgym.rollout.engines.base import SamplingParams
from agentgym.rollout.engines.dynamic_cache import DynamicCacheEngine


async def main(path: str) -> None:
    engine = DynamicCacheEngine(path)
    await engine.start()
    greedy = SamplingParams(max_new_tokens=12, temperature=0.0)
    a, b, c = list(range(5, 45)), list(range(7, 140)), list(range(9, 20))
    alone = await engine.generate(a, greedy)
    together = (await asyncio.gather(engine.generate(a, greedy), engine.generate(b, greedy), engine.generate(c, greedy)))[0]
    running = asyncio.ensure_future(engine.generate(b, SamplingParams(max_new_tokens=40, temperature=0.0)))
    await asyncio.sleep(0.05)
    joined = await engine.generate(a, greedy)
    await running
    await engine.close()
    for name, out in (("batched with 2 others", together), ("joined a running batch", joined)):
        diff = max(abs(x - y) for x, y in zip(out.logprobs, alone.logprobs))
        print(f"{name}: same ids {out.token_ids == alone.token_ids}, bitwise log-probs "
              f"{out.logprobs == alone.logprobs}, max |log-prob difference| {diff:.2g}")


if __name__ == "__main__":
    model = sys.argv[1] if len(sys.argv) > 1 else str(build_tiny_model("/tmp/batch_invariance", size="mini", seed=0))
    asyncio.run(main(model))
