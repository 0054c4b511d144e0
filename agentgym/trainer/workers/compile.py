"""torch.compile for the trainer's models: each transformer block, and the log-prob LM head's chunk.

Small-hidden models (Qwen2.5-0.5B: hidden 896) spend much of a training step in elementwise work between the
matmuls (RMSNorm, rotary, SiLU-and-multiply, residual adds; in the head, the fp32 cast, log-sum-exp and gather over
the 151,936-wide vocabulary), each a separate memory-bound kernel in eager mode; compiling fuses them.

Only the block's `forward` is compiled, not the module call: FSDP2's hooks (all-gather, reshard) stay outside the
graph, parameter names and state dicts are unchanged, and all blocks share one compiled function (the block is an
argument, so identical layers do not each recompile).

Shapes are dynamic from the first compile (`dynamic=True`): packed micro-batches change length every step, and
each mode (no-grad log-probs, training forward) compiles its own graph. With PyTorch's default (static first,
dynamic after a change) the log-prob pass compiled a static graph in step 1 and recompiled it in step 2 when the
lengths changed, about 2 s inside a 0.5B step whose log-prob forward takes 0.15 s (benchmarks/RESULTS.md, issue 27).
Parameter shapes stay static (`force_parameter_static_shapes`), so only the token dimensions (and the varlen
attention's maximum length) are symbolic. Duck sizing is off while these functions compile: sizes that happen
to be equal in the first batch (a micro-batch holding as many sequences as there are heads, say) would otherwise
be assumed equal and the graph recompiled when they differ.
"""

from __future__ import annotations

import functools
import logging
import types

import torch
from torch import nn

from agentgym.trainer.workers.fast_forward import head_chunk, logprob_head
from agentgym.trainer.workers.model import transformer_blocks

log = logging.getLogger(__name__)

# Graphs per compiled function: one per mode (no-grad, training, with/without entropy) and the 0/1-token
# specializations (an empty micro-batch runs a 1-token dummy). Above this the block would silently run eagerly.
_RECOMPILE_LIMIT = 64


def _compile(fn, *, backend: str, mode: str | None):
    """`torch.compile(fn, dynamic=True)`, compiled (and re-guarded) without duck sizing."""
    from torch.fx.experimental import _config as fx_config

    compiled = torch.compile(fn, backend=backend, mode=mode, dynamic=True)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with fx_config.patch(use_duck_shape=False):
            return compiled(*args, **kwargs)

    return run


def compile_model(model: nn.Module, *, backend: str = "inductor", mode: str | None = None) -> int:
    """Compile the blocks' `forward` and, when the model has one, the log-prob head's chunk function; returns
    how many blocks were compiled."""
    head = logprob_head(model)
    if head is not None:
        head.chunk_fn = _compile(head_chunk, backend=backend, mode=mode)
    return compile_blocks(model, backend=backend, mode=mode)


def compile_blocks(model: nn.Module, *, backend: str = "inductor", mode: str | None = None) -> int:
    """Replace each transformer block's `forward` with a compiled one; returns how many blocks were compiled."""
    blocks = transformer_blocks(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} declares no transformer blocks (_no_split_modules); "
                         "set use_torch_compile=false for this model")
    dynamo = torch._dynamo.config
    dynamo.cache_size_limit = max(dynamo.cache_size_limit, _RECOMPILE_LIMIT)
    if hasattr(dynamo, "accumulated_cache_size_limit"):
        dynamo.accumulated_cache_size_limit = max(dynamo.accumulated_cache_size_limit, _RECOMPILE_LIMIT * 4)
    compiled: dict[type, object] = {}
    for block in blocks:
        cls = type(block)
        if cls not in compiled:
            compiled[cls] = _compile(cls.forward, backend=backend, mode=mode)
        block.forward = types.MethodType(compiled[cls], block)
    log.info("compiled the forward of %d %s blocks (backend %s)", len(blocks),
             "/".join(sorted(c.__name__ for c in compiled)), backend)
    return len(blocks)
