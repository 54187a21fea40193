// The targets the run is judged by, each a figure of this run against a threshold: ours against the least a
// durable receiver must do on the same runtime and storage (same rounds), end to end at 80 % of ours' own capacity,
// latency at half of it, cold start and memory.
import { E2E_LOAD, E2E_SECONDS, HALF } from './config.mjs';
import { ratioOf } from './stats.mjs';

const f1 = (x) => (typeof x === 'number' ? x.toFixed(1) : '—');
const f2 = (x) => (typeof x === 'number' ? x.toFixed(2) : '—');
/** A share as a percentage with one decimal (the report's own-clock column uses it too). */
export const pct1 = (x) => (typeof x === 'number' ? `${(x * 100).toFixed(1)} %` : '—');
const int = (x) => (typeof x === 'number' ? Math.round(x).toLocaleString('en') : '—');

/**
 * Ratios of ours to a reference, from the rounds: [id of ours, id of the reference, least ratio, what it is, the
 * least receiver that does what ours must there (its ratio to the same reference is the ceiling), what that does].
 */
const RATIOS = [
  [
    'e',
    't',
    0.85,
    'ours on SQLite at synchronous=FULL (e) against the minimal SQLite receiver at FULL (t)',
    'tr',
    'also records each run',
  ],
  ['g', 'q', 0.8, 'ours on Postgres (g) against the minimal Postgres receiver (q)', 'qr', 'also records each run'],
  ['f', 'k', 0.8, 'ours on Deno KV (f) against the minimal Deno KV receiver (k)', 'kr', 'also records each run'],
  [
    'c',
    'h',
    1.0,
    'ours on the memory store (c) against @octokit/webhooks (h)',
    'm',
    'keeps each event it acks, as ours keeps each in its store',
  ],
];
/** The same figure for the least receiver that does what ours must, or '—' where the run has none. */
const refText = (value, text) => (value === null || value === undefined ? '—' : text);
/** p99 ack latency at half capacity, in ms (a bound of ours' ack histogram, so its own share within is exact). */
export const P99_LIMIT_MS = 5;
/** Ours paced at half capacity, each with the minimal receiver on its storage (paced at half its own capacity). */
const HALF_GOAL_IDS = [
  ['e', 't'],
  ['d', 's'],
];
const COLD_LIMIT_MS = 150;
const MEMORY_GROWTH = 0.2;
/** The share of the offered deliveries ours must ack in the end-to-end run. */
const E2E_ACKED = 0.95;

/**
 * Every target as `{ name, measured, threshold, ok }`; ok is null when this run could not tell (a target skipped,
 * failed or not run).
 */
export function goals({ runs, half, e2e, memory }) {
  const by = Object.fromEntries(runs.filter((r) => r.rps).map((r) => [r.id, r]));
  const out = [];
  for (const [x, y, least, name, z, does] of RATIOS) {
    const v = by[x] && by[y] ? ratioOf(by[x], by[y]) : null;
    const ref = by[z] && by[y] ? ratioOf(by[z], by[y]) : null;
    out.push({
      name,
      measured: v === null ? '—' : `${f2(v)} × (${y})`,
      threshold: `≥ ${f2(least)} ×`,
      ok: v === null ? null : v >= least,
      reference: refText(ref, `${f2(ref)} × (${y}): (${z}), which ${does}`),
    });
  }
  for (const r of e2e?.rows ?? []) out.push(endToEndGoal(r));
  for (const [id, minimal] of HALF_GOAL_IDS) {
    const r = half?.rows.find((x) => x.id === id);
    const m = half?.rows.find((x) => x.id === minimal && !x.failed);
    out.push({
      name: `p99 ack latency, ours (${id}) paced at ${Math.round(HALF * 100)} % of its capacity${r ? ` (${int(r.rate)} req/s)` : ''}`,
      measured:
        r && !r.failed
          ? `${f2(r.p99)} ms${typeof r.own?.shareWithin === 'number' ? ` (ours' own clock: ${pct1(r.own.shareWithin)} within ${P99_LIMIT_MS} ms)` : ''}`
          : r?.failed
            ? `failed: ${r.failed}`
            : '—',
      threshold: `≤ ${P99_LIMIT_MS} ms`,
      ok: r && !r.failed ? r.p99 <= P99_LIMIT_MS : null,
      reference: refText(
        m?.p99,
        `${f2(m?.p99)} ms: (${minimal}), paced at ${Math.round(HALF * 100)} % of its own capacity`,
      ),
    });
  }
  const cold = by.c?.coldMs;
  out.push({
    name: 'cold start on Bun, ours (c): spawn to the first 200',
    measured: `${f1(cold)} ms`,
    threshold: `≤ ${COLD_LIMIT_MS} ms`,
    ok: typeof cold === 'number' ? cold <= COLD_LIMIT_MS : null,
    reference: refText(
      by.c?.coldFloorMs,
      `${f1(by.c?.coldFloorMs)} ms: (az), the bare server once it has imported hono and zod, measured right after`,
    ),
  });
  const grown = memory && !memory.failed ? memory.growth : null;
  out.push({
    name: `flat memory, ours (${memory?.store ?? 'sqlite'}): RSS at ${int(memory?.events)} events against ${int(memory?.early)}`,
    measured:
      typeof grown === 'number'
        ? `${grown >= 0 ? '+' : ''}${(grown * 100).toFixed(1)} %`
        : memory?.failed
          ? `failed: ${memory.failed}`
          : '—',
    threshold: `within ${MEMORY_GROWTH * 100} %`,
    ok: typeof grown === 'number' ? Math.abs(grown) <= MEMORY_GROWTH : null,
  });
  return out;
}

/**
 * One of ours end to end: the backlog (acked, not yet run) when the load stopped is under one second of the offered
 * deliveries, and it acked what was offered (a server that cannot ack at that pace pushes its backlog onto the
 * sender instead, where the backlog figure would not show it).
 */
function endToEndGoal(r) {
  const name =
    `end to end, ours (${r.id}): ${E2E_SECONDS} s at ${Math.round(E2E_LOAD * 100)} % of its capacity ` +
    `(${int(r.rate)} req/s offered), no-op handlers`;
  const threshold = `backlog < 1 s of deliveries (${int(r.rate)}); acked ≥ ${Math.round(E2E_ACKED * 100)} % of offered`;
  if (r.failed) return { name, measured: `failed: ${r.failed}`, threshold, ok: null };
  const acked = r.ackRate / r.rate;
  return {
    name,
    measured:
      `backlog ${int(r.backlog)} (${f2(r.backlog / r.rate)} s); acked ${int(r.ackRate)}/s (${Math.round(acked * 100)} %); ` +
      `acked and run ${int(Math.min(r.ackRate, r.runRate))}/s`,
    threshold,
    ok: r.backlog < r.rate && acked >= E2E_ACKED && r.errors === 0,
  };
}

const verdict = (ok) => (ok === null ? 'n/a' : ok ? '**met**' : '**missed**');

export function goalsTable(list) {
  return [
    '| target | measured | threshold | result | the least receiver that does what ours must, same run |',
    '|---|---|---|---|---|',
    ...list.map((g) => `| ${g.name} | ${g.measured} | ${g.threshold} | ${verdict(g.ok)} | ${g.reference ?? '—'} |`),
  ].join('\n');
}
