// The SQLite store: the contract suite on a real file and on :memory:, plus what only a file-backed store must do
// (survive reopen, refuse foreign or newer files without touching them, honour durability).
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { SCHEMA_VERSION } from '../../src/stores/sqlite-schema.ts';
import { isSqliteAvailable, sqliteStore, sqliteUnavailableReason } from '../../src/stores/sqlite.ts';
import { ConfigError } from '../../src/errors.ts';
import { StoreSchemaError, StoreUnavailableError } from '../../src/stores/store.ts';
import { waitFor } from '../helpers/lava.ts';
import { sqliteDriver } from '../helpers/sqlite.ts';
import { newEvent, storeContract } from './contract.ts';

const skip = sqliteUnavailableReason ?? false;
const T0 = 1_700_000_000_000;

let dir = '';
const tempDir = () => {
  if (!dir) dir = mkdtempSync(join(tmpdir(), 'lava-sqlite-'));
  return dir;
};
let n = 0;

// A file as the schema-2 builds created it: their CREATE statements, copied as they were (schema 1, then the
// counts of schema 2). A fixture, not a reference to the current schema, which will keep moving on.
const SCHEMA_1_2 = `
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY,
  key TEXT NOT NULL UNIQUE,
  grp TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending', 'retrying', 'done', 'dead')),
  head INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  lease_owner TEXT,
  lease_until INTEGER,
  attempts INTEGER NOT NULL DEFAULT 0,
  event TEXT NOT NULL,
  customer_id TEXT,
  received_at INTEGER NOT NULL,
  finished_at INTEGER,
  last_error TEXT,
  headers TEXT NOT NULL,
  body BLOB NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS events_open ON events (grp, seq, status) WHERE status IN ('pending', 'retrying');
CREATE INDEX IF NOT EXISTS events_heads ON events (seq) WHERE head = 1;
CREATE UNIQUE INDEX IF NOT EXISTS events_head_per_group ON events (grp) WHERE head = 1;
CREATE INDEX IF NOT EXISTS events_finished ON events (status, finished_at) WHERE status IN ('done', 'dead');
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT, WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('seq_floor', 0);
CREATE TABLE IF NOT EXISTS counts (status TEXT PRIMARY KEY, n INTEGER NOT NULL) STRICT, WITHOUT ROWID;
INSERT OR REPLACE INTO counts (status, n)
  SELECT s.status, (SELECT count(*) FROM events e WHERE e.status = s.status)
  FROM (SELECT 'pending' AS status UNION ALL SELECT 'retrying' UNION ALL SELECT 'done' UNION ALL SELECT 'dead') s;
CREATE TRIGGER IF NOT EXISTS events_count_insert AFTER INSERT ON events BEGIN
  UPDATE counts SET n = n + 1 WHERE status = NEW.status;
END;
CREATE TRIGGER IF NOT EXISTS events_count_delete AFTER DELETE ON events BEGIN
  UPDATE counts SET n = n - 1 WHERE status = OLD.status;
END;
CREATE TRIGGER IF NOT EXISTS events_count_update AFTER UPDATE OF status ON events WHEN OLD.status IS NOT NEW.status
BEGIN
  UPDATE counts SET n = n - 1 WHERE status = OLD.status;
  UPDATE counts SET n = n + 1 WHERE status = NEW.status;
END;
PRAGMA user_version = 2;
`;

// What schema 3 added to a file, taken away again (for tests that turn a current file into an older one).
const SCHEMA_3_UNDONE = `
  DROP INDEX IF EXISTS events_waiting; DROP INDEX events_finished_v3;
  ALTER TABLE events DROP COLUMN policy; ALTER TABLE events DROP COLUMN coalesce_key;
  ALTER TABLE events DROP COLUMN deliveries; ALTER TABLE events DROP COLUMN tombstone;
  CREATE INDEX events_finished ON events (status, finished_at) WHERE status IN ('done', 'dead');`;

const tempPath = () => join(tempDir(), `t${++n}`, 'events.db');
/**
 * Another connection to a store's file, as an older build or the CLI would open it, after the store closed: it waits
 * for locks (up to 5 s) instead of failing at once, since the store's background checkpointer may still be closing its
 * own connection (the last connection out checkpoints and removes the WAL, holding the file for that moment).
 */
const reopen = async (path: string) => {
  const db = (await sqliteDriver()).openDatabase(path);
  db.exec('PRAGMA busy_timeout = 5000');
  return db;
};
const removeTemp = () => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = '';
};

storeContract('sqlite (file)', { skip, make: () => sqliteStore({ path: tempPath() }), teardown: removeTemp });
storeContract('sqlite (:memory:)', { skip, make: () => sqliteStore({ path: ':memory:' }), modelRuns: 100 });

describe('sqliteStore()', () => {
  if (skip) {
    console.log(`[skip] sqliteStore() tests: ${skip}`);
    test('sqliteStore() says what is missing and how to fix it where SQLite is unavailable', () => {
      assert.equal(isSqliteAvailable(), false);
      assert.throws(
        () => sqliteStore({ path: ':memory:' }),
        (err: unknown) => err instanceof Error && err.message === skip && /run with Bun, Deno/.test(err.message),
      );
    });
    test(`skipped: ${skip}`, { skip }, () => {});
    return;
  }
  after(removeTemp);

  test('isSqliteAvailable() agrees with sqliteUnavailableReason', () => {
    assert.equal(isSqliteAvailable(), true);
    assert.equal(sqliteUnavailableReason, null);
  });

  test('sqliteStore() keeps data across close and reopen of the same file, and seq keeps increasing', () => {
    const path = tempPath();
    const a = sqliteStore({ path });
    a.insert(newEvent('k1', 'c1', T0));
    a.insert(newEvent('k2', 'c1', T0 + 1));
    const [claimed] = a.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 });
    assert.equal(claimed?.key, 'k1');
    assert.equal(a.complete('k1', 'w', T0 + 5), true);
    a.close();

    const b = sqliteStore({ path });
    assert.equal(b.get('k1')?.status, 'done');
    assert.deepEqual(b.insert(newEvent('k2', 'c9', T0 + 9)), { inserted: false }, 'the key still deduplicates');
    assert.equal(b.purge({ before: T0 + 10 }), 1);
    b.insert(newEvent('k3', 'c1', T0 + 20));
    const [k2, k3] = b.list();
    assert.deepEqual([k2?.key, k3?.key], ['k2', 'k3']);
    assert.ok(k2!.seq === 2 && k3!.seq > 2);
    assert.deepEqual(
      b.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 + 30 }).map((r) => r.key),
      ['k2'],
    );
    assert.equal(b.pragma('journal_mode'), 'wal');
    assert.equal(b.pragma('user_version'), SCHEMA_VERSION);
    b.close();
  });

  test('sqliteStore() refuses a file of garbage bytes with StoreSchemaError and leaves it byte for byte', () => {
    const path = join(tempDir(), 'garbage.db');
    const bytes = new Uint8Array(8192);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7919 + 13) & 0xff;
    writeFileSync(path, bytes);
    assert.throws(
      () => sqliteStore({ path }),
      (err: unknown) =>
        err instanceof StoreSchemaError && err.message.includes(path) && /not a SQLite/.test(err.message),
    );
    assert.deepEqual(new Uint8Array(readFileSync(path)), bytes);
    assert.equal(existsSync(`${path}-wal`), false, 'no WAL was started beside it');
  });

  test('sqliteStore() refuses a database written by a newer schema and leaves it untouched', () => {
    const path = tempPath();
    const s = sqliteStore({ path });
    s.insert(newEvent('k1', 'c1', T0));
    s.close();
    const raw = readFileSync(path);
    // user_version is the big-endian 32-bit integer at offset 60 of the header.
    raw.writeUInt32BE(99, 60);
    writeFileSync(path, raw);
    const before = readFileSync(path);
    assert.throws(
      () => sqliteStore({ path }),
      (err: unknown) =>
        err instanceof StoreSchemaError &&
        err.message.includes(path) &&
        err.message.includes(`newer version (schema 99, this build knows ${SCHEMA_VERSION})`),
    );
    assert.deepEqual(readFileSync(path), before);
  });

  test('sqliteStore() refuses a SQLite database it did not create', () => {
    const path = tempPath();
    const s = sqliteStore({ path });
    s.close();
    const raw = readFileSync(path);
    raw.writeUInt32BE(0, 60); // as if our schema had no version: tables present, version 0
    writeFileSync(path, raw);
    assert.throws(() => sqliteStore({ path }), StoreSchemaError);
  });

  test("sqliteStore() sets synchronous=FULL by default and NORMAL with durability 'normal'", () => {
    const full = sqliteStore({ path: tempPath(), busyTimeoutMs: 1234 });
    assert.equal(full.pragma('synchronous'), 2);
    assert.equal(full.pragma('busy_timeout'), 1234, 'without group commit, SQLite itself waits for the lock');
    full.insert(newEvent('k', 'c', T0));
    assert.equal(full.get('k')?.status, 'pending');
    full.close();
    const normal = sqliteStore({ path: tempPath(), durability: 'normal' });
    assert.equal(normal.pragma('synchronous'), 1);
    normal.close();
  });

  test('sqliteStore() rejects bad options with a ConfigError that says how to fix them', () => {
    const config = (pattern: RegExp) => (e: unknown) => e instanceof ConfigError && pattern.test(e.message);
    assert.throws(() => sqliteStore({ path: '' }), config(/path is required/));
    assert.throws(() => sqliteStore({ path: ':memory:', durability: 'fsync' as 'full' }), config(/durability must be/));
    assert.throws(() => sqliteStore({ path: ':memory:', busyTimeoutMs: -1 }), config(/busyTimeoutMs/));
  });

  test('insert() round-trips a 256 KiB body and an empty body byte for byte', () => {
    const s = sqliteStore({ path: tempPath() });
    const big = new Uint8Array(256 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31 + (i >> 8)) & 0xff;
    s.insert(newEvent('big', 'c', T0, { body: big }));
    s.insert(newEvent('empty', 'd', T0, { body: new Uint8Array(0) }));
    const got = s.get('big');
    assert.equal(got?.body.length, big.length);
    assert.ok(Buffer.from(got!.body).equals(Buffer.from(big)));
    assert.equal(s.get('empty')?.body.length, 0);
    s.close();
  });

  test('insert() never reuses the seq of a purged newest record', () => {
    const s = sqliteStore({ path: ':memory:' });
    s.insert(newEvent('a', 'c', T0));
    s.insert(newEvent('b', null, T0, { status: 'dead', lastError: 'x' }));
    assert.equal(s.purge({ before: T0 + 1, status: ['dead'] }), 1);
    s.insert(newEvent('c', 'c', T0));
    const [a, c] = s.list();
    assert.equal(a?.seq, 1);
    assert.ok(c!.seq > 2);
    s.close();
  });

  test('insert() answers StoreUnavailableError, with the cause, while another connection holds the write lock', async () => {
    const path = tempPath();
    const s = sqliteStore({ path, busyTimeoutMs: 50 });
    // Something claimable, so the claim below needs the write lock.
    s.insert(newEvent('k0', 'c0', T0));
    const other = (await sqliteDriver()).openDatabase(path);
    other.exec('BEGIN IMMEDIATE');
    try {
      assert.throws(
        () => s.insert(newEvent('k', 'c', T0)),
        (err: unknown) =>
          err instanceof StoreUnavailableError &&
          err.cause instanceof Error &&
          err.message.includes(path) &&
          err.store === 'sqlite' &&
          err.operation === 'insert',
      );
      assert.throws(() => s.claim({ owner: 'w', limit: 1, leaseMs: 1, now: T0 }), StoreUnavailableError);
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
    assert.deepEqual(s.insert(newEvent('k', 'c', T0)), { inserted: true }, 'works again once the lock is gone');
    s.close();
  });

  test('claim() with nothing claimable answers [] at once, without waiting for the write lock', async () => {
    const path = tempPath();
    const s = sqliteStore({ path, busyTimeoutMs: 2000 });
    s.insert(newEvent('a', 'c1', T0));
    s.insert(newEvent('b', 'c2', T0 + 500)); // due only from T0 + 500
    assert.deepEqual(
      s.claim({ owner: 'w', limit: 5, leaseMs: 60_000, now: T0 + 1 }).map((r) => r.key),
      ['a'],
    );
    const other = (await sqliteDriver()).openDatabase(path);
    other.exec('BEGIN IMMEDIATE');
    try {
      // 'a' is leased and 'b' not due: nothing to claim, so no write transaction (which would wait 2 s and throw).
      const t0 = performance.now();
      assert.deepEqual(s.claim({ owner: 'w', limit: 5, leaseMs: 60_000, now: T0 + 2 }), []);
      assert.ok(performance.now() - t0 < 1000, 'the empty claim did not wait for the lock');
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
    assert.deepEqual(
      s.claim({ owner: 'w', limit: 5, leaseMs: 60_000, now: T0 + 600 }).map((r) => r.key),
      ['b'],
    );
    s.close();
  });

  test('counts() agrees with a full count of the rows after every kind of change', async () => {
    const path = tempPath();
    const s = sqliteStore({ path });
    const raw = await reopen(path);
    const counted = () => {
      const c = { pending: 0, retrying: 0, done: 0, dead: 0 };
      for (const r of raw.prepare('SELECT status, count(*) AS n FROM events GROUP BY status').all()) {
        c[r.status as keyof typeof c] = r.n as number;
      }
      return c;
    };
    for (let i = 0; i < 12; i++) s.insert(newEvent(`k${i}`, `c${i % 4}`, T0 + i));
    s.insert(newEvent('k0', 'c0', T0)); // a duplicate changes nothing
    s.insert(newEvent('bad', null, T0, { status: 'dead', lastError: 'invalid' }));
    assert.deepEqual(s.counts(), counted());
    const got = s.claim({ owner: 'w', limit: 4, leaseMs: 60_000, now: T0 + 100 });
    assert.equal(got.length, 4);
    s.complete(got[0]!.key, 'w', T0 + 101);
    s.retry(got[1]!.key, 'w', T0 + 5_000, 'later');
    s.deadLetter(got[2]!.key, 'w', 'broken', T0 + 102);
    assert.equal(s.complete(got[0]!.key, 'w', T0 + 103), false, 'a second completion changes nothing');
    assert.deepEqual(s.counts(), counted());
    assert.equal(s.requeue(got[2]!.key, T0 + 200), true);
    s.requeueWhere({ status: ['dead'] }, T0 + 201);
    assert.deepEqual(s.counts(), counted());
    assert.equal(s.purge({ before: T0 + 1_000, status: ['done', 'dead'] }), 1);
    assert.deepEqual(s.counts(), counted());
    assert.deepEqual(s.counts(), { pending: 11, retrying: 1, done: 0, dead: 0 });
    raw.close();
    s.close();
  });

  test('a schema-1 file is upgraded in place, its counts taken from its rows', async () => {
    const path = tempPath();
    const s = sqliteStore({ path });
    for (let i = 0; i < 5; i++) s.insert(newEvent(`k${i}`, `c${i}`, T0 + i));
    s.insert(newEvent('bad', null, T0, { status: 'dead', lastError: 'invalid' }));
    s.close();
    // Back to schema 1 as an older build left it: no counts table, no triggers, and rows it alone wrote.
    const raw = await reopen(path);
    raw.exec(`${SCHEMA_3_UNDONE}
      DROP TRIGGER IF EXISTS events_count_insert; DROP TRIGGER IF EXISTS events_count_delete;
      DROP TRIGGER IF EXISTS events_count_update;
      DROP TABLE counts; UPDATE events SET status = 'done', finished_at = 1, head = 0 WHERE key = 'k4';
      PRAGMA user_version = 1;`);
    raw.close();
    const again = sqliteStore({ path });
    assert.equal(again.pragma('user_version'), SCHEMA_VERSION);
    assert.deepEqual(again.counts(), { pending: 4, retrying: 0, done: 1, dead: 1 });
    again.insert(newEvent('k9', 'c9', T0 + 9));
    assert.equal(again.counts().pending, 5, 'and kept from then on');
    assert.deepEqual(
      again.list().map((r) => r.key),
      ['k0', 'k1', 'k2', 'k3', 'k4', 'bad', 'k9'],
      'every event is still there',
    );
    again.close();
  });

  test('a schema-3 file is upgraded in place: it gains the index of running events, and a requeue behind one waits', async () => {
    const path = tempPath();
    // No checkpointer thread: it could hold the file while the raw connection below rewrites it.
    const s = sqliteStore({ path, backgroundCheckpoint: false });
    s.insert(newEvent('a1', 'A', T0));
    s.insert(newEvent('a2', 'A', T0 + 1));
    s.claim({ owner: 'w', limit: 1, leaseMs: 60_000, now: T0 });
    s.deadLetter('a1', 'w', 'x', T0 + 1);
    assert.deepEqual(
      s.claim({ owner: 'w', limit: 1, leaseMs: 60_000, now: T0 + 2 }).map((r) => r.key),
      ['a2'],
    );
    s.close();
    const raw = await reopen(path);
    raw.exec('DROP INDEX events_leased; PRAGMA user_version = 3;');
    raw.close();
    const again = sqliteStore({ path, backgroundCheckpoint: false });
    assert.equal(again.pragma('user_version'), SCHEMA_VERSION);
    assert.equal(again.requeue('a1', T0 + 3), true);
    assert.deepEqual(again.claim({ owner: 'v', limit: 5, leaseMs: 1000, now: T0 + 4 }), [], 'a2 still runs');
    again.close();
    const check = await reopen(path);
    const index = check.prepare(`SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'events_leased'`).get();
    check.close();
    assert.equal(index?.name, 'events_leased');
  });

  test('a schema-5 file is upgraded in place: events_leased keeps only non-heads, events_waiting stays, a requeue behind a running event still waits, a waiting signal still coalesces', async () => {
    const path = tempPath();
    const s = sqliteStore({ path, backgroundCheckpoint: false });
    s.insert(newEvent('a1', 'A', T0));
    s.insert(newEvent('a2', 'A', T0 + 1));
    s.insert(newEvent('b1', 'B', T0 + 2));
    const signal = (key: string, at: number) => newEvent(key, 'S', at, { policy: 'signal', coalesceKey: 'ck' });
    s.insert(signal('s1', T0 + 3));
    s.claim({ owner: 'w', limit: 1, leaseMs: 60_000, now: T0 });
    s.deadLetter('a1', 'w', 'x', T0 + 1);
    assert.deepEqual(
      s.claim({ owner: 'w', limit: 2, leaseMs: 60_000, now: T0 + 2 }).map((r) => r.key),
      ['a2', 'b1'],
    );
    s.close();
    // As a schema-5 build left it: every leased event in events_leased, and an operator's requeue of a1 made by that
    // build while a2 runs (a1 the head of A, a2 leased and no longer the head).
    const raw = await reopen(path);
    raw.exec(`DROP INDEX events_leased;
      CREATE INDEX events_leased ON events (grp, lease_until) WHERE lease_owner IS NOT NULL;
      UPDATE events SET status = 'pending', attempts = 0, next_attempt_at = ${T0 + 3}, finished_at = NULL,
        last_error = NULL WHERE key = 'a1';
      UPDATE events SET head = (key = 'a1') WHERE grp = 'c:A';
      UPDATE counts SET n = n + 1 WHERE status = 'pending';
      UPDATE counts SET n = n - 1 WHERE status = 'dead';
      PRAGMA user_version = 5;`);
    raw.close();
    const again = sqliteStore({ path, backgroundCheckpoint: false });
    assert.equal(again.pragma('user_version'), SCHEMA_VERSION);
    // The signal that waited before the upgrade still takes its copies.
    assert.deepEqual(again.insert(signal('s2', T0 + 4)), { inserted: false, coalescedInto: 's1' });
    assert.deepEqual(
      again.claim({ owner: 'v', limit: 5, leaseMs: 1000, now: T0 + 4 }).map((r) => [r.key, r.deliveries]),
      [['s1', 2]],
      'a2 and b1 still run',
    );
    assert.deepEqual(again.insert(signal('s3', T0 + 4)), { inserted: true }, 's1 runs: a copy is a record again');
    assert.equal(again.complete('b1', 'w', T0 + 5), true);
    assert.equal(again.complete('a2', 'w', T0 + 6), true);
    assert.deepEqual(
      again.claim({ owner: 'v', limit: 5, leaseMs: 1000, now: T0 + 7 }).map((r) => r.key),
      ['a1'],
    );
    assert.deepEqual(again.counts(), { pending: 3, retrying: 0, done: 2, dead: 0 });
    again.close();
    const check = await reopen(path);
    // Heads that run are not in it (claims and completions write no entry of it): only a1, were it leased behind one.
    const index = check.prepare(`SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'events_leased'`).get();
    const waitingIndex = check
      .prepare(`SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'events_waiting'`)
      .get();
    const entries = check
      .prepare(`SELECT count(*) AS n FROM events INDEXED BY events_leased WHERE lease_owner IS NOT NULL AND head = 0`)
      .get();
    check.close();
    assert.match(String(index?.sql), /WHERE lease_owner IS NOT NULL AND head = 0/);
    assert.equal(entries?.n, 0);
    assert.equal(
      waitingIndex?.name,
      'events_waiting',
      'events_waiting is kept: the file is the only copy of who waits',
    );
  });

  test('a schema-6 file (waiting signals were kept in memory, no events_waiting) gets events_waiting back', async () => {
    const path = tempPath();
    const s = sqliteStore({ path, backgroundCheckpoint: false });
    const signal = (key: string, at: number) => newEvent(key, 'S', at, { policy: 'signal', coalesceKey: 'ck' });
    s.insert(signal('s1', T0));
    s.close();
    const raw = await reopen(path);
    raw.exec('DROP INDEX events_waiting; PRAGMA user_version = 6;');
    raw.close();
    const again = sqliteStore({ path, backgroundCheckpoint: false });
    assert.equal(again.pragma('user_version'), SCHEMA_VERSION);
    assert.deepEqual(again.insert(signal('s2', T0 + 1)), { inserted: false, coalescedInto: 's1' });
    again.close();
    const check = await reopen(path);
    const plan = check
      .prepare(
        `EXPLAIN QUERY PLAN SELECT seq, key FROM events WHERE coalesce_key = +?1 AND status = 'pending' AND attempts = 0
         AND lease_owner IS NULL ORDER BY seq LIMIT 1`,
      )
      .all('ck')
      .map((r) => String(r.detail))
      .join('; ');
    check.close();
    assert.match(plan, /events_waiting/, 'the lookup of a waiting copy searches the index, not the table');
  });

  test('a schema-2 file is upgraded in place: policies inferred from keys, stored signatures gone from the file', async () => {
    const path = tempPath();
    const raw = await reopen(path);
    // As a schema-2 build left it: WAL, its tables, rows whose headers kept Lava's signature.
    raw.exec('PRAGMA journal_mode = WAL');
    raw.exec(SCHEMA_1_2);
    // 64 hex digits, as Lava signs: distinct for every row.
    const hex = (i: number) =>
      Array.from({ length: 8 }, (_, j) => ((i * 2654435761 + j * 40503) >>> 0).toString(16).padStart(8, '0')).join('');
    const signatures: string[] = [];
    const keys = ['customer.created:A', 'customer.deleted:B', 'customer.created:sha256:00ff', 'id:evt_1'];
    for (let i = 0; i < 200; i++) keys.push(`webhook-id:w${i}`);
    const add = raw.prepare(
      `INSERT INTO events (seq, key, grp, status, head, next_attempt_at, event, customer_id, received_at, finished_at,
         headers, body)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'customer.created', ?7, ?6, ?8, ?9, ?10)`,
    );
    // 'gone:0' is purged before the upgrade: its signature survives only in the file's free space.
    ['gone:0', ...keys].forEach((key, i) => {
      const signature = hex(i + 1);
      assert.match(signature, /^[0-9a-f]{64}$/);
      signatures.push(signature);
      const done = key === 'customer.deleted:B';
      const headers = { 'content-type': 'application/json', 'x-webhook-signature': signature, 'user-agent': 'lava' };
      add.run(
        i + 1,
        key,
        `c:c${i}`,
        done ? 'done' : 'pending',
        done ? 0 : 1,
        T0 + i,
        `c${i}`,
        done ? T0 + 1 : null,
        JSON.stringify(headers),
        new Uint8Array(300).fill(i & 0xff),
      );
    });
    raw.exec(`DELETE FROM events WHERE key = 'gone:0'`);
    raw.close();
    const fileHas = (signature: string) =>
      [path, `${path}-wal`].some((f) => existsSync(f) && readFileSync(f).includes(signature));
    assert.ok(signatures.every(fileHas), 'the fixture did put every signature in the file');

    const s = sqliteStore({ path, backgroundCheckpoint: false });
    assert.equal(s.pragma('user_version'), SCHEMA_VERSION);
    for (const key of keys) {
      const r = s.get(key);
      assert.deepEqual(r?.headers, { 'content-type': 'application/json', 'user-agent': 'lava' }, key);
      assert.equal(r?.policy, key === 'customer.created:A' || key === 'customer.deleted:B' ? 'once' : 'dedupe', key);
      assert.equal(r?.coalesceKey, null);
      assert.equal(r?.deliveries, 1);
      assert.equal(r?.tombstone, false);
    }
    assert.deepEqual(s.counts(), { pending: keys.length - 1, retrying: 0, done: 1, dead: 0 });
    const left = signatures.filter(fileHas);
    assert.deepEqual(left, [], 'no copy of a signature is left in the database file or its WAL');
    // And it works as a schema-3 file: the once record becomes a tombstone, the signal coalesces.
    assert.equal(s.purge({ before: T0 + 10 }), 1);
    assert.equal(s.get('customer.deleted:B')?.tombstone, true);
    const sig = (key: string) => newEvent(key, 'A', T0, { policy: 'signal', coalesceKey: 'ck' });
    assert.deepEqual(s.insert(sig('s1')), { inserted: true });
    assert.deepEqual(s.insert(sig('s2')), { inserted: false, coalescedInto: 's1' });
    s.close();
    assert.deepEqual(signatures.filter(fileHas), [], 'nor after close');
  });

  test('two stores on one file (two instances) never claim the same event and agree on each group head', () => {
    const path = tempPath();
    const a = sqliteStore({ path });
    const b = sqliteStore({ path });
    for (let i = 0; i < 40; i++) (i % 2 ? a : b).insert(newEvent(`e${i}`, `c${i % 10}`, T0 + i));
    const seen = new Set<string>();
    for (let round = 0; round < 8; round++) {
      for (const [store, owner] of [
        [a, 'wa'],
        [b, 'wb'],
      ] as const) {
        const got = store.claim({ owner, limit: 3, leaseMs: 60_000, now: T0 + 100 });
        for (const r of got) {
          assert.ok(!seen.has(r.key), `${r.key} claimed twice`);
          seen.add(r.key);
          assert.equal((owner === 'wa' ? b : a).complete(r.key, owner, T0 + 101), true, 'either instance can finish');
        }
      }
    }
    assert.equal(seen.size, 40);
    // Per customer, claims followed arrival order.
    const order = [...seen];
    for (let c = 0; c < 10; c++) {
      const mine = order.filter((k) => Number(k.slice(1)) % 10 === c).map((k) => Number(k.slice(1)));
      assert.deepEqual(
        mine,
        [...mine].sort((x, y) => x - y),
      );
    }
    a.close();
    b.close();
  });

  test('claim() stays fast with thousands of open events behind one busy customer', () => {
    const s = sqliteStore({ path: tempPath() });
    for (let i = 0; i < 5000; i++) s.insert(newEvent(`hot${i}`, 'hot', T0 + i));
    for (let i = 0; i < 2000; i++) s.insert(newEvent(`one${i}`, `c${i}`, T0 + 5000 + i));
    const first = s.claim({ owner: 'w', limit: 1, leaseMs: 60_000, now: T0 + 10_000 });
    assert.deepEqual(
      first.map((r) => r.key),
      ['hot0'],
    );
    const started = performance.now();
    let claimed = 0;
    for (let i = 0; i < 200; i++) {
      const got = s.claim({ owner: 'w', limit: 10, leaseMs: 60_000, now: T0 + 10_000 });
      claimed += got.length;
      for (const r of got) s.complete(r.key, 'w', T0 + 10_001);
    }
    const ms = performance.now() - started;
    assert.equal(claimed, 2000, 'every single-event customer, none of hot’s backlog');
    assert.ok(ms < 5000, `200 claims took ${ms.toFixed(0)} ms`);
    s.close();
  });

  const bunOnly =
    typeof (globalThis as { Bun?: unknown }).Bun === 'undefined'
      ? 'the background checkpointer runs on Bun only'
      : false;
  test('a background thread checkpoints the WAL into the file while the writer never does; off, the file stays as it was', {
    skip: bunOnly,
  }, async () => {
    const body = new Uint8Array(2000).fill(7);
    const fill = (s: ReturnType<typeof sqliteStore>, prefix: string) => {
      // About 300 WAL pages: well under the writer's own autocheckpoint of 4000.
      for (let i = 0; i < 300; i++) s.insert(newEvent(`${prefix}${i}`, `c${i % 50}`, T0, { body }));
    };
    const sizes = async (path: string) => {
      await new Promise((r) => setTimeout(r, 50));
      return statSync(path).size;
    };
    const onPath = tempPath();
    const on = sqliteStore({ path: onPath, backgroundCheckpoint: { everyMs: 20 } });
    const onBefore = await sizes(onPath);
    fill(on, 'on');
    await waitFor(
      () => statSync(onPath).size > onBefore + 300 * 2000,
      5000,
      'the database file to receive the checkpointed pages',
    );
    assert.equal(on.get('on299')?.status, 'pending');
    on.close();

    const offPath = tempPath();
    const off = sqliteStore({ path: offPath, backgroundCheckpoint: false });
    const offBefore = await sizes(offPath);
    fill(off, 'off');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(statSync(offPath).size, offBefore, 'without the checkpointer the pages wait in the WAL');
    off.close();
    // Closing checkpoints what is left; reopened, everything is there either way.
    for (const [path, prefix] of [
      [onPath, 'on'],
      [offPath, 'off'],
    ] as const) {
      const again = sqliteStore({ path, backgroundCheckpoint: false });
      assert.equal(again.counts().pending, 300);
      assert.equal(again.get(`${prefix}0`)?.body.byteLength, 2000);
      again.close();
    }
  });
});
