#!/usr/bin/env node
// The `lava-webhooks` command. The CLI is built into plain JavaScript (dist/cli.js, `npm run build`; the package
// ships it), so Bun, Deno and Node run it with nothing from this package's devDependencies, in this process.
// One exception, for SQLite: its store needs bun:sqlite or node:sqlite, which Node has from 22.13 (23.4 on 23). On
// an older Node the CLI is handed over to a Bun when one can be found (the project's node_modules/.bin, then PATH);
// without one it still runs here, and only a command that opens a SQLite database fails, saying what to run.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import process from 'node:process';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'dist', 'cli.js');
const args = process.argv.slice(2);

if (!existsSync(cli)) {
  // Only in a checkout of the repository that was never built: the published package always has dist/.
  console.error(`lava-webhooks: ${cli} is missing; run \`npm run build\` (or \`npm run cli\` to run src/cli.ts)`);
  process.exit(2);
}

async function runInProcess() {
  const { run } = await import(pathToFileURL(cli).href);
  await run();
}

/** Whether this runtime has a SQLite driver the store can use: Bun, Deno, Node 22.13+ (23.4+ on 23). */
function hasSqlite() {
  if (process.versions.bun || process.versions.deno) return true;
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  return major > 23 || (major === 23 && minor >= 4) || (major === 22 && minor >= 13);
}

function findBun() {
  const name = process.platform === 'win32' ? 'bun.exe' : 'bun';
  // Installed as a dependency, a project's bun sits in its node_modules/.bin, somewhere above this package.
  for (let dir = root; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', '.bin', name);
    if (existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) return name; // then whatever PATH has
  }
}

/** Runs the CLI under Bun as a child; resolves false when there is no Bun to start. */
async function runWithBun() {
  const child = spawn(findBun(), [cli, ...args], { stdio: 'inherit' });
  const started = await new Promise((res) => {
    child.once('spawn', () => res(true));
    child.once('error', () => res(false));
  });
  if (!started) return false;
  // Ctrl-C reaches the child too (same process group) and it decides how to stop; a SIGTERM sent to this process
  // alone is passed on.
  process.on('SIGINT', () => {});
  process.on('SIGTERM', () => child.kill('SIGTERM'));
  const [code, signal] = await new Promise((res) => child.once('exit', (c, s) => res([c, s])));
  process.exit(code ?? 128 + (constants.signals[signal] ?? 1));
}

if (hasSqlite() || !(await runWithBun())) await runInProcess();
