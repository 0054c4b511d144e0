"""Reading weight files and copying tensors into a live model without reallocating it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, or of every `*.safetensors` shard in a model directory."""
    root = Path(path)
    files = sorted(root.glob("*.safetensors")) if root.is_dir() else [root]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(
            f"no safetensors weights at {root}; pass a model directory saved with save_pretrained or a .safetensors file"
        )
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        tensors.update(load_file(f))
    return tensors


def load_state_dict_in_place(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Copy `tensors` into the model's parameters and buffers (by name), checking every name and shape first.

    `tensors` may live on another device or in another dtype (the copy converts), and may be a `PackedWeights`
    (views into the trainer's device buckets). When any source is on a GPU the device is synchronised before
    returning, so the sender may free or overwrite its buffers as soon as this returns."""
    targets = model.state_dict(keep_vars=True)
    unknown = sorted(set(tensors) - set(targets))
    if unknown:
        raise ValueError(
            f"{len(unknown)} weight name(s) not in the model, e.g. {unknown[:3]}; the state dict must use the "
            f"model's own parameter names (such as {next(iter(targets))!r}), without wrapper prefixes"
        )
    wrong = [(n, tuple(t.shape), tuple(targets[n].shape)) for n, t in tensors.items() if t.shape != targets[n].shape]
    if wrong:
        raise ValueError(f"shape mismatch for {len(wrong)} weight(s), e.g. (name, given, expected) {wrong[:3]}")
    devices = set()
    with torch.no_grad():
        for name, tensor in tensors.items():
            targets[name].copy_(tensor)
            if tensor.is_cuda:
                devices.add(tensor.device)
    for device in devices:
        torch.cuda.synchronize(device)
