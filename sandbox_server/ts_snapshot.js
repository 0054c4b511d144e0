'use strict';
// A warm `tsc` for the sandbox's typescript compile step (sandbox_server/ts_snapshot.py builds it):
//   node --snapshot-blob tsc.blob --build-snapshot ts_snapshot.js      (AGENTGYM_TS_LIB, AGENTGYM_TS_TYPE_ROOT)
//   node --snapshot-blob tsc.blob main.ts                                (in the sandbox, per compile)
// The snapshot holds typescript itself and the default libraries and @types/node already parsed and bound, so a
// compile only type-checks and emits the program: ~0.35 s CPU instead of ~2 s for `tsc`. Same options as the
// language's tsc command line (languages.py), same output: main.js byte for byte, diagnostics on stdout in tsc's
// plain format, tsc's exit codes (0; 2 diagnostics, output written; 1 diagnostics, output skipped).
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
v8.startupSnapshot.setDeserializeMainFunction(() => {
  const files = process.argv.slice(1).filter((a) => !a.startsWith('-'));
  const host = ts.createCompilerHost(options);
  const read = host.getSourceFile;
  host.getSourceFile = (name, lang, onError, fresh) => cached.get(name) || read(name, lang, onError, fresh);
  const program = ts.createProgram(files, options, host);
  const emitted = program.emit();
  const diagnostics = ts.sortAndDeduplicateDiagnostics(ts.getPreEmitDiagnostics(program).concat(emitted.diagnostics));
  if (diagnostics.length) {
    process.stdout.write(ts.formatDiagnostics(diagnostics, {
      getCanonicalFileName: (f) => f, getCurrentDirectory: () => process.cwd(), getNewLine: () => '\n' }));
  }
  process.exitCode = diagnostics.length === 0 ? 0 : emitted.emitSkipped ? 1 : 2;
});
