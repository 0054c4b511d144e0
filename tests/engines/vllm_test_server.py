"""A test-only HTTP server that speaks vLLM's OpenAI-compatible API on loopback, backed by the tiny model.

Written from vLLM's protocol and serving code (vllm/entrypoints/openai/completion/protocol.py and serving.py, the
dev-mode routers under vllm/entrypoints/serve/dev/): `/v1/completions` with token-id prompts, `logprobs`,
`return_tokens_as_token_ids`, `return_token_ids`, `stop_token_ids`, `seed`, `top_k`/`top_p`/`temperature`,
`max_tokens`; `/v1/models`; `/health`; and, with `dev_mode` (vLLM's `VLLM_SERVER_DEV_MODE=1`), `/collective_rpc`
(the workers' `update_config` and `reload_weights`), `/reset_prefix_cache`, `/pause` and `/resume`. Logprobs are
those of `--logprobs-mode processed_logprobs` without top-k/top-p (the model's `log_softmax(logits / T)`).
Prefix caching is simulated in whole blocks, as vLLM's block-granular cache reports `cached_tokens`.

Run as a process (the launcher tests start it as "the server"):
    python -m tests.engines.vllm_test_server --model-path DIR --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from transformers import AutoTokenizer

from agentgym.rollout.engines import SamplingParams, DynamicCacheEngine

# CompletionRequest fields this server acts on; vLLM ignores unknown fields (with a warning), and so does this.
_INT_LIST = "prompt"


@dataclass
class Recorded:
    path: str
    body: Any


@dataclass
class FakeVLLMServer:
    model_path: str
    port: int = 0
    host: str = "127.0.0.1"
    served_model_name: str | None = None
    max_model_len: int = 512
    dev_mode: bool = True
    enable_prompt_tokens_details: bool = True
    block_size: int = 16
    engine: DynamicCacheEngine | None = None
    requests: list[Recorded] = field(default_factory=list)
    healthy: bool = True
    fail_weight_updates: bool = False
    _runner: web.AppRunner | None = None
    _seen: list[list[int]] = field(default_factory=list)
    _pending_model: str | None = None
    _resumed: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def name(self) -> str:
        return self.served_model_name or self.model_path

    def calls(self, path: str) -> list[Any]:
        return [r.body for r in self.requests if r.path == path]

    async def start(self) -> FakeVLLMServer:
        if self.engine is None:
            self.engine = DynamicCacheEngine(self.model_path)
            await self.engine.start()
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            self._resumed = asyncio.Event()
            self._resumed.set()
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        if self.dev_mode:
            app.router.add_post("/collective_rpc", self._collective_rpc)
            app.router.add_post("/reset_prefix_cache", self._reset_prefix_cache)
            app.router.add_post("/pause", self._pause)
            app.router.add_post("/resume", self._resume)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Close the listening socket and open connections: clients now get connection errors."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def close(self) -> None:
        await self.stop()
        if self.engine is not None:
            await self.engine.close()

    # ---- routes ------------------------------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        self.requests.append(Recorded(request.path, None))
        return web.Response(status=200 if self.healthy else 503)

    async def _models(self, request: web.Request) -> web.Response:
        card = {
            "id": self.name, "object": "model", "created": int(time.time()), "owned_by": "vllm",
            "root": self.model_path, "parent": None, "max_model_len": self.max_model_len,
        }
        return web.json_response({"object": "list", "data": [card]})

    @staticmethod
    def _error(message: str, status: int = 400, kind: str = "BadRequestError", param: str | None = None) -> web.Response:
        return web.json_response({"error": {"message": message, "type": kind, "param": param, "code": status}}, status=status)

    async def _completions(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return self._error("JSON decode error")
        self.requests.append(Recorded("/v1/completions", body))
        if body.get("model") not in (None, self.name):
            return self._error(f"The model `{body.get('model')}` does not exist.", 404, "NotFoundError", "model")
        ids = body.get(_INT_LIST)
        if not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids):
            return self._error("this test server takes one non-empty token-id prompt (a list of ints)", param="prompt")
        if body.get("n", 1) != 1 or body.get("stream") or body.get("echo"):
            return self._error("this test server supports n=1, stream=false and echo=false only")
        logprobs = body.get("logprobs")
        if logprobs is not None and logprobs < 0:
            return self._error("`logprobs` must be a positive value.", param="logprobs")
        temperature = body.get("temperature")
        temperature = 1.0 if temperature is None else float(temperature)
        top_k = body.get("top_k")
        top_k = -1 if top_k in (None, 0) else int(top_k)
        top_p = 1.0 if body.get("top_p") is None else float(body["top_p"])
        if temperature < 0:
            return self._error(f"temperature must be non-negative, got {temperature}.", param="temperature")
        if top_k < -1:
            return self._error(f"top_k must be 0 (disable), or at least 1, got {top_k}.", param="top_k")
        if not 0.0 < top_p <= 1.0:
            return self._error(f"top_p must be in (0, 1], got {top_p}.", param="top_p")
        max_tokens = int(body.get("max_tokens") or 16)
        if len(ids) + max_tokens > self.max_model_len:
            return self._error(
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{len(ids) + max_tokens} tokens ({len(ids)} in the messages, {max_tokens} in the completion). "
                "Please reduce the length of the messages or completion.",
                param="max_tokens",
            )
        await self._resumed.wait()  # a paused engine holds new requests until /resume
        stop_ids = list(body.get("stop_token_ids") or [])
        sampling = SamplingParams(
            max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
            stop_token_ids=stop_ids or None, seed=body.get("seed"),
        )
        out = await self.engine.generate(ids, sampling)
        matched = self._longest_cached(ids)
        self._seen.append(ids + out.token_ids)
        stop_reason = out.token_ids[-1] if out.finish_reason == "stop" and out.token_ids[-1] in stop_ids else None
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        skip = body.get("skip_special_tokens", True)
        choice: dict[str, Any] = {
            "index": 0,
            "text": self.tokenizer.decode(out.token_ids, skip_special_tokens=skip),
            "logprobs": None,
            "finish_reason": out.finish_reason,
            "stop_reason": stop_reason,
            "prompt_logprobs": None,
        }
        if logprobs is not None:
            tokens = [f"token_id:{t}" if as_ids else self.tokenizer.decode([t]) for t in out.token_ids]
            values = [max(lp, -9999.0) for lp in out.logprobs]
            offsets, pos = [], 0
            for t in out.token_ids:
                offsets.append(pos)
                pos += len(self.tokenizer.decode([t], skip_special_tokens=skip))
            choice["logprobs"] = {
                "text_offset": offsets, "token_logprobs": values, "tokens": tokens,
                "top_logprobs": [{tok: lp} for tok, lp in zip(tokens, values)],
            }
        if body.get("return_token_ids"):
            choice["token_ids"] = list(out.token_ids)
            choice["prompt_token_ids"] = list(ids)
        usage = {
            "prompt_tokens": len(ids), "completion_tokens": len(out.token_ids),
            "total_tokens": len(ids) + len(out.token_ids),
            "prompt_tokens_details": {"cached_tokens": matched} if self.enable_prompt_tokens_details else None,
        }
        return web.json_response({
            "id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": self.name, "choices": [choice], "usage": usage,
        })

    def _longest_cached(self, ids: list[int]) -> int:
        best = 0
        for seen in self._seen:
            n = 0
            for x, y in zip(ids, seen):
                if x != y:
                    break
                n += 1
            best = max(best, n)
        return min(best, len(ids) - 1) // self.block_size * self.block_size

    async def _collective_rpc(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(Recorded("/collective_rpc", body))
        method = body.get("method")
        if method is None:
            return web.json_response({"detail": "Missing 'method' in request body"}, status=400)
        args = body.get("args", [])
        if method == "update_config":
            overrides = args[0] if args else {}
            unknown = set(overrides) - {"load_config", "model_config"}
            if unknown:
                return web.json_response({"error": f"AssertionError: config {sorted(unknown)} not allowed"}, status=500)
            self._pending_model = (overrides.get("model_config") or {}).get("model", self._pending_model)
            return web.json_response({"results": [None]})
        if method == "reload_weights":
            if self.fail_weight_updates:
                return web.json_response({"error": "RuntimeError: injected failure"}, status=500)
            try:
                await self.engine.update_weights(path=self._pending_model or self.model_path)
            except Exception as exc:  # vLLM surfaces worker exceptions as a 500
                return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=500)
            return web.json_response({"results": [None]})
        return web.json_response({"error": f"AttributeError: 'Worker' object has no attribute '{method}'"}, status=500)

    async def _reset_prefix_cache(self, request: web.Request) -> web.Response:
        self.requests.append(Recorded("/reset_prefix_cache", None))
        self._seen.clear()
        return web.Response(status=200)

    async def _pause(self, request: web.Request) -> web.Response:
        self.requests.append(Recorded("/pause", dict(request.query)))
        self._resumed.clear()
        return web.json_response({"status": "paused"})

    async def _resume(self, request: web.Request) -> web.Response:
        self.requests.append(Recorded("/resume", None))
        self._resumed.set()
        return web.json_response({"status": "resumed"})


async def start_servers(model_path: str, n: int, **kwargs: Any) -> list[FakeVLLMServer]:
    return list(await asyncio.gather(*(FakeVLLMServer(str(model_path), **kwargs).start() for _ in range(n))))


async def _serve(args: argparse.Namespace) -> None:
    server = await FakeVLLMServer(args.model_path, port=args.port, host=args.host,
                                  served_model_name=args.served_model_name).start()
    print(f"serving {server.name} at {server.url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name", default=None)
    args, _ = parser.parse_known_args()
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
