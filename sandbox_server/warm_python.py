"""Bootstrap for pre-started python sandboxes: the interpreter is already up when the request arrives.

It waits for the release line (the request's CPU-seconds limit), then runs /workspace/main.py as
`python3 main.py` would: fresh `__main__` module, absolute `__file__`, `sys.argv == ['main.py']`,
`sys.path[0] == '/workspace'`, tracebacks without bootstrap frames, exit status 1 on an uncaught
exception. It only reads its release line byte by byte, so the program's stdin is untouched.
"""

BOOT_SOURCE = r'''# agentgym-warm-python: waiting for a request
import os, sys
_line = b""
while not _line.endswith(b"\n"):
    _ch = os.read(0, 1)
    if not _ch:
        os._exit(111)
    _line += _ch
import builtins, resource, types
_cpu = int(_line)
resource.setrlimit(resource.RLIMIT_CPU, (_cpu, _cpu))
_path = os.path.abspath(sys.argv[1])
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(_path)
with open(_path, "rb") as _f:
    _src = _f.read()
try:
    _code = compile(_src, _path, "exec")
except SyntaxError as _e:
    _e.__traceback__ = None
    sys.excepthook(type(_e), _e, None)
    sys.exit(1)
_main = types.ModuleType("__main__")
_main.__file__ = _path
_main.__builtins__ = builtins
_main.__cached__ = None
sys.modules["__main__"] = _main
try:
    exec(_code, _main.__dict__)
except SystemExit:
    raise
except BaseException as _e:
    _e.__traceback__ = _e.__traceback__.tb_next
    sys.excepthook(type(_e), _e, _e.__traceback__)
    sys.exit(1)
'''
