// What the SQLite store writes per event, counted instead of timed (wall-clock benchmarks need a quiet machine; these
// numbers do not): N events go through the store the way the server sends them (group commit, durability full, a
// real file), and the real worker claims and completes them with no-op handlers. The same events then go through
// the minimal receiver's insert (bench/targets/sqlite-bun.ts: INSERT OR IGNORE (key, body), one transaction per
// batch). Checkpoints are off for the run, so every page a commit wrote stays in the WAL as one frame: frames per
// event is what the disk is asked to write, and the frames' page numbers, mapped to their b-trees (dbstat), say
// which table or index wrote them. It also times each statement (wall clock, in process), the one figure here that
// moves with the machine: where the store's CPU goes, statement by statement, against the minimal receiver's insert.
//   npx bun bench/sqlite-frames.ts [events=20000] [deliveries per turn=16]
// The worker runs on timers and the turns of the event loop, so two runs may differ by a few frames in a thousand.
import { createHash } from 'node:crypto';
import { mkdtempSync, openSync, readSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Identity, identify } from '../src/intake/identity.ts';
import { jsonLogger } from '../src/observability/log.ts';
import { Metrics } from '../src/observability/metrics.ts';
import { createWorker } from '../src/processing/worker.ts';
import * as bun from '../src/stores/sqlite-bun.ts';
import type { SqliteConnection, SqliteDriver } from '../src/stores/sqlite-driver.ts';
import { type SqliteGroupCommitStore, openSqliteStore } from '../src/stores/sqlite-store.ts';
import type { NewEvent } from '../src/stores/store.ts';

const N = Number(process.argv[2] ?? 20_000);
const PER_TURN = Number(process.argv[3] ?? 16);
const CUSTOMERS = 997;

/**
 * Statements run on a connection: every run/get/all, and the transactions among them; once `timing` is set, also
 * the calls and the time spent in each statement (by its SQL's first words).
 */
interface Tally {
  statements: number;
  commits: number;
  timing?: boolean;
  time?: Map<string, { calls: number; ms: number }>;
}

/** A statement's label in the timing table: its SQL's first words, whitespace folded. */
const labelOf = (sql: string) => {
  const words = sql.replace(/\s+/g, ' ').trim();
  return words.length > 64 ? `${words.slice(0, 63)}…` : words;
};

/** Bun's driver, counting statements, with automatic checkpoints off (so the WAL keeps every frame written). */
function countingDriver(tally: Tally): SqliteDriver {
  return {
    DRIVER: bun.DRIVER,
    walSyncer: bun.walSyncer,
    openDatabase(path: string): SqliteConnection {
      const db = bun.openDatabase(path);
      return {
        exec: (sql) => db.exec(sql.replace(/wal_autocheckpoint = \d+/, 'wal_autocheckpoint = 0')),
        prepare(sql) {
          const st = db.prepare(sql);
          const commit = /^\s*COMMIT/i.test(sql);
          const label = labelOf(sql);
          const count = () => {
            tally.statements++;
            if (commit) tally.commits++;
          };
          // Wall time in the statement (the driver's call included): its CPU, and for COMMIT the WAL's write.
          const timed = <T>(call: () => T): T => {
            if (!tally.timing) return call();
            const t0 = performance.now();
            try {
              return call();
            } finally {
              tally.time ??= new Map();
              const t = tally.time.get(label) ?? { calls: 0, ms: 0 };
              t.calls++;
              t.ms += performance.now() - t0;
              tally.time.set(label, t);
            }
          };
          return {
            run(...p) {
              count();
              return timed(() => st.run(...p));
            },
            get(...p) {
              count();
              return timed(() => st.get(...p));
            },
            all(...p) {
              count();
              return timed(() => st.all(...p));
            },
          };
        },
        close: () => db.close(),
      };
    },
  };
}

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
const encoder = new TextEncoder();
const customer = (id: string) =>
  `{"customer_id":"${id}","reference_id":"user_42","contact":{"phone":null,"email":"ada@example.com",` +
  `"first_name":"Ada","last_name":"Lovelace"},"subscription":{"subscription_id":"sub_1","plan_id":"plan_pro",` +
  `"name":"Pro","status":"active"},"metadata":{}`;

/**
 * Delivery i: in every 10, two customer.created of new customers, one redelivery of a customer.created (a duplicate),
 * seven balance updates spread over 997 customers (signals, each with its own body); every 50th delivery is a second
 * copy of the balance update before it (coalesced if that one still waits).
 */
function delivery(i: number): { event: string; customerId: string; body: Uint8Array } {
  const r = i % 10;
  if (r <= 2) {
    const id = `cus_new_${r === 2 ? i - 10 : i}`;
    const body = `{"event":"customer.created","data":${customer(id)},"created_at":"2026-01-01T00:00:00.000Z"}}`;
    return { event: 'customer.created', customerId: id, body: encoder.encode(body) };
  }
  const n = i % 50 === 49 ? i - 1 : i;
  const id = `cus_bench_${(n * 7919) % CUSTOMERS}`;
  const body =
    `{"event":"customer.wallet.balance.updated","data":${customer(id)},"balance":"${n}.00",` +
    `"created_at":"2026-01-01T00:00:00.000Z"}}`;
  return { event: 'customer.wallet.balance.updated', customerId: id, body: encoder.encode(body) };
}

async function newEvent(i: number): Promise<NewEvent> {
  const d = delivery(i);
  const receivedAt = Date.now();
  const id: Identity = await identify(
    { event: d.event, customerId: d.customerId, payload: {}, body: d.body, headers: new Headers() },
    { receivedAt, digest: sha256 },
  );
  return {
    key: id.key,
    policy: id.policy,
    coalesceKey: id.coalesceKey,
    event: d.event,
    customerId: d.customerId,
    body: d.body,
    headers: { 'content-type': 'application/json' },
    receivedAt,
    status: 'pending',
  };
}

/** Frames in the WAL from frame `from` on, by page number. */
function walPages(walPath: string, from = 0): { frames: number; pages: number[] } {
  const fd = openSync(walPath, 'r');
  const header = Buffer.alloc(32);
  readSync(fd, header, 0, 32, 0);
  const pageSize = header.readUInt32BE(8);
  const frames = Math.floor((statSync(walPath).size - 32) / (24 + pageSize));
  const pages: number[] = [];
  const frameHeader = Buffer.alloc(24);
  for (let f = from; f < frames; f++) {
    readSync(fd, frameHeader, 0, 24, 32 + f * (24 + pageSize));
    pages.push(frameHeader.readUInt32BE(0));
  }
  return { frames, pages };
}

/**
 * Frames written, by b-tree (table or index name): the WAL's new frames are read every few turns and their pages
 * looked up in dbstat (on a connection of its own) as the b-trees are then, so that few of them are already freed
 * again (those count as "(freed)").
 */
function treeCounter(path: string, from: number) {
  const db = bun.openDatabase(path);
  const stat = db.prepare('SELECT name, pageno FROM dbstat');
  const out = new Map<string, number>();
  let seen = from;
  return {
    out,
    take() {
      const { frames, pages } = walPages(`${path}-wal`, seen);
      seen = frames;
      const names = new Map<number, string>();
      for (const row of stat.all()) names.set(row.pageno as number, row.name as string);
      for (const p of pages) {
        const name = names.get(p) ?? '(freed)';
        out.set(name, (out.get(name) ?? 0) + 1);
      }
    },
    close: () => db.close(),
  };
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

interface Result {
  frames: number;
  commits: number;
  statements: number;
  trees: Map<string, number>;
  /** Calls and time by statement, over the run (the harness's own reads left out). */
  time: Map<string, { calls: number; ms: number }>;
  /** The most events recorded and not yet done, sampled every 16 turns. */
  backlog?: number;
}

async function ours(dir: string, events: NewEvent[]): Promise<Result> {
  const path = join(dir, 'ours.sqlite');
  const tally: Tally = { statements: 0, commits: 0 };
  const store = openSqliteStore(
    { driver: countingDriver(tally), unavailableReason: null },
    { path, durability: 'full', groupCommit: true, backgroundCheckpoint: false },
  ) as SqliteGroupCommitStore;
  const start = walPages(`${path}-wal`).frames;
  const trees = treeCounter(path, start);
  const before = { ...tally };
  tally.timing = true;
  const worker = createWorker({
    store,
    process: () => {},
    concurrency: 8,
    leaseMs: 30_000,
    pollMs: 1_000,
    handlerTimeoutMs: 30_000,
    retry: { scheduleMs: [1000], jitter: 0 },
    logger: jsonLogger({ level: 'silent' }),
    metrics: new Metrics(),
  });
  worker.start();
  const acks: Promise<unknown>[] = [];
  let backlog = 0;
  for (let i = 0; i < events.length; i += PER_TURN) {
    // As the receiver inserts: with the lease the worker offers when it has room (see Store.insert), and the record
    // the insert leased handed back to it.
    for (const e of events.slice(i, i + PER_TURN)) {
      const lease = worker.leaseForInsert();
      const inserting = store.insert(e, lease);
      if (lease)
        inserting.then(
          (r) => worker.adopt(r.leased),
          () => worker.adopt(undefined),
        );
      acks.push(inserting);
    }
    await turn();
    if ((i / PER_TURN) % 16 === 15) {
      trees.take();
      tally.timing = false;
      const c = await store.counts();
      tally.timing = true;
      backlog = Math.max(backlog, c.pending + c.retrying);
    }
  }
  await Promise.all(acks);
  for (;;) {
    tally.timing = false;
    const c = await store.counts();
    tally.timing = true;
    if (c.pending + c.retrying === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  await worker.stop(1000);
  tally.timing = false;
  const c = await store.counts();
  if (c.dead !== 0) throw new Error(`dead letters: ${JSON.stringify(c)}`);
  trees.take();
  trees.close();
  const result = {
    frames: walPages(`${path}-wal`).frames - start,
    commits: tally.commits - before.commits,
    statements: tally.statements - before.statements,
    trees: trees.out,
    time: tally.time ?? new Map(),
    backlog,
  };
  await store.close();
  return result;
}

/** The minimal receiver's store (bench/targets/sqlite-bun.ts) with the same keys in the same batches. */
function minimal(dir: string, events: NewEvent[]): Result {
  const path = join(dir, 'minimal.sqlite');
  const tally: Tally = { statements: 0, commits: 0 };
  const db = countingDriver(tally).openDatabase(path);
  db.exec('PRAGMA journal_mode = WAL');
  db.exec('PRAGMA synchronous = FULL');
  db.exec('PRAGMA wal_autocheckpoint = 0');
  db.exec('CREATE TABLE IF NOT EXISTS events (key TEXT PRIMARY KEY, body BLOB NOT NULL)');
  const insert = db.prepare('INSERT OR IGNORE INTO events (key, body) VALUES (?, ?)');
  const begin = db.prepare('BEGIN IMMEDIATE');
  const commit = db.prepare('COMMIT');
  const start = walPages(`${path}-wal`).frames;
  const trees = treeCounter(path, start);
  const before = { ...tally };
  tally.timing = true;
  for (let i = 0; i < events.length; i += PER_TURN) {
    begin.run();
    for (const e of events.slice(i, i + PER_TURN)) insert.run(sha256(e.body), e.body);
    commit.run();
    if ((i / PER_TURN) % 16 === 15) trees.take();
  }
  trees.take();
  trees.close();
  const result = {
    frames: walPages(`${path}-wal`).frames - start,
    commits: tally.commits - before.commits,
    statements: tally.statements - before.statements,
    trees: trees.out,
    time: tally.time ?? new Map(),
  };
  db.close();
  return result;
}

const dir = mkdtempSync(join(tmpdir(), 'sqlite-frames-'));
try {
  const events: NewEvent[] = [];
  for (let i = 0; i < N; i++) events.push(await newEvent(i));
  const o = await ours(dir, events);
  const m = minimal(dir, events);
  const per = (n: number) => (n / N).toFixed(2);
  console.log(`${N} deliveries, ${PER_TURN} per turn of the event loop, synchronous=FULL, checkpoints off\n`);
  console.log('                          frames/event  commits/event  statements/event');
  const line = (name: string, r: Result) =>
    console.log(
      `${name.padEnd(26)}${per(r.frames).padStart(12)}${per(r.commits).padStart(15)}${per(r.statements).padStart(18)}`,
    );
  line('ours (insert+claim+done)', o);
  line('minimal (insert)', m);
  console.log(`\nbacklog (events open, sampled): at most ${o.backlog}`);
  console.log(`frames/event by b-tree (ours): frames ${(o.frames / m.frames).toFixed(2)} x the minimal receiver's`);
  for (const [name, n] of [...o.trees].sort((a, b) => b[1] - a[1])) console.log(`  ${name.padEnd(30)}${per(n)}`);
  console.log('frames/event by b-tree (minimal):');
  for (const [name, n] of [...m.trees].sort((a, b) => b[1] - a[1])) console.log(`  ${name.padEnd(30)}${per(n)}`);
  const timeTable = (title: string, r: Result) => {
    let total = 0;
    for (const t of r.time.values()) total += t.ms;
    console.log(`${title}: ${((total * 1000) / N).toFixed(1)} us an event in statements`);
    console.log('  us/event  calls/event  us/call  statement');
    for (const [label, t] of [...r.time].sort((a, b) => b[1].ms - a[1].ms)) {
      const usPerEvent = ((t.ms * 1000) / N).toFixed(2).padStart(8);
      const calls = (t.calls / N).toFixed(3).padStart(11);
      console.log(`  ${usPerEvent}  ${calls}  ${((t.ms * 1000) / t.calls).toFixed(2).padStart(7)}  ${label}`);
    }
  };
  console.log('\ntime in statements (wall clock, in process: moves with the machine, unlike the counts above)');
  timeTable('ours (its COMMIT writes the WAL; the fsync runs on the thread pool)', o);
  timeTable('minimal (its COMMIT writes the WAL and waits for the fsync, synchronous=FULL)', m);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
