#!/usr/bin/env node
// Consumer tests: the package as a user gets it. `npm pack` this repository once, then for each consumer copy a
// project template from .projects/ into a fresh directory outside the repository, install the tarball there the way
// a user installs the package (dependencies from the registry), type-check the project against the package's
// types, build and start it, and send it signed deliveries over real HTTP:
//   - a forged signature answers 401;
//   - a new delivery answers 200 {"received":true} and its handler runs (the consumer writes a marker the test reads);
//   - the same bytes again answer 200 {"received":true,"duplicate":true} and the handler does not run again.
// Nothing here imports the repository's src/. A consumer that cannot run here (Postgres unreachable, a runtime
// missing) is reported as skipped, with the reason; any failure exits non-zero. Temporary directories are removed and
// every process started here is ended on exit, failures and signals included.
//
//   node test/consumers/run.mjs [--only nextjs,workers] [--jobs 3] [--keep] [--timeout 600] [--tarball x.tgz]
//   node test/consumers/run.mjs --docs-only
//
// Templates live in .projects/ (a dot directory, so the repository's own tsc, whose include is `test`, does not
// check them against packages that only the consumer projects install). docs/embedding.md and README.md show the same
// install commands, imports and serve lines; the `docs` check below keeps them in step.
import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const TEMPLATES = join(HERE, '.projects');
const SECRET = `whsec_consumer_${randomBytes(8).toString('hex')}`;
/** Stands for the packed tarball in the install commands; the docs show the package name there. */
const PKG = '<tarball>';

const { values: opts } = parseArgs({
  options: {
    only: { type: 'string' },
    jobs: { type: 'string', default: '3' },
    keep: { type: 'boolean', default: false },
    timeout: { type: 'string', default: '600' },
    tarball: { type: 'string' },
    'docs-only': { type: 'boolean', default: false },
  },
});
const started = performance.now();
const deadline = started + Number(opts.timeout) * 1000;

// ---------------------------------------------------------------------------------------------------------------
// Processes and temporary directories: everything started here is killed, everything made here removed, on any exit.

/** Process groups started here (each child leads its own group, so its own children are ended with it). */
const groups = new Set();
let workRoot = '';

function killGroup(pid, signal) {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

function cleanupSync() {
  for (const pid of groups) killGroup(pid, 'SIGKILL');
  groups.clear();
  if (workRoot && !opts.keep) rmSync(workRoot, { recursive: true, force: true });
}
/** Clean-ups outside the temporary directory (a Postgres schema), still run when a signal cuts the run short. */
const outsideCleanups = new Set();

process.on('exit', cleanupSync);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(signal, async () => {
    console.error(`\nconsumers: ${signal}, stopping every process started here`);
    for (const pid of groups) killGroup(pid, 'SIGKILL');
    groups.clear();
    const pending = [...outsideCleanups].map((fn) => fn());
    await Promise.race([Promise.allSettled(pending), timeout(15_000)]);
    cleanupSync();
    process.exit(128 + (signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 1));
  });
}

/** What `npm run` adds about this repository (its package, its prefix, the script): not for the consumers' npm. */
const NPM_RUN_VARIABLES =
  /^(npm_package_|npm_lifecycle_|npm_command$|npm_execpath$|npm_node_execpath$|npm_config_(local_)?prefix$|npm_config_call$|INIT_CWD$)/;

/**
 * The environment consumer processes get: npm settings kept (registry, cache, …) but none of what `npm run` says
 * about this repository, no NODE_OPTIONS or NODE_PATH (no loader or module path sneaks in), no node_modules/.bin of
 * this repository on PATH (so `npx tsc` can only find the consumer's own), no telemetry.
 */
function consumerEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (NPM_RUN_VARIABLES.test(k) || k === 'NODE_OPTIONS' || k === 'NODE_PATH') continue;
    env[k] = v;
  }
  env.PATH = (process.env.PATH ?? '')
    .split(delimiter)
    .filter((p) => p && !p.includes(`${sep}node_modules${sep}.bin`))
    .join(delimiter);
  return {
    ...env,
    npm_config_audit: 'false',
    npm_config_fund: 'false',
    npm_config_update_notifier: 'false',
    NEXT_TELEMETRY_DISABLED: '1',
    WRANGLER_SEND_METRICS: 'false',
    DO_NOT_TRACK: '1',
    DENO_NO_UPDATE_CHECK: '1',
    DENO_NO_PROMPT: '1',
    NO_COLOR: '1',
    FORCE_COLOR: '0',
    ...extra,
  };
}

/** Tools the commands name, and what runs them: Bun and Deno are this repository's own binaries. */
const TOOLS = {
  bun: join(ROOT, 'node_modules', '.bin', 'bun'),
  deno: join(ROOT, 'node_modules', '.bin', 'deno'),
};

class StepError extends Error {
  constructor(message, output = '') {
    super(message);
    this.output = output;
  }
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: ANSI colour codes, which some tools print regardless
const plain = (text) => text.replace(/\x1b\[[0-9;]*m/g, '');
const tail = (text, lines = 30) => plain(text).trimEnd().split('\n').slice(-lines).join('\n');

/** Starts a process in a group of its own; its output goes to the consumer's log. */
function start(c, argv, { cwd, env, extra = [] }) {
  const [tool, ...rest] = argv;
  const args = [...rest.map((a) => (a === PKG ? c.tarball : a)), ...extra];
  c.log += `\n$ ${[tool, ...args].join(' ')}\n`;
  const child = spawn(TOOLS[tool] ?? tool, args, { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  groups.add(child.pid);
  const state = { child, output: '', stdout: '', exited: null };
  const onData = (chunk) => {
    const text = chunk.toString();
    state.output += text;
    c.log += text;
  };
  child.stdout.on('data', (chunk) => {
    state.stdout += chunk.toString();
    onData(chunk);
  });
  child.stderr.on('data', onData);
  state.done = new Promise((done) => {
    child.once('error', (error) => {
      state.exited = { code: null, error };
      done(state.exited);
    });
    child.once('close', (code, signal) => {
      state.exited = { code, signal };
      done(state.exited);
    });
  });
  return state;
}

/** Ends a started process and its group: SIGTERM, then SIGKILL after `graceMs`. */
async function stop(state, graceMs = 5000) {
  const pid = state.child.pid;
  if (pid === undefined) return;
  if (!state.exited) {
    killGroup(pid, 'SIGTERM');
    await Promise.race([state.done, timeout(graceMs)]);
  }
  killGroup(pid, 'SIGKILL');
  groups.delete(pid);
}

/** Runs a command to completion; throws with its output when it fails or outlasts `timeoutMs`. */
async function run(c, argv, { cwd = c.dir, env = c.env, timeoutMs = 240_000, extra = [] } = {}) {
  const state = start(c, argv, { cwd, env, extra });
  const remaining = Math.max(1000, Math.min(timeoutMs, deadline - performance.now()));
  const result = await Promise.race([state.done, timeout(remaining).then(() => null)]);
  await stop(state, 1000);
  const shown = argv.join(' ');
  if (result === null)
    throw new StepError(`${shown}: still running after ${Math.round(remaining / 1000)} s`, state.output);
  if (result.error) throw new StepError(`${shown}: ${result.error.message}`, state.output);
  if (result.code !== 0) throw new StepError(`${shown}: exit ${result.code ?? result.signal}`, state.output);
  return state.stdout;
}

/** Starts a server and waits until `ready(state)` holds; throws with its output if it exits or never gets there. */
async function serve(c, argv, { cwd = c.dir, env = c.env, extra = [], ready, timeoutMs = 60_000 }) {
  const state = start(c, argv, { cwd, env, extra });
  c.servers.push(state);
  c.served.push(state);
  const until = performance.now() + timeoutMs;
  while (performance.now() < until) {
    if (state.exited)
      throw new StepError(`${argv.join(' ')}: exited (${state.exited.code ?? state.exited.signal})`, state.output);
    if (await ready(state).catch(() => false)) return state;
    await sleep(200);
  }
  throw new StepError(`${argv.join(' ')}: not ready after ${timeoutMs / 1000} s`, state.output);
}

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
/** A sleep that does not keep the process alive: for races against a process that does. */
const timeout = (ms) => new Promise((done) => setTimeout(done, ms).unref());

function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

/** Any HTTP answer at all (a 404 included) means the server is up. */
const answers = (url) => async () => {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  await res.arrayBuffer();
  return true;
};

// ---------------------------------------------------------------------------------------------------------------
// Deliveries: signed here with node:crypto over the exact bytes sent.

const signature = (secret, bytes) => createHmac('sha256', secret).update(bytes).digest('hex');

function payload(customerId) {
  return {
    event: 'customer.created',
    data: {
      customer_id: customerId,
      reference_id: 'user_consumer',
      contact: { phone: null, email: 'ada@example.com', first_name: 'Ada', last_name: 'Lovelace' },
      subscription: { subscription_id: 'sub_consumer', plan_id: 'plan_pro', name: 'Pro', status: 'active' },
      metadata: {},
      created_at: new Date().toISOString(),
    },
  };
}

async function post(url, body, sig) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-webhook-signature': sig },
    body,
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  return { status: res.status, text };
}

function expectAnswer(what, got, status, json) {
  let parsed;
  try {
    parsed = JSON.parse(got.text);
  } catch {
    parsed = undefined;
  }
  if (got.status !== status || JSON.stringify(parsed) !== JSON.stringify(json)) {
    throw new StepError(
      `${what}: expected ${status} ${JSON.stringify(json)}, got ${got.status} ${got.text.slice(0, 300)}`,
    );
  }
}

async function waitFor(what, fn, timeoutMs) {
  const until = performance.now() + timeoutMs;
  let last;
  while (performance.now() < until) {
    last = await fn().catch((error) => error);
    if (last === true) return;
    await sleep(100);
  }
  throw new StepError(`${what}: not within ${timeoutMs / 1000} s${last instanceof Error ? ` (${last.message})` : ''}`);
}

/** Customers' handler runs, from a marker file of `<customer_id> <attempt>` lines. */
const markerRuns = (file) => async (customerId) =>
  existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l.startsWith(`${customerId} `)).length
    : 0;

/**
 * The two delivery columns. `runs(customerId)` counts the handler's runs for that customer; `health` (optional) is
 * the receiver's /healthz URL and the store it must name.
 */
async function deliverTwice(c, { url, runs, health, label = c.name }) {
  const customerId = `cus_${label.replace(/\W/g, '_')}_${randomBytes(4).toString('hex')}`;
  const body = Buffer.from(JSON.stringify(payload(customerId)));
  const signed = signature(SECRET, body);
  await stage(c, 'delivery', async () => {
    if (health) {
      const res = await fetch(health.url);
      const got = { status: res.status, text: await res.text() };
      expectAnswer('GET /healthz', got, 200, { status: 'ok', store: health.store });
    }
    expectAnswer('a forged signature', await post(url, body, signature('whsec_not_ours', body)), 401, {
      error: 'invalid signature',
    });
    expectAnswer('a new delivery', await post(url, body, signed), 200, { received: true });
    const t0 = performance.now();
    await waitFor('the handler to run', async () => (await runs(customerId)) >= 1, 15_000);
    const n = await runs(customerId);
    if (n !== 1) throw new StepError(`the handler ran ${n} times for one delivery`);
    return `${label}: handler seen ${Math.round(performance.now() - t0)} ms after the 200`;
  });
  await stage(c, 'duplicate', async () => {
    expectAnswer('the same bytes again', await post(url, body, signed), 200, { received: true, duplicate: true });
    await sleep(1500);
    const n = await runs(customerId);
    if (n !== 1) throw new StepError(`the handler ran ${n} times after a duplicate delivery (expected once)`);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// The consumers. `install`, `check`, `build` and `start` are the commands a user types (docs/embedding.md shows them
// with the package name where PKG stands); `docs` maps a template file to the lines of it the docs must show.

function tcpReachable(host, port, timeoutMs = 2000) {
  return new Promise((done) => {
    const socket = connect({ host, port });
    const finish = (ok) => {
      socket.destroy();
      done(ok);
    };
    socket.setTimeout(timeoutMs, () => finish(false));
    socket.once('connect', () => finish(true));
    socket.once('error', () => finish(false));
  });
}

const PG_URL = process.env.LAVA_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

const binMissing = (tool) => (existsSync(TOOLS[tool]) ? null : `node_modules/.bin/${tool} is missing (run npm ci)`);

/** A Node or Bun or Deno server: it reads PORT and LAVA_MARKER, and its /healthz names its store. */
async function longRunning(c, argv, store, env = {}) {
  const port = await freePort();
  const marker = join(c.dir, 'handled.log');
  const base = `http://127.0.0.1:${port}`;
  await stage(c, 'start', () =>
    serve(c, argv, {
      env: { ...c.env, PORT: String(port), LAVA_MARKER: marker, ...env },
      ready: answers(`${base}/healthz`),
    }),
  );
  await deliverTwice(c, {
    url: `${base}/webhooks/lava`,
    runs: markerRuns(marker),
    health: { url: `${base}/healthz`, store },
  });
}

const nodeImports = [
  "import { serve } from '@hono/node-server';",
  'const server = serve({ fetch: lava.fetch, port: Number(process.env.PORT ?? 3000) });',
  'lava.start();',
];

const CONSUMERS = [
  {
    name: 'nextjs',
    title: 'Next.js App Router: node route with after(), edge route',
    install: [
      ['npm', 'install', PKG, 'next', 'react', 'react-dom'],
      ['npm', 'install', '-D', 'typescript', '@types/node', '@types/react'],
    ],
    check: [['npx', 'tsc', '--noEmit']],
    build: [['npx', 'next', 'build']],
    start: ['npx', 'next', 'start'],
    docs: {
      'app/api/webhooks/lava/route.ts': [
        "import { after } from 'next/server';",
        "export const runtime = 'nodejs';",
        'export async function POST(request: Request): Promise<Response> {',
        '  return getLava().fetch(request, undefined, { waitUntil: (p: Promise<unknown>) => after(p) });',
      ],
      'lib/lava.ts': [
        "import { type LavaWebhooks, createLavaWebhooks, memoryStore } from 'lava-webhooks';",
        "    path: '/api/webhooks/lava',",
      ],
      'app/api/webhooks/lava-edge/route.ts': ["export const runtime = 'edge';"],
    },
    async exercise(c) {
      const port = await freePort();
      const marker = join(c.dir, 'handled.log');
      const base = `http://127.0.0.1:${port}`;
      await stage(c, 'start', async () => {
        for (const argv of this.build) await run(c, argv);
        // The edge route was built as an edge function, with the package bundled into it; the node route was not.
        const manifest = JSON.parse(readFileSync(join(c.dir, '.next/server/middleware-manifest.json'), 'utf8'));
        const edge = manifest.functions?.['/api/webhooks/lava-edge/route'];
        if (!edge) throw new StepError('next build made no edge function for /api/webhooks/lava-edge');
        if (!edge.files.some((f) => f.includes('lava-webhooks'))) {
          throw new StepError(`the edge function bundles no lava-webhooks chunk: ${edge.files.join(', ')}`);
        }
        if (manifest.functions['/api/webhooks/lava/route']) throw new StepError('the nodejs route was built for edge');
        await serve(c, this.start, {
          extra: ['-p', String(port), '-H', '127.0.0.1'],
          env: { ...c.env, LAVA_MARKER: marker },
          ready: answers(`${base}/api/webhooks/lava-edge`),
        });
      });
      await deliverTwice(c, { url: `${base}/api/webhooks/lava`, runs: markerRuns(marker) });
      // The edge route: the same answers from the memory store in Next's edge runtime; its GET lists the customers
      // its handler saw.
      await deliverTwice(c, {
        label: 'nextjs-edge',
        url: `${base}/api/webhooks/lava-edge`,
        runs: async (customerId) => {
          const res = await fetch(`${base}/api/webhooks/lava-edge`);
          const { handled } = await res.json();
          return handled.filter((id) => id === customerId).length;
        },
      });
      c.notes.push('node and edge routes');
    },
  },
  {
    name: 'workers',
    title: 'Cloudflare Worker: wrangler bundle, workerd (miniflare), memory store',
    install: [
      ['npm', 'install', PKG],
      ['npm', 'install', '-D', 'wrangler', 'typescript'],
    ],
    check: [['npx', 'tsc', '--noEmit']],
    build: [['npx', 'wrangler', 'deploy', '--dry-run', '--outdir', 'dist']],
    docs: {
      'src/worker.ts': [
        "import { type LavaWebhooks, createLavaWebhooks, memoryStore } from 'lava-webhooks';",
        '    return getLava(env).fetch(request, env, ctx);',
      ],
    },
    async exercise(c) {
      const [port, controlPort] = [await freePort(), await freePort()];
      let urls;
      await stage(c, 'start', async () => {
        for (const argv of this.build) await run(c, argv);
        if (!existsSync(join(c.dir, 'dist', 'worker.js'))) throw new StepError('wrangler wrote no dist/worker.js');
        writeFileSync(join(c.dir, 'miniflare-serve.mjs'), readFileSync(join(HERE, 'miniflare-serve.mjs')));
        const server = await serve(
          c,
          ['node', 'miniflare-serve.mjs', 'dist/worker.js', String(port), String(controlPort)],
          {
            ready: async (s) => /^READY /m.test(s.output),
          },
        );
        urls = JSON.parse(/^READY (.*)$/m.exec(server.output)[1]);
      });
      const base = urls.url.replace(/\/$/, '');
      await deliverTwice(c, {
        url: `${base}/webhooks/lava`,
        health: { url: `${base}/healthz`, store: 'memory' },
        runs: async (customerId) => {
          const res = await fetch(`${urls.control}/kv?prefix=${encodeURIComponent(`handled:${customerId}:`)}`);
          return (await res.json()).keys.length;
        },
      });
    },
  },
  {
    name: 'node-postgres',
    title: 'Node 20 ESM (tsc, node): Postgres store with postgres.js',
    async skip() {
      const url = new URL(PG_URL);
      const ok = await tcpReachable(url.hostname, Number(url.port || 5432));
      return ok ? null : `PostgreSQL is not reachable at ${url.hostname}:${url.port || 5432} (set LAVA_TEST_PG_URL)`;
    },
    install: [
      ['npm', 'install', PKG, '@hono/node-server', 'postgres'],
      ['npm', 'install', '-D', 'typescript', '@types/node'],
    ],
    check: [['npx', 'tsc']],
    start: ['node', 'dist/server.js'],
    docs: {
      'src/server.ts': [
        ...nodeImports,
        "import { postgresStore } from 'lava-webhooks/stores/postgres';",
        "import postgres from 'postgres';",
        "import { createLavaWebhooks } from 'lava-webhooks';",
      ],
    },
    async exercise(c) {
      const schema = `lava_consumer_${process.pid}_${randomBytes(3).toString('hex')}`;
      c.notes.push(`schema ${schema}`);
      const drop = () => dropSchema(c, schema);
      outsideCleanups.add(drop);
      try {
        await longRunning(c, this.start, 'postgres', { DATABASE_URL: PG_URL, PG_SCHEMA: schema });
      } finally {
        for (const s of c.servers.splice(0)) await stop(s);
        outsideCleanups.delete(drop);
        await drop();
      }
    },
  },
  {
    name: 'node-memory',
    title: 'Node 20 ESM (tsc, node): memory store, @hono/node-server',
    install: [
      ['npm', 'install', PKG, '@hono/node-server'],
      ['npm', 'install', '-D', 'typescript', '@types/node'],
    ],
    check: [['npx', 'tsc']],
    start: ['node', 'dist/server.js'],
    readme: true,
    docs: {
      'src/server.ts': [...nodeImports, "import { createLavaWebhooks, memoryStore } from 'lava-webhooks';"],
    },
    exercise(c) {
      return longRunning(c, this.start, 'memory');
    },
  },
  {
    name: 'bun-sqlite',
    title: 'Bun: SQLite store (bun:sqlite), Bun.serve',
    skip: async () => binMissing('bun'),
    install: [
      ['bun', 'add', PKG],
      ['bun', 'add', '-d', '@types/bun', 'typescript'],
    ],
    check: [['bun', 'x', 'tsc', '--noEmit']],
    start: ['bun', 'run', 'server.ts'],
    docs: {
      'server.ts': [
        "import { createLavaWebhooks } from 'lava-webhooks';",
        "import { sqliteStore } from 'lava-webhooks/stores/sqlite';",
        "  store: sqliteStore({ path: './data/lava.sqlite' }),",
        'const server = Bun.serve({ port: Number(process.env.PORT ?? 3000), fetch: lava.fetch });',
      ],
    },
    exercise(c) {
      return longRunning(c, this.start, 'sqlite');
    },
  },
  {
    name: 'deno-kv',
    title: 'Deno: npm: specifier, Deno KV store, Deno.serve',
    skip: async () => binMissing('deno'),
    install: [['npm', 'install', PKG]],
    check: [['deno', 'check', 'main.ts']],
    start: ['deno', 'run', '--unstable-kv', '--allow-net', '--allow-env', '--allow-read', '--allow-write', 'main.ts'],
    docs: {
      'deno.json': ['"nodeModulesDir": "manual"'],
      'main.ts': [
        "import { createLavaWebhooks } from 'npm:lava-webhooks';",
        "import { denoKvStore } from 'npm:lava-webhooks/stores/deno-kv';",
        "  store: denoKvStore({ path: './lava.kv' }),",
        "const server = Deno.serve({ port: Number(Deno.env.get('PORT') ?? 3000) }, lava.fetch);",
      ],
    },
    exercise(c) {
      return longRunning(c, this.start, 'deno-kv');
    },
  },
];

/** Drops the consumer's schema with the postgres.js the consumer installed (none of this repository's modules). */
async function dropSchema(c, schema) {
  const entry = join(c.dir, 'node_modules', 'postgres');
  if (!existsSync(entry)) return;
  const script = `import postgres from 'postgres';
const sql = postgres(process.env.DATABASE_URL, { max: 1, onnotice: () => {} });
await sql.unsafe('DROP SCHEMA IF EXISTS "${schema}" CASCADE');
await sql.end();`;
  writeFileSync(join(c.dir, 'drop-schema.mjs'), script);
  try {
    await run(c, ['node', 'drop-schema.mjs'], { env: { ...c.env, DATABASE_URL: PG_URL }, timeoutMs: 30_000 });
    c.notes.push('schema dropped');
  } catch (error) {
    c.notes.push(`could not drop schema ${schema}: ${error.message}`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Stages, the table, and the docs check.

const COLUMNS = [
  ['install', 'install'],
  ['check', 'type-check'],
  ['start', 'build + start'],
  ['delivery', '200 + handler ran'],
  ['duplicate', 'duplicate'],
  ['log', 'no uncaught error'],
];

/** How Node, Next.js, Bun, Deno and workerd report an error nobody caught (a rejection included). */
const UNCAUGHT = /unhandled ?rejection|uncaught ?exception|uncaught \(in promise\)|unhandled promise rejection/i;

async function stage(c, column, fn) {
  const t0 = performance.now();
  try {
    const note = await fn();
    const ms = performance.now() - t0;
    const cell = c.cells[column];
    // A column run twice (the Next.js node and edge routes) shows both times.
    c.cells[column] = {
      status: 'ok',
      text: cell?.status === 'ok' ? `${cell.text} + ${(ms / 1000).toFixed(1)}s` : `ok ${(ms / 1000).toFixed(1)}s`,
    };
    if (typeof note === 'string') c.notes.push(note);
  } catch (error) {
    c.cells[column] = { status: 'FAIL', text: 'FAIL' };
    c.failure ??= { column, error };
    throw error;
  }
}

async function runConsumer(c) {
  const t0 = performance.now();
  try {
    const reason = c.def.skip ? await c.def.skip() : null;
    if (reason) {
      c.skipped = reason;
      return;
    }
    c.dir = join(workRoot, c.name);
    cpSync(join(TEMPLATES, c.name), c.dir, { recursive: true });
    c.env = consumerEnv({ LAVA_WEBHOOK_SECRET: SECRET, DENO_DIR: join(c.dir, '.deno') });
    await stage(c, 'install', async () => {
      for (const argv of c.def.install) await run(c, argv);
      const installed = JSON.parse(readFileSync(join(c.dir, 'node_modules', 'lava-webhooks', 'package.json'), 'utf8'));
      return `lava-webhooks ${installed.version}`;
    });
    await stage(c, 'check', async () => {
      for (const argv of c.def.check) await run(c, argv);
    });
    await c.def.exercise.call(c.def, c);
    await stage(c, 'log', async () => {
      const errors = c.served.flatMap((server) => plain(server.output).split('\n')).filter((l) => UNCAUGHT.test(l));
      if (errors.length > 0) {
        const output = c.served.map((server) => server.output).join('\n');
        throw new StepError(`the server reported an uncaught error: ${errors[0].trim()}`, output);
      }
    });
  } catch (error) {
    c.failure ??= { column: 'setup', error };
  } finally {
    for (const s of c.servers.splice(0)) await stop(s);
    c.ms = performance.now() - t0;
    if (opts.keep && c.dir) writeFileSync(join(workRoot, `${c.name}.log`), plain(c.log));
    if (c.dir && !opts.keep) rmSync(c.dir, { recursive: true, force: true });
  }
}

/** Every command and template line a consumer lists must be in docs/embedding.md (and README.md for `readme`). */
function checkDocs() {
  const problems = [];
  const docs = {
    'docs/embedding.md': readFileSync(join(ROOT, 'docs', 'embedding.md'), 'utf8'),
    'README.md': readFileSync(join(ROOT, 'README.md'), 'utf8'),
  };
  // A line as shown: trimmed, without a trailing `// comment` (docs annotate lines the templates leave bare).
  const lines = (text) => new Set(text.split('\n').map((l) => l.replace(/\s+\/\/ .*$/, '').trim()));
  const docLines = Object.fromEntries(Object.entries(docs).map(([k, v]) => [k, lines(v)]));
  for (const def of CONSUMERS) {
    const wanted = [];
    for (const argv of [...def.install, ...def.check, ...(def.build ?? []), ...(def.start ? [def.start] : [])]) {
      wanted.push({ kind: 'command', text: argv.map((a) => (a === PKG ? 'lava-webhooks' : a)).join(' ') });
    }
    for (const [file, fileLines] of Object.entries(def.docs)) {
      const template = lines(readFileSync(join(TEMPLATES, def.name, file), 'utf8'));
      for (const line of fileLines) {
        if (!template.has(line.trim())) problems.push(`${def.name}: ${file} has no line \`${line.trim()}\``);
        wanted.push({ kind: 'line', text: line.trim() });
      }
    }
    for (const doc of ['docs/embedding.md', ...(def.readme ? ['README.md'] : [])]) {
      for (const w of wanted) {
        const found = w.kind === 'command' ? docs[doc].includes(w.text) : docLines[doc].has(w.text);
        if (!found) problems.push(`${doc} lacks ${def.name}'s ${w.kind} \`${w.text}\``);
      }
    }
  }
  return problems;
}

function pad(text, width) {
  return text + ' '.repeat(Math.max(0, width - text.length));
}

function table(results) {
  const header = ['consumer', ...COLUMNS.map(([, title]) => title), 'time'];
  const rows = results.map((c) => {
    if (c.skipped) return [c.name, ...COLUMNS.map(() => 'skip'), '-'];
    return [
      c.name,
      ...COLUMNS.map(([key]) => c.cells[key]?.text ?? (c.failure ? '-' : '?')),
      `${(c.ms / 1000).toFixed(1)}s`,
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells) => `| ${cells.map((cell, i) => pad(cell, widths[i])).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

// ---------------------------------------------------------------------------------------------------------------

async function pack() {
  if (opts.tarball) return resolve(opts.tarball);
  const dest = join(workRoot, 'pack');
  mkdirSync(dest);
  // With lifecycle scripts, as `npm publish` would: `prepack` builds dist/.
  const t0 = performance.now();
  const c = { name: 'pack', log: '', servers: [] };
  const out = await run(c, ['npm', 'pack', '--json', '--pack-destination', dest], {
    cwd: ROOT,
    env: consumerEnv(),
    timeoutMs: 300_000,
  }).catch((error) => {
    console.error(`npm pack failed: ${error.message}\n${tail(error.output ?? '', 40)}`);
    process.exit(1);
  });
  // The build's own output comes first; npm's JSON is the last thing printed, starting on a line of its own.
  const json = JSON.parse(out.slice(out.search(/^\[\s*$/m)));
  const files = json[0].files.map((f) => f.path);
  const seconds = ((performance.now() - t0) / 1000).toFixed(1);
  console.log(
    `packed ${json[0].filename} in ${seconds}s: ${files.length} files, ${(json[0].size / 1024).toFixed(0)} KiB`,
  );
  return join(dest, json[0].filename);
}

/** Why the consumers cannot install their dependencies here, or null: `npm ping` answers when the registry does. */
async function registryUnreachable() {
  const c = { name: 'ping', log: '', servers: [] };
  try {
    await run(c, ['npm', 'ping', '--fetch-retries=0', '--fetch-timeout=15000'], {
      cwd: workRoot,
      env: consumerEnv(),
      timeoutMs: 20_000,
    });
    return null;
  } catch (error) {
    const lines = plain(error.output ?? '').split('\n');
    const why = (lines.find((l) => l.includes('FetchError')) ?? lines.find((l) => /npm error code /.test(l)))?.replace(
      /^npm error /,
      '',
    );
    return `the npm registry is out of reach (npm ping: ${why || error.message}); the projects install from it`;
  }
}

async function main() {
  const only = opts.only ? new Set(opts.only.split(',')) : null;
  const defs = CONSUMERS.filter((d) => !only || only.has(d.name));
  if (only && defs.length !== only.size) {
    console.error(`unknown consumer in --only; known: ${CONSUMERS.map((d) => d.name).join(', ')}`);
    process.exit(2);
  }

  const docProblems = checkDocs();
  console.log(docProblems.length === 0 ? 'docs: every consumer command and line is in the docs' : 'docs: out of step');
  for (const p of docProblems) console.log(`  ${p}`);
  if (opts['docs-only']) process.exit(docProblems.length === 0 ? 0 : 1);

  const exportsMap = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).exports;
  if (!JSON.stringify(exportsMap).includes('./dist/')) {
    console.log('note: package.json exports do not point at dist/: the tarball ships TypeScript sources');
  }

  workRoot = mkdtempSync(join(tmpdir(), 'lava-consumers-'));
  const offline = await registryUnreachable();
  const tarball = offline ? '' : await pack();

  const results = defs.map((def) => ({
    name: def.name,
    def,
    tarball,
    cells: {},
    notes: [],
    servers: [],
    served: [],
    log: '',
    dir: '',
  }));
  const queue = [...results];
  const jobs = Math.max(1, Number(opts.jobs));
  await Promise.all(
    Array.from({ length: Math.min(jobs, queue.length) }, async () => {
      for (let c = queue.shift(); c; c = queue.shift()) {
        if (offline) {
          c.skipped = offline;
          continue;
        }
        if (performance.now() > deadline) {
          c.failure = { column: 'setup', error: new StepError(`not started: past the ${opts.timeout} s budget`) };
          c.ms = 0;
          continue;
        }
        console.log(`[start] ${c.name}: ${c.def.title}`);
        await runConsumer(c);
        console.log(
          `[${c.skipped ? 'skip' : c.failure ? 'FAIL' : 'done'}] ${c.name} (${((c.ms ?? 0) / 1000).toFixed(1)}s)`,
        );
      }
    }),
  );

  console.log(`\n${table(results)}\n`);
  for (const c of results) {
    if (c.skipped) console.log(`skipped ${c.name}: ${c.skipped}`);
    else if (c.notes.length) console.log(`${c.name}: ${c.notes.join('; ')}`);
  }
  const failed = results.filter((c) => c.failure);
  for (const c of failed) {
    console.log(`\nFAILED ${c.name} at ${c.failure.column}: ${c.failure.error.message}`);
    const output = c.failure.error.output || c.log;
    if (output) console.log(tail(output, 40).replace(/^/gm, '    '));
  }
  if (opts.keep) console.log(`\nkept ${workRoot} (projects and their logs)`);
  console.log(`\nconsumers: ${((performance.now() - started) / 1000).toFixed(1)}s in total`);
  if (failed.length > 0 || docProblems.length > 0) process.exitCode = 1;
}

await main();
