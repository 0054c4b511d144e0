"""vLLM's OpenAI-compatible completions API (`POST /v1/completions`) used token-exactly, as vLLM's source defines it.

Request (`CompletionRequest`, vllm/entrypoints/openai/.../protocol.py): `model`, `prompt` (a list of token ids is
taken as the tokens themselves, nothing is added), `max_tokens`, `temperature`, `top_p`, `top_k`, `min_p`,
`seed`, `stop_token_ids`, `logprobs` (int: how many top alternatives; 0 gives the sampled token's own logprob),
`return_tokens_as_token_ids` (logprob tokens come back as "token_id:<id>"; older servers only have the
`--return-tokens-as-token-ids` flag), `return_token_ids` (newer versions: `choices[i].token_ids`), `skip_special_tokens`,
`spaces_between_special_tokens`, `include_stop_str_in_output`,
`ignore_eos`, `n`, `stream`, `echo`. Unknown fields are ignored by vLLM with a warning, never an error.

Response (`CompletionResponse`): `{"id", "object": "text_completion", "model", "choices": [{"index", "text",
"logprobs": {"text_offset", "token_logprobs", "tokens", "top_logprobs"}, "finish_reason", "stop_reason",
"token_ids", "prompt_token_ids"}], "usage": {"prompt_tokens", "completion_tokens", "total_tokens",
"prompt_tokens_details": {"cached_tokens"} | null}}`. `finish_reason` is "stop" (eos, a stop token id, whose id
is then in `stop_reason`, or a stop string), "length" (`max_tokens` or the context limit) or "abort"; the stop
token stays in the output ids. Errors: `{"error": {"message", "type", "param", "code"}}` (older versions put
`message` at the top level).

Every sampling setting is sent explicitly, because vLLM otherwise fills unset ones from the model's
`generation_config.json` (`--generation-config auto`, its default), which would change sampling behind our back.
"""

from __future__ import annotations

from typing import Any

from agentgym.rollout.engines.base import (
    FINISH_ABORT,
    FINISH_LENGTH,
    FINISH_STOP,
    EngineError,
    GenerateOutput,
    SamplingParams,
)

_FINISH = {"stop": FINISH_STOP, "length": FINISH_LENGTH, "abort": FINISH_ABORT}
TOKEN_ID_PREFIX = "token_id:"


def completion_payload(
    prompt_ids: list[int], sampling: SamplingParams, *, model: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": model,
        "prompt": list(prompt_ids),
        "max_tokens": sampling.max_new_tokens,
        "temperature": 0.0 if sampling.greedy else sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,  # -1 (off) is accepted by every vLLM version; newer ones also take 0
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "logprobs": 0,
        "return_tokens_as_token_ids": True,
        "return_token_ids": True,
        "skip_special_tokens": False,
        "spaces_between_special_tokens": False,
        "include_stop_str_in_output": True,
        "ignore_eos": False,
        "n": 1,
        "stream": False,
        "echo": False,
    }
    if sampling.stop_token_ids:
        payload["stop_token_ids"] = list(sampling.stop_token_ids)
    if sampling.seed is not None:
        payload["seed"] = sampling.seed
    if extra:
        payload.update(extra)
    return payload


def parse_token(token: Any) -> int:
    """A logprob token rendered by `return_tokens_as_token_ids`: "token_id:123" -> 123."""
    if isinstance(token, str) and token.startswith(TOKEN_ID_PREFIX):
        try:
            return int(token[len(TOKEN_ID_PREFIX):])
        except ValueError:
            pass
    raise EngineError(
        f"vLLM logprob token {token!r} is not of the form 'token_id:<id>'; the server ignored "
        "return_tokens_as_token_ids (an older vLLM: start it with --return-tokens-as-token-ids), so the "
        "generated ids cannot be recovered exactly"
    )


def parse_completion_response(data: dict[str, Any]) -> tuple[GenerateOutput, int | None, int | None]:
    """The output of a non-streaming `/v1/completions` answer, plus usage's prompt and cached token counts."""
    choices = data.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        raise EngineError(f"vLLM response must have exactly one choice (n=1): {str(data)[:200]}")
    choice = choices[0]
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict) or logprobs.get("token_logprobs") is None or logprobs.get("tokens") is None:
        raise EngineError(
            "vLLM response has no choices[0].logprobs.token_logprobs; the request must set logprobs=0 (and the "
            "server's --max-logprobs must allow it)"
        )
    try:
        ids = [parse_token(t) for t in logprobs["tokens"]]
        values = [float(v) for v in logprobs["token_logprobs"]]
    except (TypeError, ValueError) as exc:
        raise EngineError(f"malformed vLLM logprobs (want floats and 'token_id:<id>' tokens): {exc}") from exc
    if len(values) != len(ids):
        raise EngineError(f"vLLM returned {len(values)} logprobs for {len(ids)} tokens")
    token_ids = choice.get("token_ids")
    if token_ids is not None and [int(i) for i in token_ids] != ids:
        raise EngineError(
            f"vLLM returned {len(token_ids)} token_ids that differ from the {len(ids)} ids in its logprobs; "
            "refusing a trajectory whose tokens are ambiguous"
        )
    finish = choice.get("finish_reason")
    if finish not in _FINISH:
        raise EngineError(f"vLLM finished with {finish!r} ({choice.get('stop_reason')!r}); expected stop, length or abort")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    details = usage.get("prompt_tokens_details") if isinstance(usage.get("prompt_tokens_details"), dict) else {}
    prompt_tokens = usage.get("prompt_tokens")
    cached = details.get("cached_tokens")
    return (
        GenerateOutput(ids, values, _FINISH[finish]),
        int(prompt_tokens) if prompt_tokens is not None else None,
        int(cached) if cached is not None else None,
    )
