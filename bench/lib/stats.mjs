// Medians and same-round ratios: every figure compared across targets is a ratio of two runs of one round.

export const median = (xs) => {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((p, q) => p - q);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
};

/** x's rate over y's in each round (null where either has none), each pair measured in the same round. */
export function perRound(x, y) {
  if (!x?.rounds || !y?.rounds) return null;
  return x.rounds.map((r, i) => (r?.rps && y.rounds[i]?.rps ? r.rps / y.rounds[i].rps : null));
}

/** The median of the per-round ratios of x to y. */
export function ratioOf(x, y) {
  const per = perRound(x, y);
  return per ? median(per) : null;
}

/** Folds a target's rounds into one row: medians of rate and latency, the last round's counts. */
export function summarize(row) {
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

/**
 * What ours' own clock says of the acks between two readings of its histogram: their number, the share within
 * `limitMs` (exact when it is a bucket's bound, else null), and the bucket the 99th percentile falls in. wrk's
 * latency adds what happens before ours reads a request (the connection's queue, the event loop busy elsewhere) and
 * after it answers.
 */
export function ownLatency(before, after, limitMs) {
  if (!before?.length || !after?.length) return null;
  const delta = after.map((b, i) => ({ le: b.le, n: b.n - (before[i]?.n ?? 0) }));
  const count = delta.at(-1)?.n ?? 0;
  if (count <= 0) return null;
  const within = delta.find((b) => b.le === limitMs);
  const at99 = delta.findIndex((b) => b.n >= 0.99 * count);
  return {
    count,
    shareWithin: within ? within.n / count : null,
    p99From: at99 > 0 ? delta[at99 - 1].le : 0,
    p99To: at99 >= 0 ? delta[at99].le : null,
  };
}
