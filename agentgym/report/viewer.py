"""`agentgym view RUN_DIR`: one static HTML page that shows a run's trajectories turn by turn.

Messages (system, user, assistant with its tool calls, tool results), rewards and finish reasons, and — when a
tokenizer is at hand — the token sequence with trained (loss_mask 1) and masked tokens told apart, so a reader can
check exactly what the trainer learns from.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Sequence

from agentgym.errors import AgentGymError
from agentgym.storable_text import storable_text
from agentgym.trajectory import NOT_SAMPLED, Trajectory
from agentgym.rollout.trajectory_io import read_jsonl

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;background:#fafafa;color:#222}
h1{font-size:22px} h2{font-size:17px;margin:0 0 8px}
table.summary{border-collapse:collapse;margin-bottom:24px}
table.summary td,table.summary th{border:1px solid #ccc;padding:4px 8px;font-size:13px}
.traj{background:#fff;border:1px solid #ddd;border-radius:8px;padding:16px;margin-bottom:24px}
.meta{font-size:13px;color:#555;margin-bottom:10px}
.msg{border-left:4px solid #999;padding:6px 10px;margin:6px 0;white-space:pre-wrap;font-size:14px;background:#f6f6f6}
.msg .role{font-weight:bold;font-size:12px;text-transform:uppercase;display:block;margin-bottom:2px}
.system{border-color:#888}.user{border-color:#2b7bb9}.assistant{border-color:#2e9d44}.tool{border-color:#a03fbf}.facts{display:block;color:#666;font-size:85%;margin-top:4px}
.call{font-family:monospace;background:#e8f5e9;padding:2px 6px;display:block;margin-top:4px}
.tokens{font-family:monospace;font-size:12px;white-space:pre-wrap;line-height:1.6;border:1px solid #eee;padding:8px}
.trained{background:#c8f0cf} .masked{background:#e4e4e4;color:#666} .prompt{color:#999}
.legend span{padding:0 6px;margin-right:8px;font-size:12px}
.failed{color:#b00020;font-weight:bold}
.turn-image{display:block;width:224px;image-rendering:pixelated;border:1px solid #ccc;margin:4px 0}
"""


def find_trajectory_files(run_dir: Path) -> list[Path]:
    """Every JSONL file under the run directory that holds trajectory records (metrics files are skipped)."""
    found = []
    for path in sorted(run_dir.rglob("*.jsonl")):
        with open(path, encoding="utf-8") as src:
            first = src.readline()
        try:
            record = json.loads(first)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and {"response_ids", "loss_mask", "messages"} <= set(record):
            found.append(path)
    return found


def find_tokenizer(run_dir: Path) -> Path | None:
    candidates = sorted(p.parent for p in run_dir.rglob("tokenizer.json"))
    return candidates[-1] if candidates else None


def _content_html(content: Any, images: Sequence[str]) -> str:
    """Text escaped; image parts (prompt or tool-returned) shown as the images the trajectory stores."""
    if not isinstance(content, list):
        return html.escape(content or "")
    out = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "image":
            index = part.get("image_index")
            if isinstance(index, int) and 0 <= index < len(images) and images[index].startswith("data:image/"):
                out.append(f'<img class="turn-image" alt="image {index}" title="image {index}" src="{html.escape(images[index])}">')
            else:
                out.append('<span class="call">[image not stored]</span>')
        elif isinstance(part, dict):
            out.append(html.escape(str(part.get("text", ""))))
        else:
            out.append(html.escape(str(part)))
    return "".join(out)


def _call_facts(metrics: dict[str, Any]) -> str:
    """What the tool (the sandbox, for code) said about one call: server, queue wait, run and CPU time, exit status,
    why it was stopped, retries."""
    facts = []
    if metrics.get("server"):
        facts.append(f"server {metrics['server'].split('://', 1)[-1].removesuffix('/run_code')}")
    for key, label in (("queue_wait_s", "queued"), ("execution_time_s", "ran"), ("cpu_time_s", "cpu"),
                       ("latency_s", "total")):
        value = metrics.get(key)
        if isinstance(value, (int, float)):
            facts.append(f"{label} {value:.3g} s")
    if metrics.get("return_code") is not None:
        facts.append(f"exit {metrics['return_code']}")
    if metrics.get("kill_reason"):
        facts.append(f"killed: {metrics['kill_reason']}")
    if metrics.get("outcome"):
        facts.append(str(metrics["outcome"]))
    if metrics.get("retries"):
        facts.append(f"{metrics['retries']} retries over {metrics.get('servers_tried') or 1} server(s)")
    if metrics.get("error"):
        facts.append(f"error: {str(metrics['error'])[:300]}")
    return " · ".join(facts)


def _message_html(message: dict[str, Any], images: Sequence[str] = (), metrics: dict[str, Any] | None = None) -> str:
    role = message.get("role", "?")
    raw = message.get("raw_content")
    # A turn with an unparseable call: show everything the model wrote, not only the parts that parsed.
    body = html.escape(raw) if raw is not None else _content_html(message.get("content"), images)
    for call in [] if raw is not None else message.get("tool_calls") or []:
        fn = call.get("function", {})
        body += f'<span class="call">→ {html.escape(fn.get("name", ""))}({html.escape(str(fn.get("arguments", "")))})</span>'
    if metrics:
        facts = _call_facts(metrics)
        if facts:
            body += f'<span class="facts">{html.escape(facts)}</span>'
    return f'<div class="msg {html.escape(role)}"><span class="role">{html.escape(role)}</span>{body}</div>'


def _tokens_html(traj: Trajectory, tokenizer: Any) -> str:
    parts = [f'<span class="prompt">{html.escape(tokenizer.decode(traj.prompt_ids, skip_special_tokens=False))}</span>']
    start = 0
    ids, mask = traj.response_ids, traj.loss_mask
    versions = traj.token_versions or [NOT_SAMPLED] * len(ids)
    while start < len(ids):
        end = start
        while end < len(ids) and mask[end] == mask[start] and versions[end] == versions[start]:
            end += 1
        kind = "trained" if mask[start] else "masked"
        sampled = f", policy version {versions[start]}" if versions[start] != NOT_SAMPLED else ""
        text = tokenizer.decode(ids[start:end], skip_special_tokens=False)
        parts.append(f'<span class="{kind}" title="{end - start} tokens, {kind}{sampled}">{html.escape(text)}</span>')
        start = end
    return '<div class="tokens">' + "".join(parts) + "</div>"


def _trajectory_html(index: int, traj: Trajectory, source: str, tokenizer: Any) -> str:
    trained = sum(traj.loss_mask)
    status = f'<span class="failed">failed: {html.escape(traj.error)}</span>' if traj.failed else html.escape(traj.finish_reason)
    meta = (
        f"reward {traj.reward:.3f} (outcome {traj.final_score:.3f}, tool steps {sum(traj.tool_rewards):.3f}, "
        f"teacher turns {', '.join(f'{r:.2f}' for r in traj.interaction_rewards) or '-'}) · "
        f"{traj.num_tool_calls} tool call(s) · {len(traj.response_ids)} response tokens, {trained} trained · {status}"
    )
    sampled = sorted(set(traj.sampled_versions))
    if sampled:  # overlapped rollouts: which policy versions sampled this episode
        meta += f" · policy version{'s' if len(sampled) > 1 else ''} {', '.join(map(str, sampled))}"
    # The executed calls' metrics in order belong to the tool messages that name their tool (a message for a call
    # that could not be parsed names none, and its metrics come last).
    executed = iter([m for m in traj.tool_metrics if m.get("name") is not None])
    body = "".join(_message_html(m, traj.images, next(executed, None) if m.get("role") == "tool" and m.get("name")
                                 else None) for m in traj.messages)
    tokens = _tokens_html(traj, tokenizer) if tokenizer is not None else ""
    return (
        f'<div class="traj" id="t{index}"><h2>#{index} · {html.escape(source)} · group {html.escape(traj.group_id)}</h2>'
        f'<div class="meta">{meta}</div>{body}{tokens}</div>'
    )


def render_html(groups: Sequence[tuple[str, list[Trajectory]]], tokenizer: Any = None, *, title: str = "agentgym run",
                header: str = "") -> str:
    summary = ['<table class="summary"><tr><th>file</th><th>trajectories</th><th>mean reward</th><th>failed</th><th>tool calls</th></tr>']
    sections = []
    index = 0
    for source, trajs in groups:
        n = max(len(trajs), 1)
        summary.append(
            f"<tr><td>{html.escape(source)}</td><td>{len(trajs)}</td><td>{sum(t.reward for t in trajs) / n:.3f}</td>"
            f"<td>{sum(t.failed for t in trajs)}</td><td>{sum(t.num_tool_calls for t in trajs)}</td></tr>"
        )
        for traj in trajs:
            sections.append(_trajectory_html(index, traj, source, tokenizer))
            index += 1
    summary.append("</table>")
    legend = (
        '<div class="legend">tokens: <span class="prompt">prompt</span><span class="trained">trained (model)</span>'
        '<span class="masked">masked (tool / user)</span></div>' if tokenizer is not None else ""
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{header}{''.join(summary) if groups else ''}{legend}{''.join(sections)}"
        "</body></html>"
    )


def step_of(path: Path) -> int | None:
    """The training step of a `trainer.rollout_data_dir` file (`<step>.jsonl`), else None."""
    return int(path.stem) if path.stem.isdigit() else None


def _steps_table(steps: Sequence[tuple[int, list[Trajectory], str]]) -> str:
    rows = ['<table class="summary"><tr><th>step</th><th>trajectories</th><th>mean reward</th><th>min</th><th>max</th>'
            '<th>failed</th><th>tool calls</th></tr>']
    for step, trajs, link in steps:
        rewards = [t.reward for t in trajs] or [0.0]
        rows.append(
            f'<tr><td><a href="{html.escape(link)}">step {step}</a></td><td>{len(trajs)}</td>'
            f"<td>{sum(rewards) / len(rewards):.3f}</td><td>{min(rewards):.3f}</td><td>{max(rewards):.3f}</td>"
            f"<td>{sum(t.failed for t in trajs)}</td><td>{sum(t.num_tool_calls for t in trajs)}</td></tr>")
    rows.append("</table>")
    return "<h2>training steps</h2>" + "".join(rows)


def write_view(run_dir: Path, out: Path | None = None, *, tokenizer_path: Path | None = None, limit: int = 200) -> Path:
    """Write the page (default RUN_DIR/view.html); at most `limit` trajectories per file.

    Per-step files of a training run (`trainer.rollout_data_dir`) get a table of every step's rewards on that page
    and one page each (`view_steps/step_N.html`, linked to the previous and next step)."""
    files = find_trajectory_files(run_dir)
    if not files:
        raise AgentGymError(
            f"no trajectory JSONL files under {run_dir}; run `agentgym rollout` or `agentgym quickstart` first, or "
            "train with trainer.rollout_data_dir=DIR (main_ppo then writes each step's trajectories to "
            "DIR/<step>.jsonl)")
    tokenizer = None
    tokenizer_path = tokenizer_path or find_tokenizer(run_dir)
    if tokenizer_path is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    out = out or run_dir / "view.html"
    title = f"agentgym run {run_dir.name}"
    step_files = sorted(((step_of(p), p) for p in files if step_of(p) is not None), key=lambda item: item[0])
    others = [p for p in files if step_of(p) is None]
    header = ""
    if step_files:
        pages = out.parent / f"{out.stem}_steps"
        pages.mkdir(parents=True, exist_ok=True)
        steps = [(step, read_jsonl(path), f"{pages.name}/step_{step}.html") for step, path in step_files]
        header = _steps_table(steps)
        for index, (step, trajs, _) in enumerate(steps):
            nav = [f'<a href="../{html.escape(out.name)}">all steps</a>']
            if index > 0:
                nav.append(f'<a href="step_{steps[index - 1][0]}.html">← step {steps[index - 1][0]}</a>')
            if index + 1 < len(steps):
                nav.append(f'<a href="step_{steps[index + 1][0]}.html">step {steps[index + 1][0]} →</a>')
            source = str(step_files[index][1].relative_to(run_dir))
            (pages / f"step_{step}.html").write_text(storable_text(
                render_html([(source, trajs[:limit])], tokenizer, title=f"{title} · step {step}",
                            header=f"<p>{' · '.join(nav)}</p>")), encoding="utf-8")
    groups = [(str(path.relative_to(run_dir)), read_jsonl(path)[:limit]) for path in others]
    out.write_text(storable_text(render_html(groups, tokenizer, title=title, header=header)), encoding="utf-8")
    return out
