"""A test-only HTTP server that speaks SGLang's native API on loopback, backed by the tiny model.

It answers `/generate` in SGLang's response format (field names and shapes from SGLang's tokenizer_manager and
http_server), validates requests as SGLang does (unknown sampling params are a 400), simulates the radix cache's
`cached_tokens`, and records every request so tests can see which server got what. The weight sync by broadcast
is real: `/init_weights_update_group` joins a gloo process group on the trainer's TCP store (rank
`rank_offset`, under the `group_name` prefix), `/update_weights_from_distributed` receives the named tensors
broadcast from group rank 0, in order, and loads them into the model, and `/get_weights_by_name` reads them back.

Run as a process (the launcher tests start it as "the server"; launch_server's other options are ignored):
    python -m tests.engines.sglang_test_server --model-path DIR --host 127.0.0.1 --port 30000
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from aiohttp import web
from transformers import AutoTokenizer

from agentgym.rollout.engines import SamplingParams, DynamicCacheEngine

# SGLang's SamplingParams arguments (python/sglang/srt/sampling/sampling_params.py).
SGLANG_SAMPLING_KEYS = {
    "max_new_tokens", "stop", "stop_token_ids", "stop_regex", "temperature", "top_p", "top_k", "min_p",
    "frequency_penalty", "presence_penalty", "repetition_penalty", "min_new_tokens", "n", "json_schema", "regex",
    "ebnf", "structural_tag", "ignore_eos", "skip_special_tokens", "spaces_between_special_tokens", "no_stop_trim",
    "custom_params", "stream_interval", "logit_bias", "sampling_seed",
}
# GenerateReqInput fields this server understands; others SGLang accepts are ignored here.
GENERATE_KEYS = {
    "text", "input_ids", "sampling_params", "rid", "return_logprob", "logprob_start_len", "top_logprobs_num",
    "return_text_in_logprobs", "stream", "log_metrics", "lora_path", "session_params", "custom_logit_processor",
    "image_data",
}


@dataclass
class Recorded:
    path: str
    body: Any


@dataclass
class FakeSGLangServer:
    model_path: str
    port: int = 0
    host: str = "127.0.0.1"
    engine: DynamicCacheEngine | None = None
    requests: list[Recorded] = field(default_factory=list)
    healthy: bool = True
    fail_weight_updates: bool = False
    weight_version: str = "default"
    groups: dict[str, Any] = field(default_factory=dict)  # weight update groups by name (weight_broadcast.SyncGroup)
    _update_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _runner: web.AppRunner | None = None
    _seen: list[list[int]] = field(default_factory=list)
    _processor: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def calls(self, path: str) -> list[Any]:
        return [r.body for r in self.requests if r.path == path]

    async def start(self) -> FakeSGLangServer:
        if self.engine is None:
            self.engine = DynamicCacheEngine(self.model_path)
            await self.engine.start()
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/health_generate", self._health)
        app.router.add_get("/get_model_info", self._model_info)
        app.router.add_route("*", "/generate", self._generate)
        app.router.add_post("/update_weights_from_disk", self._update_weights)
        app.router.add_route("*", "/flush_cache", self._flush_cache)
        app.router.add_post("/init_weights_update_group", self._init_group)
        app.router.add_post("/update_weights_from_distributed", self._update_from_distributed)
        app.router.add_post("/destroy_weights_update_group", self._destroy_group)
        app.router.add_route("*", "/get_weights_by_name", self._get_weights_by_name)
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

    async def _health(self, request: web.Request) -> web.Response:
        self.requests.append(Recorded(request.path, None))
        return web.Response(status=200 if self.healthy else 503)

    async def _model_info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "model_path": self.model_path,
                "tokenizer_path": self.model_path,
                "is_generation": True,
                "preferred_sampling_params": None,
                "weight_version": self.weight_version,
            }
        )

    async def _flush_cache(self, request: web.Request) -> web.Response:
        self.requests.append(Recorded("/flush_cache", None))
        self._seen.clear()
        return web.Response(text="Cache flushed.\n")

    async def _update_weights(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(Recorded("/update_weights_from_disk", body))
        if self.fail_weight_updates:
            return web.json_response(
                {"success": False, "message": "Failed to update weights: injected failure", "num_paused_requests": 0},
                status=400,
            )
        try:
            await self.engine.update_weights(path=body["model_path"])
        except Exception as exc:  # SGLang reports load failures in the body with status 400
            return web.json_response({"success": False, "message": str(exc), "num_paused_requests": 0}, status=400)
        self._seen.clear()  # SGLang flushes the radix cache after a weight update
        if body.get("weight_version") is not None:
            self.weight_version = body["weight_version"]
        return web.json_response(
            {"success": True, "message": "Succeeded to update model weights.", "num_paused_requests": 0}
        )

    async def _init_group(self, request: web.Request) -> web.Response:
        """SGLang's InitWeightsUpdateGroupReqInput; answers once every member has joined (as SGLang does)."""
        from agentgym.trainer.workers.weight_broadcast import SyncGroup

        body = await request.json()
        self.requests.append(Recorded("/init_weights_update_group", body))
        missing = {"master_address", "master_port", "rank_offset", "world_size"} - set(body)
        if missing:
            return self._error(f"InitWeightsUpdateGroupReqInput is missing {sorted(missing)}")
        if body.get("backend", "nccl") != "gloo":
            return web.json_response({"success": False, "message": "this test server runs gloo only"}, status=400)
        name = body.get("group_name", "weight_update_group")
        try:
            group = await asyncio.to_thread(
                SyncGroup, f"{body['master_address']}:{body['master_port']}", int(body["rank_offset"]),
                int(body["world_size"]), backend="gloo", timeout_s=120.0, prefix=name)
        except Exception as exc:  # SGLang reports a failed join in the body
            return web.json_response({"success": False, "message": f"Failed to init group: {exc}"}, status=400)
        self.groups[name] = group
        return web.json_response({"success": True, "message": "Succeeded to initialize custom process group."})

    async def _update_from_distributed(self, request: web.Request) -> web.Response:
        """SGLang's UpdateWeightsFromDistributedReqInput: receive each named tensor from group rank 0, in order,
        then load them into the model (requests in flight finish first: the engine's update lock)."""
        body = await request.json()
        self.requests.append(Recorded("/update_weights_from_distributed", body))
        group = self.groups.get(body.get("group_name", "weight_update_group"))
        if group is None:
            return web.json_response({"success": False, "message": "no weights update group; call "
                                      "/init_weights_update_group first"}, status=400)
        if body.get("load_format") not in (None, "direct"):
            return web.json_response({"success": False, "message": "this test server takes load_format=None"},
                                     status=400)
        names, dtypes, shapes = body["names"], body["dtypes"], body["shapes"]

        def receive() -> dict[str, torch.Tensor]:
            out = {}
            for name, dtype, shape in zip(names, dtypes, shapes):
                tensor = torch.empty(shape, dtype=getattr(torch, dtype))
                group.broadcast(tensor)
                out[name] = tensor
            return out

        async with self._update_lock:
            tensors = await asyncio.to_thread(receive)
            try:
                await self.engine.update_weights(state_dict=tensors)
            except Exception as exc:
                return web.json_response({"success": False, "message": str(exc)}, status=400)
        if body.get("flush_cache", True):
            self._seen.clear()
        if body.get("weight_version") is not None:
            self.weight_version = body["weight_version"]
        return web.json_response({"success": True, "message": "Succeeded to update parameter online."})

    async def _destroy_group(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(Recorded("/destroy_weights_update_group", body))
        group = self.groups.pop(body.get("group_name", "weight_update_group"), None)
        if group is None:
            return web.json_response({"success": False, "message": "no such group"}, status=400)
        group.close()
        return web.json_response({"success": True, "message": "Succeeded to destroy custom process group."})

    async def _get_weights_by_name(self, request: web.Request) -> web.Response:
        """SGLang's GetWeightsByNameReqInput {name, truncate_size}: the parameter's first rows as a JSON list
        (float32 values: every bf16 value is one exactly)."""
        body = await request.json()
        params = self.engine.model.state_dict()  # tied weights under each of their names
        if body.get("name") not in params:
            return self._error(f"no parameter named {body.get('name')!r}")
        tensor = params[body["name"]].detach().float().cpu()
        return web.json_response(tensor[: int(body.get("truncate_size", 100))].tolist())

    def _images(self, image_data: Any):
        """As SGLang: each entry is loaded (here: data URLs and paths) and run through the model's own processor."""
        from agentgym.multimodal.processor import ImageInputs, VisionProcessor

        if not isinstance(image_data, list):
            raise ValueError("image_data must be a list of images (URLs, paths or base64 data URLs)")
        if self._processor is None:
            self._processor = VisionProcessor.from_pretrained(self.model_path)
        processor = self._processor
        return ImageInputs(tuple(processor.encode_image(item) for item in image_data))

    def _error(self, message: str) -> web.Response:
        return web.json_response({"error": {"message": message}}, status=400)

    async def _generate(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(Recorded("/generate", body))
        unknown = set(body) - GENERATE_KEYS
        if unknown:
            return self._error(f"unexpected GenerateReqInput fields {sorted(unknown)}")
        params = body.get("sampling_params") or {}
        bad = set(params) - SGLANG_SAMPLING_KEYS
        if bad:
            return self._error(f"SamplingParams.__init__() got unexpected keyword arguments {sorted(bad)}")
        ids = body.get("input_ids")
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            return self._error("input_ids must be a list of token ids")
        temperature = float(params.get("temperature", 1.0))
        sampling = SamplingParams(
            max_new_tokens=int(params.get("max_new_tokens", 128)),
            temperature=temperature,
            top_p=float(params.get("top_p", 1.0)),
            top_k=int(params.get("top_k", -1)),
            stop_token_ids=params.get("stop_token_ids"),
            seed=params.get("sampling_seed"),
        )
        started = time.time()
        try:
            extra = {"images": self._images(body["image_data"])} if body.get("image_data") else {}
            out = await self.engine.generate(ids, sampling, **extra)
        except ValueError as exc:
            return self._error(str(exc))
        cached = max((_common_prefix(ids, seen) for seen in self._seen), default=0)
        self._seen.append(ids + out.token_ids)
        if out.finish_reason == "stop":
            finish = {"type": "stop", "matched": out.token_ids[-1]}
        elif out.finish_reason == "length":
            finish = {"type": "length", "length": len(out.token_ids)}
        else:
            finish = {"type": "abort", "message": "Abort before prefill", "status_code": 500, "err_type": None}
        meta: dict[str, Any] = {
            "id": body.get("rid") or "generated-rid",
            "finish_reason": finish,
            "prompt_tokens": len(ids),
            "weight_version": self.weight_version,
            "total_retractions": 0,
            "completion_tokens": len(out.token_ids),
            "cached_tokens": cached,
            "cached_tokens_details": None,
            "dp_rank": None,
            "e2e_latency": time.time() - started,
        }
        if body.get("return_logprob"):
            meta["input_token_logprobs"] = [[None, ids[-1], None]]
            meta["output_token_logprobs"] = [[lp, tok, None] for lp, tok in zip(out.logprobs, out.token_ids)]
        skip = params.get("skip_special_tokens", True)
        text = self.tokenizer.decode(out.token_ids, skip_special_tokens=skip)
        return web.json_response({"text": text, "output_ids": out.token_ids, "meta_info": meta})


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class ReplayServer:
    """Loopback server that answers `/generate` with recorded SGLang response bodies, in order."""

    def __init__(self, responses: list[tuple[int, Any]]):
        self.responses = list(responses)
        self.requests: list[Any] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> ReplayServer:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/get_model_info", self._model_info)
        app.router.add_post("/generate", self._generate)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _model_info(self, request: web.Request) -> web.Response:
        return web.json_response({"model_path": "recorded"})

    async def _generate(self, request: web.Request) -> web.Response:
        self.requests.append(await request.json())
        status, body = self.responses.pop(0)
        return web.json_response(body, status=status) if not isinstance(body, str) else web.Response(
            text=body, status=status
        )

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def start_servers(model_path: str, n: int) -> list[FakeSGLangServer]:
    return list(await asyncio.gather(*(FakeSGLangServer(str(model_path)).start() for _ in range(n))))


async def _serve(args: argparse.Namespace) -> None:
    server = await FakeSGLangServer(args.model_path, port=args.port, host=args.host).start()
    print(f"serving {server.model_path} at {server.url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args, _ = parser.parse_known_args()
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
