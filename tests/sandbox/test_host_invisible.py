"""Nothing the sandbox can read names a host path (the server's work root, run dirs)."""

from __future__ import annotations

import json

import pytest

PROBE = r'''
import glob, json, os
texts = {}
for f in glob.glob('/proc/*/cmdline') + glob.glob('/proc/*/environ') + glob.glob('/proc/*/mountinfo') + ['/proc/self/status']:
    try:
        texts[f] = open(f, 'rb').read().decode(errors='replace')
    except OSError:
        pass
texts['env'] = json.dumps(dict(os.environ))
print(json.dumps({'texts': texts, 'fds': sorted(os.listdir('/proc/self/fd'))}))
'''


# The fork server's path (its init is a fork of `python3 - FD`, the source read from stdin) and the cold one
# (tiny memory limits go cold; pid 1 is bwrap with its options in a memfd).
@pytest.mark.parametrize("memory_mb,init_cmdline", [(-1, "python3\0-\0"), (32, "/usr/bin/bwrap\0--args\0")])
def test_proc_cmdline_and_env_name_no_host_path(run, sandbox_server, fork_server_ready, memory_mb, init_cmdline):
    out = run(code=PROBE, memory_limit_MB=memory_mb) if memory_mb > 0 else run(code=PROBE)
    assert out["status"] == "Success", out
    seen = json.loads(out["run_result"]["stdout"])
    assert seen["texts"]["/proc/1/cmdline"].startswith(init_cmdline)
    assert " / /workspace " in seen["texts"]["/proc/1/mountinfo"]  # the work dir is its own tmpfs
    for name, text in seen["texts"].items():
        assert str(sandbox_server.work_root) not in text, name
        assert "server-" not in text, name
    assert len(seen["fds"]) == 4  # stdin, stdout, stderr and listdir's own: bwrap's args fd is closed


ETC_PROBE = r'''
import json, os, pwd, grp, socket, ssl
out = {"etc": sorted(os.listdir("/etc")),
       "user": pwd.getpwuid(os.getuid()).pw_name, "group": grp.getgrgid(os.getgid()).gr_name,
       "users": [p.pw_name for p in pwd.getpwall()], "hostname": socket.gethostname(),
       "localhost": socket.gethostbyname("localhost"), "certs": ssl.create_default_context().cert_store_stats()["x509_ca"]}
for name in ("passwd", "group", "hosts", "hostname"):
    out["/etc/" + name] = open("/etc/" + name).read()
print(json.dumps(out))
'''


def test_etc_is_a_minimal_set_of_its_own(run):
    out = run(code=ETC_PROBE)
    assert out["status"] == "Success", out
    seen = json.loads(out["run_result"]["stdout"])
    assert seen["user"] == "nobody" and seen["group"] == "nogroup" and seen["users"] == ["root", "nobody"]
    assert seen["/etc/passwd"].count("\n") == 2 and seen["/etc/group"].count("\n") == 2
    assert seen["hostname"] == "sandbox" and seen["/etc/hostname"] == "sandbox\n"
    assert seen["localhost"] == "127.0.0.1" and "sandbox" in seen["/etc/hosts"]
    assert seen["certs"] > 0  # TLS clients still find the CA bundle
    for host_only in ("shadow", "gshadow", "machine-id", "ssh", "docker", "resolv.conf", "fstab", "subuid",
                      "environment", "pip.conf", "npmrc", "gitconfig", "hostname-"):
        assert host_only not in seen["etc"], host_only
