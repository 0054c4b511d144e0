"""Servers started by the engine itself when the config names sglang/vllm but gives no URLs.

Neither package installs here (both pin their own torch), so "the server process" is the vLLM protocol test
server started through `launch.command`: a real child process that the engine starts, waits for, uses and stops.
"""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentgym.config import load_config
from agentgym.errors import ConfigError
from agentgym.rollout.engines.registry import make_engine
from agentgym.rollout.engines import EngineError, SamplingParams, DynamicCacheEngine
from agentgym.rollout.engines.servers.launch import LaunchConfig, ServerLauncher, ServerSpec, package_available, server_command
from agentgym.rollout.engines.servers.sglang_engine import SGLangEngine
from agentgym.rollout.engines.servers.vllm_engine import VLLMEngine
from agentgym.rollout.engines.weights import read_weights


def fake_server(kind: str) -> list[str]:
    """The protocol test server of `kind` as the launched process, with the options the real one takes."""
    return [sys.executable, "-m", f"tests.engines.{kind}_test_server", "--model-path", "{model_path}", "--host",
            "{host}", "--port", "{port}"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("name", ["sglang", "vllm"])
def test_without_the_package_and_without_urls_the_error_says_what_to_do(name, tiny_model_dir):
    if package_available(name):
        pytest.skip(f"{name} is installed here")
    cfg = load_config(None, [f"actor_rollout_ref.rollout.name={name}", f"actor_rollout_ref.model.path={tiny_model_dir}"])
    with pytest.raises(ConfigError) as info:
        make_engine(cfg)
    text = str(info.value)
    assert f"pip install {'sglang[all]' if name == 'sglang' else 'vllm'}" in text
    assert f"actor_rollout_ref.rollout.engine_kwargs.{name}.urls" in text
    assert "actor_rollout_ref.rollout.name=transformers" in text, "names the engine that needs no install"


def test_commands_carry_the_rollout_resources_as_verl_passes_them(tiny_model_dir):
    cfg_overrides = ["actor_rollout_ref.rollout.tensor_model_parallel_size=2", "actor_rollout_ref.rollout.max_model_len=4096",
                     "actor_rollout_ref.rollout.gpu_memory_utilization=0.6", "actor_rollout_ref.rollout.dtype=fp16"]
    spec = ServerSpec("sglang", str(tiny_model_dir), tensor_parallel_size=2, gpu_memory_utilization=0.6, dtype="float16",
                      max_model_len=4096)
    argv = server_command(spec, "127.0.0.1", 30000)
    assert argv[:3] == [sys.executable, "-m", "sglang.launch_server"]
    pairs = dict(zip(argv[3::2], argv[4::2]))
    assert pairs == {"--model-path": str(tiny_model_dir), "--host": "127.0.0.1", "--port": "30000", "--tp-size": "2",
                     "--mem-fraction-static": "0.6", "--dtype": "float16", "--context-length": "4096"}
    vllm = server_command(ServerSpec("vllm", "/m", tensor_parallel_size=2, gpu_memory_utilization=0.6, dtype="float16"),
                          "0.0.0.0", 8000)
    tail = vllm[vllm.index("serve"):]
    assert tail[:2] == ["serve", "/m"] and "--enable-prompt-tokens-details" in tail and "--max-model-len" not in tail
    tail.remove("--enable-prompt-tokens-details")
    assert dict(zip(tail[2::2], tail[3::2])) == {
        "--host": "0.0.0.0", "--port": "8000", "--tensor-parallel-size": "2", "--gpu-memory-utilization": "0.6",
        "--dtype": "float16", "--logprobs-mode": "processed_logprobs"}

    # The same values come from the run config.
    cfg = load_config(None, ["actor_rollout_ref.rollout.name=vllm", f"actor_rollout_ref.model.path={tiny_model_dir}",
                             *cfg_overrides, "+actor_rollout_ref.rollout.engine_kwargs.vllm.launch.command=[x]"])
    engine = make_engine(cfg)
    assert engine.launcher.spec == ServerSpec("vllm", str(tiny_model_dir), 2, 0.6, "float16", 4096)
    assert engine.launcher.commands([8000])[0] == ["x"], "launch.command replaces the whole command line"


def test_several_servers_split_the_visible_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    launcher = ServerLauncher(ServerSpec("vllm", "/m", tensor_parallel_size=2), LaunchConfig(num_servers=2, command=["x"]))
    assert [launcher._env(i)["CUDA_VISIBLE_DEVICES"] for i in range(2)] == ["4,5", "6,7"]
    assert launcher._env(0)["VLLM_SERVER_DEV_MODE"] == "1"
    short = ServerLauncher(ServerSpec("sglang", "/m", tensor_parallel_size=4), LaunchConfig(num_servers=2, command=["x"]))
    with pytest.raises(EngineError, match="needs 4 GPU"):
        short._env(1)


@pytest.mark.parametrize(("kind", "engine_cls"), [("vllm", VLLMEngine), ("sglang", SGLangEngine)])
async def test_the_engine_starts_its_servers_uses_them_and_stops_them(
    kind, engine_cls, tiny_model_dir, other_tiny_model_dir, chat_prompts, tmp_path
):
    cfg = load_config(None, [
        f"actor_rollout_ref.rollout.name={kind}", f"actor_rollout_ref.model.path={tiny_model_dir}",
        f"+actor_rollout_ref.rollout.engine_kwargs.{kind}.launch="
        + json.dumps({"command": fake_server(kind), "num_servers": 2, "start_timeout_s": 120, "log_dir": str(tmp_path)}),
        f"+actor_rollout_ref.rollout.engine_kwargs.{kind}.health_interval_s=0.1",
    ])
    async with DynamicCacheEngine(other_tiny_model_dir) as direct:
        expected = await direct.generate(chat_prompts[0], SamplingParams(max_new_tokens=4, temperature=0.0))
    engine = make_engine(cfg)
    assert isinstance(engine, engine_cls) and engine.config.weight_sync_dir
    async with engine:
        procs = list(engine.launcher.processes)
        assert len(procs) == 2 and all(_alive(p.pid) for p in procs)
        outs = await asyncio.gather(*(
            engine.generate(chat_prompts[0], SamplingParams(max_new_tokens=4, temperature=0.0), session_id=f"s{i}")
            for i in range(4)))
        assert all(o.token_ids == outs[0].token_ids for o in outs)
        assert set(engine.stats.requests_by_server) == set(engine.urls), "both launched servers served"
        await engine.update_weights(read_weights(other_tiny_model_dir))  # through the launcher's scratch folder
        after = await engine.generate(chat_prompts[0], SamplingParams(max_new_tokens=4, temperature=0.0))
        assert after.token_ids == expected.token_ids
        weights_dir = Path(engine.config.weight_sync_dir)
        assert (weights_dir / "weights-v000001" / "model.safetensors").exists()
    assert all(p.returncode is not None for p in procs) and not any(_alive(p.pid) for p in procs)
    assert not weights_dir.exists(), "the launcher's scratch folder goes with its servers"
    assert sorted(f.name.split("-port")[0] for f in tmp_path.glob("server-*.log")) == ["server-0", "server-1"]


async def test_a_server_that_dies_at_start_is_reported_with_its_log(tiny_model_dir, tmp_path):
    crash = [sys.executable, "-c", "import sys; print('CUDA out of memory while loading {model_path}'); sys.exit(3)"]
    launcher = ServerLauncher(ServerSpec("sglang", str(tiny_model_dir)),
                              LaunchConfig(command=crash, start_timeout_s=30, log_dir=str(tmp_path)))
    with pytest.raises(EngineError, match=r"(?s)exited with code 3 before it was healthy.*CUDA out of memory"):
        await launcher.start()
    assert launcher.processes == []


async def test_a_server_that_never_gets_healthy_is_stopped_after_the_timeout(tiny_model_dir, tmp_path):
    pid_file = tmp_path / "pid"
    sleeper = [sys.executable, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"]
    launcher = ServerLauncher(ServerSpec("vllm", str(tiny_model_dir)),
                              LaunchConfig(command=sleeper, start_timeout_s=1.0, stop_timeout_s=5, log_dir=str(tmp_path)))
    with pytest.raises(EngineError, match="not healthy within 1.0s"):
        await launcher.start()
    assert launcher.processes == [] and not _alive(int(pid_file.read_text()))


def test_urls_and_launch_together_are_refused(tiny_model_dir):
    with pytest.raises(ConfigError, match="both urls and launch"):
        make_engine(load_config(None, [
            "actor_rollout_ref.rollout.name=sglang", f"actor_rollout_ref.model.path={tiny_model_dir}",
            "+actor_rollout_ref.rollout.engine_kwargs.sglang.urls=[http://127.0.0.1:1]",
            "+actor_rollout_ref.rollout.engine_kwargs.sglang.launch={num_servers: 2}"]))
    with pytest.raises(ConfigError, match=r"unknown launch option\(s\) \['servers'\]"):
        make_engine(load_config(None, [
            "actor_rollout_ref.rollout.name=sglang", "+actor_rollout_ref.rollout.engine_kwargs.sglang.launch={servers: 2}"]))


HEALTHY_STUB = (
    "import http.server, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(200); self.end_headers()\n"
    "    def log_message(self, *a):\n"
    "        pass\n"
    "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
)


def test_servers_are_stopped_when_the_process_exits_without_stop(tmp_path):
    """A run that crashes (or forgets to close its engine) leaves no server behind."""
    script = tmp_path / "run.py"
    script.write_text(
        "import asyncio, sys\n"
        "from agentgym.rollout.engines.servers.launch import LaunchConfig, ServerLauncher, ServerSpec\n"
        f"stub = {HEALTHY_STUB!r}\n"
        "launcher = ServerLauncher(ServerSpec('vllm', '/m'), LaunchConfig(num_servers=2,\n"
        f"    command=[sys.executable, '-c', stub, '{{port}}'], stop_timeout_s=5, log_dir={str(tmp_path)!r}))\n"
        "asyncio.run(launcher.start())\n"
        "print(' '.join(str(p.pid) for p in launcher.processes), flush=True)\n"
        "raise SystemExit(7)\n"
    )
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert run.returncode == 7, run.stderr
    pids = [int(p) for p in run.stdout.split()]
    assert len(pids) == 2 and not any(_alive(p) for p in pids)


def test_a_server_launched_to_die_with_its_parent_goes_when_the_parent_is_killed(tmp_path):
    """A rollout-pool actor that Ray kills (SIGKILL: no finalizer runs) takes its server with it."""
    import signal
    import time

    script = tmp_path / "run.py"
    script.write_text(
        "import asyncio, sys, time\n"
        "from agentgym.rollout.engines.servers.launch import LaunchConfig, ServerLauncher, ServerSpec\n"
        f"stub = {HEALTHY_STUB!r}\n"
        "launcher = ServerLauncher(ServerSpec('vllm', '/m'), LaunchConfig(\n"
        f"    command=[sys.executable, '-c', stub, '{{port}}'], stop_timeout_s=5, log_dir={str(tmp_path)!r}),\n"
        "    die_with_parent=True)\n"
        "asyncio.run(launcher.start())\n"
        "print(launcher.processes[0].pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        pid = int(parent.stdout.readline())
        assert _alive(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), "the server outlived its killed parent"
    finally:
        parent.kill()


async def test_the_trainers_rollout_stops_the_servers_it_started(tiny_model_dir, tmp_path):
    from agentgym.rollout.build import make_rollout

    stub = [sys.executable, "-c", HEALTHY_STUB, "{port}"]
    cfg = load_config(None, ["actor_rollout_ref.rollout.name=sglang", f"actor_rollout_ref.model.path={tiny_model_dir}",
                             "+actor_rollout_ref.rollout.engine_kwargs.sglang.launch="
                             + json.dumps({"command": stub, "log_dir": str(tmp_path)})])
    rollout = make_rollout(cfg)
    await rollout.ensure_started()
    procs = list(rollout.engine.launcher.processes)
    assert len(procs) == 1 and _alive(procs[0].pid)
    await rollout.close()
    assert procs[0].returncode is not None and not _alive(procs[0].pid)


def test_a_launcher_that_never_started_leaves_no_scratch_folder():
    import gc

    launcher = ServerLauncher(ServerSpec("vllm", "/m"), LaunchConfig(command=["x"]))
    folder = Path(launcher.scratch_dir("weights")).parent
    assert folder.is_dir()
    del launcher
    gc.collect()
    assert not folder.exists()
