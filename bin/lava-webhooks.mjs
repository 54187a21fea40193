#!/usr/bin/env node
// The `lava-webhooks` command. The CLI ships as TypeScript (src/cli.ts, erasable syntax only) and is run as is by
// whatever can run it in the user's project, with nothing from this package's devDependencies:
// 1. Bun running this file: it runs .ts natively, under node_modules too, so import it.
// 2. Node 22.15+ and Deno 2.9+: erase the types in-process with node:module's own stripTypeScriptTypes, through a
//    load hook. Their built-in type stripping refuses files under node_modules, exactly where an installed CLI is.
// 3. Otherwise: hand over to Bun if one is installed (the project's node_modules/.bin, then PATH), else on Node load
//    tsx if the project has it, else say what to install. Node 20 lacks node:sqlite, so Bun is preferred to tsx.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import * as nodeModule from 'node:module';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import process from 'node:process';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'src', 'cli.ts');
const args = process.argv.slice(2);

async function runInProcess() {
  const { run } = await import(pathToFileURL(cli).href);
  await run();
}

// The version needs no TypeScript: it answers even where nothing can run the CLI yet.
if (args.length === 1 && (args[0] === '--version' || args[0] === '-v')) {
  console.log(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version);
  process.exit(0);
}

/** Node 22.15+ (registerHooks and stripTypeScriptTypes): loads this package's .ts files with their types erased. */
function registerTypeStripping() {
  const { registerHooks, stripTypeScriptTypes } = nodeModule;
  if (typeof registerHooks !== 'function' || typeof stripTypeScriptTypes !== 'function') return false;
  const src = `${pathToFileURL(join(root, 'src')).href}/`;
  // Both APIs announce themselves as experimental on first use; the user asked for a command, not for that.
  const emitWarning = process.emitWarning;
  process.emitWarning = (warning, ...rest) => {
    const text = String(warning?.message ?? warning);
    const type = typeof rest[0] === 'string' ? rest[0] : rest[0]?.type;
    if (type === 'ExperimentalWarning' && /stripTypeScriptTypes|registerHooks|type stripping/i.test(text)) return;
    return emitWarning.call(process, warning, ...rest);
  };
  try {
    stripTypeScriptTypes('const probe: number = 1;'); // throws where Node was built without TypeScript support
    registerHooks({
      load(url, context, nextLoad) {
        if (!url.startsWith(src) || !url.endsWith('.ts')) return nextLoad(url, context);
        const source = readFileSync(fileURLToPath(url), 'utf8');
        return { format: 'module', source: stripTypeScriptTypes(source), shortCircuit: true };
      },
    });
    return true;
  } catch {
    return false;
  }
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

function findTsx() {
  try {
    return import.meta.resolve('tsx/esm/api');
  } catch {
    return null;
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

const runtime = process.versions.deno ? `Deno ${process.versions.deno}` : `Node ${process.version}`;

if (process.versions.bun) {
  await runInProcess();
} else if (registerTypeStripping()) {
  await runInProcess();
} else if (!(await runWithBun())) {
  const tsx = process.versions.deno ? null : findTsx();
  if (tsx) {
    const { register } = await import(tsx);
    register();
    await runInProcess();
  } else {
    console.error(
      `lava-webhooks: ${runtime} cannot run this CLI, which is TypeScript under node_modules. Any one of these can:\n` +
        '  - Node 22.15 or newer, or Deno 2.9 or newer: nothing else to install\n' +
        '  - Bun: npm install --save-dev bun (or see bun.sh), then run lava-webhooks again\n' +
        '  - tsx, on older Node: npm install --save-dev tsx (on Node 20, store commands then need Postgres: node:sqlite is Node 22.13+)',
    );
    process.exit(2);
  }
}
