"""The side-by-side table of benchmarks/gpu/real_model_vs_trl.sh: for our GRPO and TRL's GRPOTrainer, held-out
greedy and sampled accuracy and correct tool use against RL wall time, and step time and rollout/update tokens per second.

    python benchmarks/gpu/summarize_real_model.py OUT [RUNS_ROOT]

OUT holds run_sft.json / run_rl0.json (ours, real_model_ours.py) and trl_sft.json (real_model_trl.py). A stage
stopped by the call's deadline writes no summary; its curve and per-step metrics are then read from RUNS_ROOT
(default /tmp, where the script runs them), so a cut-short run still shows the points it reached.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import mean
from typing import Any


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def ours(out: Path, runs: Path, name: str) -> dict[str, Any] | None:
    """Our run's curve and step figures, from its summary or, when it was cut short, from its run directory."""
    summary_path = out / f"{name}.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        curve, steps = summary["curve"], summary["steps"]
    else:
        curve, steps = _jsonl(runs / name / "curve.jsonl"), _jsonl(runs / name / "rl" / "metrics.jsonl")
    if not curve and not steps:
        return None
    later = steps[1:] or steps  # step 1 holds one-off warm-up costs
    return {
        "curve": curve, "steps": len(steps),
        "step_s": mean(s["timing_s/step"] for s in later) if later else float("nan"),
        "rollout_tokens_per_s": mean(s["response/model_tokens"] / s["timing_s/rollout"] for s in later
                                     if s.get("timing_s/rollout")) if later else float("nan"),
        "update_tokens_per_s": mean(s["perf/update_tokens_per_s"] for s in later
                                    if "perf/update_tokens_per_s" in s) if later else float("nan"),
        "score": [round(s.get("critic/score/mean", float("nan")), 3) for s in steps],
        "tool_use_share": [round(s.get("rollout/tool_use_share", float("nan")), 3) for s in steps],
    }


def trl(out: Path) -> dict[str, Any] | None:
    path = out / "trl_sft.json"
    if not path.exists():
        return None
    s = json.loads(path.read_text())
    return {"curve": s["curve"], "steps": s["steps"], "step_s": s["generate_s_per_step"] + s["update_s_per_step"],
            "rollout_tokens_per_s": s["rollout_tokens_per_s"], "update_tokens_per_s": s["update_tokens_per_s"]}


def time_to(curve: list[dict[str, Any]], accuracy: float, key: str) -> str:
    hit = next((p for p in curve if p.get(key, -1.0) >= accuracy), None)
    return "not reached" if hit is None else f"{hit['rl_seconds']:.0f} s (step {hit['step']})"


def main(argv: list[str]) -> None:
    out = Path(argv[0])
    runs = Path(argv[1]) if len(argv) > 1 else Path("/tmp")
    rows = {"ours, after warm-up": ours(out, runs, "run_sft"), "TRL, after the same warm-up": trl(out),
            "ours, model as is": ours(out, runs, "run_rl0")}
    for name, r in rows.items():
        if r is None:
            print(f"{name}: no result (see log_*.txt)")
            continue
        points = ", ".join(f"step {p['step']} @ {p['rl_seconds']:.0f}s: {p['accuracy']:.1%} greedy "
                           f"(tool {p['tool_use_correct']:.0%}), {p.get('sampled_accuracy', float('nan')):.1%} sampled "
                           f"(tool {p.get('sampled_tool_use_correct', float('nan')):.0%})" for p in r["curve"])
        print(f"{name}: {r['steps']} steps, {r['step_s']:.2f} s/step, rollout {r['rollout_tokens_per_s']:,.0f} tok/s, "
              f"update {r['update_tokens_per_s']:,.0f} tok/s")
        print(f"  held-out: {points}")
        if "score" in r:
            print(f"  training score per step: {r['score']}")
            print(f"  share of episodes calling the tool: {r['tool_use_share']}")
        if r["curve"]:
            # the warm-up can saturate greedy accuracy: the sampled figure is the one RL has room to raise
            print(f"  RL time to 90 % held-out: greedy {time_to(r['curve'], 0.9, 'accuracy')}, "
                  f"sampled {time_to(r['curve'], 0.9, 'sampled_accuracy')}")


if __name__ == "__main__":
    main(sys.argv[1:])
