"""Shutdown (issue 31, item 6): a run closes what it opened and stops what it started, on a normal end and on
Ctrl-C / SIGTERM.

- a rollout with a real tool (the embedded sandbox over aiohttp) leaves no HTTP session or connector for aiohttp
  to warn about once the rollout is closed and everything is garbage-collected;
- the trainer closes the judge's engine;
- `python -m agentgym.trainer.main_ppo` with real local Ray, a launched SGLang-protocol server and the embedded
  sandbox, signalled mid-run: it exits promptly with a message saying what it stopped, and no process of its tree
  (captured before the signal), no process of its Ray session and no port its tree listened on is left.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import aiohttp
import psutil
import pytest
import yaml

from agentgym.config import load_config
from agentgym.rollout.build import AgentLoopRollout, rollout_parts
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.trainer.driver import RLTrainer
from agentgym.trajectory import Trajectory

REPO = Path(__file__).resolve().parents[2]
CODE_TOOLS = REPO / "agentgym_envs" / "code_arith" / "tools.yaml"
CALL = '<tool_call>\n{"name": "code_interpreter", "arguments": {"code": "print(2 + 3)"}}\n</tool_call>'


def _code_calling_script():
    """First turn of each episode: a code call; then an answer."""
    turns: dict[str | None, int] = {}

    def script(_conversation: str, session_id: str | None) -> str:
        turns[session_id] = turns.get(session_id, 0) + 1
        return CALL if turns[session_id] == 1 else "The answer is 5."

    return script


def test_a_rollout_with_a_sandbox_tool_leaves_no_http_session_open(tiny_model_dir, caplog):
    cfg = load_config(None, [f"actor_rollout_ref.model.path={tiny_model_dir}",
                             f"actor_rollout_ref.rollout.multi_turn.tool_config_path={CODE_TOOLS}",
                             "actor_rollout_ref.rollout.n=2", "trainer.device=cpu", "trainer.use_ray=false"])
    parts = rollout_parts(cfg)
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + 3?"}]} for i in range(2)]

    async def run() -> list[Trajectory]:
        rollout = AgentLoopRollout(cfg, ScriptedEngine(parts.tokenizer, _code_calling_script()), parts.tokenizer,
                                   parts.tools, parts.interactions)
        await rollout.start()
        try:
            return await rollout.collect(rows, step=1)
        finally:
            await rollout.close()

    caplog.set_level(logging.ERROR)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trajectories = asyncio.run(run())  # the loop ends and is dropped: a session still open would warn now
        gc.collect()
    calls = [m for t in trajectories for m in t.tool_metrics]
    assert len(calls) == 4 and all(m["error"] is None for m in calls), calls  # the sandbox really ran the code
    # A session still open would only warn when collected, which a cached pool delays to interpreter exit: look
    # for open ones directly.
    open_sessions = [o for o in gc.get_objects() if isinstance(o, (aiohttp.ClientSession, aiohttp.BaseConnector))
                     and not o.closed]
    assert not open_sessions, open_sessions
    unclosed = [str(w.message) for w in caught if "nclosed" in str(w.message)]
    unclosed += [r.getMessage() for r in caplog.records if "nclosed" in r.getMessage()]
    assert not unclosed, unclosed


def test_the_trainer_closes_the_judges_engine(tiny_model_dir):
    cfg = load_config(None, [f"actor_rollout_ref.model.path={tiny_model_dir}", "reward_model.judge.enable=true",
                             f"reward_model.judge.model_path={tiny_model_dir}", "reward_model.judge.max_new_tokens=4",
                             "trainer.device=cpu", "trainer.use_ray=false"])
    trainer = RLTrainer(cfg, collect=lambda rows, step: [])
    traj = Trajectory(uid="a-0", group_id="a", prompt_ids=[1, 2], response_ids=[3], loss_mask=[1], rollout_logprobs=[0.0],
                      messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "5"}])

    def engine_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("agentgym-DynamicCacheEngine")]

    async def run() -> tuple[list[str], list[str]]:
        await trainer.rewards.score([traj])  # starts the judge's in-process engine (its own thread)
        running = engine_threads()
        await trainer.aclose()
        return running, engine_threads()

    running, after = asyncio.run(run())
    assert running, "the judge's engine ran in its own thread"
    assert after == [], f"the judge's engine is still running after the trainer closed: {after}"


ROLLOUT_FACTORY = '''
"""The default rollout over the launched SGLang-protocol server; each episode's first turn is a scripted code call,
so the embedded sandbox runs too; with SLOW_STEP set, generations of that step wait (a step in progress)."""
import asyncio, os
from agentgym.rollout.build import AgentLoopRollout, rollout_parts
from agentgym.rollout.engines.base import GenerateOutput
from agentgym.rollout.engines.registry import make_engine

CALL = %r


class CodeFirst:
    takes_images = False

    def __init__(self, inner, tokenizer):
        self.inner, self.tokenizer, self.seen = inner, tokenizer, set()
        self.stats = inner.stats

    async def generate(self, prompt_ids, sampling, *, session_id=None, **kwargs):
        if session_id not in self.seen:
            self.seen.add(session_id)
            ids = self.tokenizer.encode(CALL, add_special_tokens=False) + [self.tokenizer.eos_token_id]
            return GenerateOutput(ids, [-0.5] * len(ids), "stop")
        if session_id.startswith("step2-"):
            open(os.environ["STEP2_MARKER"], "w").close()  # the test signals now: step 2 is in progress
        return await self.inner.generate(prompt_ids, sampling, session_id=session_id, **kwargs)

    async def update_weights(self, state_dict=None, *, path=None):
        await self.inner.update_weights(state_dict, path=path)

    async def health(self):
        return await self.inner.health()

    async def start(self):
        await self.inner.start()

    async def close(self):
        await self.inner.close()


def make_rollout(cfg):
    parts = rollout_parts(cfg)
    return AgentLoopRollout(cfg, CodeFirst(make_engine(cfg), parts.tokenizer), parts.tokenizer, parts.tools,
                            parts.interactions)
''' % CALL


def _run_files(tmp_path: Path) -> tuple[Path, Path, Path, str]:
    """A main_ppo run's rows, its YAML config, its run directory and the `launch` setting of its SGLang-protocol
    test server."""
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"What is {i} + 3?"}]}) + "\n"
                            for i in range(8)))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"device": "cpu", "use_ray": True, "logger": ["jsonl"]}}))
    server = [sys.executable, "-m", "tests.engines.sglang_test_server", "--model-path", "{model_path}", "--host",
              "{host}", "--port", "{port}"]
    launch = "+actor_rollout_ref.rollout.engine_kwargs.sglang.launch=" + json.dumps(
        {"command": server, "start_timeout_s": 180, "log_dir": str(tmp_path / "server-logs")})
    return data, config, tmp_path / "run", launch


def _start_run(tmp_path: Path, tiny_model_dir: Path) -> tuple[subprocess.Popen, Path, Path]:
    (tmp_path / "code_first_rollout.py").write_text(ROLLOUT_FACTORY)
    data, config, run_dir, launch = _run_files(tmp_path)
    cmd = [sys.executable, "-m", "agentgym.trainer.main_ppo", str(config), "--rollout", "code_first_rollout:make_rollout",
           f"data.train_files={data}", "data.train_batch_size=2", "data.max_response_length=96",
           f"actor_rollout_ref.model.path={tiny_model_dir}", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
           "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.rollout.name=sglang", launch,
           f"actor_rollout_ref.rollout.multi_turn.tool_config_path={CODE_TOOLS}",
           "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=3", "trainer.total_training_steps=50",
           "trainer.n_gpus_per_node=1", "ray_kwargs.ray_init.num_cpus=2", "trainer.save_freq=1",
           f"trainer.default_local_dir={run_dir}"]
    marker = tmp_path / "step2-started"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO}", "OMP_NUM_THREADS": "1", "RAY_ADDRESS": "local",
           "STEP2_MARKER": str(marker), "PYTHONWARNINGS": "always::ResourceWarning"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, marker, run_dir


def _drain(proc: subprocess.Popen, lines: list[str]) -> threading.Thread:
    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def _listening(procs: list[psutil.Process]) -> set[tuple[str, int]]:
    ports = set()
    for proc in procs:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    host = "127.0.0.1" if conn.laddr.ip in ("0.0.0.0", "::") else conn.laddr.ip
                    ports.add((host, conn.laddr.port))
        except psutil.Error:
            pass
    return ports


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _ray_session(procs: list[psutil.Process]) -> str | None:
    for proc in procs:
        try:
            match = re.search(r"session_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_\d+", " ".join(proc.cmdline()))
        except psutil.Error:
            continue
        if match:
            return match.group(0)
    return None


def _session_processes(session: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        if session in " ".join(proc.info["cmdline"] or []) and proc.status() != psutil.STATUS_ZOMBIE:
            found.append(f"{proc.info['name']} ({proc.info['pid']})")
    return found


def _signal(proc: subprocess.Popen, signals: list[signal.Signals]) -> tuple[int, float]:
    """Send the signals 0.3 s apart; the exit code and the seconds from the first signal to the exit."""
    sent = time.monotonic()
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.3)
    return proc.wait(timeout=90), time.monotonic() - sent


def _still_running(tree: list[psutil.Process]) -> list[str]:
    running = []
    for p in tree:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                running.append(f"{p.name()} ({p.pid})")
        except psutil.NoSuchProcess:
            pass
    return running


def _live_tree(root: int) -> tuple[list[psutil.Process], str]:
    """The run's process tree and its command lines; short-lived helpers may exit while it is read, so skip those."""
    tree, names = [], []
    for p in psutil.Process(root).children(recursive=True):
        try:
            names.append(p.name() + " " + " ".join(p.cmdline()))
        except psutil.NoSuchProcess:
            continue
        tree.append(p)
    return tree, " ".join(names)


def _signal_mid_step(tmp_path: Path, tiny_model_dir: Path, signals: list[signal.Signals]):
    proc, marker, run_dir = _start_run(tmp_path, tiny_model_dir)
    lines: list[str] = []
    pump = _drain(proc, lines)
    try:
        deadline = time.monotonic() + 420
        while not marker.exists():
            assert proc.poll() is None, "".join(lines)[-4000:]
            assert time.monotonic() < deadline, "step 2 never started:\n" + "".join(lines)[-4000:]
            time.sleep(0.2)
        tree, names = _live_tree(proc.pid)
        assert "raylet" in names and "sglang_test_server" in names and "sandbox_server" in names, names
        ports = _listening([psutil.Process(proc.pid), *tree])
        session = _ray_session(tree)
        assert ports and session, (ports, session)
        code, took = _signal(proc, signals)
    finally:
        if proc.poll() is None:
            proc.kill()
    pump.join(10)
    out = "".join(lines)
    alive = _still_running(tree)
    return code, took, out, alive, [p for p in ports if _answers(*p)], _session_processes(session), run_dir


@pytest.mark.timeout(900)
def test_ctrl_c_mid_step_stops_ray_the_launched_server_and_the_sandbox(tmp_path, tiny_model_dir):
    code, took, out, alive, answering, ray_left, run_dir = _signal_mid_step(tmp_path, tiny_model_dir, [signal.SIGINT])
    assert code == 130, out[-4000:]
    assert took < 60, f"took {took:.0f} s to stop"
    assert "SIGINT received: stopping the training run" in out
    assert "step 2 of 50 interrupted; the last checkpoint is step 1" in out, out[-3000:]
    assert "stopped by SIGINT: the training run ended; nothing it started is left running" in out, out[-3000:]
    assert "Traceback" not in out and "nclosed" not in out, out[-4000:]
    assert alive == [] and ray_left == [] and answering == [], (alive, ray_left, answering)
    assert (run_dir / "global_step_1").is_dir()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGINT, signal.SIGINT]], ids=["sigterm", "ctrl-c-twice"])
def test_sigterm_and_a_second_ctrl_c_leave_nothing_running(tmp_path, tiny_model_dir, signals):
    code, took, out, alive, answering, ray_left, _ = _signal_mid_step(tmp_path, tiny_model_dir, signals)
    assert code == 128 + signals[0], out[-4000:]
    assert took < 60, f"took {took:.0f} s to stop"
    if len(signals) == 2:
        assert "second signal (SIGINT): killing the" in out, out[-3000:]
    else:
        assert "stopped by SIGTERM: the training run ended; nothing it started is left running" in out, out[-3000:]
    assert alive == [] and ray_left == [] and answering == [], (alive, ray_left, answering)


@pytest.mark.timeout(900)
def test_ctrl_c_during_the_quickstarts_training_stops_it_and_its_sandbox(tmp_path):
    """The quickstart (the README's first command) is stopped like a training run: its embedded sandbox goes too."""
    cmd = [sys.executable, "-m", "agentgym", "quickstart", "--run-dir", str(tmp_path / "run"), "--environment",
           "code_arith", "--model-size", "mini", "--sft-epochs", "1", "--rl-steps", "10", "--eval-rows", "4"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": "local"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    pump = _drain(proc, lines)
    try:
        deadline = time.monotonic() + 600
        while not any(line.startswith("training steps: 1/10") for line in lines):
            assert proc.poll() is None, "".join(lines)[-4000:]
            assert time.monotonic() < deadline, "no training step done:\n" + "".join(lines)[-4000:]
            time.sleep(0.2)
        tree, names = _live_tree(proc.pid)
        assert "sandbox_server" in names, names
        code, took = _signal(proc, [signal.SIGINT])
    finally:
        if proc.poll() is None:
            proc.kill()
    pump.join(10)
    out = "".join(lines)
    alive = _still_running(tree)
    assert code == 130, out[-4000:]
    assert took < 60, f"took {took:.0f} s to stop"
    assert "stopped by SIGINT: the quickstart ended; nothing it started is left running" in out, out[-3000:]
    assert "Traceback" not in out, out[-4000:]
    assert alive == [], alive


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ctrl_c_stops_a_separate_pool_and_the_servers_its_actors_launched(tmp_path, tiny_model_dir):
    """`placement=separate` with SGLang-protocol servers: the servers are the pool actors' children (not the
    driver's); Ctrl-C mid-run leaves none of them, no actor and no Ray process running."""
    data, config, run_dir, launch = _run_files(tmp_path)
    cmd = [sys.executable, "-m", "agentgym.trainer.main_ppo", str(config), f"data.train_files={data}",
           "data.train_batch_size=2", "data.max_response_length=16", f"actor_rollout_ref.model.path={tiny_model_dir}",
           "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.rollout.n=2",
           "actor_rollout_ref.rollout.name=sglang", "actor_rollout_ref.rollout.placement=separate", launch,
           "trainer.total_training_steps=50", "trainer.n_gpus_per_node=1", "ray_kwargs.ray_init.num_cpus=3",
           "trainer.save_freq=1", f"trainer.default_local_dir={run_dir}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "RAY_ADDRESS": "local"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    pump = _drain(proc, lines)
    try:
        deadline = time.monotonic() + 420
        while not (run_dir / "global_step_1").exists():
            assert proc.poll() is None, "".join(lines)[-4000:]
            assert time.monotonic() < deadline, "step 1 never finished:\n" + "".join(lines)[-4000:]
            time.sleep(0.2)
        tree, names = _live_tree(proc.pid)
        servers = [p for p in tree if "sglang_test_server" in " ".join(p.cmdline())]
        assert servers, names
        for server_proc in servers:
            parent = server_proc.parent()
            assert parent is not None and parent.pid != proc.pid and "RolloutReplica" in " ".join(parent.cmdline()) \
                + parent.name(), "the server's parent is its rollout-pool actor"
        session = _ray_session(tree)
        code, took = _signal(proc, [signal.SIGINT])
    finally:
        if proc.poll() is None:
            proc.kill()
    pump.join(10)
    out = "".join(lines)
    assert code == 130, out[-4000:]
    assert _still_running(tree) == [], out[-3000:]
    assert session is None or _session_processes(session) == []
