"""The logprob convention of engines/base.py computed directly with the model, to check what servers report."""

import torch


def forward_logprobs(model, prompt: list[int], output: list[int], temperature: float) -> list[float]:
    """log_softmax(logits / T) (T=1 for greedy) of each output token, from one forward over prompt + output."""
    ids = torch.tensor([prompt + output])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1:-1].float()
    scale = 1.0 if temperature < 1e-5 else temperature
    return torch.log_softmax(logits / scale, dim=-1).gather(1, torch.tensor(output)[:, None])[:, 0].tolist()
