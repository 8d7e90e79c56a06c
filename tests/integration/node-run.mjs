// node-run.mjs: runs one node:test file for ctest (tests/CMakeLists.txt), the way
// pxtest.main() runs a Python file: the spec report on stdout, then
//   - one line "px-skip: <test>: <reason>" per skipped (or todo) test,
//   - exit 1 if anything failed or nothing ran at all,
//   - exit 77 (ctest SKIP_RETURN_CODE) if something was skipped,
//   - exit 0 otherwise.
// `node --test` alone exits 0 when tests skip, so a skip would read as a pass.
// A skip is only accepted by tests/run.sh when its reason starts with an id from
// the allowlist in tests/README.md ("Allowed skips"):
//   it('listens on ::1', { skip: noIpv6 && '[no-ipv6] no IPv6 loopback' }, ...)
//
//   node tests/integration/node-run.mjs tests/integration/60-sdk.mjs
import path from 'node:path';
import { run } from 'node:test';
import { spec } from 'node:test/reporters';

const SKIP_EXIT = 77;
const file = process.argv[2];
if (!file) {
  console.error('usage: node node-run.mjs FILE.mjs');
  process.exit(2);
}

let passed = 0;
let failed = 0;
const skips = [];
const stream = run({ files: [path.resolve(file)] });
stream.on('test:pass', (t) => {
  if (t.details?.type === 'suite') return; // a describe(): its tests count
  if (t.name === t.file) return; // the file itself (it ran no test at all)
  if (t.skip !== undefined || t.todo !== undefined) {
    const why = t.skip !== undefined ? t.skip : t.todo;
    skips.push(`${t.name}: ${typeof why === 'string' ? why : '(no reason given)'}`);
  } else {
    passed++;
  }
});
stream.on('test:fail', (t) => {
  if (t.details?.type === 'suite') return; // its failing test was counted already
  failed++;
});
stream.compose(spec).pipe(process.stdout);
stream.on('end', () => {
  // Let the report drain before the summary lines.
  setImmediate(() => {
    for (const s of skips) console.log(`px-skip: ${s}`);
    if (failed > 0 || passed + skips.length === 0) {
      if (failed === 0) console.log(`node-run: no test ran in ${file}`);
      process.exitCode = 1;
    } else if (skips.length > 0) {
      process.exitCode = SKIP_EXIT;
    }
  });
});
