// The report: the saturation table, the paced tables, the end-to-end table, the targets, and the notes that say
// how to read them. Markdown, printed and written to bench/RESULTS.md.
import { execFileSync } from 'node:child_process';
import { cpus, hostname, totalmem, type as osType, release } from 'node:os';
import {
  COLD_RUNS,
  CONNECTIONS,
  DRAIN,
  DURATION,
  E2E_LOAD,
  E2E_SECONDS,
  HALF,
  MEMORY_EVENTS,
  NCPU,
  pin,
  LOAD_CPUS,
  ROUNDS,
  SERVER_CPUS,
  THREADS,
  WARMUP,
} from './config.mjs';
import { goals, goalsTable, P99_LIMIT_MS, pct1 } from './goals.mjs';
import { perRound, ratioOf } from './stats.mjs';
import { bun, deno, TARGETS } from './targets.mjs';

export const f1 = (x) => (x === undefined || x === null ? '—' : x.toFixed(1));
export const f2 = (x) => (x === undefined || x === null ? '—' : x.toFixed(2));
export const pct = (x) => (x === undefined || x === null ? '—' : `${Math.round(x * 100)} %`);
const int = (x) => (typeof x === 'number' ? Math.round(x).toLocaleString('en') : '—');

/** The per-round ratios, e.g. `0.41 / 0.45 / 0.39`. */
function byRound(r, ref) {
  const per = perRound(r, ref);
  return per ? per.map((x) => (x === null ? '—' : f2(x))).join(' / ') : '—';
}

/** `0.84 × (t): 0.80 / 0.86 / 0.88` for ours against the minimal receiver it is held against, else empty. */
function againstBaseline(r, rows) {
  const id = TARGETS[r.id]?.baseline;
  const ref = id && rows.find((x) => x.id === id && x.rps);
  return ref ? `${f2(ratioOf(r, ref))} × (${id}): ${byRound(r, ref)}` : '';
}

function notesOf(r) {
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
  return notes.join('; ');
}

export function table(rows) {
  const a = rows.find((r) => r.id === 'a' && r.rps);
  const lines = [
    '| | target | requests/s | × (a) | × (a) by round | × its baseline: by round | p50 ms | p99 ms | errors | cold start ms | RSS MB | notes |',
    '|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|---|',
  ];
  for (const r of rows) {
    if (r.skipped || r.failed) {
      const why = r.skipped ? `skipped: ${r.skipped}` : `failed: ${r.failed}`;
      lines.push(`| ${r.id} | ${r.name} | — | — | — | — | — | — | — | — | — | ${why} |`);
      continue;
    }
    lines.push(
      `| ${r.id} | ${r.name} | ${int(r.rps)} | ${a ? f2(ratioOf(r, a)) : '—'} | ${byRound(r, a)} | ${againstBaseline(r, rows)} | ` +
        `${f2(r.p50)} | ${f2(r.p99)} | ${r.errors} | ${f1(r.coldMs)} | ${f1(r.rssMb)} | ${notesOf(r)} |`,
    );
  }
  return lines.join('\n');
}

/** A paced section's rows: offered (the pace asked of wrk) against served, and latency. */
export function pacedTable(rows) {
  const lines = [
    `| | target | offered req/s | served req/s | p50 ms | p99 ms | max ms | errors | ours' own clock: acks within ${P99_LIMIT_MS} ms | its p99 between |`,
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    const name = TARGETS[r.id]?.name ?? r.id;
    if (r.failed) lines.push(`| ${r.id} | ${name} | ${int(r.rate)} | — | — | — | — | failed: ${r.failed} | — | — |`);
    else {
      const own = r.own;
      const within = pct1(own?.shareWithin);
      const between =
        own && own.p99To !== null
          ? own.p99To === Number.POSITIVE_INFINITY
            ? `over ${own.p99From} ms`
            : `${own.p99From}–${own.p99To} ms`
          : '—';
      lines.push(
        `| ${r.id} | ${name} | ${int(r.rate)} | ${int(r.rps)} | ${f2(r.p50)} | ${f2(r.p99)} | ${f2(r.max)} | ${r.errors} | ${within} | ${between} |`,
      );
    }
  }
  return lines.join('\n');
}

export function e2eTable(rows) {
  const lines = [
    '| | target | capacity req/s | offered req/s | acked /s | handlers run /s | backlog at the end | = s of deliveries | p99 ms | errors |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    const name = TARGETS[r.id]?.name ?? r.id;
    if (r.failed) {
      lines.push(
        `| ${r.id} | ${name} | ${int(r.capacity)} | ${int(r.rate)} | — | — | — | — | — | failed: ${r.failed} |`,
      );
      continue;
    }
    lines.push(
      `| ${r.id} | ${name} | ${int(r.capacity)} | ${int(r.rate)} | ${int(r.ackRate)} | ${int(r.runRate)} | ` +
        `${int(r.backlog)} | ${f2(r.backlog / r.rate)} | ${f2(r.p99)} | ${r.errors} |`,
    );
  }
  return lines.join('\n');
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

/** The notes under the main table. */
function notes({ runs, loadBefore }) {
  const a = runs.find((r) => r.id === 'a' && r.rps);
  return [
    '## Notes',
    '',
    `- Load average when the run began: ${loadBefore.toFixed(2)} (on ${NCPU} cores); anything else running makes every figure noisier.`,
    `- The generator: wrk used ${runs
      .filter((r) => r.rps)
      .map((r) => `${pct(r.wrkCpu)} (${r.id})`)
      .join(
        ', ',
      )} of its core (median over the rounds). Near 100 %, wrk rather than the server set that target's rate` +
      `${a ? ` (the bare server (a) reached ${int(a.rps)} requests/s with wrk at ${pct(a.wrkCpu)})` : ''}.`,
    '- (b) is Lava’s documented Express receiver (express.raw for the raw body, createHmac, timingSafeEqual, JSON.parse); ' +
      '(n) is the same logic on bare node:http, to show what Express itself costs.',
    '- (h) answers after its handlers ran in memory and records nothing; ours answers only after the event is in the store, ' +
      'and its worker runs the handlers (no-ops, bench/noop-handlers.mjs) on the same core during the run (the notes ' +
      'column says how many acknowledged events it had not yet run when the load stopped; it runs them afterwards).',
    '- (m) is the least a hand-written receiver does and keeps what it acknowledges in memory: read, verify, parse, and ' +
      'keep each event in a Map keyed by a string, with none of ours’ validation, logging, metrics, handler runs or ' +
      'store contract. The distance from (a) to (m) is that minimum work plus the garbage collector’s cost of keeping ' +
      'every event on the JS heap.',
    '- (s), (t), (k) and (q) are the least a durable receiver must do on the same runtime and storage as ours (d), (e), ' +
      '(f) and (g): verify the HMAC with the runtime’s native crypto (as ours does there), JSON.parse, insert-if-absent ' +
      'of (SHA-256 of the body, body), ack only once that write is durable. SQLite (bench/targets/sqlite-bun.ts): a ' +
      'WAL file at the same synchronous setting as ours (NORMAL for (d), FULL for (e)) and the same wal_autocheckpoint, ' +
      '`INSERT OR IGNORE`, the inserts of one event-loop turn in one transaction (group commit, as ours). Deno KV ' +
      '(bench/targets/kv-deno.ts): a local KV file, `check({ key, versionstamp: null })` and `set`, up to 100 inserts ' +
      'a commit (KV allows 100 checks), the next batch gathered while a commit is under way (as ours). Postgres ' +
      '(bench/targets/postgres-bun.ts): Bun’s SQL client with the same pool size (10), the inserts of one turn as one ' +
      'multi-row `INSERT … ON CONFLICT DO NOTHING` (as ours batches them), in a schema of its own dropped afterwards; ' +
      'the server’s synchronous_commit serves both. None validates the payload, runs handlers, orders by customer or ' +
      'keeps any state beyond the row: what they leave out is what ours’ store and worker cost.',
    `- The rate at which ours then ran that backlog is measured over the ${DRAIN} s after the load stopped, with no-op ` +
      'handlers at the default concurrency (8): the processing capacity of one instance, with the core to itself ' +
      '(raise LAVA_WEBHOOK_CONCURRENCY, or run more instances, for more).',
    '',
  ];
}

const PACING =
  'wrk sends on a Poisson schedule at that rate, whichever connection is free taking the next departure, and catches ' +
  'up at once when it fell behind (bench/wrk/lava.lua), so a served rate below the offered one means the server (or ' +
  `its ${CONNECTIONS} connections) could not keep up; wrk times each request from when it is written`;
const OWN_CLOCK =
  'For ours, the last two columns are its own clock over the same measured seconds: its ack-latency histogram ' +
  '(`lava_webhooks_ack_latency_ms`, from the request handed to it to its 200) read before and after. What wrk ' +
  'measures beyond that is spent before ours reads the request (the connection, the event loop busy with other ' +
  'work) or after it answers.';

/** The paced sections: latency below saturation (a common rate), at half of each one's capacity, end to end. */
function pacedSections({ paced, half, e2e }) {
  const out = [];
  if (paced) {
    out.push(
      '## Latency below saturation',
      '',
      `The table above is taken at saturation: wrk sends as fast as each server answers, so its latencies are mostly ` +
        `queueing. Here each target gets a fresh server and about ${int(paced.rate)} requests/s (${paced.basis}) over ` +
        `the same ${CONNECTIONS} connections, ${DURATION}s after ${WARMUP}s of warm-up at that pace; ${PACING}. Ours ` +
        `also runs its handlers meanwhile. ${OWN_CLOCK}`,
      '',
      pacedTable(paced.rows),
      '',
    );
  }
  if (half) {
    out.push(
      `## Latency at ${Math.round(HALF * 100)} % of capacity`,
      '',
      `Each target on a fresh server, offered ${HALF} × its own requests/s from the rounds above, ${DURATION}s after ` +
        `${WARMUP}s of warm-up at that pace; ${PACING}. ${OWN_CLOCK}`,
      '',
      pacedTable(half.rows),
      '',
    );
  }
  if (e2e) {
    out.push(
      '## End to end',
      '',
      `Each of ours on a fresh server and store, offered ${E2E_LOAD} × its own requests/s from the rounds above for ` +
        `${E2E_SECONDS} s (${PACING}), with no-op handlers at the default concurrency. Acked and run are ours' own ` +
        'counts (deliveries accepted or coalesced; handler runs that succeeded) over the run; the backlog is ' +
        '`lava_webhooks_pending` (the store’s count of events acked and not yet run) when the load stopped. The target: ' +
        'a backlog under one second of the offered deliveries (a worker that keeps up holds only what arrived while ' +
        'a claim was under way), with at least 95 % of the offered deliveries acked (one that cannot ack at that pace ' +
        'leaves its backlog with the sender, where this figure would not show it).',
      '',
      e2eTable(e2e.rows),
      '',
    );
  }
  return out;
}

function memorySection(memory) {
  if (!memory) return [];
  return [
    '## Memory',
    '',
    memory.failed
      ? `Failed: ${memory.failed}`
      : `${MEMORY_EVENTS.toLocaleString('en')} unique events into ours on Bun (${memory.store} store, retention ` +
        `${memory.retention}, so purge runs throughout) in ${f1(memory.seconds)} s: RSS ${f1(memory.rssStartMb)} MB at start, ` +
        `${f1(memory.rssEarlyMb)} MB at ${int(memory.early)}, ${f1(memory.rssEndMb)} MB at ${MEMORY_EVENTS.toLocaleString('en')} ` +
        `(${memory.growth >= 0 ? '+' : ''}${(memory.growth * 100).toFixed(1)} %), ${f1(memory.rssSettledMb)} MB after the backlog drained.`,
    '',
  ];
}

/** Ours against the minimal receivers that also record each run (tr, kr, qr), where both were measured. */
function runsSection(runs) {
  const pairs = [
    ['e', 'tr', 't'],
    ['f', 'kr', 'k'],
    ['g', 'qr', 'q'],
  ];
  const by = Object.fromEntries(runs.filter((r) => r.rps).map((r) => [r.id, r]));
  const rows = pairs.filter(([x, y]) => by[x] && by[y]);
  if (rows.length === 0) return [];
  return [
    '',
    '### Against a minimal receiver that also records each run',
    '',
    'Not targets: (t), (k) and (q) never run what they store, while ours runs every event and records that it did, so ' +
      'a restart runs only what was left. (tr), (kr) and (qr) are the same minimal receivers plus that one write: ' +
      "each acked event's (no-op) run is recorded in the next commit. What ours costs beyond them is its own machinery " +
      '(claims and leases, ordering by customer, retries, the status, customer and purge indexes, validation, metrics).',
    '',
    '| ours | against | ratio: by round | that reference against the insert-only one |',
    '|---|---|---|---|',
    ...rows.map(([x, y, z]) => {
      const cost = by[z] ? `${f2(ratioOf(by[y], by[z]))} × (${z})` : '—';
      return `| (${x}) | (${y}) | ${f2(ratioOf(by[x], by[y]))} × (${y}): ${byRound(by[x], by[y])} | ${cost} |`;
    }),
  ];
}

/** The whole report as markdown. */
export function report(results) {
  const { runs, startedAt, seconds } = results;
  const ver = versions();
  const machine = `${cpus()[0]?.model ?? 'unknown CPU'} × ${NCPU}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, ${osType()} ${release()} (${hostname()})`;
  return [
    '# Benchmark results',
    '',
    `Run: ${startedAt.toISOString()} — \`npm run bench\`, ${f1(seconds / 60)} min`,
    `Machine: ${machine}`,
    `Runtimes: Bun ${ver.bun}, ${ver.deno}, Node ${ver.node}; load: ${ver.wrk}`,
    `Settings: ${ROUNDS} round(s), each measuring every target in turn for ${DURATION}s after ${WARMUP}s warm-up on a fresh ` +
      `server and store; ${CONNECTIONS} connections, ${THREADS} wrk thread(s); ` +
      `server pinned to cpu ${pin ? SERVER_CPUS : 'none'}, wrk to cpu ${pin ? LOAD_CPUS : 'none'}; every request a unique ` +
      'signed `customer.wallet.balance.updated` event (997 customers); servers log at warn.',
    '',
    '## Targets',
    '',
    goalsTable(goals(results)),
    '',
    'Ratios are medians of per-round ratios: both targets of a pair measured in the same round, next to each other. ' +
      'The last column gives the same figure, from the same run, for the least receiver that does what ours must ' +
      'there: record each run as well (tr, qr, kr), keep what it acked (m), the minimal receiver on the same storage ' +
      'paced at half its own capacity (t, s), and a cold start that only imports what ours is built on (az). Where ' +
      'that receiver misses the threshold too, what stands in the way is the storage or the runtime, not ours.',
    ...runsSection(runs),
    '',
    '## Throughput at saturation',
    '',
    table(runs),
    '',
    'Latency is wrk’s, from the generator (ack latency as the sender sees it). Cold start: process spawn to the first 200 ' +
      `on a signed POST, median of ${COLD_RUNS}. RSS: resident memory after the last round's run. requests/s, p50 and p99 ` +
      'are medians over the rounds; × (a) is the median of the per-round ratios (each target against the bare server ' +
      'of the same round), and the next column lists them, so the spread shows how steady the machine was. “× its ' +
      'baseline” is the same for each of ours against the minimal receiver on its runtime and storage.',
    '',
    ...notes(results),
    ...pacedSections(results),
    ...memorySection(results.memory),
  ].join('\n');
}
