// The benchmark's settings (environment knobs, listed in run.mjs' header), where things are, and the supply of
// unique signed events every run draws from.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { prepare } from '../events.mjs';

export const ROOT = resolve(import.meta.dirname, '..', '..');
export const BIN = join(ROOT, 'node_modules', '.bin');
const env = process.env;
const num = (name, fallback) => (env[name] !== undefined && env[name] !== '' ? Number(env[name]) : fallback);
const ids = (name, fallback) =>
  (env[name] ?? fallback)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

export const DURATION = num('BENCH_DURATION', 5);
export const ROUNDS = Math.max(1, num('BENCH_ROUNDS', 3));
export const WARMUP = num('BENCH_WARMUP', 2);
export const CONNECTIONS = num('BENCH_CONNECTIONS', 64);
export const THREADS = num('BENCH_WRK_THREADS', 1);
// Each of ours next to the minimal receiver it is held against, so the two run close together in every round.
export const TARGET_IDS = ids('BENCH_TARGETS', 'a,b,n,h,m,c,s,d,t,tr,e,k,kr,f,q,qr,g');
export const MEMORY_EVENTS = num('BENCH_MEMORY_EVENTS', 1_000_000);
export const MEMORY_STORE = env.BENCH_MEMORY_STORE ?? 'sqlite';
export const MEMORY_RETENTION = env.BENCH_MEMORY_RETENTION ?? '5s';
export const COLD_RUNS = num('BENCH_COLD_RUNS', 5);
export const DRAIN = num('BENCH_DRAIN', 3);
export const PACED = num('BENCH_PACED', 0.25);
export const PACED_RATE = num('BENCH_PACED_RATE', 5000);
export const PACED_IDS = ids('BENCH_PACED_TARGETS', 'a,h,c,d');
export const HALF = num('BENCH_HALF', 0.5);
export const HALF_IDS = ids('BENCH_HALF_TARGETS', 'e,t,d,s');
export const E2E_SECONDS = num('BENCH_E2E_SECONDS', 30);
export const E2E_LOAD = num('BENCH_E2E_LOAD', 0.8);
export const E2E_IDS = ids('BENCH_E2E_TARGETS', 'c,d,e,f,g');
export const PG_URL = env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
export const RESULTS = env.BENCH_RESULTS ?? join(ROOT, 'bench', 'RESULTS.md');
export const NCPU = cpus().length;
export const SERVER_CPUS = env.BENCH_SERVER_CPUS ?? '0';
export const LOAD_CPUS = env.BENCH_LOAD_CPUS ?? (NCPU > 1 ? '1' : '0');
// An upper bound on what one server core can take, to size the supply of unique events.
const MAX_RATE = num('BENCH_MAX_RATE', 150_000);
// The same for ours paced end to end (80 % of its capacity, far below the bare server's).
const E2E_MAX_RATE = num('BENCH_E2E_MAX_RATE', 40_000);
export const PATH = '/webhooks/lava';
/** No-op handlers for ours, so what ours runs after the ack is its own machinery only. */
export const NOOP_HANDLERS = join(ROOT, 'bench', 'noop-handlers.mjs');

// ---- Preconditions ----

export function have(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}
if (!have('wrk')) {
  console.error('bench: wrk is not installed — on Debian/Ubuntu: apt-get update && apt-get install -y wrk');
  process.exit(2);
}
export const pin = have('taskset') && NCPU > 1;
if (!pin) console.warn('bench: not pinning (taskset missing or one core): figures will be noisier');
for (const bin of ['bun', 'deno']) {
  if (!existsSync(join(BIN, bin))) console.warn(`bench: ${join(BIN, bin)} is missing (npm ci)`);
}

// ---- The supply of unique events ----

// [0, main) for measured runs (each starts at 0 on a fresh store), then warm-up, then cold starts.
export const MAIN_N = Math.max(
  Math.ceil(DURATION * MAX_RATE),
  MEMORY_EVENTS + 50_000,
  Math.ceil(E2E_IDS.length > 0 ? E2E_SECONDS * E2E_MAX_RATE : 0),
);
export const WARM_OFFSET = MAIN_N;
const WARM_N = Math.ceil(WARMUP * MAX_RATE);
export const COLD_OFFSET = WARM_OFFSET + WARM_N;
// Start-up probes poll every few ms; they cycle through their own range (a repeat is answered 200 as a duplicate).
export const COLD_N = 20_000;
const TOTAL_N = COLD_OFFSET + COLD_N;
export const { sigs, template } = prepare(join(tmpdir(), 'lava-bench-cache'), TOTAL_N);
export const sigAt = (() => {
  const all = readFileSync(sigs);
  return (i) => all.toString('latin1', i * 64, i * 64 + 64);
})();
