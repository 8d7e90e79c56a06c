#!/usr/bin/env node
// Builds the plexus addon offline with the system C compiler: no node-gyp, no download.
//
//   node build.js                        the package's own addon: build/Release/plexus.node
//   node build.js --out build/api.node api.c [more.c ...]
//                                        an addon with your own C routes (plexus_routes())
//
// Where things come from (first found wins):
//   node_api.h  PLEXUS_NODE_HEADERS, <node prefix>/include/node (Debian libnode-dev,
//               nodejs), the node-api-headers npm package
//   libplexus   PLEXUS_PKG_CONFIG (a libplexus.pc of an installed plexus: `make install`),
//               PLEXUS_BUILD_DIR (a CMake build tree of plexus), the repository this package
//               sits in (its build/release when built, else a CMake build in build/addon).
// Link flags come from pkg-config --static --libs libplexus, so new dependencies follow.
'use strict';
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

const here = __dirname;
const cc = process.env.CC || 'cc';

function log(msg) {
  process.stderr.write(`plexus build: ${msg}\n`);
}

function fail(msg) {
  log(msg);
  process.exit(1);
}

function run(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], ...opts });
}

function nodeHeaders() {
  const candidates = [];
  if (process.env.PLEXUS_NODE_HEADERS) candidates.push(process.env.PLEXUS_NODE_HEADERS);
  candidates.push(path.join(path.dirname(process.execPath), '..', 'include', 'node'));
  candidates.push('/usr/include/node', '/usr/local/include/node');
  try {
    candidates.push(path.join(path.dirname(require.resolve('node-api-headers/package.json')), 'include'));
  } catch (e) { /* not installed */ }
  for (const c of candidates) if (fs.existsSync(path.join(c, 'node_api.h'))) return c;
  fail('node_api.h not found: install Debian libnode-dev (or nodejs with its headers), ' +
       'or `npm install node-api-headers`, or set PLEXUS_NODE_HEADERS');
}

// The plexus source tree this package is part of, if any.
function repoRoot() {
  let dir = path.resolve(here, '..', '..');
  const cm = path.join(dir, 'CMakeLists.txt');
  if (fs.existsSync(cm) && /project\(plexus\b/.test(fs.readFileSync(cm, 'utf8'))) return dir;
  return null;
}

// { archive, cflags: [...], libs: [...] }
function libplexus() {
  const pc = process.env.PLEXUS_PKG_CONFIG;
  if (pc) {
    const libdir = run('pkg-config', ['--variable=libdir', pc]).trim();
    const cflags = run('pkg-config', ['--cflags', pc]).trim().split(/\s+/).filter(Boolean);
    return fromPc(pc, path.join(libdir, 'libplexus.a'), cflags);
  }
  const repo = repoRoot();
  let build = process.env.PLEXUS_BUILD_DIR;
  if (!build && repo) {
    const release = path.join(repo, 'build', 'release');
    build = fs.existsSync(path.join(release, 'libplexus.a')) ? release : path.join(repo, 'build', 'addon');
  }
  if (!build)
    fail('libplexus not found: set PLEXUS_PKG_CONFIG to an installed libplexus.pc, or ' +
         'PLEXUS_BUILD_DIR to a plexus build tree');
  build = path.resolve(build);
  const src = repo || path.resolve(build, '..', '..');
  if (!fs.existsSync(path.join(build, 'libplexus.a'))) {
    log(`building libplexus in ${build} (cmake)`);
    run('cmake', ['-S', src, '-B', build, '-DCMAKE_BUILD_TYPE=Release', '-DPX_BUILD_TESTS=OFF',
      '-DPX_BUILD_BENCH=OFF'], { stdio: ['ignore', 'inherit', 'inherit'] });
    run('cmake', ['--build', build, '--target', 'plexus_static', '-j', process.env.JOBS || '2'],
      { stdio: ['ignore', 'inherit', 'inherit'] });
  }
  return fromPc(path.join(build, 'libplexus.pc'), path.join(build, 'libplexus.a'),
    ['-I' + path.join(src, 'include'), '-I' + path.join(build, 'generated')]);
}

// The archive itself, then what pkg-config says it needs (minus -lplexus and its -L).
function fromPc(pc, archive, cflags) {
  if (!fs.existsSync(archive)) fail(`${archive} is missing`);
  const libs = run('pkg-config', ['--static', '--libs', pc]).trim().split(/\s+/)
    .filter((f) => f && f !== '-lplexus' && !f.startsWith('-L'));
  return { archive, cflags, libs };
}

function main(argv) {
  let out = path.join(here, 'build', 'Release', 'plexus.node');
  const extra = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out') out = path.resolve(argv[++i]);
    else extra.push(path.resolve(argv[i]));
  }
  const headers = nodeHeaders();
  const lib = libplexus();
  fs.mkdirSync(path.dirname(out), { recursive: true });
  const args = ['-std=gnu11', '-O2', '-g', '-fPIC', '-shared', '-fvisibility=hidden', '-Wall', '-Wextra',
    '-Wno-unused-parameter', '-D_GNU_SOURCE', '-I' + headers, ...lib.cflags,
    ...[...new Set(extra.map((f) => '-I' + path.dirname(f)))],
    path.join(here, 'src', 'addon.c'), ...extra, '-o', out,
    // libplexus stays inside the addon: nothing of it is exported to other addons.
    '-Wl,--gc-sections', '-Wl,--exclude-libs,ALL', lib.archive, ...lib.libs];
  log(`${cc} ... -o ${path.relative(process.cwd(), out) || out}`);
  try {
    run(cc, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  } catch (e) {
    fail(`${cc} failed (${e.status})`);
  }
}

main(process.argv.slice(2));
