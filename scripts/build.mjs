// `npm run build` (and `prepack`): the npm package's dist/, compiled by tsc from tsconfig.build.json (why tsc and
// no bundler: see there). tsc writes into a fresh directory under .tmp/; the files are then moved into dist/ one by
// one, each with a rename, so whatever reads dist/ meanwhile (a test, another `npm pack`) never sees a half-written
// file, and files the new build no longer has are removed. The repository itself never runs dist/: tests, the
// server, the examples and Deno run src/ as it is.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');

/** Every file under `dir`, relative to it. */
function filesOf(dir) {
  const out = [];
  const walk = (d) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out;
}

mkdirSync(join(root, '.tmp'), { recursive: true });
const out = mkdtempSync(join(root, '.tmp', 'build-'));
try {
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json'), '--outDir', out], {
    cwd: root,
    stdio: ['ignore', process.stderr, 'inherit'],
  });
  if (r.status !== 0) {
    console.error(`build: tsc failed (${r.status ?? r.signal}); dist/ is unchanged`);
    process.exit(1);
  }
  const built = filesOf(out);
  if (!built.includes('mod.js') || !built.includes('mod.d.ts')) {
    console.error('build: tsc wrote no dist/mod.js and mod.d.ts; dist/ is unchanged');
    process.exit(1);
  }
  for (const file of built) {
    mkdirSync(dirname(join(dist, file)), { recursive: true });
    renameSync(join(out, file), join(dist, file));
  }
  const keep = new Set(built);
  let removed = 0;
  for (const file of filesOf(dist)) {
    if (keep.has(file)) continue;
    rmSync(join(dist, file));
    removed++;
  }
  // Directories emptied by that go too.
  for (const dir of readdirSync(dist, { recursive: true }).map(String).sort().reverse()) {
    const p = join(dist, dir);
    if (statSync(p).isDirectory() && readdirSync(p).length === 0) rmSync(p, { recursive: true });
  }
  // On stderr: `npm pack --json` runs this (prepack), and its stdout must stay the JSON alone.
  console.error(`build: dist/ has ${built.length} files${removed ? ` (${removed} stale removed)` : ''}`);
} finally {
  rmSync(out, { recursive: true, force: true });
}
