// One measurement of one target, each on a fresh server and store: cold start, a saturation run (one round's),
// a paced run (latency below saturation), the end-to-end run of ours, and the memory step.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  COLD_RUNS,
  DRAIN,
  DURATION,
  E2E_SECONDS,
  MAIN_N,
  MEMORY_EVENTS,
  MEMORY_RETENTION,
  MEMORY_STORE,
  WARM_OFFSET,
  WARMUP,
} from './config.mjs';
import {
  errorsOf,
  firstOk,
  metricsOf,
  pgAdmin,
  rssMb,
  runWrk,
  sleep,
  startProcess,
  stop,
  wrkArgs,
} from './processes.mjs';
import { P99_LIMIT_MS } from './goals.mjs';
import { ownLatency } from './stats.mjs';
import { oursEnv, server, TARGETS } from './targets.mjs';

const dir = mkdtempSync(join(tmpdir(), 'lava-bench-'));
let pg = null;
const pgSchema = () => `lava_bench_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;

/** Closes the Postgres admin client and removes every store the run made. */
export async function cleanup() {
  if (pg && !pg.reason) await pg.end({ timeout: 2 });
  rmSync(dir, { recursive: true, force: true });
}

/** Why a target cannot run here, or null. */
export async function unavailable(id) {
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

/**
 * Starts one target on a fresh store (its own directory, or its own Postgres schema), waits for its first 200, runs
 * `fn(proc, mode, readyMs, ctx)`, then stops it and drops what it made. readyMs: spawn to that first 200; ctx.schema:
 * the target's Postgres schema, if it has one. `cmd` replaces the target's command line (bench/profile.mjs adds a
 * profiler's flags). Call unavailable(id) first.
 */
export async function onFreshServer(id, label, fn, cmd = TARGETS[id].cmd) {
  const t = TARGETS[id];
  const mode = t.mode ?? 'lava';
  const ctx = t.postgres ? { schema: pgSchema() } : {};
  const sub = mkdtempSync(join(dir, `${id}-${label}`));
  const proc = startProcess(cmd, t.env?.(sub, ctx) ?? {});
  try {
    return await fn(proc, mode, await firstOk(proc, mode), ctx);
  } finally {
    await stop(proc);
    if (t.postgres) await pg.unsafe(`DROP SCHEMA IF EXISTS "${ctx.schema}" CASCADE`);
    rmSync(sub, { recursive: true, force: true });
  }
}

/** Cold starts of one target: process start to the first 200 on a signed POST, fresh store each time (median). */
export async function coldStart(id) {
  const colds = [];
  for (let k = 0; k < COLD_RUNS; k++) colds.push(await onFreshServer(id, 'cold-', (_proc, _mode, readyMs) => readyMs));
  colds.sort((x, y) => x - y);
  return colds[Math.floor(colds.length / 2)];
}

/** wrk's figures of one run, in requests/s and ms. */
function figures(r) {
  const seconds = r.duration_us / 1e6;
  return {
    rps: r.requests / seconds,
    requests: r.requests,
    p50: r.p50_us / 1000,
    p99: r.p99_us / 1000,
    max: r.max_us / 1000,
    errors: errorsOf(r),
    errorDetail: r,
    // The generator's share of one core during the run: near 1 means wrk, not the server, set the rate.
    wrkCpu: typeof r.cpu_s === 'number' ? r.cpu_s / seconds : null,
    note: r.requests > MAIN_N ? `${r.requests - MAIN_N} requests reused an event (raise BENCH_MAX_RATE)` : undefined,
  };
}

/**
 * Ours' backlog when the load stopped, and how fast its worker then runs it with the core to itself: over DRAIN
 * seconds (a backlog gone before the window ended gives only a lower bound, so no rate).
 */
async function backlogAfter(port, before, after) {
  const out = {
    accepted: after.accepted - before.accepted,
    duplicates: after.duplicate - before.duplicate,
    pendingAfter: after.pending,
  };
  if (after.pending > 0 && DRAIN > 0) {
    const t0 = performance.now();
    await sleep(DRAIN * 1000);
    const later = await metricsOf(port);
    if (typeof later?.pending === 'number' && later.pending > 0) {
      out.drainRate = (after.pending - later.pending) / ((performance.now() - t0) / 1000);
    }
  }
  return out;
}

/** One round's run of one target at saturation: warm-up, then DURATION seconds of load as fast as it answers. */
export function measure(id) {
  const t = TARGETS[id];
  return onFreshServer(id, '', async (proc, mode) => {
    // Taken before the warm-up, so the backlog note counts every event acked in this run (warm-up included).
    const before = t.ours ? await metricsOf(proc.port) : null;
    if (WARMUP > 0) await runWrk(proc.port, mode, WARMUP, WARM_OFFSET);
    const r = await runWrk(proc.port, mode, DURATION, 0);
    const after = t.ours ? await metricsOf(proc.port) : null;
    const m = { ...figures(r), rssMb: rssMb(proc.child.pid) };
    if (before && after) Object.assign(m, await backlogAfter(proc.port, before, after));
    return m;
  });
}

/** Latency below saturation: a fresh server offered about `rate` requests/s (see lava.lua), warm-up at that pace. */
export function measurePaced(id, rate) {
  return onFreshServer(id, 'paced-', async (proc, mode) => {
    if (WARMUP > 0) await runWrk(proc.port, mode, WARMUP, WARM_OFFSET, rate);
    const before = TARGETS[id].ours ? await metricsOf(proc.port) : null;
    const r = await runWrk(proc.port, mode, DURATION, 0, rate);
    const after = before ? await metricsOf(proc.port) : null;
    return {
      rate,
      ...figures(r),
      own: before && after ? ownLatency(before.ackBuckets, after.ackBuckets, P99_LIMIT_MS) : null,
    };
  });
}

/**
 * End to end: a fresh server of ours offered about `rate` requests/s for E2E_SECONDS (no warm-up: the whole run is
 * the sustained load), its handlers no-ops. What it acked meanwhile (its own count), what its handlers ran (its own
 * count), and the backlog its store holds when the load stops: acked, not yet run.
 */
export function measureEndToEnd(id, rate) {
  return onFreshServer(id, 'e2e-', async (proc, mode) => {
    const before = await metricsOf(proc.port);
    const r = await runWrk(proc.port, mode, E2E_SECONDS, 0, rate);
    const after = await metricsOf(proc.port);
    if (!before || !after || after.pending === null) throw new Error('no /metrics with lava_webhooks_pending');
    const seconds = r.duration_us / 1e6;
    const acked = after.accepted + after.coalesced - (before.accepted + before.coalesced);
    return {
      ...figures(r),
      rate,
      seconds,
      ackRate: acked / seconds,
      runRate: (after.runs - before.runs) / seconds,
      backlog: after.pending,
    };
  });
}

/** Ours' resident memory as MEMORY_EVENTS unique events go in (retention purging throughout), then settled. */
export async function memoryStep() {
  const sub = mkdtempSync(join(dir, 'mem-'));
  const storeEnv =
    MEMORY_STORE === 'memory'
      ? { LAVA_WEBHOOK_STORE: 'memory' }
      : { LAVA_WEBHOOK_STORE: 'sqlite', LAVA_WEBHOOK_DB: join(sub, 'mem.sqlite') };
  const proc = startProcess(server, { ...oursEnv, ...storeEnv, LAVA_WEBHOOK_RETENTION: MEMORY_RETENTION });
  // The first look: at 100k events, or a tenth of a smaller run.
  const early = Math.min(100_000, Math.ceil(MEMORY_EVENTS / 10));
  const out = { store: MEMORY_STORE, events: MEMORY_EVENTS, retention: MEMORY_RETENTION, early };
  let wrk = null;
  try {
    await firstOk(proc, 'lava');
    out.rssStartMb = rssMb(proc.child.pid);
    const [file, args] = wrkArgs(proc.port, 'lava', 3600, 0);
    wrk = spawn(file, args, { stdio: 'ignore' });
    const t0 = performance.now();
    let last = 0;
    for (;;) {
      await sleep(250);
      const m = await metricsOf(proc.port);
      const n = m?.accepted ?? 0;
      if (!out.rssEarlyMb && n >= early) out.rssEarlyMb = rssMb(proc.child.pid);
      if (n >= MEMORY_EVENTS) {
        out.rssEndMb = rssMb(proc.child.pid);
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
    out.growth = out.rssEndMb / out.rssEarlyMb - 1;
  } catch (error) {
    out.failed = error.message.split('\n').slice(0, 6).join(' ');
  } finally {
    wrk?.kill('SIGKILL');
    await stop(proc);
  }
  return out;
}
