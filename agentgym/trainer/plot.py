"""`agentgym plot RUN_DIR`: reward and KL curves of a run as PNG files."""

from __future__ import annotations

from pathlib import Path

from agentgym.trainer.tracking import read_metrics

REWARD_KEYS = ("critic/score/mean", "critic/rewards/mean", "rollout/tool_use_share")
KL_KEYS = ("actor/kl_loss", "actor/reward_kl", "actor/ppo_kl")


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Draw reward.png and kl.png from RUN_DIR/metrics.jsonl into `out_dir` (default RUN_DIR); returns the files.

    Every KL series the run logged is drawn (KL loss, in-reward KL, PPO's old-vs-new KL); missing series are skipped.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    out = Path(out_dir) if out_dir is not None else Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, keys, ylabel in (("reward", REWARD_KEYS, "reward"), ("kl", KL_KEYS, "KL")):
        fig, ax = plt.subplots(figsize=(7, 4))
        drawn = 0
        for key in keys:
            points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=key)
                drawn += 1
        if not drawn:
            ax.text(0.5, 0.5, f"no {ylabel} metrics logged", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.legend()
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel} - {Path(run_dir).name}")
        ax.grid(alpha=0.3)
        path = out / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def plot_command(argv: list[str] | None = None) -> int:
    """CLI body for `agentgym plot RUN_DIR [--out DIR]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="agentgym plot", description="Draw reward and KL curves of a run to PNG.")
    parser.add_argument("run_dir")
    parser.add_argument("--out", default=None, help="output folder (default: RUN_DIR)")
    args = parser.parse_args(argv)
    for path in plot_run(args.run_dir, args.out):
        print(path)
    return 0
