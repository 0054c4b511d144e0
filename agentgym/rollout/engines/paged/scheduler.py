"""Continuous batching over the paged cache: which sequences prefill, which decode, and who yields blocks.

Every step admits waiting sequences while there are batch places and blocks for their whole current context
(reusing cached prefix blocks), prefills up to a token budget (long prompts in chunks over several steps), and
decodes one token for every sequence whose context is complete. A decode that needs a new block and finds none
preempts the most recently admitted sequence: its blocks are released (their contents stay in the prefix cache
until evicted) and it goes back to the front of the queue, to be recomputed from its tokens so far. A lone
sequence that outgrows the whole cache ends with finish reason "length"; nothing is dropped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from agentgym.rollout.engines.paged.blocks import (
    BlockKey,
    BlockPool,
    OutOfBlocks,
    block_keys,
)


@dataclass(eq=False)
class Sequence:
    """One request's state: its tokens so far (prompt + output), its blocks and how many tokens are cached."""

    request: Any
    tokens: list[int]
    prompt_len: int
    blocks: list[int] = field(default_factory=list)
    computed: int = 0  # tokens whose keys/values are in the cache
    keys: list[BlockKey] = field(default_factory=list)  # content keys of the full blocks, in order
    registered: int = 0  # how many of `blocks` are registered in the prefix cache (or known duplicates)
    waited_steps: int = 0
    preempted: bool = False
    row: int = -1  # its row in the runner's device-side block tables while admitted
    synced_blocks: int = 0  # how many of `blocks` that row holds
    max_len: int = 1 << 62  # the length at which it ends (max new tokens, context limit)
    steps: int = 1  # tokens the next decode call may sample for it (blocks are allocated for them)
    media: Any = None  # a vision-language request's images (`paged/images.py`); pads in `tokens` are content ids

    @property
    def output_len(self) -> int:
        return len(self.tokens) - self.prompt_len

    @property
    def prefilled(self) -> bool:
        """Everything but the newest token is cached: the next decode step feeds that token and samples.

        A prompt is prefilled up to its last token, which its first decode step feeds, so sampling happens in
        one place (the decode step) and a sequence resumed after preemption continues exactly where it was.
        """
        return self.computed >= len(self.tokens) - 1


@dataclass
class PrefillChunk:
    seq: Sequence
    start: int
    end: int


@dataclass
class StepPlan:
    prefill: list[PrefillChunk]
    decode: list[Sequence]
    out_of_room: list[Sequence]  # alone in the cache and still without a block: finish with "length"


@dataclass
class SchedulerConfig:
    max_batch: int
    max_prefill_tokens: int
    # With sequences decoding, small prefills wait up to this many steps to be batched with later arrivals
    # (each eager prefill pass costs a fixed launch overhead); a full budget of tokens goes at once.
    prefill_max_wait_steps: int = 4
    # Tokens a decode call samples per sequence (the runner's `decode_steps`); blocks are allocated ahead for them.
    decode_steps: int = 1


@dataclass
class SchedulerStats:
    admitted: int = 0
    context_tokens: int = 0  # tokens of context at admission (what a cache-less engine would prefill)
    cached_tokens: int = 0  # of those, found in the prefix cache
    prefilled_tokens: int = 0
    preemptions: int = 0


class Scheduler:
    def __init__(self, pool: BlockPool, config: SchedulerConfig):
        self.pool = pool
        self.config = config
        self.block_size = pool.block_size
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # admitted, in admission order (prefilling or decoding)
        self._free_rows = list(range(config.max_batch - 1, -1, -1))
        self.stats = SchedulerStats()

    def __len__(self) -> int:
        return len(self.waiting) + len(self.running)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def drop(self, seq: Sequence) -> None:
        """Forget a sequence (finished or cancelled) and release its blocks."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self._free(seq)

    def drop_all(self) -> list[Sequence]:
        everyone = list(self.running) + list(self.waiting)
        for seq in everyone:
            self.drop(seq)
        return everyone

    # ---- planning --------------------------------------------------------------------------------------------

    def plan(self, *, admit: bool = True, only_resumed: bool = False) -> StepPlan:
        """This step's work. `only_resumed` admits only preempted sequences (while a weight update waits for
        the running ones to drain, new requests must wait but preempted ones must finish)."""
        if admit:
            self._admit(only_resumed)
        decode, out_of_room = self._plan_decode()
        prefill = self._plan_prefill()
        return StepPlan(prefill, decode, out_of_room)

    @property
    def busy(self) -> bool:
        """Sequences that started are unfinished (running, or preempted and waiting to resume)."""
        return bool(self.running) or any(s.preempted for s in self.waiting)

    def _admit(self, only_resumed: bool) -> None:
        """Admit from the front of the queue while there is room. A sequence whose next uncached block another
        admitted sequence is about to compute (the other samples of a GRPO group, arriving together) waits
        until that block is computed and cached, then shares it instead of computing it again."""
        bs = self.block_size
        pending = set()
        for other in self.running:
            if not other.prefilled:
                pending.update(other.keys[other.computed // bs :])
        deferred: list[Sequence] = []
        while self.waiting and len(self.running) < self.config.max_batch:
            seq = self.waiting[0]
            if only_resumed and not seq.preempted:
                break
            if len(seq.keys) < len(seq.tokens) // bs:
                seq.keys += block_keys(seq.tokens, bs, start=len(seq.keys), parent=seq.keys[-1] if seq.keys else None)
            # At least the newest token is computed, so the prefill yields logits to sample from.
            reusable = (len(seq.tokens) - 1) // bs
            matched = self.pool.match(seq.keys[:reusable])
            if len(matched) < reusable and seq.keys[len(matched)] in pending:
                self.pool.release(matched)
                deferred.append(self.waiting.popleft())
                continue
            needed = -(-len(seq.tokens) // bs) - len(matched)
            # Keep a block per running sequence free, so admitting does not force the next decode to preempt.
            reserve = len(self.running) if self.running else 0
            if needed + reserve > self.pool.available:
                self.pool.release(matched)
                break
            self.waiting.popleft()
            seq.blocks = matched + self.pool.allocate(needed)
            seq.computed = len(matched) * bs
            seq.registered = len(matched)
            seq.waited_steps = 0
            seq.row = self._free_rows.pop()
            seq.synced_blocks = 0
            self.running.append(seq)
            pending.update(seq.keys[len(matched) :])
            self.stats.admitted += 1
            self.stats.context_tokens += len(seq.tokens)
            self.stats.cached_tokens += seq.computed
        self.waiting.extendleft(reversed(deferred))

    def _plan_prefill(self) -> list[PrefillChunk]:
        pending = [s for s in self.running if not s.prefilled]
        if not pending:
            return []
        remaining = sum(len(s.tokens) - 1 - s.computed for s in pending)
        decoding = len(self.running) - len(pending)
        oldest = max(s.waited_steps for s in pending)
        if decoding and remaining < self.config.max_prefill_tokens and oldest < self.config.prefill_max_wait_steps:
            for s in pending:
                s.waited_steps += self.config.decode_steps  # forward steps: a decode call takes this many
            return []
        budget = self.config.max_prefill_tokens
        chunks = []
        for seq in pending:
            if budget <= 0:
                break
            end = min(len(seq.tokens) - 1, seq.computed + budget)
            chunks.append(PrefillChunk(seq, seq.computed, end))
            budget -= end - seq.computed
        return chunks

    def _plan_decode(self) -> tuple[list[Sequence], list[Sequence]]:
        bs = self.block_size
        decode, out_of_room = [], []
        for seq in list(self.running):
            if seq not in self.running or not seq.prefilled:
                continue
            position = len(seq.tokens) - 1
            steps = max(1, min(self.config.decode_steps, seq.max_len - len(seq.tokens)))
            while position // bs >= len(seq.blocks):
                try:
                    seq.blocks += self.pool.allocate(1)
                except OutOfBlocks:
                    victim = self.running[-1]
                    if victim is seq and len(self.running) == 1:
                        out_of_room.append(seq)
                        break
                    self._preempt(victim)
                    if victim in decode:
                        decode.remove(victim)
                    if victim is seq:
                        break
            else:
                # Blocks for the call's later tokens are a bonus: without room it takes fewer steps, preempting no one.
                while (position + steps - 1) // bs >= len(seq.blocks):
                    try:
                        seq.blocks += self.pool.allocate(1)
                    except OutOfBlocks:
                        steps = len(seq.blocks) * bs - position
                seq.steps = steps
                decode.append(seq)
        return decode, out_of_room

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self._free(seq)
        seq.preempted = True
        self.waiting.appendleft(seq)
        self.stats.preemptions += 1

    def _free(self, seq: Sequence) -> None:
        if seq.row >= 0:
            self._free_rows.append(seq.row)
            seq.row = -1
        if seq.blocks:
            self.pool.release(seq.blocks)
        seq.blocks = []
        seq.computed = 0
        seq.registered = 0

    # ---- after the forward passes ------------------------------------------------------------------------------

    def computed(self, seq: Sequence, upto: int) -> None:
        """Keys/values of `seq.tokens[:upto]` are now in the cache: register the blocks that became full."""
        bs = self.block_size
        seq.computed = upto
        full = upto // bs
        if full > len(seq.keys):
            seq.keys += block_keys(seq.tokens[:upto], bs, start=len(seq.keys), parent=seq.keys[-1] if seq.keys else None)
        for b in range(seq.registered, full):
            self.pool.register(seq.blocks[b], seq.keys[b])
        seq.registered = max(seq.registered, full)

    def slots(self, seq: Sequence, start: int, end: int) -> list[int]:
        bs = self.block_size
        return [seq.blocks[p // bs] * bs + p % bs for p in range(start, end)]
