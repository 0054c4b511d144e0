"""Answer checkers compared on held-out rows: agentgym's numeric checker, math-verify, and reasoning-gym's scorers.

    python benchmarks/answer_check_bench.py [--rows 200] [--out benchmarks/answer_check.json]

For each held-out row (arithmetic's and code_arith's `test` split, and reasoning-gym's basic_arithmetic and
chain_sum) it writes the ways a model states the right answer and the ways it gets it wrong that we see in
rollouts (plain, "The answer is", \\boxed{}, LaTeX thousands separators, markdown, a trailing period, an earlier
intermediate number; off by one, sign flips, a right intermediate then a wrong final number, no answer), labels
each by construction, and asks every checker. Reported: agreement with the label, false accepts, false
rejects, and microseconds per check. The responses are constructed, not sampled from a model: the figures say
which surface forms each checker reads, not how often a model writes them.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path


def _variants(gt: str) -> list[tuple[str, str, bool]]:
    """(kind, response, is_correct) for an integer ground truth."""
    n = int(gt)
    grouped = f"{n:,}"
    latex_grouped = grouped.replace(",", "{,}")
    wrong, flipped = str(n + 1), str(-n) if n else "1"
    return [
        ("plain", gt, True),
        ("sentence", f"The answer is {gt}.", True),
        ("boxed", f"Adding it up gives \\boxed{{{gt}}}", True),
        ("inline_math", f"So the result is ${gt}$.", True),
        ("grouped", f"Answer: {grouped}", True),
        ("latex_grouped", f"Therefore the total is \\boxed{{{latex_grouped}}}.", True),
        ("markdown", f"**Final answer:** {gt}", True),
        ("decimal", f"The answer is {gt}.0", True),
        ("work_then_answer", f"First 3 * 4 = 12, then 12 + 5 = 17. The answer is {gt}.", True),
        ("boxed_text", f"\\boxed{{\\text{{{gt}}}}}", True),
        ("off_by_one", f"The answer is {wrong}.", False),
        ("sign_flip", f"\\boxed{{{flipped}}}", False),
        ("right_then_wrong", f"I first got {gt}, but rechecking, the final answer is {wrong}.", False),
        ("boxed_wrong", f"\\boxed{{{wrong}}}", False),
        ("latex_right_then_wrong", f"I first got ${gt}$, but the final answer is ${wrong}$.", False),
        ("half", f"The answer is {gt}.5", False),
        ("no_answer", "I cannot solve this.", False),
    ]


def held_out_rows(n: int) -> list[tuple[str, str, Callable[[str], float] | None]]:
    """(source, ground_truth, reasoning-gym scorer or None)."""
    from agentgym_envs.arithmetic.data import ArithmeticTaskConfig, make_rows
    from agentgym_envs.code_arith import make_rows as make_code_rows

    rows = [("arithmetic", r["reward_model"]["ground_truth"], None)
            for r in make_rows(ArithmeticTaskConfig(num_rows=n, seed=0, split="test"))]
    rows += [("code_arith", r["reward_model"]["ground_truth"], None)
             for r in make_code_rows(ArithmeticTaskConfig(num_rows=n, seed=0, split="test"))]
    import reasoning_gym

    for name in ("basic_arithmetic", "chain_sum"):
        ds = reasoning_gym.create_dataset(name, size=n, seed=12345)
        rows += [(f"reasoning_gym/{name}", str(x["answer"]), (lambda text, x=x, ds=ds: _rg_score(ds, x, text)))
                 for x in ds]
    return rows


def _rg_score(ds, entry, text: str) -> float:
    """reasoning-gym's own path: pull the answer out (its <answer> tag, else the whole text) and score it."""
    from reasoning_gym.utils import extract_answer

    answer = extract_answer(text) or text
    return float(ds.score_answer(answer, entry))


def checkers() -> dict[str, Callable[[str, str], bool]]:
    from math_verify import parse, verify

    from agentgym.answers.numeric import answers_match, extract_answer, response_matches

    def ours(response: str, gt: str) -> bool:
        return answers_match(extract_answer(response), gt)

    def math_verify(response: str, gt: str) -> bool:
        return bool(verify(parse(gt), parse(response)))

    return {"numeric_answer": ours, "math_verify": math_verify, "response_matches (adopted)": response_matches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = held_out_rows(args.rows)
    names = list(checkers()) + ["reasoning_gym"]
    fns = checkers()
    tallies: dict[str, dict[str, int]] = {name: defaultdict(int) for name in names}
    misses: dict[str, dict[str, int]] = {name: defaultdict(int) for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for source, gt, rg_scorer in rows:
        for kind, response, label in _variants(gt):
            results = {}
            for name, fn in fns.items():
                start = time.perf_counter()
                results[name] = fn(response, gt)
                times[name].append(time.perf_counter() - start)
            if rg_scorer is not None:
                start = time.perf_counter()
                results["reasoning_gym"] = rg_scorer(response) >= 1.0
                times["reasoning_gym"].append(time.perf_counter() - start)
            for name, got in results.items():
                t = tallies[name]
                t["checks"] += 1
                t["agree"] += got == label
                t["false_accept"] += got and not label
                t["false_reject"] += label and not got
                if got != label:
                    misses[name][kind] += 1
    report = {"machine": f"{platform.machine()} {platform.processor() or ''}, shared by other jobs (timings are "
                          f"busy-machine figures)",
              "rows": len(rows), "checkers": {}}
    for name in names:
        t = tallies[name]
        if not t["checks"]:
            continue
        report["checkers"][name] = {
            "checks": t["checks"], "accuracy": t["agree"] / t["checks"], "false_accepts": t["false_accept"],
            "false_rejects": t["false_reject"], "us_per_check_median": statistics.median(times[name]) * 1e6,
            "us_per_check_mean": statistics.mean(times[name]) * 1e6,
            "us_per_check_p99": sorted(times[name])[int(0.99 * (len(times[name]) - 1))] * 1e6,
            "misses_by_form": dict(sorted(misses[name].items())),
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
