"""The disk weight path needs a folder the servers can read: a server on another machine with the folder on this
machine's local filesystem is an error that says so, before anything is written."""

from __future__ import annotations

import pytest

from agentgym.rollout.engines.base import EngineError
from agentgym.rollout.engines.servers.shared_dir import (
    check_weight_dir_shared,
    filesystem_type,
    is_this_machine,
)

ELSEWHERE = "http://192.0.2.55:30000"  # TEST-NET-1: never this machine


def test_loopback_and_this_hosts_name_are_this_machine():
    import socket

    assert is_this_machine("http://127.0.0.1:30000") and is_this_machine("http://localhost:1")
    assert is_this_machine(f"http://{socket.gethostname()}:8000")
    assert not is_this_machine(ELSEWHERE)
    assert not is_this_machine("http://no-such-host.invalid:30000")


def test_servers_on_this_machine_read_any_folder(tmp_path):
    check_weight_dir_shared(str(tmp_path), ["http://127.0.0.1:30000"], declared_shared=None, server_kind="sglang")


def test_a_server_elsewhere_and_a_local_folder_is_named(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\ntmpfs {tmp_path} tmpfs rw 0 0\n")
    assert filesystem_type(tmp_path / "weights", str(mounts)) == "tmpfs"
    with pytest.raises(EngineError) as caught:
        check_weight_dir_shared(str(tmp_path / "weights"), ["http://127.0.0.1:1", ELSEWHERE], declared_shared=None,
                                server_kind="sglang", mounts=str(mounts))
    text = str(caught.value)
    assert "tmpfs" in text and f"['{ELSEWHERE}'] run on other machines" in text, "only the remote server is named"
    assert "engine_kwargs.sglang.weight_sync_dir_shared=true" in text and "placement=separate" in text
    assert "weight_sync=distributed" in text
    # declared shared: trusted
    check_weight_dir_shared(str(tmp_path / "weights"), [ELSEWHERE], declared_shared=True, server_kind="sglang",
                            mounts=str(mounts))


def test_a_network_filesystem_counts_as_shared(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\nnas:/export {tmp_path / 'nfs'} nfs4 rw 0 0\n")
    folder = tmp_path / "nfs" / "weights"
    assert filesystem_type(folder, str(mounts)) == "nfs4"
    check_weight_dir_shared(str(folder), [ELSEWHERE], declared_shared=None, server_kind="vllm", mounts=str(mounts))
    with pytest.raises(EngineError, match="vllm server"):
        check_weight_dir_shared(str(folder), [ELSEWHERE], declared_shared=False, server_kind="vllm",
                                mounts=str(mounts))


def test_this_machines_mounts_are_read():
    assert filesystem_type("/") is not None
