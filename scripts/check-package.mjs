// `npm run check:package`: builds dist/, packs the package as npm would publish it, and lints the tarball itself
// (not the working tree) with publint --strict and Are the Types Wrong. Exits non-zero on any problem either reports.
//
// attw runs with `--profile esm-only`: lava-webhooks is an ES module package only ("type": "module", exports with
// no `require` condition, and top-level await in the SQLite entry, which even Node 22's require(esm) refuses), so
// the resolutions that profile leaves out, node10 (pre-exports `moduleResolution: "node"`) and node16 from CommonJS,
// could only ever report "this is ESM"; what it checks, node16 from ESM and bundler, must be clean for every entry.
// `--no-definitely-typed`: the package ships its own types, and the check must not need the registry.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => join(root, 'node_modules', '.bin', name);

function step(title, command, args, { echo = true } = {}) {
  console.log(`\ncheck:package: ${title}`);
  const r = spawnSync(command, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  if (echo) process.stdout.write(r.stdout ?? '');
  if (r.status !== 0) {
    console.error(`check:package: ${title} failed (${r.status ?? r.signal})`);
    process.exit(1);
  }
  return r.stdout;
}

step('build', process.execPath, [join(root, 'scripts', 'build.mjs')]);

mkdirSync(join(root, '.tmp'), { recursive: true });
const dir = mkdtempSync(join(root, '.tmp', 'check-package-'));
try {
  // Built just above, so prepack need not build again (and its output would mix with npm's JSON).
  const packed = step('npm pack', 'npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], {
    echo: false,
  });
  const [{ filename, files, size }] = JSON.parse(packed);
  console.log(`${filename}: ${files.length} files, ${Math.round(size / 1024)} KiB`);
  const tarball = join(dir, filename);
  step('publint --strict', bin('publint'), ['run', tarball, '--strict']);
  step('attw --profile esm-only', bin('attw'), [tarball, '--profile', 'esm-only', '--no-definitely-typed']);
  console.log(`\ncheck:package: ${filename} passes publint (strict) and attw (esm-only)`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
