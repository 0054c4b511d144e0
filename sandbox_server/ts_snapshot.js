'use strict';
// A warm `tsc` for the sandbox's typescript compile step, in two forms (sandbox_server/ts_snapshot.py):
//   node --snapshot-blob tsc.blob --build-snapshot ts_snapshot.js      (AGENTGYM_TS_LIB, AGENTGYM_TS_TYPE_ROOT)
//   node --snapshot-blob tsc.blob main.ts                                (in the sandbox, per compile)
// or loaded by the tsc fork server (node_zygote.js, whose forks call `run`): the compiler is then loaded, warmed
// and JIT-compiled once, and a compile is a fork that checks and emits the program (~35 ms of CPU instead of ~0.3 s
// for the snapshot, ~2 s for `tsc`).
// Either way typescript itself and the default libraries and @types/node are already parsed and bound, so a compile
// only type-checks and emits the program. Same options as the language's tsc command line (languages.py), same
// output: main.js byte for byte, diagnostics on stdout in tsc's plain format, tsc's exit codes (0; 2 diagnostics,
// output written; 1 diagnostics, output skipped).
const fs = require('fs');
const path = require('path');
const vm = require('vm');
const v8 = require('v8');
const TS = process.env.AGENTGYM_TS_LIB;
const TYPE_ROOT = process.env.AGENTGYM_TS_TYPE_ROOT;
const source = fs.readFileSync(TS, 'utf8');
const mod = { exports: {} };
vm.runInThisContext('(function (module, exports, require, __filename, __dirname) {' + source + '\n})',
  { filename: TS })(mod, mod.exports, require, TS, path.dirname(TS));
const ts = mod.exports;
const options = { target: ts.ScriptTarget.ES2020, module: ts.ModuleKind.CommonJS, skipLibCheck: true, outDir: '.' };
if (TYPE_ROOT) { options.typeRoots = [TYPE_ROOT]; options.types = ['node']; }
const cached = new Map();
{
  const host = ts.createCompilerHost(options);
  const read = host.getSourceFile;
  host.getSourceFile = (name, lang, onError, fresh) => name.endsWith('/__warm__.ts')
    ? ts.createSourceFile(name, 'export {};\n', lang) : read(name, lang, onError, fresh);
  const warm = ts.createProgram(['/__warm__/__warm__.ts'], options, host);
  warm.getTypeChecker();
  ts.getPreEmitDiagnostics(warm);
  for (const f of warm.getSourceFiles()) if (!f.fileName.endsWith('__warm__.ts')) cached.set(f.fileName, f);
}

// Compiles `files` (relative to the working directory) as tsc would; `inMemory` (name -> text) instead reads those
// sources from memory and writes and prints nothing (the fork server's warm-up). Returns tsc's exit code.
function compile(files, inMemory) {
  const host = ts.createCompilerHost(options);
  const read = host.getSourceFile;
  host.getSourceFile = (name, lang, onError, fresh) => (inMemory && inMemory.has(name)
    ? ts.createSourceFile(name, inMemory.get(name), lang) : cached.get(name) || read(name, lang, onError, fresh));
  if (inMemory) host.writeFile = () => {};
  const program = ts.createProgram(files, options, host);
  const emitted = program.emit();
  const diagnostics = ts.sortAndDeduplicateDiagnostics(ts.getPreEmitDiagnostics(program).concat(emitted.diagnostics));
  if (diagnostics.length && !inMemory) {
    process.stdout.write(ts.formatDiagnostics(diagnostics, {
      getCanonicalFileName: (f) => f, getCurrentDirectory: () => process.cwd(), getNewLine: () => '\n' }));
  }
  return diagnostics.length === 0 ? 0 : emitted.emitSkipped ? 1 : 2;
}

// Programs of the kinds the sandbox gets, compiled a few times in the fork server before it serves: V8 has then
// optimised the checker and emitter, which each fork inherits (a cold fork took ~3x the CPU).
const WARM_PROGRAMS = [
  'const greeting: string = "hello";\nconsole.log(greeting);\n',
  'function add(a: number, b: number): number { return a + b; }\nconsole.log(add(1, 2));\n',
  'class Box<T> { constructor(public value: T) {}\n  map<U>(f: (v: T) => U): Box<U> { return new Box(f(this.value)); } }\n' +
    'const b = new Box([1, 2, 3]).map((xs) => xs.reduce((s, x) => s + x, 0));\nconsole.log(b.value.toFixed(2));\n',
  'const lines: string[] = require("fs").readFileSync(0, "utf8").split("\\n");\n' +
    'const m = new Map<string, number>();\nfor (const l of lines) m.set(l, (m.get(l) ?? 0) + 1);\n' +
    'interface P { name: string; age?: number }\nconst ps: P[] = [{ name: "a" }];\n' +
    'console.log([...m.entries()].sort((x, y) => y[1] - x[1]), ps.filter((p) => p.age === undefined).length);\n',
  'const n: number = "not a number";\nenum E { A, B }\nlet e: E = E.B;\nconsole.log(n, e, process.argv.length);\n',
];

if (v8.startupSnapshot.isBuildingSnapshot()) {
  v8.startupSnapshot.setDeserializeMainFunction(() => {
    process.exitCode = compile(process.argv.slice(1).filter((a) => !a.startsWith('-')));
  });
} else {
  for (let round = 0; round < 4; round++) {
    WARM_PROGRAMS.forEach((text, i) => compile(['/__warm__/main.ts'], new Map([['/__warm__/main.ts', `// ${round} ${i}\n${text}`]])));
  }
  // The fork server's program process: `spec.args` are the files, relative to the run's /workspace.
  module.exports = { run: (spec) => { process.exitCode = compile(spec.args); } };
}
