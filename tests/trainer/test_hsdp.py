"""HSDP (`fsdp_config.fsdp_size`): 4 gloo ranks as 2 replicas of 2-rank shard groups make the same GRPO step as
FSDP over all 4, and the colocated weight sync and checkpoints work on the 2-D mesh."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.slow


def test_hsdp_step_equals_fsdp_over_all_ranks(tiny_model_path, tmp_path):
    out = tmp_path / "out.json"
    run = subprocess.run([sys.executable, str(HERE / "hsdp_run.py"), tiny_model_path, str(out)],
                         capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PYTHONPATH": str(HERE.parents[1])})
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["fsdp_mesh"] == [4] and result["hsdp_mesh"] == [2, 2]
    # fp32 on gloo: the reductions run in another order (within shard groups, then across replicas), so allclose.
    assert result["weights_max_abs_diff"] < 2e-6, result
    for name, (fsdp, hsdp) in result["metrics"].items():
        assert hsdp == pytest.approx(fsdp, rel=1e-4, abs=1e-6), name
    assert result["offloaded"] == [True] * 4
    assert result["replicas_exact"] == [True] * 4
    assert result["second_step_moved"] > 1e-4
    assert result["loaded_max_abs_diff"] == 0.0
    assert result["after_load_pg_loss"] == result["after_load_pg_loss"]  # finite, not NaN
