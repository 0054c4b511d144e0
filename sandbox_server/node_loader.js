'use strict';
// The warm node of a prepared sandbox run (sandbox_server/warm_node.py): started ahead of its run, inside that
// run's own namespaces, cgroup and tmpfs, with no privileges; it blocks on fd 3 until the run's init sends the
// program ({"main", "args"} as JSON, then EOF), and runs it as `node main.js args...` would. Used once.
const fs = require('fs');
const path = require('path');
const Module = require('module');

const chunks = [];
const buf = Buffer.alloc(65536);
for (;;) {
  let n;
  try {
    n = fs.readSync(3, buf, 0, buf.length, null);
  } catch (e) {
    if (e.code === 'EAGAIN' || e.code === 'EINTR') continue;
    throw e;
  }
  if (n === 0) break;
  chunks.push(Buffer.from(buf.subarray(0, n)));
}
fs.closeSync(3);
if (chunks.length === 0) process.exit(0); // the run was discarded unused
const spec = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const main = path.resolve(spec.main);
process.argv = [process.argv[0], main, ...spec.args];
delete require.cache[__filename];
Module.runMain(main);
