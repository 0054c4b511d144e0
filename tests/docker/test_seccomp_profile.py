"""The container's seccomp profile (scripts/docker/seccomp-sandbox.json) and its generator: what bubblewrap needs is
allowed, the kernel-exploit and escape paths are refused, unknown syscalls answer ENOSYS. No Docker needed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "scripts" / "docker" / "seccomp-sandbox.json"

BWRAP_NEEDS = {"unshare", "clone", "clone3", "setns", "mount", "umount2", "pivot_root", "chroot", "sethostname",
               "prctl", "seccomp", "capset", "execve"}
MUST_REFUSE = {"bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key", "open_by_handle_at",
               "kexec_load", "init_module", "finit_module", "fsopen", "fsconfig", "swapon", "syslog"}


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_seccomp_profile",
                                                  REPO / "scripts" / "docker" / "make_seccomp_profile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rules(profile: dict) -> dict[str, tuple[str, int | None]]:
    out = {}
    for rule in profile["syscalls"]:
        for name in rule["names"]:
            assert name not in out, f"{name} appears in two rules"
            out[name] = (rule["action"], rule.get("errnoRet"))
    return out


def test_committed_profile_allows_bwrap_and_refuses_escapes() -> None:
    profile = json.loads(PROFILE.read_text())
    rules = _rules(profile)
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == 38
    assert set(profile["architectures"]) == {"SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"}  # no 32-bit compat ABIs
    assert {n for n in BWRAP_NEEDS if rules.get(n, ("",))[0] != "SCMP_ACT_ALLOW"} == set()
    assert {n for n in MUST_REFUSE if rules.get(n) != ("SCMP_ACT_ERRNO", 1)} == set()
    assert rules["io_uring_setup"] == ("SCMP_ACT_ERRNO", 38)  # ENOSYS: libuv and friends fall back to epoll
    assert len([n for n, (action, _) in rules.items() if action == "SCMP_ACT_ALLOW"]) > 300


def test_generator_subtracts_denied_from_header_tables(tmp_path: Path) -> None:
    gen = _load_generator()
    (tmp_path / "x86_64-linux-gnu" / "asm").mkdir(parents=True)
    (tmp_path / "asm-generic").mkdir()
    (tmp_path / "x86_64-linux-gnu/asm/unistd_64.h").write_text(
        "#define __NR_read 0\n#define __NR_bpf 321\n#define __NR_io_uring_setup 425\n")
    (tmp_path / "asm-generic/unistd.h").write_text(
        "#define __NR3264_lseek 62\n#define __NR_pivot_root 41\n#define __NR_syscalls 451\n")
    names = gen.syscall_names(tmp_path)
    assert names == {"read", "bpf", "io_uring_setup", "lseek", "pivot_root"}
    rules = _rules(gen.build_profile(names))
    assert rules["read"][0] == rules["lseek"][0] == rules["pivot_root"][0] == "SCMP_ACT_ALLOW"
    assert rules["bpf"] == ("SCMP_ACT_ERRNO", 1)
    assert rules["io_uring_setup"] == ("SCMP_ACT_ERRNO", 38)
    assert "syscalls" not in rules
