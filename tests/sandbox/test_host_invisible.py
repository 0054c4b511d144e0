"""Nothing the sandbox can read names a host path (the server's work root, run dirs)."""

from __future__ import annotations

import json

import pytest

PROBE = r'''
import glob, json, os
texts = {}
for f in glob.glob('/proc/*/cmdline') + glob.glob('/proc/*/environ') + ['/proc/self/status']:
    try:
        texts[f] = open(f, 'rb').read().decode(errors='replace')
    except OSError:
        pass
texts['env'] = json.dumps(dict(os.environ))
print(json.dumps({'texts': texts, 'fds': sorted(os.listdir('/proc/self/fd'))}))
'''


@pytest.mark.parametrize("memory_mb", [-1, 32])  # the warm pool's path and the cold one (tiny limits go cold)
def test_proc_cmdline_and_env_name_no_host_path(run, sandbox_server, memory_mb):
    out = run(code=PROBE, memory_limit_MB=memory_mb) if memory_mb > 0 else run(code=PROBE)
    assert out["status"] == "Success", out
    seen = json.loads(out["run_result"]["stdout"])
    assert seen["texts"]["/proc/1/cmdline"].startswith("/usr/bin/bwrap\0--args\0")
    for name, text in seen["texts"].items():
        assert str(sandbox_server.work_root) not in text, name
        assert "server-" not in text, name
    assert len(seen["fds"]) == 4  # stdin, stdout, stderr and listdir's own: bwrap's args fd is closed
