'use strict';
// The node fork server (sandbox_server/node_zygote.py says why). It runs in a template sandbox like
// zygote_main.py and speaks the same protocol with the server (fork_server.py), with the same process tree per
// run, each process a fork of this one started node (node_fork.c makes node forkable):
//
//   zygote (this file, started once; never runs user code)
//     `- keeper (per run): new mount/pid/net/ipc/uts namespaces, fresh tmpfs /workspace /tmp /dev/shm, loopback up
//        `- init (pid 1 of the run): fresh /proc, "ready" to the server (which moves it into the run's cgroup),
//           |   then on "go": input files, a cgroup namespace of its own, no capability, no_new_privs, CPU limit
//           `- program: runs main.js in this node, as `node main.js args...` would
//
// Nothing returns to the zygote, so no run sees another's state: every run starts from the zygote's memory as it
// was after start-up (node bootstrapped, this file loaded, nothing of any run).
//
// `node node_zygote.js FD [WARM_MODULE]`: with a warm module (the tsc fork server: ts_snapshot.js, the compiler
// loaded and warmed at start), the program process calls its `run(spec)` instead of running `spec.main`.
const fs = require('fs');
const path = require('path');
const Module = require('module');
const nf = require(path.join(__dirname, 'node_fork.node'));

const NS = 0x00020000 | 0x20000000 | 0x40000000 | 0x08000000 | 0x04000000; // mnt pid net ipc uts
const NEWCGROUP = 0x02000000;
const MS_RDONLY = 1, MS_NOSUID = 2, MS_NODEV = 4, MS_NOEXEC = 8, MS_REMOUNT = 32, MS_BIND = 4096;
const MS_REC = 1 << 14, MS_PRIVATE = 1 << 18;
const SIGCHLD = 17, SIGKILL = 9;
const PR_SET_PDEATHSIG = 1, PR_SET_DUMPABLE = 4, RLIMIT_CPU = 0;

const monotonic = () => Number(process.hrtime.bigint()) / 1e9; // CLOCK_MONOTONIC, as the server's clock
const send = (fd, obj) => nf.sendmsg(fd, Buffer.from(typeof obj === 'string' ? obj : JSON.stringify(obj)));

function readAll(fd) {
  const chunks = [];
  const buf = Buffer.alloc(1 << 16);
  for (;;) {
    const n = fs.readSync(fd, buf, 0, buf.length, null);
    if (n === 0) break;
    chunks.push(Buffer.from(buf.subarray(0, n)));
  }
  return Buffer.concat(chunks);
}

// The inputs blob (fork_server._inputs_blob): 8-byte length of a JSON index [[path, size(, mode)], ...], the
// index, then the contents in order.
function writeInputs(fd) {
  const blob = readAll(fd);
  nf.close(fd);
  const n = Number(blob.readBigUInt64LE(0));
  let at = 8 + n;
  for (const [rel, size, mode] of JSON.parse(blob.subarray(8, 8 + n).toString('utf8'))) {
    const target = path.join('/workspace', rel);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    const out = fs.openSync(target, 'w', 0o644);
    fs.writeSync(out, blob, at, size);
    if (mode !== undefined) fs.fchmodSync(out, mode & 0o755);
    fs.closeSync(out);
    at += size;
  }
}

function allFiles(root) {
  const found = [];
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, e.name);
      if (e.isDirectory()) walk(full);
      else found.push(path.relative(root, full));
    }
  };
  walk(root);
  return found.sort();
}

// Requested files with their modes, never following a link out of /workspace (the run is dead by now).
function fetchFiles(paths, budget) {
  const root = '/workspace';
  const files = [];
  const notes = [];
  for (const rel of paths) {
    const full = path.join(root, rel);
    let real;
    try {
      real = fs.realpathSync(full);
    } catch {
      continue;
    }
    if (real !== full && !real.startsWith(root + '/')) {
      notes.push(`fetch_files: '${rel}' resolves outside the work dir; skipped`);
      continue;
    }
    let fd;
    try {
      fd = fs.openSync(real, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    } catch {
      continue;
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) continue;
      if (st.size > budget) {
        notes.push(`fetch_files: '${rel}' (${st.size} bytes) exceeds the remaining fetch budget of ${budget} bytes; skipped`);
        continue;
      }
      const data = readAll(fd).subarray(0, budget + 1);
      budget -= data.length;
      files.push([rel, data, st.mode & 0o777]);
    } finally {
      fs.closeSync(fd);
    }
  }
  return [files, notes];
}

function sendFiles(sock, files, notes) {
  const fd = nf.memfd();
  let at = 0;
  const index = [];
  for (const [rel, data, mode] of files) {
    fs.writeSync(fd, data, 0, data.length, at); // positioned: the server reads the memfd from offset 0
    at += data.length;
    index.push([rel, data.length, mode]);
  }
  nf.sendmsg(sock, Buffer.from(JSON.stringify({ files: index, notes })), fd);
  nf.close(fd);
}

function becomeProgram(sock, stdio) {
  nf.prctl(PR_SET_DUMPABLE, 1);
  nf.close(sock);
  nf.setsid();
  stdio.forEach((fd, i) => nf.dup2(fd, i));
  stdio.forEach((fd) => fd > 2 && nf.close(fd));
  nf.signal(SIGCHLD, 0);
  process.chdir('/workspace');
}

// pid 1 of the run. Returns (in the program process only) the run's spec.
function init(sock, stdio, cpuDefault) {
  nf.mount('proc', '/proc', 'proc', MS_NOSUID | MS_NODEV | MS_NOEXEC, null);
  for (const sub of ['/proc/sys', '/proc/sysrq-trigger', '/proc/irq', '/proc/bus']) {
    if (fs.existsSync(sub)) {
      nf.mount(sub, sub, null, MS_BIND | MS_REC, null);
      nf.mount('none', sub, null, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, null);
    }
  }
  send(sock, 'ready');
  const [msg, fds] = nf.recvmsg(sock);
  if (msg.length === 0) nf.exit(0);
  const spec = JSON.parse(msg.toString('utf8'));
  const times = { go: monotonic() };
  if (fds.length) writeInputs(fds[0]);
  const cpu = spec.cpu ?? cpuDefault;
  nf.unshare(NEWCGROUP);
  nf.dropPrivileges();
  nf.setrlimit(RLIMIT_CPU, cpu, cpu + 1);
  nf.prctl(PR_SET_DUMPABLE, 0); // the program (same uid) cannot ptrace its init and the init's socket
  const program = nf.fork();
  if (program === 0) {
    becomeProgram(sock, stdio);
    return spec;
  }
  times.forked = monotonic();
  for (const fd of [0, 1, 2, ...stdio]) nf.close(fd);
  for (;;) {
    let pid, status;
    try {
      [pid, status] = nf.wait(-1);
    } catch {
      nf.exit(1);
    }
    if (pid === program) {
      times.reaped = monotonic();
      try {
        send(sock, { times });
      } catch {}
      nf.exit(status);
    }
  }
}

function keeper(header, fds) {
  const [stdinR, stdoutW, stderrW, sock] = fds;
  nf.prctl(PR_SET_PDEATHSIG, SIGKILL);
  nf.unshare(NS);
  nf.mount('none', '/', null, MS_REC | MS_PRIVATE, null);
  const flags = MS_NOSUID | MS_NODEV;
  nf.mount('sandbox', '/workspace', 'tmpfs', flags, `mode=0700,size=${header.workspace_size}`);
  nf.mount('tmpfs', '/tmp', 'tmpfs', flags, `mode=1777,size=${header.tmp_size}`);
  nf.mount('tmpfs', '/dev/shm', 'tmpfs', flags, `mode=1777,size=${header.tmp_size}`);
  nf.loopbackUp();
  const pid = nf.fork();
  if (pid === 0) {
    nf.prctl(PR_SET_PDEATHSIG, SIGKILL);
    return init(sock, [stdinR, stdoutW, stderrW], header.cpu);
  }
  for (const fd of [stdinR, stdoutW, stderrW]) nf.close(fd);
  const [, rc] = nf.wait(pid);
  try {
    send(sock, { rc, init_exited: monotonic() });
    const [msg] = nf.recvmsg(sock);
    if (msg.length) {
      const req = JSON.parse(msg.toString('utf8'));
      const [files, notes] = fetchFiles(req.all ? allFiles('/workspace') : req.fetch, req.budget);
      sendFiles(sock, files, notes);
    }
  } catch {}
  nf.exit(0);
}

// Forks a keeper per "prepare" message; returns only in a run's program process.
function serve(serverFd) {
  nf.signal(SIGCHLD, 1); // keepers are reaped by the kernel
  for (;;) {
    const [msg, fds] = nf.recvmsg(serverFd);
    if (msg.length === 0) nf.exit(0);
    if (fds.length !== 4) {
      fds.forEach((fd) => nf.close(fd));
      continue;
    }
    const header = JSON.parse(msg.toString('utf8'));
    const pid = nf.fork();
    if (pid === 0) {
      nf.close(serverFd);
      nf.signal(SIGCHLD, 0);
      try {
        return keeper(header, fds);
      } catch (e) {
        try {
          fs.writeSync(2, `node zygote: ${e && e.stack}\n`);
        } catch {}
        nf.exit(70);
      }
    }
    fds.forEach((fd) => nf.close(fd));
  }
}

// Math.random's state was seeded once, in the zygote: every fork would draw the same numbers. Each program gets
// draws from /dev/urandom instead (52 random bits per number, as V8's).
function reseedMathRandom() {
  const fd = fs.openSync('/dev/urandom', 'r');
  const pool = Buffer.alloc(8 * 512);
  let at = pool.length;
  const random = {
    random() {
      if (at === pool.length) {
        fs.readSync(fd, pool, 0, pool.length, null);
        at = 0;
      }
      const hi = pool.readUInt32LE(at) >>> 12;
      const lo = pool.readUInt32LE(at + 4);
      at += 8;
      return (hi * 4294967296 + lo) / 4503599627370496;
    },
  }.random;
  Object.defineProperty(Math, 'random', { value: random, writable: true, enumerable: false, configurable: true });
}

// In the program process: node's state as `node main.js args...` starts with, then the program.
function runProgram(spec) {
  nf.loopFork();
  nf.detachWorkers();
  for (const key of Object.keys(process.env)) delete process.env[key];
  Object.assign(process.env, spec.env || {});
  Object.defineProperty(process, 'pid', { value: nf.getpid(), writable: false, enumerable: true, configurable: true });
  process.execArgv = [];
  reseedMathRandom();
  // Every way out ends in _exit with node's status (node_fork.c says why): process.exit, the 'exit' event of a
  // natural end, and a fatal exception (which node prints first).
  const emit = process.emit;
  process.emit = function (event, ...rest) {
    const handled = emit.call(this, event, ...rest);
    if (event === 'exit') nf.setExitCode(Number(process.exitCode ?? 0) | 0);
    return handled;
  };
  process.reallyExit = (code) => nf.exit(Number(code ?? 0) | 0);
  nf.installExitHooks();
  const main = path.resolve(spec.main);
  process.argv = [process.execPath, main, ...(spec.args || [])];
  for (const key of Object.keys(require.cache)) delete require.cache[key]; // this file and the addon
  if (warmModule !== null) warmModule.run(spec);
  else Module.runMain(main);
}

// Modules most programs load on their first write to stdout (node builds process.stdout lazily): loaded once
// here, so that a run does not compile them again. Nothing is created that a run would share.
function warmUp() {
  for (const name of ['net', 'tty', 'stream', 'string_decoder', 'readline', 'events', 'util', 'child_process']) {
    require(name);
  }
  const { Writable } = require('stream');
  new Writable({ write(chunk, encoding, done) { done(); } }).end('warm');
}

warmUp();
const warmModule = process.argv[3] ? require(process.argv[3]) : null;
// Nothing but the server's socket survives from the template's start-up (fds 0-2 are replaced per program).
const spec = serve(Number(process.argv[2]));
runProgram(spec);
