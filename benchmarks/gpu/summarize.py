"""Markdown table of grpo_vs_trl.sh's JSON results: python benchmarks/gpu/summarize.py RESULTS_DIR"""

import json
import sys
from pathlib import Path


def fmt(v, pct=False):
    if v is None:
        return "-"
    if pct:
        return f"{100 * v:.1f} %"
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    rows = []
    for path in sorted(root.glob("*.json")):
        d = json.loads(path.read_text())
        name = path.stem
        if name.startswith("trl_"):
            rows.append((name, d["size"], "TRL GRPOTrainer update", d["update_tokens_per_s"], d["update_mfu"], d["update_s"],
                         f"gen {fmt(d['generate_tokens_per_s'])} tok/s, {d['generate_s']:.1f} s/step; {d['tokens_per_step']:.0f} tok/step"))
            continue
        u = d.get("update_only")
        if u:
            rows.append((name, d["size"], f"ours update ({u.get('workers', 'in-process')}, world {u.get('world_size', 1)})",
                         u["update_tokens_per_s"], u["update_mfu"], u["update_s"],
                         f"old-logprob {fmt(u['old_log_prob_tokens_per_s'])} tok/s; {u['tokens_per_step']:.0f} tok/step; "
                         f"peak mem {fmt(u.get('max_memory_gib'))} GiB"))
        g = d.get("grpo_step")
        if g:
            rows.append((name, d["size"], "ours full GRPO step: update", g["update_tokens_per_s"], g["update_mfu"], g["update_s"],
                         f"rollout {fmt(g['rollout_generated_tokens_per_s'])} sampled tok/s ({fmt(g['rollout_response_tokens_per_s'])} "
                         f"response tok/s), {g['rollout_s']:.1f} s; {g['tool_calls_per_step']:.0f} tool calls/step, "
                         f"{g['tool_errors']} errors, {g['assistant_turns_per_traj']:.1f} turns/traj; old-logprob "
                         f"{fmt(g['old_log_prob_tokens_per_s'])} tok/s; weight sync {g['weight_sync_s']:.1f} s; "
                         f"step {g['step_s']:.1f} s; {g['tokens_per_step']:.0f} tok/step"))
    print("| run | size | phase | update tok/s | update MFU | update s/step | other figures |")
    print("|---|---|---|---|---|---|---|")
    for name, size, phase, tps, mfu, secs, other in rows:
        print(f"| {name} | {size} | {phase} | {fmt(tps)} | {fmt(mfu, True)} | {secs:.2f} | {other} |")
    for size in sorted({r[1] for r in rows}):
        ours = [r for r in rows if r[1] == size and r[2].startswith("ours update (in-process")]
        ours = next((r for r in ours if not r[0].endswith("_eager")), ours[0] if ours else None)  # compiled run
        trl = next((r for r in rows if r[1] == size and r[2].startswith("TRL")), None)
        if ours and trl:
            print(f"\n{size}: ours / TRL update tokens/s = {ours[3] / trl[3]:.2f}x")


if __name__ == "__main__":
    main()
