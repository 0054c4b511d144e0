"""`agentgym view` shows each turn's images (prompt and tool-returned), checked in headless Chromium."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys

from PIL import Image

from agentgym.multimodal.images import data_url
from agentgym.trajectory import ImageSpan, Trajectory, TurnSpan
from agentgym.rollout.trajectory_io import write_jsonl

MAGENTA, CYAN = (255, 0, 255), (0, 255, 255)


def _png(color) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(out, format="PNG")
    return out.getvalue()


def test_view_shows_prompt_and_tool_images_in_chromium(tmp_path):
    traj = Trajectory(
        uid="u", group_id="g", prompt_ids=[1] * 10, response_ids=[2] * 12, loss_mask=[1] * 4 + [0] * 8,
        rollout_logprobs=[0.0] * 12, turns=[TurnSpan("assistant", 0, 4), TurnSpan("tool", 4, 12)],
        images=[data_url(_png(MAGENTA)), data_url(_png(CYAN))],
        image_spans=[ImageSpan(0, 2, 6, None), ImageSpan(1, 15, 20, 1)],
        messages=[{"role": "user", "content": [{"type": "image", "image_index": 0}, {"type": "text", "text": "count"}]},
                  {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
                      "name": "image_zoom_in", "arguments": "{\"bbox_2d\": [0, 0, 10, 10]}"}}]},
                  {"role": "tool", "content": [{"type": "image", "image_index": 1}, {"type": "text", "text": "Zoomed in"}]}])
    run = tmp_path / "run"
    run.mkdir()
    write_jsonl([traj], run / "trajectories.jsonl")
    done = subprocess.run([sys.executable, "-m", "agentgym", "view", str(run)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    page = (run / "view.html").read_text()
    assert page.count('class="turn-image"') == 2 and "Zoomed in" in page and "count" in page
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is missing: `bash scripts/install.sh --test` installs it (Debian package chromium)"
    shot = tmp_path / "view.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1000,1400", f"--screenshot={shot}",
                    (run / "view.html").as_uri()], capture_output=True, timeout=120, check=True)
    colors = {color: n for n, color in Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)}
    assert colors.get(MAGENTA, 0) > 1000 and colors.get(CYAN, 0) > 1000  # both images drawn at 224 px wide
