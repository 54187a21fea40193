#!/usr/bin/env node
// The `lava-webhooks` command: src/cli.ts is TypeScript, so this plain-JS launcher hands it to Bun — the running
// Bun itself, else the bun installed in node_modules (a devDependency), else bun on PATH.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const cli = join(here, '..', 'src', 'cli.ts');

if (process.versions.bun) {
  const { run } = await import(cli);
  await run();
} else {
  let bun = 'bun';
  // Walk up: installed as a dependency, the bundled bun sits in the consuming project's node_modules.
  for (let dir = join(here, '..'); ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', '.bin', process.platform === 'win32' ? 'bun.exe' : 'bun');
    if (existsSync(candidate)) {
      bun = candidate;
      break;
    }
    if (dirname(dir) === dir) break;
  }
  const r = spawnSync(bun, ['run', cli, ...process.argv.slice(2)], { stdio: 'inherit' });
  if (r.error) {
    console.error(`lava-webhooks needs Bun to run (${r.error.message}): run npm install, or install Bun from bun.sh`);
    process.exit(2);
  }
  process.exit(r.status ?? 1);
}
