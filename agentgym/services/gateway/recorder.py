"""Token-exact trajectories from chat requests: what the gateway records per session.

A client of an OpenAI-style endpoint sends the whole conversation each turn, as text. Re-tokenising it would give
the trainer ids the model never sampled (byte-level BPE has many tokenisations of one text, and clients edit
whitespace or re-serialise tool-call arguments), which breaks importance sampling. So the recorder keeps, per
session, the ids the engine produced for every model turn and renders only what the client added since (tool
results, user turns) with the chat template, as the agent loop does:

- a request whose conversation extends a recorded one (same roles; the same system, user and tool messages) continues
  it: the new messages' delta ids (loss mask 0) are appended after the recorded ids, and the next generation
  continues from there. The request is also rendered whole; where that rendering differs from the recorded ids the
  recorded ids win and the session counts a `token_mismatch` (an assistant message the client changed also
  counts as an `edited_turn`).
- any other request starts a new branch of the session (a side call with another prompt, a retry, a rewritten
  history): its own trajectory, from its own prompt.

The trajectory a session trains on is its main branch: the one with the most model turns (the latest on a tie).
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agentgym.episode.episode import assistant_message
from agentgym.models.chat import chat_delta_ids, chat_ids
from agentgym.parsers.base import ParseResult, ToolCallParser
from agentgym.rollout.engines.base import Engine, SamplingParams
from agentgym.trajectory import Trajectory, TurnSpan

Message = dict[str, Any]


class GatewayRequestError(ValueError):
    """The request cannot be served as asked (the message says what to change); answered 400."""


@dataclass(frozen=True)
class RecorderConfig:
    """`sampling` is the training run's (temperature, top-p, seed, per-turn max_new_tokens); a request's own
    max_tokens can only lower the turn's budget. `max_response_tokens` bounds a branch's response (model and
    environment tokens together), as `data.max_response_length` bounds an agent-loop episode."""

    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_response_tokens: int = 1024
    max_prompt_tokens: int | None = None
    client_sampling: bool = False  # honour the request's temperature / top_p (off for training: the run's settings)


@dataclass
class Branch:
    traj: Trajectory
    messages: list[Message]
    tools: list[dict[str, Any]] | None
    assistant_turns: int = 0

    @property
    def context_ids(self) -> list[int]:
        return self.traj.prompt_ids + self.traj.response_ids


@dataclass
class SessionRecord:
    """Everything one session produced. `row` is the dataset row it serves, when a rollout registered it."""

    session_id: str
    group_id: str
    row: dict[str, Any] = field(default_factory=dict)
    branches: list[Branch] = field(default_factory=list)
    requests: int = 0
    token_mismatches: int = 0
    edited_turns: int = 0
    parse_errors: int = 0
    tool_calls: int = 0
    reported_reward: float | None = None
    reported_metrics: dict[str, Any] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def main_branch(self) -> Branch | None:
        best = None
        for branch in self.branches:
            if best is None or branch.assistant_turns >= best.assistant_turns:
                best = branch
        return best

    def summary(self) -> dict[str, Any]:
        main = self.main_branch()
        return {"session_id": self.session_id, "requests": self.requests, "branches": len(self.branches),
                "token_mismatches": self.token_mismatches, "edited_turns": self.edited_turns,
                "parse_errors": self.parse_errors, "tool_calls": self.tool_calls,
                "assistant_turns": main.assistant_turns if main else 0,
                "response_tokens": len(main.traj.response_ids) if main else 0,
                "reported_reward": self.reported_reward}


@dataclass
class Completion:
    """One served turn: the parsed reply and what the engine did."""

    @property
    def content(self) -> str:
        """What the client reads: the text without the calls, or all of it when a call could not be parsed (so the
        agent sees what the model wrote instead of an empty turn)."""
        return self.text.strip() if self.parsed.errors else self.parsed.content

    parsed: ParseResult
    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # stop | length | abort
    prompt_tokens: int
    branch: Branch


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def _calls_key(message: Message) -> list[tuple[str, Any]]:
    out = []
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                pass
        out.append((fn.get("name"), args))
    return out


def _same_turn(recorded: Message, sent: Message) -> bool:
    """Whether the client's copy of a turn is the recorded one, up to what clients re-serialise."""
    if recorded.get("role") != sent.get("role"):
        return False
    if recorded.get("role") == "assistant":
        # A turn with an unparseable call was shown to the client as its raw text (`raw_content`).
        shown = {_text(recorded.get("content")).strip(), _text(recorded.get("raw_content")).strip()}
        return _text(sent.get("content")).strip() in shown and _calls_key(recorded) == _calls_key(sent)
    if recorded.get("role") == "tool":
        return _text(recorded.get("content")) == _text(sent.get("content"))
    return _text(recorded.get("content")) == _text(sent.get("content"))


class TrajectoryRecorder:
    """Serves chat turns from one engine and records them per session (see the module docstring)."""

    def __init__(self, engine: Engine, tokenizer: Any, parser: ToolCallParser, config: RecorderConfig | None = None):
        self.engine = engine
        self.tokenizer = tokenizer
        self.parser = parser
        self.config = config or RecorderConfig()
        self.end_of_turn_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
        self._strip = [t for t in {tokenizer.eos_token, getattr(tokenizer, "pad_token", None)} if t]
        self.sessions: dict[str, SessionRecord] = {}

    def session(self, session_id: str, *, row: dict[str, Any] | None = None, group_id: str | None = None,
                create: bool = True) -> SessionRecord | None:
        record = self.sessions.get(session_id)
        if record is None and create:
            record = SessionRecord(session_id, group_id or session_id, dict(row or {}))
            self.sessions[session_id] = record
        return record

    def decode(self, ids: Sequence[int]) -> str:
        text = self.tokenizer.decode(list(ids), skip_special_tokens=False)
        for marker in self._strip:
            text = text.replace(marker, "")
        return text

    # -- bookkeeping -------------------------------------------------------------------------------------------

    def _continued(self, record: SessionRecord, messages: list[Message]) -> tuple[Branch, int] | None:
        """The branch this conversation extends, and how many of its assistant turns the client changed."""
        for branch in reversed(record.branches):
            known = branch.messages
            if len(messages) <= len(known):
                continue
            edited = 0
            for recorded, sent in zip(known, messages):
                if recorded.get("role") != sent.get("role"):
                    break
                if not _same_turn(recorded, sent):
                    if recorded.get("role") != "assistant":
                        break
                    edited += 1
            else:
                return branch, edited
        return None

    def _append(self, traj: Trajectory, role: str, ids: list[int], logprobs: list[float], *, trained: bool) -> None:
        start = len(traj.response_ids)
        traj.response_ids.extend(ids)
        traj.loss_mask.extend([1 if trained else 0] * len(ids))
        traj.rollout_logprobs.extend(logprobs if trained else [0.0] * len(ids))
        if traj.turns and traj.turns[-1].role == role and traj.turns[-1].end == start:
            traj.turns[-1].end += len(ids)
        else:
            traj.turns.append(TurnSpan(role, start, start + len(ids)))

    def _prepare(self, record: SessionRecord, messages: list[Message], tools: list[dict[str, Any]] | None) -> Branch:
        found = self._continued(record, messages)
        if found is None:
            uid = record.session_id if not record.branches else f"{record.session_id}.b{len(record.branches)}"
            prompt_ids = chat_ids(self.tokenizer, messages, tools, add_generation_prompt=True)
            if self.config.max_prompt_tokens is not None and len(prompt_ids) > self.config.max_prompt_tokens:
                raise GatewayRequestError(f"the conversation has {len(prompt_ids)} prompt tokens, more than the "
                                          f"gateway's max_prompt_tokens={self.config.max_prompt_tokens}")
            row = record.row
            traj = Trajectory(uid=uid, group_id=record.group_id, prompt_ids=prompt_ids,
                              extra_info=dict(row.get("extra_info") or {}),
                              row_info={k: v for k, v in row.items() if k not in ("prompt", "extra_info")})
            branch = Branch(traj, [dict(m) for m in messages], tools)
            record.branches.append(branch)
            return branch
        branch, edited = found
        record.edited_turns += edited
        new = [dict(m) for m in messages[len(branch.messages):]]
        traj = branch.traj
        if branch.messages[-1].get("role") == "assistant" and traj.response_ids and \
                traj.response_ids[-1] != self.end_of_turn_id:
            # The turn was cut (length) or stopped on another stop token: close it as the template does.
            self._append(traj, "assistant", [self.end_of_turn_id], [0.0], trained=False)
        try:
            delta = chat_delta_ids(self.tokenizer, branch.messages, new, branch.tools, add_generation_prompt=True)
        except ValueError as exc:
            raise GatewayRequestError(f"cannot append the new messages as a delta: {exc}") from exc
        if chat_ids(self.tokenizer, messages, tools, add_generation_prompt=True) != branch.context_ids + delta:
            record.token_mismatches += 1  # the recorded ids win: they are what the model sampled
        self._append(traj, new[0].get("role", "user"), delta, [0.0] * len(delta), trained=False)
        branch.messages.extend(new)
        return branch

    def _sampling(self, traj: Trajectory, max_tokens: int | None, temperature: float | None,
                  top_p: float | None) -> SamplingParams | None:
        cfg = self.config
        room = cfg.max_response_tokens - len(traj.response_ids)
        if room <= 0:
            return None
        budget = min(cfg.sampling.max_new_tokens, room, max_tokens or room)
        sampling = replace(cfg.sampling, max_new_tokens=max(budget, 1))
        if sampling.stop_token_ids is None:
            sampling = replace(sampling, stop_token_ids=[self.end_of_turn_id])
        if cfg.client_sampling:
            sampling = replace(sampling, temperature=sampling.temperature if temperature is None else temperature,
                               top_p=sampling.top_p if top_p is None else top_p)
        if sampling.seed is not None:  # the agent loop's per-(episode, turn) seed: same samples for the same uid
            sampling = replace(sampling, seed=zlib.crc32(f"{sampling.seed}/{traj.uid}/{len(traj.response_ids)}".encode()))
        return sampling

    # -- serving -----------------------------------------------------------------------------------------------

    async def complete(self, session_id: str, messages: list[Message], tools: list[dict[str, Any]] | None, *,
                       max_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None,
                       create: bool = True) -> Completion:
        if not messages:
            raise GatewayRequestError("`messages` is empty: send at least one message")
        if messages[-1].get("role") == "assistant":
            raise GatewayRequestError("the last message is an assistant turn: continuing (prefilling) an assistant "
                                      "turn is not supported; end the conversation with a user or tool message")
        record = self.session(session_id, create=create)
        if record is None:
            raise KeyError(session_id)
        async with record.lock:
            record.requests += 1
            branch = self._prepare(record, messages, tools)
            traj = branch.traj
            sampling = self._sampling(traj, max_tokens, temperature, top_p)
            context = branch.context_ids
            if sampling is None:
                ids, logprobs, finish = [], [], "length"
            else:
                out = await self.engine.generate(context, sampling, session_id=traj.uid)
                ids, logprobs, finish = list(out.token_ids), list(out.logprobs), out.finish_reason
                if len(logprobs) != len(ids):
                    raise RuntimeError(f"engine returned {len(ids)} tokens but {len(logprobs)} logprobs")
                self._append(traj, "assistant", ids, logprobs, trained=True)
                if finish == "stop" and (not ids or ids[-1] != self.end_of_turn_id):
                    self._append(traj, "assistant", [self.end_of_turn_id], [0.0], trained=False)
            text = self.decode(ids)
            parsed = self.parser.parse(text)
            branch.messages.append(assistant_message(parsed, text))
            branch.assistant_turns += 1
            traj.messages = branch.messages
            traj.finish_reason = finish
            record.parse_errors += len(parsed.errors)
            record.tool_calls += len(parsed.calls) + len(parsed.errors)
            traj.num_tool_calls += len(parsed.calls) + len(parsed.errors)
            return Completion(parsed, text, ids, logprobs, finish, len(context), branch)

    def trajectory(self, session_id: str) -> Trajectory | None:
        """The session's main trajectory, with the reported reward as its outcome score and the session's counts."""
        record = self.sessions.get(session_id)
        if record is None:
            return None
        main = record.main_branch()
        if main is None:
            return None
        traj = main.traj
        traj.messages = main.messages
        traj.final_score = record.reported_reward or 0.0
        traj.extra_info = {**traj.extra_info, "gateway": record.summary(),
                           **({"reported_metrics": record.reported_metrics} if record.reported_metrics else {})}
        traj.check()
        return traj

    def drop(self, session_id: str) -> SessionRecord | None:
        return self.sessions.pop(session_id, None)
