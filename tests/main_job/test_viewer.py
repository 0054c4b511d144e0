"""`agentgym view`: the page a person reads, rendered by a real headless Chromium and looked at as pixels."""

import asyncio
import shutil
import subprocess
import sys

from PIL import Image

from agentgym.interactions.registry import load_interactions
from agentgym.models import tiny_tokenizer
from agentgym.rollout.agent_loop import AgentLoop
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.rollout.trajectory_io import write_jsonl
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG
from agentgym_envs.arithmetic.data import ArithmeticTaskConfig, make_rows
from agentgym_envs.arithmetic.solver import ideal_script

TRAINED_GREEN = (0xC8, 0xF0, 0xCF)


def make_run(run_dir):
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(run_dir / "models" / "tiny")
    rows = make_rows(ArithmeticTaskConfig(num_rows=3, seed=5))
    tools = build_tools(load_tool_specs(TOOL_CONFIG))
    loop = AgentLoop(ScriptedEngine(tokenizer, ideal_script(rows, "v-")), tokenizer, tools, load_interactions(INTERACTION_CONFIG))
    trajs = asyncio.run(loop.run_batch(rows, group_prefix="v-"))
    write_jsonl(trajs, run_dir / "trajectories.jsonl")
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "reward": 0.5}\n')
    return trajs


def test_view_shows_turns_rewards_and_token_masks_in_chromium(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    trajs = make_run(run_dir)
    result = subprocess.run([sys.executable, "-m", "agentgym", "view", str(run_dir)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    page = (run_dir / "view.html").read_text()
    assert page.count('<div class="traj"') == 3, "metrics.jsonl is not mistaken for trajectories"
    expression = trajs[0].extra_info["expression"]
    assert f"calculator({{&quot;expression&quot;: &quot;{expression}&quot;}})" in page
    assert "Correct!" in page and "reward 1.000" in page
    assert page.count('class="trained"') >= 6 and page.count('class="masked"') >= 3

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is missing: `bash scripts/install.sh --test` installs it (Debian package chromium)"
    shot = tmp_path / "view.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1200,1600", f"--screenshot={shot}",
         (run_dir / "view.html").as_uri()],
        capture_output=True, timeout=120, check=True,
    )
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 1600)
    colors = image.getcolors(maxcolors=1 << 20)
    assert len(colors) > 50, "the page rendered as (almost) one colour"
    assert any(color == TRAINED_GREEN for _, color in colors), "trained tokens are not highlighted"


def test_view_says_what_is_missing(tmp_path):
    result = subprocess.run([sys.executable, "-m", "agentgym", "view", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"no trajectory JSONL files under {tmp_path}" in result.stderr


def test_view_shows_what_the_model_wrote_in_a_turn_with_an_unparseable_call():
    from agentgym.episode.episode import assistant_message
    from agentgym.parsers import get_parser
    from agentgym.trajectory import Trajectory
    from agentgym.report.viewer import render_html

    text = 'Let me see.\n<tool_call>{"name": "calculator", "arguments": {"expression": }</tool_call>'
    message = assistant_message(get_parser("hermes").parse(text), text)
    traj = Trajectory(uid="u", group_id="g", prompt_ids=[], messages=[message])
    page = render_html([("t.jsonl", [traj])])
    assert "{&quot;expression&quot;: }" in page
