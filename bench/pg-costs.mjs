// `npm run bench:pg -- [target] [rate] [seconds]`: where the database's time goes for one Postgres target of the
// benchmark (bench/lib/targets.mjs: g is ours; q and qr are the minimal receivers; gb is BENCH_BASE's build), under
// the benchmark's load (wrk, unique signed events, pinned cores, a fresh schema), paced at `rate` requests/s
// (default 3400; 0 sends as fast as the server answers) for `seconds` (default 12).
//
// It prints, per acknowledged event: the database's CPU (every `postgres` process, from /proc) and the server's,
// transactions, WAL bytes and full-page images, buffers the backends had to write themselves, and the reads of each of
// the schema's indexes. When the database has pg_stat_statements loaded (shared_preload_libraries; track_planning
// for plan times), it also resets it and lists the statements by database time, planning and execution apart, with
// how often each was planned: the view that found where ours spends its time (docs/benchmarks.md).
// BENCH_PG_CHECKPOINT=1 issues a CHECKPOINT before the load (see docs/benchmarks.md for why a comparison must not).
import { readFileSync, readdirSync } from 'node:fs';
import { cleanup, onFreshServer, unavailable } from './lib/measure.mjs';
import { metricsOf, pgAdmin, runWrk, sleep } from './lib/processes.mjs';
import { TARGETS } from './lib/targets.mjs';

const [id = 'g', rateArg = '3400', secondsArg = '12'] = process.argv.slice(2);
const rate = Number(rateArg);
const seconds = Number(secondsArg);
const target = TARGETS[id];
if (!target?.postgres) {
  const ids = Object.keys(TARGETS).filter((t) => TARGETS[t].postgres);
  throw new Error(`${id} is not a Postgres target; one of ${ids.join(', ')}`);
}
if (!(rate >= 0) || !(seconds > 0)) throw new Error('usage: bench/pg-costs.mjs [target] [rate ≥ 0] [seconds > 0]');

/** CPU seconds (user + system) process `pid` has used, from /proc; 0 once it has ended. */
function cpuSeconds(pid) {
  try {
    // Fields after the command name, which is in parentheses and may hold spaces: utime and stime are 14 and 15.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // USER_HZ, 100 on Linux
  } catch {
    return 0;
  }
}

/** CPU seconds of every Postgres process (the server and each backend, as their command lines name them). */
function postgresCpu() {
  let seconds = 0;
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let cmd;
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue; // It ended meanwhile.
    }
    if (/^postgres[: ]|\/postgres\0/.test(cmd)) seconds += cpuSeconds(pid);
  }
  return seconds;
}

const pg = await pgAdmin();
if (pg.reason) throw new Error(pg.reason);
const one = async (text) => (await pg.unsafe(text))[0];
/** Whether pg_stat_statements is installed in this database and loaded (reading its view fails when it is not). */
async function statementsLoaded() {
  try {
    if ((await one(`SELECT count(*)::int AS n FROM pg_extension WHERE extname = 'pg_stat_statements'`)).n === 0) {
      return false;
    }
    await pg.unsafe('SELECT 1 FROM pg_stat_statements LIMIT 1');
    return true;
  } catch {
    return false;
  }
}
const hasStatements = await statementsLoaded();
const database = (await one('SELECT current_database() AS d')).d;
// Cluster-wide counters, each read on its own: pg_stat_wal is there from Postgres 14, and Postgres 17 moved backend
// writes and checkpoints out of pg_stat_bgwriter. A figure this server does not have reads null and prints as n/a.
const COUNTERS = {
  wal: 'SELECT wal_bytes::text AS v FROM pg_stat_wal',
  fpi: 'SELECT wal_fpi::text AS v FROM pg_stat_wal',
  backend: 'SELECT buffers_backend::text AS v FROM pg_stat_bgwriter',
  checkpoints: 'SELECT (checkpoints_req + checkpoints_timed)::text AS v FROM pg_stat_bgwriter',
  xacts: 'SELECT xact_commit::text AS v FROM pg_stat_database WHERE datname = current_database()',
};
async function totals() {
  const out = {};
  for (const [name, text] of Object.entries(COUNTERS)) {
    try {
      out[name] = (await one(text))?.v ?? null;
    } catch {
      out[name] = null;
    }
  }
  return out;
}
const updates = async (schema) =>
  (
    await pg.unsafe(
      `SELECT coalesce(sum(n_tup_upd), 0)::float8 AS updates, coalesce(sum(n_tup_hot_upd), 0)::float8 AS hot
       FROM pg_stat_user_tables WHERE schemaname = $1`,
      [schema],
    )
  )[0];
const indexes = (schema) =>
  pg.unsafe(
    `SELECT indexrelname AS name, idx_scan::float8 AS scans, idx_tup_read::float8 AS reads,
       idx_tup_fetch::float8 AS fetches FROM pg_stat_user_indexes WHERE schemaname = $1`,
    [schema],
  );

try {
  const why = await unavailable(id);
  if (why) throw new Error(`(${id}) cannot run here: ${why}`);
  await onFreshServer(id, 'pg-', async (proc, mode, _readyMs, ctx) => {
    if (process.env.BENCH_PG_CHECKPOINT === '1') await pg.unsafe('CHECKPOINT');
    if (hasStatements) await pg.unsafe('SELECT pg_stat_statements_reset()');
    const serverCpu = () => cpuSeconds(proc.child.pid);
    const before = {
      metrics: await metricsOf(proc.port),
      totals: await totals(),
      indexes: await indexes(ctx.schema),
      updates: await updates(ctx.schema),
    };
    const cpu0 = { pg: postgresCpu(), server: serverCpu() };
    const r = await runWrk(proc.port, mode, seconds, 0, rate);
    const cpu1 = { pg: postgresCpu(), server: serverCpu() };
    const after = { metrics: await metricsOf(proc.port), totals: await totals() };
    // Index counters reach the statistics views when each backend reports them (within a second or so).
    await sleep(1500);
    after.indexes = await indexes(ctx.schema);
    after.updates = await updates(ctx.schema);

    const elapsed = r.duration_us / 1e6;
    const ours = typeof after.metrics?.accepted === 'number';
    const acked = ours
      ? after.metrics.accepted + after.metrics.coalesced - (before.metrics.accepted + before.metrics.coalesced)
      : r.requests;
    const per = (a, b) => (Number(a) - Number(b)) / Math.max(1, acked);
    // A cluster counter an event, or n/a where this server does not keep it.
    const perTotal = (name, digits) =>
      after.totals[name] === null || before.totals[name] === null
        ? 'n/a'
        : per(after.totals[name], before.totals[name]).toFixed(digits);
    console.log(`(${id}) ${target.name}, ${rate > 0 ? `paced at ${rate}` : 'unpaced'}, ${elapsed.toFixed(1)} s`);
    console.log(
      `  acked ${Math.round(acked / elapsed)}/s` +
        (ours
          ? `, run ${Math.round((after.metrics.runs - before.metrics.runs) / elapsed)}/s, backlog ${after.metrics.pending} at the end`
          : ''),
    );
    console.log(
      `  CPU: database ${((cpu1.pg - cpu0.pg) / elapsed).toFixed(2)} cores (${((1e6 * (cpu1.pg - cpu0.pg)) / Math.max(1, acked)).toFixed(0)} µs an event), server ${((cpu1.server - cpu0.server) / elapsed).toFixed(2)} cores`,
    );
    console.log(
      `  an event: ${perTotal('xacts', 2)} transactions (whole database ${database}), ${perTotal('wal', 0)} WAL bytes, ${perTotal('fpi', 3)} full-page images, ${perTotal('backend', 2)} buffers written by backends; ${after.totals.checkpoints === null ? 'n/a' : Number(after.totals.checkpoints) - Number(before.totals.checkpoints)} checkpoint(s) during the load`,
    );
    const updated = after.updates.updates - before.updates.updates;
    const hot = after.updates.hot - before.updates.hot;
    console.log(
      `  row updates: ${per(after.updates.updates, before.updates.updates).toFixed(2)} an event, ${updated > 0 ? Math.round((100 * hot) / updated) : 0} % of them HOT (no index entry written)`,
    );
    console.log('  index reads an event (scans, entries read, rows fetched):');
    for (const ix of after.indexes) {
      const b = before.indexes.find((x) => x.name === ix.name);
      if (!b || ix.scans === b.scans) continue;
      console.log(
        `    ${ix.name}: ${per(ix.scans, b.scans).toFixed(2)}, ${per(ix.reads, b.reads).toFixed(1)}, ${per(ix.fetches, b.fetches).toFixed(1)}`,
      );
    }
    if (!hasStatements) {
      console.log(
        `  statements: pg_stat_statements is not loaded in ${database} (shared_preload_libraries = 'pg_stat_statements', a restart, CREATE EXTENSION pg_stat_statements; pg_stat_statements.track_planning = on for plan times)`,
      );
      return;
    }
    // Statements grouped by their first words, with the schema's name and parameter numbers taken out (each batch
    // size is a statement text of its own).
    // plans and total_plan_time are there from Postgres 13.
    const rows = await pg
      .unsafe(
        `WITH s AS (
         SELECT left(regexp_replace(regexp_replace(regexp_replace(query, '\\s+', ' ', 'g'), '"?' || $1 || '"?', 'S', 'g'),
           '\\$[0-9]+', '$', 'g'), 64) AS kind, calls, plans, rows, total_plan_time, total_exec_time
         FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND query NOT LIKE '%pg_stat%' -- this script's own
       )
       SELECT kind, sum(calls)::float8 AS calls, sum(plans)::float8 AS plans, sum(rows)::float8 AS rows,
         sum(total_plan_time)::float8 AS plan_ms, sum(total_exec_time)::float8 AS exec_ms,
         (SELECT sum(total_plan_time + total_exec_time) FROM s)::float8 AS all_ms
       FROM s GROUP BY kind ORDER BY sum(total_plan_time + total_exec_time) DESC LIMIT 10`,
        [ctx.schema],
      )
      .catch((error) => {
        console.log(`  statements: pg_stat_statements could not be read (${error.message})`);
        return null;
      });
    if (rows === null) return;
    const all = rows[0]?.all_ms ?? 0;
    console.log(
      `  statements by database time (${Math.round(all)} ms in all, ${((1000 * all) / Math.max(1, acked)).toFixed(0)} µs an event; the top ${rows.length}):`,
    );
    console.log('    plan ms | exec ms | µs an event | calls | planned | rows | statement');
    for (const x of rows) {
      console.log(
        `    ${Math.round(x.plan_ms)} | ${Math.round(x.exec_ms)} | ${((1000 * (x.plan_ms + x.exec_ms)) / Math.max(1, acked)).toFixed(1)} | ${x.calls} | ${x.plans} | ${x.rows} | ${x.kind}`,
      );
    }
  });
} finally {
  await pg.end({ timeout: 2 });
  await cleanup();
}
