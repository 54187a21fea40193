// `npm run bench`: wrk against each receiver in one run on one machine, server and load generator pinned to
// different cores, every request a unique signed event. Prints a table and writes bench/RESULTS.md.
//
// Knobs (environment):
//   BENCH_DURATION=5        seconds of measured load per target in each round
//   BENCH_ROUNDS=3          rounds: every target is measured once per round, in turn, so a machine whose speed
//                           drifts (a shared VM) slows every target alike; figures are medians over the rounds, and
//                           each ratio is the median of the per-round ratios
//   BENCH_WARMUP=2          seconds of unmeasured load before it
//   BENCH_CONNECTIONS=64    wrk connections
//   BENCH_WRK_THREADS=1     wrk threads (all on the load cores)
//   BENCH_TARGETS=a,b,n,h,m,c,d,e,f,g which targets, in order
//   BENCH_SERVER_CPUS=0     cores for the server (taskset -c); BENCH_LOAD_CPUS=1 for wrk
//   BENCH_MEMORY_EVENTS=1000000     events for the memory step (0 skips it); BENCH_MEMORY_STORE=sqlite|memory
//   BENCH_MEMORY_RETENTION=5s       retention during the memory step (purge runs that often)
//   BENCH_COLD_RUNS=5       cold starts measured per target (median reported)
//   BENCH_DRAIN=3           seconds after the load in which ours' processing rate of the backlog is measured (0 skips)
//   BENCH_PACED=0.25        after the rounds, latency below saturation: each of BENCH_PACED_TARGETS gets a fresh server
//                           and this fraction of (a)'s rate, paced (0 skips); BENCH_PACED_RATE=5000 if (a) is not run
//   BENCH_PACED_TARGETS=a,h,c,d
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test   for (g); a unique schema is made and dropped
//   BENCH_RESULTS=bench/RESULTS.md  where the report goes ('' to skip writing)
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { cpus, hostname, loadavg, totalmem, tmpdir, type as osType, release } from 'node:os';
import { join, resolve } from 'node:path';
import { BENCH_SECRET, body, prepare } from './events.mjs';

const ROOT = resolve(import.meta.dirname, '..');
const BIN = join(ROOT, 'node_modules', '.bin');
const env = process.env;
const num = (name, fallback) => (env[name] !== undefined && env[name] !== '' ? Number(env[name]) : fallback);

const DURATION = num('BENCH_DURATION', 5);
const ROUNDS = Math.max(1, num('BENCH_ROUNDS', 3));
const WARMUP = num('BENCH_WARMUP', 2);
const CONNECTIONS = num('BENCH_CONNECTIONS', 64);
const THREADS = num('BENCH_WRK_THREADS', 1);
const TARGET_IDS = (env.BENCH_TARGETS ?? 'a,b,n,h,m,c,d,e,f,g').split(',').map((s) => s.trim()).filter(Boolean);
const MEMORY_EVENTS = num('BENCH_MEMORY_EVENTS', 1_000_000);
const MEMORY_STORE = env.BENCH_MEMORY_STORE ?? 'sqlite';
const MEMORY_RETENTION = env.BENCH_MEMORY_RETENTION ?? '5s';
const COLD_RUNS = num('BENCH_COLD_RUNS', 5);
const DRAIN = num('BENCH_DRAIN', 3);
const PACED = num('BENCH_PACED', 0.25);
const PACED_RATE = num('BENCH_PACED_RATE', 5000);
const PACED_IDS = (env.BENCH_PACED_TARGETS ?? 'a,h,c,d').split(',').map((s) => s.trim()).filter(Boolean);
const PG_URL = env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const RESULTS = env.BENCH_RESULTS ?? join(ROOT, 'bench', 'RESULTS.md');
const NCPU = cpus().length;
const SERVER_CPUS = env.BENCH_SERVER_CPUS ?? '0';
const LOAD_CPUS = env.BENCH_LOAD_CPUS ?? (NCPU > 1 ? '1' : '0');
// An upper bound on what one server core can take, to size the supply of unique events.
const MAX_RATE = num('BENCH_MAX_RATE', 150_000);
const PATH = '/webhooks/lava';

// ---- Preconditions ----

function have(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}
if (!have('wrk')) {
  console.error('bench: wrk is not installed — on Debian/Ubuntu: apt-get update && apt-get install -y wrk');
  process.exit(2);
}
const pin = have('taskset') && NCPU > 1;
if (!pin) console.warn('bench: not pinning (taskset missing or one core): figures will be noisier');
for (const bin of ['bun', 'deno']) {
  if (!existsSync(join(BIN, bin))) console.warn(`bench: ${join(BIN, bin)} is missing (npm ci)`);
}

// The supply of unique events: [0, main) for measured runs, then warm-up, then cold starts.
const MAIN_N = Math.max(Math.ceil(DURATION * MAX_RATE), MEMORY_EVENTS + 50_000);
const WARM_OFFSET = MAIN_N;
const WARM_N = Math.ceil(WARMUP * MAX_RATE);
const COLD_OFFSET = WARM_OFFSET + WARM_N;
// Start-up probes poll every few ms; they cycle through their own range (a repeat is answered 200 as a duplicate).
const COLD_N = 20_000;
const TOTAL_N = COLD_OFFSET + COLD_N;
const cache = join(tmpdir(), 'lava-bench-cache');
const { sigs, template } = prepare(cache, TOTAL_N);
const sigAt = (() => {
  const all = readFileSync(sigs);
  return (i) => all.toString('latin1', i * 64, i * 64 + 64);
})();

// ---- Processes ----

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let nextPort = 18_000 + Math.floor(Math.random() * 2000);

function pinned(cpuList, cmd) {
  return pin ? ['taskset', ['-c', cpuList, ...cmd]] : [cmd[0], cmd.slice(1)];
}

function startProcess(cmd, extraEnv) {
  const port = nextPort++;
  const [file, args] = pinned(SERVER_CPUS, cmd(port));
  const t0 = performance.now();
  const child = spawn(file, args, {
    cwd: ROOT,
    env: {
      PATH: env.PATH,
      HOME: env.HOME ?? '/tmp',
      PORT: String(port),
      HOSTNAME: '127.0.0.1',
      LOG_LEVEL: 'warn',
      LAVA_WEBHOOK_SECRET: BENCH_SECRET,
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d) => {
    if (output.length < 20_000) output += d;
  });
  child.stderr.on('data', (d) => {
    if (output.length < 20_000) output += d;
  });
  const exited = new Promise((r) => child.on('exit', (code, signal) => r(code ?? signal)));
  return { child, port, t0, exited, output: () => output };
}

let coldIndex = 0;
function signedInit(mode) {
  const i = COLD_OFFSET + (coldIndex++ % COLD_N);
  const sig = sigAt(i);
  const headers =
    mode === 'github'
      ? {
          'content-type': 'application/json',
          'x-hub-signature-256': `sha256=${sig}`,
          'x-github-event': 'ping',
          'x-github-delivery': String(i),
        }
      : { 'content-type': 'application/json', 'x-webhook-signature': sig };
  return { method: 'POST', headers, body: body(i) };
}

/** Polls a signed POST until it answers 200; returns ms from spawn to that answer. */
async function firstOk(proc, mode, timeoutMs = 30_000) {
  let done = false;
  void proc.exited.then(() => {
    done = true;
  });
  const deadline = proc.t0 + timeoutMs;
  let lastStatus = null;
  while (!done && performance.now() < deadline) {
    try {
      const res = await fetch(`http://127.0.0.1:${proc.port}${PATH}`, signedInit(mode));
      await res.arrayBuffer();
      lastStatus = res.status;
      if (res.status === 200) return performance.now() - proc.t0;
    } catch {
      // Not listening yet.
    }
    await sleep(2);
  }
  throw new Error(`no 200 from the server (last status ${lastStatus}; exited: ${done}):\n${proc.output()}`);
}

async function stop(proc) {
  proc.child.kill('SIGTERM');
  const t = setTimeout(() => proc.child.kill('SIGKILL'), 8000);
  await proc.exited;
  clearTimeout(t);
}

function rssMb(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

function wrkArgs(port, mode, seconds, offset) {
  const [file, args] = pinned(LOAD_CPUS, [
    'wrk',
    `-t${THREADS}`,
    `-c${CONNECTIONS}`,
    `-d${seconds}s`,
    '--timeout',
    '10s',
    '-s',
    join(ROOT, 'bench', 'wrk', 'lava.lua'),
    `http://127.0.0.1:${port}${PATH}`,
    '--',
    mode,
    sigs,
    template,
    String(THREADS),
    String(offset),
  ]);
  return [file, args];
}

/** wrk's summary of one run; `paceMs` > 0 makes each connection wait about that long before each request. */
function runWrk(port, mode, seconds, offset, paceMs = 0) {
  return new Promise((resolvePromise, reject) => {
    const [file, args] = wrkArgs(port, mode, seconds, offset);
    const child = spawn(file, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: paceMs > 0 ? { ...env, BENCH_PACE_MS: String(paceMs) } : env,
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('exit', () => {
      const line = out.split('\n').find((l) => l.startsWith('BENCH_JSON '));
      if (!line) reject(new Error(`wrk gave no result:\n${out}`));
      else resolvePromise(JSON.parse(line.slice('BENCH_JSON '.length)));
    });
  });
}

async function metricsOf(port) {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const get = (re) => {
      const m = re.exec(text);
      return m ? Number(m[1]) : null;
    };
    return {
      accepted: get(/^lava_webhooks_deliveries_total\{outcome="accepted"\} (\d+)/m),
      duplicate: get(/^lava_webhooks_deliveries_total\{outcome="duplicate"\} (\d+)/m),
      pending: get(/^lava_webhooks_pending (\d+)/m),
    };
  } catch {
    return null;
  }
}

// ---- Postgres ----

async function pgAdmin() {
  try {
    await new Promise((res, rej) => {
      const u = new URL(PG_URL);
      const s = connect(Number(u.port || 5432), u.hostname, () => {
        s.destroy();
        res();
      });
      s.on('error', rej);
      s.setTimeout(1000, () => {
        s.destroy();
        rej(new Error('timeout'));
      });
    });
    const { default: postgres } = await import('postgres');
    const sql = postgres(PG_URL, { max: 1, onnotice: () => {}, connect_timeout: 3 });
    await sql`SELECT 1`;
    return sql;
  } catch (error) {
    return { reason: `no Postgres at ${PG_URL} (${error.message})` };
  }
}

// ---- Targets ----

const bun = join(BIN, 'bun');
const deno = join(BIN, 'deno');
const node = process.execPath;
const server = () => [bun, 'run', 'src/server.ts'];

const TARGETS = {
  a: { name: 'bare Bun server (reads the body, 200)', cmd: () => [bun, 'bench/targets/bare-bun.ts'] },
  b: {
    name: "Lava's documented Express receiver on Node (Express 5, express.raw)",
    cmd: () => [node, 'bench/targets/express-node.mjs'],
  },
  n: {
    name: 'the same receiver logic on bare node:http (no Express)',
    cmd: () => [node, 'bench/targets/express-style-node.mjs'],
  },
  h: { name: '@octokit/webhooks createWebMiddleware on Bun', cmd: () => [bun, 'bench/targets/octokit-bun.ts'], mode: 'github' },
  m: {
    name: 'a minimal receiver on Bun that keeps each event in a Map (native HMAC, JSON.parse; no validation, no handlers)',
    cmd: () => [bun, 'bench/targets/minimal-bun.ts'],
  },
  c: { name: 'ours, memory store (Bun)', cmd: server, env: () => ({ LAVA_WEBHOOK_STORE: 'memory' }), ours: true },
  d: {
    name: 'ours, SQLite default durability (Bun)',
    cmd: server,
    env: (dir) => ({ LAVA_WEBHOOK_STORE: 'sqlite', LAVA_WEBHOOK_DB: join(dir, 'd.sqlite') }),
    ours: true,
  },
  e: {
    name: 'ours, SQLite synchronous=FULL (Bun)',
    cmd: server,
    env: (dir) => ({
      LAVA_WEBHOOK_STORE: 'sqlite',
      LAVA_WEBHOOK_DB: join(dir, 'e.sqlite'),
      LAVA_WEBHOOK_DURABILITY: 'full',
    }),
    ours: true,
  },
  f: {
    name: 'ours on Deno, Deno KV',
    cmd: (port) => [deno, 'serve', '-A', '--port', String(port), '--host', '127.0.0.1', 'src/server.ts'],
    env: (dir) => ({ LAVA_WEBHOOK_STORE: 'kv', LAVA_WEBHOOK_KV: join(dir, 'f.kv') }),
    ours: true,
    missing: () => (existsSync(join(ROOT, 'src/stores/deno-kv.ts')) ? null : 'src/stores/deno-kv.ts is not there yet'),
  },
  g: {
    name: 'ours, Postgres (Bun)',
    cmd: server,
    env: (_dir, ctx) => ({ LAVA_WEBHOOK_STORE: 'postgres', DATABASE_URL: PG_URL, LAVA_WEBHOOK_PG_SCHEMA: ctx.schema }),
    ours: true,
    missing: () => (existsSync(join(ROOT, 'src/stores/postgres.ts')) ? null : 'src/stores/postgres.ts is not there yet'),
    postgres: true,
  },
};

const runs = [];
const dir = mkdtempSync(join(tmpdir(), 'lava-bench-'));
let pg = null;

/**
 * Starts one target on a fresh store (its own directory, or its own Postgres schema), waits for its first 200, runs
 * `fn(proc, mode, readyMs)`, then stops it and drops what it made. readyMs: spawn to that first 200.
 */
async function onFreshServer(id, label, fn) {
  const t = TARGETS[id];
  const mode = t.mode ?? 'lava';
  const ctx = t.postgres ? { schema: pgSchema() } : {};
  const sub = mkdtempSync(join(dir, `${id}-${label}`));
  const proc = startProcess(t.cmd, t.env?.(sub, ctx) ?? {});
  try {
    return await fn(proc, mode, await firstOk(proc, mode));
  } finally {
    await stop(proc);
    if (t.postgres) await pg.unsafe(`DROP SCHEMA IF EXISTS "${ctx.schema}" CASCADE`);
  }
}

/** wrk's error count of one run: non-2xx answers and socket errors of every kind. */
const errorsOf = (r) => r.status + r.connect + r.read + r.write + r.timeout;

/** Cold starts of one target: process start to the first 200 on a signed POST, fresh store each time (median). */
async function coldStart(id) {
  const colds = [];
  for (let k = 0; k < COLD_RUNS; k++) colds.push(await onFreshServer(id, 'cold-', (_proc, _mode, readyMs) => readyMs));
  colds.sort((x, y) => x - y);
  return colds[Math.floor(colds.length / 2)];
}

const pgSchema = () => `lava_bench_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;

/** Why a target cannot run here, or null. */
async function unavailable(id) {
  const t = TARGETS[id];
  if (!t) throw new Error(`unknown target ${id}`);
  const missing = t.missing?.();
  if (missing) return missing;
  if (t.postgres) {
    pg ??= await pgAdmin();
    if (pg.reason) return pg.reason;
  }
  return null;
}

/** One measured run of one target on a fresh server and store: warm-up, then DURATION seconds of load. */
function measure(id) {
  const t = TARGETS[id];
  return onFreshServer(id, '', async (proc, mode) => {
    const m = {};
    // Taken before the warm-up, so the backlog note counts every event acked in this run (warm-up included).
    const before = t.ours ? await metricsOf(proc.port) : null;
    if (WARMUP > 0) await runWrk(proc.port, mode, WARMUP, WARM_OFFSET);
    const r = await runWrk(proc.port, mode, DURATION, 0);
    const after = t.ours ? await metricsOf(proc.port) : null;
    m.rps = r.requests / (r.duration_us / 1e6);
    m.requests = r.requests;
    m.p50 = r.p50_us / 1000;
    m.p99 = r.p99_us / 1000;
    m.errors = errorsOf(r);
    m.errorDetail = r;
    // The generator's share of one core during the run: near 1 means wrk, not the server, set the rate.
    m.wrkCpu = typeof r.cpu_s === 'number' ? r.cpu_s / (r.duration_us / 1e6) : null;
    m.rssMb = rssMb(proc.child.pid);
    if (r.requests > MAIN_N) m.note = `${r.requests - MAIN_N} requests reused an event (raise BENCH_MAX_RATE)`;
    if (before && after) {
      m.accepted = after.accepted - before.accepted;
      m.duplicates = after.duplicate - before.duplicate;
      // Acked but not yet processed when the load stopped: an ack rate the worker cannot follow shows here.
      m.pendingAfter = after.pending;
      // How fast the worker runs that backlog once the load is gone: the processing rate, with the core to itself.
      if (after.pending > 0 && DRAIN > 0) {
        const t0 = performance.now();
        await sleep(DRAIN * 1000);
        const later = await metricsOf(proc.port);
        // A backlog gone before the window ended gives only a lower bound (the backlog over the window): not a rate.
        if (later?.pending !== null && later?.pending !== undefined && later.pending > 0) {
          m.drainRate = (after.pending - later.pending) / ((performance.now() - t0) / 1000);
        }
      }
    }
    return m;
  });
}

/**
 * Latency below saturation: a fresh server of one target, offered about `rate` requests/s over CONNECTIONS
 * connections (each waits a random 0–2 × CONNECTIONS / rate before each request), warm-up first at the same pace.
 */
function measurePaced(id, rate) {
  const paceMs = (1000 * CONNECTIONS) / rate;
  return onFreshServer(id, 'paced-', async (proc, mode) => {
    if (WARMUP > 0) await runWrk(proc.port, mode, WARMUP, WARM_OFFSET, paceMs);
    const r = await runWrk(proc.port, mode, DURATION, 0, paceMs);
    return {
      rps: r.requests / (r.duration_us / 1e6),
      p50: r.p50_us / 1000,
      p99: r.p99_us / 1000,
      max: r.max_us / 1000,
      errors: errorsOf(r),
    };
  });
}

const median = (xs) => {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((p, q) => p - q);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
};

/** x's rate over y's in each round (null where either has none), each pair measured in the same round. */
function perRound(x, y) {
  if (!x?.rounds || !y?.rounds) return null;
  return x.rounds.map((r, i) => (r?.rps && y.rounds[i]?.rps ? r.rps / y.rounds[i].rps : null));
}

/** The median of the per-round ratios of x to y. */
function ratioOf(x, y) {
  const per = perRound(x, y);
  return per ? median(per) : null;
}

/** Folds a target's rounds into one row: medians of rate and latency, the last round's counts. */
function summarize(row) {
  const ok = row.rounds.filter((r) => r && !r.failed);
  if (ok.length === 0) return row;
  const last = ok[ok.length - 1];
  Object.assign(row, {
    rps: median(ok.map((r) => r.rps)),
    p50: median(ok.map((r) => r.p50)),
    p99: median(ok.map((r) => r.p99)),
    errors: ok.reduce((n, r) => n + r.errors, 0),
    errorDetail: last.errorDetail,
    rssMb: last.rssMb,
    accepted: last.accepted,
    duplicates: ok.reduce((n, r) => n + (r.duplicates ?? 0), 0),
    pendingAfter: last.pendingAfter,
    drainRate: median(ok.map((r) => r.drainRate)),
    wrkCpu: median(ok.map((r) => r.wrkCpu)),
    note: ok.map((r) => r.note).find(Boolean),
  });
  return row;
}

async function memoryStep() {
  const sub = mkdtempSync(join(dir, 'mem-'));
  const storeEnv =
    MEMORY_STORE === 'memory'
      ? { LAVA_WEBHOOK_STORE: 'memory' }
      : { LAVA_WEBHOOK_STORE: 'sqlite', LAVA_WEBHOOK_DB: join(sub, 'mem.sqlite') };
  const proc = startProcess(server, { ...storeEnv, LAVA_WEBHOOK_RETENTION: MEMORY_RETENTION });
  const out = { store: MEMORY_STORE, events: MEMORY_EVENTS, retention: MEMORY_RETENTION };
  try {
    await firstOk(proc, 'lava');
    out.rssStartMb = rssMb(proc.child.pid);
    const [file, args] = wrkArgs(proc.port, 'lava', 3600, 0);
    const wrk = spawn(file, args, { stdio: 'ignore' });
    const t0 = performance.now();
    let last = 0;
    for (;;) {
      await sleep(250);
      const m = await metricsOf(proc.port);
      const n = m?.accepted ?? 0;
      if (!out.rss100kMb && n >= 100_000) out.rss100kMb = rssMb(proc.child.pid);
      if (n >= MEMORY_EVENTS) {
        out.rss1mMb = rssMb(proc.child.pid);
        out.seconds = (performance.now() - t0) / 1000;
        break;
      }
      if (n === last && performance.now() - t0 > 30_000) throw new Error(`memory step stalled at ${n} events`);
      last = n;
    }
    wrk.kill('SIGKILL');
    // Let the worker finish the backlog and retention run once more, then look again.
    const settleEnd = performance.now() + 60_000;
    while (performance.now() < settleEnd) {
      const m = await metricsOf(proc.port);
      if (m && m.pending === 0) break;
      await sleep(500);
    }
    await sleep(6000);
    out.rssSettledMb = rssMb(proc.child.pid);
    out.growth = out.rss1mMb / out.rss100kMb - 1;
  } catch (error) {
    out.failed = error.message.split('\n').slice(0, 6).join(' ');
  } finally {
    await stop(proc);
  }
  return out;
}

// ---- Report ----

const f1 = (x) => (x === undefined || x === null ? '—' : x.toFixed(1));
const f2 = (x) => (x === undefined || x === null ? '—' : x.toFixed(2));
const pct = (x) => (x === undefined || x === null ? '—' : `${Math.round(x * 100)} %`);

/** The per-round ratios to (a), e.g. `0.41 / 0.45 / 0.39`. */
function byRound(r, a) {
  const per = perRound(r, a);
  return per ? per.map((x) => (x === null ? '—' : f2(x))).join(' / ') : '—';
}

function table(rows) {
  const a = rows.find((r) => r.id === 'a' && r.rps);
  const lines = [
    '| | target | requests/s | × (a) | × (a) by round | p50 ms | p99 ms | errors | cold start ms | RSS MB | notes |',
    '|---|---|---:|---:|---|---:|---:|---:|---:|---:|---|',
  ];
  for (const r of rows) {
    if (r.skipped || r.failed) {
      lines.push(`| ${r.id} | ${r.name} | — | — | — | — | — | — | — | — | ${r.skipped ? `skipped: ${r.skipped}` : `failed: ${r.failed}`} |`);
      continue;
    }
    const notes = [];
    if (r.duplicates) notes.push(`${r.duplicates} answered as duplicates`);
    if (r.pendingAfter !== undefined && r.pendingAfter !== null) {
      notes.push(
        `${r.pendingAfter.toLocaleString('en')} of the ${(r.accepted ?? 0).toLocaleString('en')} events acked in the last round ` +
          '(warm-up included) not yet run when the load stopped',
      );
    }
    if (typeof r.drainRate === 'number') {
      notes.push(`then run at ${Math.round(r.drainRate).toLocaleString('en')} events/s once the load stopped`);
    } else if (r.pendingAfter > 0 && DRAIN > 0) {
      notes.push(`all run within the ${DRAIN} s after the load`);
    }
    if (r.note) notes.push(r.note);
    if (r.errors) {
      const e = r.errorDetail;
      notes.push(`non-2xx ${e.status}, connect ${e.connect}, read ${e.read}, write ${e.write}, timeout ${e.timeout}`);
    }
    lines.push(
      `| ${r.id} | ${r.name} | ${Math.round(r.rps).toLocaleString('en')} | ${a ? f2(ratioOf(r, a)) : '—'} | ${byRound(r, a)} | ${f2(r.p50)} | ${f2(r.p99)} | ${r.errors} | ${f1(r.coldMs)} | ${f1(r.rssMb)} | ${notes.join('; ')} |`,
    );
  }
  return lines.join('\n');
}

function pacedTable() {
  const lines = [
    '| | target | offered req/s | served req/s | p50 ms | p99 ms | max ms | errors |',
    '|---|---|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of paced.rows) {
    const name = TARGETS[r.id]?.name ?? r.id;
    if (r.failed) lines.push(`| ${r.id} | ${name} | — | — | — | — | — | failed: ${r.failed} |`);
    else {
      lines.push(
        `| ${r.id} | ${name} | ${Math.round(paced.rate).toLocaleString('en')} | ${Math.round(r.rps).toLocaleString('en')} | ${f2(r.p50)} | ${f2(r.p99)} | ${f2(r.max)} | ${r.errors} |`,
      );
    }
  }
  return lines.join('\n');
}

function targets(rows) {
  const by = Object.fromEntries(rows.filter((r) => r.rps).map((r) => [r.id, r]));
  const out = [];
  const check = (label, ok) => out.push(`- ${ok === null ? '[n/a]' : ok ? '[met]' : '[missed]'} ${label}`);
  const ratio = (x, y) => ratioOf(by[x], by[y]);
  const cmp = (x, y, min) => {
    const v = ratio(x, y);
    return [v, v === null ? null : v >= min];
  };
  let [v, ok] = cmp('c', 'a', 0.7);
  check(`(c) ≥ 0.7 × (a): ${f2(v)}`, ok);
  [v, ok] = cmp('c', 'h', 1);
  check(`(c) ahead of (h): ${f2(v)} × (h)`, ok);
  [v, ok] = cmp('d', 'a', 0.5);
  check(`(d) ≥ 0.5 × (a): ${f2(v)}`, ok);
  [v, ok] = cmp('e', 'a', 0.4);
  check(`(e) ≥ 0.4 × (a): ${f2(v)}`, ok);
  [v, ok] = cmp('c', 'b', 5);
  check(`(c) ≥ 5 × (b): ${f2(v)}`, ok);
  [v, ok] = cmp('d', 'b', 5);
  check(`(d) ≥ 5 × (b): ${f2(v)}`, ok);
  for (const id of ['c', 'd']) {
    check(`(${id}) p99 ≤ 5 ms at saturation: ${f2(by[id]?.p99)} ms`, by[id] ? by[id].p99 <= 5 : null);
  }
  for (const id of ['c', 'd']) {
    const p = paced?.rows.find((r) => r.id === id && !r.failed);
    check(
      `(${id}) p99 ≤ 5 ms when paced at about ${paced ? Math.round(paced.rate).toLocaleString('en') : '—'} requests/s: ${f2(p?.p99)} ms`,
      p ? p.p99 <= 5 : null,
    );
  }
  const cold = by.c?.coldMs;
  check(`cold start ≤ 150 ms on Bun, ours (c): ${f1(cold)} ms`, typeof cold === 'number' ? cold <= 150 : null);
  check(
    `bare server over 100k requests/s (the generator is not the bottleneck): ${by.a ? Math.round(by.a.rps) : '—'}, ` +
      `wrk using ${pct(by.a?.wrkCpu)} of its core meanwhile`,
    by.a ? by.a.rps > 100_000 : null,
  );
  return out;
}

function versions() {
  const v = (cmd, args) => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8' }).split('\n')[0].trim();
    } catch {
      return 'unknown';
    }
  };
  return {
    bun: v(bun, ['--version']),
    deno: v(deno, ['--version']),
    node: process.version,
    wrk: v('sh', ['-c', 'wrk -v 2>&1 | head -1']),
  };
}

// ---- Main ----

const startedAt = new Date();
const loadBefore = loadavg()[0];
console.log(
  `bench: ${ROUNDS} round(s) of ${DURATION}s per target after ${WARMUP}s warm-up, ${CONNECTIONS} connections, ` +
    `wrk ${THREADS} thread(s); ` +
    `server on cpu ${pin ? SERVER_CPUS : 'any'}, wrk on cpu ${pin ? LOAD_CPUS : 'any'}`,
);
for (const id of TARGET_IDS) {
  const row = { id, name: TARGETS[id]?.name ?? id, rounds: [] };
  runs.push(row);
  row.skipped = (await unavailable(id)) ?? undefined;
  if (row.skipped) {
    console.log(`  (${id}) ${row.name}: skipped: ${row.skipped}`);
    continue;
  }
  try {
    row.coldMs = await coldStart(id);
  } catch (error) {
    row.failed = error.message.split('\n').slice(0, 6).join(' ');
    console.log(`  (${id}) ${row.name}: FAILED: ${row.failed}`);
  }
}
for (let round = 0; round < ROUNDS; round++) {
  console.log(`round ${round + 1} of ${ROUNDS}`);
  for (const row of runs) {
    if (row.skipped || row.failed) continue;
    process.stdout.write(`  (${row.id}) ${row.name} … `);
    try {
      const m = await measure(row.id);
      row.rounds[round] = m;
      console.log(
        `${Math.round(m.rps)} req/s, p50 ${f2(m.p50)} ms, p99 ${f2(m.p99)} ms, errors ${m.errors}, wrk CPU ${pct(m.wrkCpu)}`,
      );
    } catch (error) {
      row.rounds[round] = { failed: error.message.split('\n').slice(0, 6).join(' ') };
      console.log(`FAILED: ${row.rounds[round].failed}`);
    }
  }
}
for (const row of runs) {
  if (row.skipped || row.failed) continue;
  summarize(row);
  if (!row.rps) row.failed = row.rounds.find((r) => r?.failed)?.failed ?? 'no successful round';
}
// Latency below saturation, at a fraction of the ceiling measured above (the same rate for every target).
let paced = null;
const pacedIds = PACED > 0 ? PACED_IDS.filter((id) => runs.some((r) => r.id === id && r.rps)) : [];
if (pacedIds.length > 0) {
  const a = runs.find((r) => r.id === 'a' && r.rps);
  const rate = a ? a.rps * PACED : PACED_RATE;
  paced = { rate, basis: a ? `${PACED} × (a)` : 'BENCH_PACED_RATE', rows: [] };
  console.log(`paced: about ${Math.round(rate)} requests/s (${paced.basis})`);
  for (const id of pacedIds) {
    process.stdout.write(`  (${id}) ${TARGETS[id].name} … `);
    try {
      const m = await measurePaced(id, rate);
      paced.rows.push({ id, ...m });
      console.log(`${Math.round(m.rps)} req/s, p50 ${f2(m.p50)} ms, p99 ${f2(m.p99)} ms, max ${f2(m.max)} ms`);
    } catch (error) {
      paced.rows.push({ id, failed: error.message.split('\n').slice(0, 6).join(' ') });
      console.log(`FAILED: ${paced.rows.at(-1).failed}`);
    }
  }
}
let memory = null;
if (MEMORY_EVENTS > 0) {
  process.stdout.write(`  memory: ${MEMORY_EVENTS} events into ours (${MEMORY_STORE}, retention ${MEMORY_RETENTION}) … `);
  memory = await memoryStep();
  console.log(memory.failed ? `FAILED: ${memory.failed}` : `RSS ${f1(memory.rss100kMb)} MB at 100k, ${f1(memory.rss1mMb)} MB at ${MEMORY_EVENTS}`);
}
if (pg && !pg.reason) await pg.end({ timeout: 2 });
rmSync(dir, { recursive: true, force: true });

const ver = versions();
const machine = `${cpus()[0]?.model ?? 'unknown CPU'} × ${NCPU}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, ${osType()} ${release()} (${hostname()})`;
const report = [
  '# Benchmark results',
  '',
  `Run: ${startedAt.toISOString()} — \`npm run bench\``,
  `Machine: ${machine}`,
  `Runtimes: Bun ${ver.bun}, ${ver.deno}, Node ${ver.node}; load: ${ver.wrk}`,
  `Settings: ${ROUNDS} round(s), each measuring every target in turn for ${DURATION}s after ${WARMUP}s warm-up on a fresh ` +
    `server and store; ${CONNECTIONS} connections, ${THREADS} wrk thread(s); ` +
    `server pinned to cpu ${pin ? SERVER_CPUS : 'none'}, wrk to cpu ${pin ? LOAD_CPUS : 'none'}; every request a unique ` +
    'signed `customer.wallet.balance.updated` event (997 customers); servers log at warn.',
  '',
  table(runs),
  '',
  'Latency is wrk’s, from the generator (ack latency as the sender sees it). Cold start: process spawn to the first 200 ' +
    `on a signed POST, median of ${COLD_RUNS}. RSS: resident memory after the last round's run. requests/s, p50 and p99 ` +
    'are medians over the rounds; × (a) is the median of the per-round ratios (each target against the bare server ' +
    'of the same round), and the next column lists them, so the spread shows how steady the machine was.',
  '',
  '## Notes',
  '',
  `- Load average when the run began: ${loadBefore.toFixed(2)} (on ${NCPU} cores); anything else running makes every figure noisier.`,
  `- The generator: wrk used ${runs
    .filter((r) => r.rps)
    .map((r) => `${pct(r.wrkCpu)} (${r.id})`)
    .join(', ')} of its core (median over the rounds). Near 100 %, wrk rather than the server set that target's rate.`,
  '- (b) is Lava’s documented Express receiver (express.raw for the raw body, createHmac, timingSafeEqual, JSON.parse); ' +
    '(n) is the same logic on bare node:http, to show what Express itself costs.',
  '- (h) answers after its handlers ran in memory and records nothing; ours answers only after the event is in the store, ' +
    'and its worker runs the handlers on the same core during the run (the notes column says how many acknowledged ' +
    'events it had not yet run when the load stopped; it runs them afterwards).',
  ...(() => {
    const m = runs.find((r) => r.id === 'm' && r.rps);
    if (!m) return [];
    const a = runs.find((r) => r.id === 'a' && r.rps);
    const c = runs.find((r) => r.id === 'c' && r.rps);
    return [
      '- (m) is the least a hand-written receiver does and still keeps what it acknowledges: read, verify, parse, ' +
        'and keep each event as an object in a Map keyed by a string, with none of ours’ validation, logging, ' +
        'metrics, handler runs or store contract; it is no target of its own. ' +
        `Here it reached ${a ? `${f2(ratioOf(m, a))} × (a)` : '— (no (a))'}` +
        `${c ? `, and ours with the memory store (c) reached ${f2(ratioOf(c, m))} × (m)` : ''}. The distance from ` +
        '(a) to (m) is that minimum work plus the garbage collector’s cost of keeping every event on the JS heap.',
    ];
  })(),
  `- The rate at which ours then ran that backlog is measured over the ${DRAIN} s after the load stopped, with no-op ` +
    'handlers at the default concurrency (8): the processing capacity of one instance, with the core to itself. On ' +
    'Postgres each handler slot waits for a claim and a completion round trip, so it is far below the ack rate; raise ' +
    'LAVA_WEBHOOK_CONCURRENCY (or run more instances) for more.',
  '',
  ...(paced
    ? [
        '## Latency below saturation',
        '',
        `The table above is taken at saturation: wrk sends as fast as each server answers, so its latencies are mostly ` +
          `queueing. Here each target gets a fresh server and a paced load of about ${Math.round(paced.rate).toLocaleString('en')} ` +
          `requests/s (${paced.basis}) over the same ${CONNECTIONS} connections, ${DURATION}s after ${WARMUP}s of warm-up at ` +
          'that pace; every connection waits a random 0 to 2 × (connections ÷ rate) before each request, and wrk times ' +
          'each request from when it is written. Ours also runs its handlers meanwhile.',
        '',
        pacedTable(),
        '',
      ]
    : []),
  '## Targets',
  '',
  ...targets(runs),
  '',
];
if (memory) {
  report.push(
    '## Memory',
    '',
    memory.failed
      ? `Failed: ${memory.failed}`
      : `${MEMORY_EVENTS.toLocaleString('en')} unique events into ours on Bun (${memory.store} store, retention ` +
          `${memory.retention}, so purge runs throughout) in ${f1(memory.seconds)} s: RSS ${f1(memory.rssStartMb)} MB at start, ` +
          `${f1(memory.rss100kMb)} MB at 100k, ${f1(memory.rss1mMb)} MB at ${MEMORY_EVENTS.toLocaleString('en')} ` +
          `(${memory.growth >= 0 ? '+' : ''}${(memory.growth * 100).toFixed(1)} %; target within 20 %: ` +
          `${Math.abs(memory.growth) <= 0.2 ? 'met' : 'missed'}), ${f1(memory.rssSettledMb)} MB after the backlog drained.`,
    '',
  );
}
const text = report.join('\n');
console.log(`\n${text}`);
if (RESULTS) {
  writeFileSync(RESULTS, text);
  console.log(`written to ${RESULTS}`);
}
