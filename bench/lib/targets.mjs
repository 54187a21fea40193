// What the benchmark runs: every target by its one-letter id. `ours` marks our server (it has /metrics);
// `baseline` names the minimal receiver on the same runtime and storage each of ours is held against.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, NOOP_HANDLERS, PG_URL, ROOT } from './config.mjs';

export const bun = join(BIN, 'bun');
export const deno = join(BIN, 'deno');
const node = process.execPath;
export const server = () => [bun, 'run', 'src/server.ts'];
/** Ours with deliveries routed through the Hono chain (src/http/delivery-chain.ts), the fast path's comparison point. */
const serverChain = () => [bun, 'run', '--preload', './src/http/use-delivery-chain.ts', 'src/server.ts'];
/**
 * What every run of ours gets: no-op handlers, so the worker's cost is our machinery only; BENCH_CONCURRENCY sets
 * LAVA_WEBHOOK_CONCURRENCY (default: ours' own default, 8).
 */
export const oursEnv = {
  LAVA_WEBHOOK_HANDLERS: NOOP_HANDLERS,
  ...(process.env.BENCH_CONCURRENCY ? { LAVA_WEBHOOK_CONCURRENCY: process.env.BENCH_CONCURRENCY } : {}),
};
const sqlite = (file, durability) => (dir) => ({
  ...oursEnv,
  LAVA_WEBHOOK_STORE: 'sqlite',
  LAVA_WEBHOOK_DB: join(dir, file),
  ...(durability ? { LAVA_WEBHOOK_DURABILITY: durability } : {}),
});
const minimalSqlite = (file, synchronous) => (dir) => ({ BENCH_DB: join(dir, file), BENCH_SYNCHRONOUS: synchronous });

export const TARGETS = {
  a: { name: 'bare Bun server (reads the body, 200)', cmd: () => [bun, 'bench/targets/bare-bun.ts'] },
  // Measured only for its cold start, right after ours' (c), as the least a cold start of ours can take: no server
  // built on hono and zod answers before it has imported them.
  az: {
    name: 'the bare Bun server (a) once it has imported hono and zod, the packages ours is built on',
    cmd: () => [bun, 'bench/targets/bare-bun.ts'],
    env: () => ({ BENCH_PRELOAD: 'hono,zod' }),
  },
  b: {
    name: "Lava's documented Express receiver on Node (Express 5, express.raw)",
    cmd: () => [node, 'bench/targets/express-node.mjs'],
  },
  n: {
    name: 'the same receiver logic on bare node:http (no Express)',
    cmd: () => [node, 'bench/targets/express-style-node.mjs'],
  },
  h: {
    name: '@octokit/webhooks createWebMiddleware on Bun',
    cmd: () => [bun, 'bench/targets/octokit-bun.ts'],
    mode: 'github',
  },
  m: {
    name: 'a minimal receiver on Bun that keeps each event in a Map (native HMAC, JSON.parse; no validation, no handlers)',
    cmd: () => [bun, 'bench/targets/minimal-bun.ts'],
  },
  s: {
    name: 'minimal durable receiver on Bun: SQLite WAL, synchronous=NORMAL, group commit',
    cmd: () => [bun, 'bench/targets/sqlite-bun.ts'],
    env: minimalSqlite('s.sqlite', 'NORMAL'),
  },
  t: {
    name: 'minimal durable receiver on Bun: SQLite WAL, synchronous=FULL, group commit',
    cmd: () => [bun, 'bench/targets/sqlite-bun.ts'],
    env: minimalSqlite('t.sqlite', 'FULL'),
  },
  k: {
    name: 'minimal durable receiver on Deno: Deno KV, atomic insert-if-absent, group commit',
    cmd: () => [deno, 'run', '-A', 'bench/targets/kv-deno.ts'],
    env: (dir) => ({ BENCH_KV: join(dir, 'k.kv') }),
  },
  q: {
    name: 'minimal durable receiver on Bun: Postgres (Bun SQL), one multi-row INSERT a turn',
    cmd: () => [bun, 'bench/targets/postgres-bun.ts'],
    env: (_dir, ctx) => ({ DATABASE_URL: PG_URL, BENCH_PG_SCHEMA: ctx.schema }),
    postgres: true,
  },
  // The same three, recording each event's (no-op) run as well, in their next commit (BENCH_RUNS=1): the least a
  // receiver that runs what it acked, and knows after a restart what is left to run, must do. Not what ours is
  // judged by; they show how much of ours' distance from t, k and q that one more write costs by itself.
  tr: {
    name: 'minimal durable receiver on Bun that also records each run: SQLite WAL, synchronous=FULL, group commit',
    cmd: () => [bun, 'bench/targets/sqlite-bun.ts'],
    env: (dir) => ({ ...minimalSqlite('tr.sqlite', 'FULL')(dir), BENCH_RUNS: '1' }),
    baseline: 't',
  },
  kr: {
    name: 'minimal durable receiver on Deno that also records each run: Deno KV, group commit',
    cmd: () => [deno, 'run', '-A', 'bench/targets/kv-deno.ts'],
    env: (dir) => ({ BENCH_KV: join(dir, 'kr.kv'), BENCH_RUNS: '1' }),
    baseline: 'k',
  },
  qr: {
    name: 'minimal durable receiver on Bun that also records each run: Postgres (Bun SQL)',
    cmd: () => [bun, 'bench/targets/postgres-bun.ts'],
    env: (_dir, ctx) => ({ DATABASE_URL: PG_URL, BENCH_PG_SCHEMA: ctx.schema, BENCH_RUNS: '1' }),
    postgres: true,
    baseline: 'q',
  },
  c: {
    name: 'ours, memory store (Bun)',
    cmd: server,
    env: () => ({ ...oursEnv, LAVA_WEBHOOK_STORE: 'memory' }),
    ours: true,
    baseline: 'm',
    coldFloor: 'az',
  },
  d: {
    name: 'ours, SQLite synchronous=NORMAL (Bun)',
    cmd: server,
    env: sqlite('d.sqlite', 'normal'),
    ours: true,
    baseline: 's',
  },
  // The idiomatic Hono chain against the fast path of (c) and (d): run them in the same rounds (BENCH_TARGETS=c,ci,d,di);
  // each row's "× its baseline" is then chain ÷ fast path, round by round. docs/architecture.md has the last figures.
  ci: {
    name: 'ours, memory store (Bun), deliveries through the Hono chain (zValidator)',
    cmd: serverChain,
    env: () => ({ ...oursEnv, LAVA_WEBHOOK_STORE: 'memory' }),
    ours: true,
    baseline: 'c',
  },
  di: {
    name: 'ours, SQLite synchronous=NORMAL (Bun), deliveries through the Hono chain (zValidator)',
    cmd: serverChain,
    env: sqlite('di.sqlite', 'normal'),
    ours: true,
    baseline: 'd',
  },
  e: {
    name: 'ours, SQLite synchronous=FULL (Bun)',
    cmd: server,
    env: sqlite('e.sqlite', 'full'),
    ours: true,
    baseline: 't',
  },
  f: {
    name: 'ours on Deno, Deno KV',
    cmd: (port) => [deno, 'serve', '-A', '--port', String(port), '--host', '127.0.0.1', 'src/server.ts'],
    env: (dir) => ({ ...oursEnv, LAVA_WEBHOOK_STORE: 'kv', LAVA_WEBHOOK_KV: join(dir, 'f.kv') }),
    ours: true,
    baseline: 'k',
    missing: () =>
      ['src/stores/deno-kv/mod.ts', 'src/stores/deno-kv.ts'].some((p) => existsSync(join(ROOT, p)))
        ? null
        : 'the Deno KV store is not there',
  },
  g: {
    name: 'ours, Postgres (Bun)',
    cmd: server,
    env: (_dir, ctx) => ({
      ...oursEnv,
      LAVA_WEBHOOK_STORE: 'postgres',
      DATABASE_URL: PG_URL,
      LAVA_WEBHOOK_PG_SCHEMA: ctx.schema,
    }),
    ours: true,
    baseline: 'q',
    postgres: true,
  },
};

// An earlier build of ours beside this one, in the same rounds: BENCH_BASE=<a checkout of another commit> adds cb, eb,
// fb and gb (memory, SQLite at FULL, Deno KV, Postgres), each measured against this build's c, e, f and g, so "× its baseline" is
// before ÷ after, round by round. The earlier build runs with this build's no-op handlers and the same settings.
const BASE = process.env.BENCH_BASE;
if (BASE) {
  const baseServer = () => [bun, 'run', join(BASE, 'src/server.ts')];
  const label = `the build in ${BASE}`;
  TARGETS.cb = { ...TARGETS.c, name: `${TARGETS.c.name}, ${label}`, cmd: baseServer, baseline: 'c' };
  TARGETS.eb = {
    ...TARGETS.e,
    name: `${TARGETS.e.name}, ${label}`,
    cmd: baseServer,
    env: sqlite('eb.sqlite', 'full'),
    baseline: 'e',
  };
  TARGETS.gb = { ...TARGETS.g, name: `${TARGETS.g.name}, ${label}`, cmd: baseServer, baseline: 'g' };
  TARGETS.fb = {
    ...TARGETS.f,
    name: `${TARGETS.f.name}, ${label}`,
    cmd: (port) => [deno, 'serve', '-A', '--port', String(port), '--host', '127.0.0.1', join(BASE, 'src/server.ts')],
    env: (dir) => ({ ...oursEnv, LAVA_WEBHOOK_STORE: 'kv', LAVA_WEBHOOK_KV: join(dir, 'fb.kv') }),
    baseline: 'f',
  };
}
