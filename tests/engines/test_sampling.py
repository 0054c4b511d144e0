"""The engine's batched sampler draws from the tempered distribution, honours top-k/top-p, and is seeded per row."""

import torch

from agentgym.rollout.engines.base import SamplingParams
from agentgym.rollout.engines.sampling import sample_tokens

LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])


def draw(params: SamplingParams, n: int = 4000, seed: int = 0) -> tuple[list[int], list[float]]:
    generators = [torch.Generator().manual_seed(seed * 100_000 + i) for i in range(n)]
    return sample_tokens(LOGITS.repeat(n, 1), [params] * n, generators)


def test_frequencies_match_the_tempered_softmax_and_logprobs_are_exact():
    params = SamplingParams(temperature=0.7)
    tokens, logprobs = draw(params)
    expected = torch.softmax(LOGITS / 0.7, dim=-1)
    counts = torch.bincount(torch.tensor(tokens), minlength=5).float() / len(tokens)
    # four standard errors of a binomial share at n=4000 is under 0.032
    assert torch.allclose(counts, expected, atol=0.032), (counts, expected)
    reference = torch.log_softmax(LOGITS / 0.7, dim=-1)
    assert all(abs(lp - reference[t].item()) < 1e-5 for t, lp in zip(tokens, logprobs))


def test_top_k_and_top_p_cut_the_tail():
    assert set(draw(SamplingParams(temperature=1.0, top_k=2))[0]) == {0, 1}
    # softmax(LOGITS) = .53 .19 .12 .07 .03: the nucleus at 0.8 holds the first three tokens
    assert set(draw(SamplingParams(temperature=1.0, top_p=0.8))[0]) == {0, 1, 2}


def test_rows_are_reproducible_by_their_own_generator_and_greedy_rows_take_the_argmax():
    params = [SamplingParams(temperature=1.0), SamplingParams(temperature=0.0), SamplingParams(temperature=1.0)]
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))

    def run(seeds):
        return sample_tokens(logits, params, [torch.Generator().manual_seed(s) for s in seeds])[0]

    first, again = run([1, 2, 3]), run([1, 2, 3])
    assert first == again and first[1] == int(logits[1].argmax())
    assert [run([s, 2, 3])[0] for s in range(20)] != [first[0]] * 20
