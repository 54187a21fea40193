// `npm run bench`: wrk against each receiver in one run on one machine, server and load generator pinned to
// different cores, every request a unique signed event. Prints a report and writes bench/RESULTS.md.
//
// Each of ours is held against the least a durable receiver must do on the same runtime and storage, measured in
// the same rounds (bench/targets/: SQLite on Bun at NORMAL and FULL, Postgres on Bun, Deno KV on Deno), so its
// targets are ratios that hold on any machine. Steps, in order:
//   1. cold starts of every target; 2. rounds at saturation (every target in turn, each round); 3. latency below
//   saturation at one common rate; 4. latency at half of each one's own capacity; 5. end to end: each of ours at
//   80 % of its own capacity for 30 s, then its backlog; 6. memory over a million events; then the report.
// The parts live in bench/lib/: config (knobs), processes (servers, wrk, /metrics), targets (what runs), measure
// (one measurement each), stats, goals (the targets judged), report.
//
// Knobs (environment):
//   BENCH_DURATION=5        seconds of measured load per target in each round
//   BENCH_ROUNDS=3          rounds: every target is measured once per round, in turn, so a machine whose speed
//                           drifts (a shared VM) slows every target alike; figures are medians over the rounds, and
//                           each ratio is the median of the per-round ratios
//   BENCH_WARMUP=2          seconds of unmeasured load before it
//   BENCH_CONNECTIONS=64    wrk connections
//   BENCH_WRK_THREADS=1     wrk threads (all on the load cores)
//   BENCH_TARGETS=a,b,n,h,m,c,s,d,t,tr,e,k,kr,f,q,qr,g   which targets, in order
//   BENCH_SERVER_CPUS=0     cores for the server (taskset -c); BENCH_LOAD_CPUS=1 for wrk
//   BENCH_MEMORY_EVENTS=1000000     events for the memory step (0 skips it); BENCH_MEMORY_STORE=sqlite|memory
//   BENCH_MEMORY_RETENTION=5s       retention during the memory step (purge runs that often)
//   BENCH_COLD_RUNS=5       cold starts measured per target (median reported)
//   BENCH_DRAIN=3           seconds after the load in which ours' processing rate of the backlog is measured (0 skips)
//   BENCH_PACED=0.25        latency below saturation: each of BENCH_PACED_TARGETS gets a fresh server and this
//                           fraction of (a)'s rate, paced (0 skips); BENCH_PACED_RATE=5000 if (a) is not run
//   BENCH_PACED_TARGETS=a,h,c,d
//   BENCH_HALF=0.5          latency at this fraction of each target's own rate (0 skips); BENCH_HALF_TARGETS=e,t,d,s
//   BENCH_E2E_SECONDS=30    end to end: each of BENCH_E2E_TARGETS=c,d,e,f,g offered BENCH_E2E_LOAD=0.8 × its own
//                           rate for this long, then its backlog (0 skips)
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test   for (g) and (q); a unique schema each, dropped afterwards
//   BENCH_RESULTS=bench/RESULTS.md  where the report goes ('' to skip writing)
//   BENCH_CONCURRENCY       LAVA_WEBHOOK_CONCURRENCY for ours (unset: ours' default)
//   BENCH_BASE=<checkout>   adds cb, eb, fb and gb: an earlier build (a worktree with node_modules) beside c, e, f, g
// One target under a CPU profiler, same load: `npm run bench:profile -- <id> [seconds]` (bench/profile.mjs).
import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import {
  CONNECTIONS,
  DURATION,
  E2E_IDS,
  E2E_LOAD,
  E2E_SECONDS,
  HALF,
  HALF_IDS,
  LOAD_CPUS,
  MEMORY_EVENTS,
  MEMORY_RETENTION,
  MEMORY_STORE,
  PACED,
  PACED_IDS,
  PACED_RATE,
  pin,
  RESULTS,
  ROUNDS,
  SERVER_CPUS,
  TARGET_IDS,
  THREADS,
  WARMUP,
} from './lib/config.mjs';
import { cleanup, coldStart, measure, measureEndToEnd, measurePaced, memoryStep, unavailable } from './lib/measure.mjs';
import { f1, f2, pct, report } from './lib/report.mjs';
import { summarize } from './lib/stats.mjs';
import { TARGETS } from './lib/targets.mjs';

const firstLines = (error) => error.message.split('\n').slice(0, 6).join(' ');

/** Every target's row, with its cold start (or why it is skipped or failed). */
async function coldStarts(ids) {
  const runs = [];
  for (const id of ids) {
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
      row.failed = firstLines(error);
      console.log(`  (${id}) ${row.name}: FAILED: ${row.failed}`);
      continue;
    }
    const floor = TARGETS[id].coldFloor;
    if (!floor) continue;
    try {
      row.coldFloorMs = await coldStart(floor);
    } catch (error) {
      // The reference failing leaves ours' own figure standing.
      console.log(`  (${floor}) ${TARGETS[floor].name}: FAILED: ${firstLines(error)}`);
    }
  }
  return runs;
}

/** The rounds at saturation: every target once a round, in turn; then each row folded into its medians. */
async function rounds(runs) {
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
        row.rounds[round] = { failed: firstLines(error) };
        console.log(`FAILED: ${row.rounds[round].failed}`);
      }
    }
  }
  for (const row of runs) {
    if (row.skipped || row.failed) continue;
    summarize(row);
    if (!row.rps) row.failed = row.rounds.find((r) => r?.failed)?.failed ?? 'no successful round';
  }
}

/** Runs `fn(id, rate)` for each id with a rate from the rounds, logging each; rows carry what it returned. */
async function pacedStep(title, ids, rateOf, fn, describe) {
  const rows = [];
  if (ids.length === 0) return null;
  console.log(title);
  for (const id of ids) {
    const rate = rateOf(id);
    process.stdout.write(`  (${id}) ${TARGETS[id].name}, ${Math.round(rate)} req/s offered … `);
    try {
      const m = await fn(id, rate);
      rows.push({ id, ...m });
      console.log(describe(m));
    } catch (error) {
      rows.push({ id, rate, failed: firstLines(error) });
      console.log(`FAILED: ${rows.at(-1).failed}`);
    }
  }
  return { rows };
}

const latencyLine = (m) =>
  `${Math.round(m.rps)} req/s, p50 ${f2(m.p50)} ms, p99 ${f2(m.p99)} ms, max ${f2(m.max)} ms, errors ${m.errors}`;

/** Latency below saturation, at a fraction of the ceiling measured above (the same rate for every target). */
async function pacedCommon(runs) {
  const ran = (id) => runs.some((r) => r.id === id && r.rps);
  const ids = PACED > 0 ? PACED_IDS.filter(ran) : [];
  const a = runs.find((r) => r.id === 'a' && r.rps);
  const rate = a ? a.rps * PACED : PACED_RATE;
  const basis = a ? `${PACED} × (a)` : 'BENCH_PACED_RATE';
  const step = await pacedStep(
    `paced: about ${Math.round(rate)} requests/s (${basis})`,
    ids,
    () => rate,
    measurePaced,
    latencyLine,
  );
  return step && { ...step, rate, basis };
}

/** Latency at HALF of each target's own rate from the rounds. */
function pacedHalf(runs) {
  const rps = (id) => runs.find((r) => r.id === id && r.rps)?.rps;
  const ids = HALF > 0 ? HALF_IDS.filter(rps) : [];
  return pacedStep(`paced at ${HALF} × each one's own rate`, ids, (id) => HALF * rps(id), measurePaced, latencyLine);
}

/** End to end: each of ours at E2E_LOAD of its own rate for E2E_SECONDS, then its backlog. */
async function endToEnd(runs) {
  const rps = (id) => runs.find((r) => r.id === id && r.rps)?.rps;
  const ids = E2E_SECONDS > 0 ? E2E_IDS.filter((id) => TARGETS[id]?.ours && rps(id)) : [];
  const step = await pacedStep(
    `end to end: ${E2E_LOAD} × each one's own rate for ${E2E_SECONDS} s`,
    ids,
    (id) => E2E_LOAD * rps(id),
    measureEndToEnd,
    (m) =>
      `served ${Math.round(m.rps)} req/s, acked ${Math.round(m.ackRate)}/s, run ${Math.round(m.runRate)}/s, ` +
      `backlog ${m.backlog} at the end, ` +
      `p99 ${f2(m.p99)} ms, errors ${m.errors}`,
  );
  for (const row of step?.rows ?? []) row.capacity = rps(row.id);
  return step;
}

/** Runs one step and says how long it took (how a full run's time divides). */
async function timed(step, fn) {
  const t0 = performance.now();
  const out = await fn();
  if (out !== null) console.log(`  (${step}: ${f1((performance.now() - t0) / 1000)} s)`);
  return out;
}

async function memory() {
  process.stdout.write(
    `  memory: ${MEMORY_EVENTS} events into ours (${MEMORY_STORE}, retention ${MEMORY_RETENTION}) … `,
  );
  const m = await memoryStep();
  console.log(
    m.failed
      ? `FAILED: ${m.failed}`
      : `RSS ${f1(m.rssEarlyMb)} MB at ${m.early}, ${f1(m.rssEndMb)} MB at ${MEMORY_EVENTS}`,
  );
  return m;
}

async function main() {
  const startedAt = new Date();
  const loadBefore = loadavg()[0];
  console.log(
    `bench: ${ROUNDS} round(s) of ${DURATION}s per target after ${WARMUP}s warm-up, ${CONNECTIONS} connections, ` +
      `wrk ${THREADS} thread(s); server on cpu ${pin ? SERVER_CPUS : 'any'}, wrk on cpu ${pin ? LOAD_CPUS : 'any'}`,
  );
  const results = { startedAt, loadBefore, memory: null };
  try {
    results.runs = await timed('cold starts', () => coldStarts(TARGET_IDS));
    await timed('rounds', () => rounds(results.runs));
    results.paced = await timed('latency below saturation', () => pacedCommon(results.runs));
    results.half = await timed('latency at half capacity', () => pacedHalf(results.runs));
    results.e2e = await timed('end to end', () => endToEnd(results.runs));
    if (MEMORY_EVENTS > 0) results.memory = await timed('memory', memory);
  } finally {
    await cleanup();
  }
  const seconds = (Date.now() - startedAt.getTime()) / 1000;
  const text = report({ ...results, seconds });
  console.log(`\n${text}`);
  if (RESULTS) {
    writeFileSync(RESULTS, text);
    console.log(`written to ${RESULTS}`);
  }
}

await main();
