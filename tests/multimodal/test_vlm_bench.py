"""The GPU VLM benchmark runs end to end in its --tiny CPU mode (so it does not rot between GPU sessions)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_vlm_bench_tiny_runs_and_reports_memory(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "benchmarks/gpu/vlm_bench.py", "--tiny", "--device", "cpu", "--memory-steps", "4",
                    "--out", str(tmp_path)], cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    report = json.loads((tmp_path / "vlm_bench.json").read_text())
    assert [r["model"] for r in report["rollout"]] == ["vlm", "text-only"]
    assert [r["model"] for r in report["update"]] == ["vlm", "text-only"]
    assert all(r["tokens_per_s"] > 0 for r in report["rollout"] + report["update"])
    assert report["rollout"][0]["memory"]["steps"] == 4


def test_vlm_bench_tiny_rollout_through_the_paged_engine(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "benchmarks/gpu/vlm_bench.py", "--tiny", "--device", "cpu", "--engine", "paged",
                    "--memory-steps", "3", "--skip", "update", "--out", str(tmp_path)],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    report = json.loads((tmp_path / "vlm_bench.json").read_text())
    vlm, text = report["rollout"]
    assert vlm["engine"] == text["engine"] == "paged"
    assert vlm["engine_stats"]["images_encoded"] == 3 * report["args"]["batch"]  # random images: none shared
    assert text["engine_stats"]["images_encoded"] == 0
