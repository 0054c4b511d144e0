"""SGLang's native HTTP wire format (`/generate`, weight updates), as its source defines it.

Request (`GenerateReqInput`): `input_ids`, `sampling_params`, `return_logprob`, `logprob_start_len`, `rid`,
`stream`. Response: `{"text", "output_ids", "meta_info": {"id", "finish_reason", "prompt_tokens",
"completion_tokens", "cached_tokens", "weight_version", "e2e_latency", "output_token_logprobs", ...}}` where
`output_token_logprobs` is a list of `[logprob, token_id, text_or_null]` and `finish_reason` is
`{"type": "stop", "matched": id_or_str}`, `{"type": "length", "length": n}` or `{"type": "abort", "message": ...}`.
Vision-language models: `image_data` is a list with one image per image in the prompt, in order, each a URL, a
path on the server or a base64 `data:` URL (sent here); `input_ids` already hold every image's pad tokens expanded
by the model's processor, the layout SGLang's Qwen-VL processor reads pre-tokenized multimodal prompts in.
`output_ids` is absent in old versions; the ids in `output_token_logprobs` are always there, so those are used
and `output_ids`, when present, must agree with them.
"""

from __future__ import annotations

from typing import Any

from agentgym.rollout.engines.servers.http_engine import error_message  # noqa: F401  (SGLang's error bodies)
from agentgym.rollout.engines.base import (
    FINISH_ABORT,
    FINISH_LENGTH,
    FINISH_STOP,
    EngineError,
    GenerateOutput,
    SamplingParams,
)

_FINISH_TYPES = {"stop": FINISH_STOP, "length": FINISH_LENGTH, "abort": FINISH_ABORT}


def sampling_params_payload(sampling: SamplingParams, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """SGLang `sampling_params` for token-exact rollouts: keep special tokens, never trim the stop token."""
    params: dict[str, Any] = {
        "max_new_tokens": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "skip_special_tokens": False,
        "spaces_between_special_tokens": False,
        "no_stop_trim": True,
    }
    if sampling.stop_token_ids:
        params["stop_token_ids"] = list(sampling.stop_token_ids)
    if sampling.seed is not None:
        params["sampling_seed"] = sampling.seed
    if extra:
        params.update(extra)
    return params


def generate_payload(
    prompt_ids: list[int], sampling: SamplingParams, *, rid: str, extra_sampling: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "input_ids": list(prompt_ids),
        "sampling_params": sampling_params_payload(sampling, extra_sampling),
        "return_logprob": True,
        "logprob_start_len": -1,  # output-token logprobs only
        "rid": rid,
        "stream": False,
    }


def image_data_payload(pngs: list[bytes]) -> list[str]:
    from agentgym.multimodal.images import data_url

    return [data_url(png) for png in pngs]


def parse_generate_response(data: dict[str, Any]) -> GenerateOutput:
    """Turn a non-streaming `/generate` response into ids, logprobs and a finish reason."""
    meta = data.get("meta_info")
    if not isinstance(meta, dict):
        raise EngineError(f"SGLang response has no meta_info object: {str(data)[:200]}")
    entries = meta.get("output_token_logprobs")
    if entries is None:
        raise EngineError(
            "SGLang response has no meta_info.output_token_logprobs; the request must set return_logprob=true "
            "(and the server must be a generation model)"
        )
    try:
        ids = [int(entry[1]) for entry in entries]
        logprobs = [float(entry[0]) for entry in entries]
    except (TypeError, ValueError, IndexError) as exc:
        raise EngineError(f"malformed output_token_logprobs entry (want [logprob, token_id, text]): {exc}") from exc
    output_ids = data.get("output_ids")
    if output_ids is not None and [int(i) for i in output_ids] != ids:
        raise EngineError(
            f"SGLang returned {len(output_ids)} output_ids that differ from the {len(ids)} ids in "
            "output_token_logprobs; refusing a trajectory whose tokens are ambiguous"
        )
    finish = meta.get("finish_reason")
    kind = finish.get("type") if isinstance(finish, dict) else finish
    if kind not in _FINISH_TYPES:
        raise EngineError(f"unknown SGLang finish_reason {finish!r}; expected type stop, length or abort")
    return GenerateOutput(ids, logprobs, _FINISH_TYPES[kind])


# ---- weight sync by broadcast (driven by servers.weight_group for a separate rollout pool; tested against our
# protocol server, tests/engines/sglang_test_server.py, not against a real SGLang) ----
# SGLang's protocol, from its source (managers/io_struct.py, entrypoints/http_server.py, model_executor):
# 1. POST /init_weights_update_group {master_address, master_port, rank_offset, world_size, group_name, backend}
#    returns once the group is formed, so the trainer joins at the same time: trainer rank 0 is group rank 0 and
#    hosts the rendezvous (`tcp://master_address:master_port`), a server's TP ranks are rank_offset + tp_rank, and
#    world_size = 1 + the TP ranks of every server. SGLang forms its side as a new process group on that TCP store
#    under a PrefixStore(group_name); the trainer forms its side the same way (`weight_broadcast.SyncGroup` with
#    `prefix=group_name`).
# 2. Per bucket, POST /update_weights_from_distributed {names, dtypes, shapes, group_name, flush_cache,
#    abort_all_requests, weight_version, load_format} while the trainer broadcasts from rank 0: with
#    load_format="flattened_bucket" one uint8 tensor holding the bucket's tensors' bytes back to back in `names`
#    order (SGLang's FlattenedTensorBucket), otherwise one broadcast per tensor in `names` order. dtypes are torch
#    dtype names ("bfloat16"). Answer: {"success": bool, "message": str}, HTTP 400 on failure. agentgym sends
#    load_format=None (one broadcast per tensor): the flattened layout's metadata has changed between releases.
# 3. POST /destroy_weights_update_group {group_name} at the end.
# 4. POST /get_weights_by_name {name, truncate_size} answers the parameter's first `truncate_size` rows as a (nested)
#    JSON list of floats (checks and tests read a server's weights this way).
WEIGHT_UPDATE_GROUP = "weight_update_group"


def init_weights_update_group_payload(master_address: str, master_port: int, rank_offset: int, world_size: int, *,
                                      group_name: str = WEIGHT_UPDATE_GROUP, backend: str = "nccl") -> dict[str, Any]:
    return {"master_address": master_address, "master_port": int(master_port), "rank_offset": int(rank_offset),
            "world_size": int(world_size), "group_name": group_name, "backend": backend}


def update_weights_from_distributed_payload(names: list[str], dtypes: list[str], shapes: list[list[int]], *,
                                            group_name: str = WEIGHT_UPDATE_GROUP, last_bucket: bool = True,
                                            weight_version: str | None = None,
                                            flattened: bool = False) -> dict[str, Any]:
    """One bucket's request; the prefix cache is flushed after the last bucket only (earlier flushes are wasted)."""
    if not (len(names) == len(dtypes) == len(shapes)):
        raise ValueError("names, dtypes and shapes must be parallel lists")
    return {"names": list(names), "dtypes": list(dtypes), "shapes": [list(s) for s in shapes],
            "group_name": group_name, "flush_cache": last_bucket, "abort_all_requests": False,
            "weight_version": weight_version if last_bucket else None,
            "load_format": "flattened_bucket" if flattened else None}


def destroy_weights_update_group_payload(group_name: str = WEIGHT_UPDATE_GROUP) -> dict[str, Any]:
    return {"group_name": group_name}


def get_weights_by_name_payload(name: str, truncate_size: int = 100) -> dict[str, Any]:
    return {"name": name, "truncate_size": int(truncate_size)}
