// The SQLite store: the contract suite on a real file and on :memory:, plus what only a file-backed store must do
// (survive reopen, refuse foreign or newer files without touching them, honour durability).
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  isSqliteAvailable,
  SCHEMA_VERSION,
  sqliteStore,
  sqliteUnavailableReason,
} from '../../src/stores/sqlite.ts';
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
const tempPath = () => join(tempDir(), `t${++n}`, 'events.db');
const removeTemp = () => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = '';
};

storeContract('sqlite (file)', { skip, make: () => sqliteStore({ path: tempPath() }), teardown: removeTemp });
storeContract('sqlite (:memory:)', { skip, make: () => sqliteStore({ path: ':memory:' }) });

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

  test("sqliteStore() sets synchronous=NORMAL by default and FULL with durability 'full'", () => {
    const normal = sqliteStore({ path: tempPath() });
    assert.equal(normal.pragma('synchronous'), 1);
    normal.close();
    const full = sqliteStore({ path: tempPath(), durability: 'full', busyTimeoutMs: 1234 });
    assert.equal(full.pragma('synchronous'), 2);
    assert.equal(full.pragma('busy_timeout'), 1234);
    full.insert(newEvent('k', 'c', T0));
    assert.equal(full.get('k')?.status, 'pending');
    full.close();
  });

  test('sqliteStore() rejects bad options with a message that says how to fix them', () => {
    assert.throws(() => sqliteStore({ path: '' }), /path is required/);
    assert.throws(() => sqliteStore({ path: ':memory:', durability: 'fsync' as 'full' }), /durability must be/);
    assert.throws(() => sqliteStore({ path: ':memory:', busyTimeoutMs: -1 }), /busyTimeoutMs/);
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

  test('every method throws StoreUnavailableError after close()', () => {
    const s = sqliteStore({ path: tempPath() });
    s.insert(newEvent('k', 'c', T0));
    s.close();
    s.close(); // closing twice is harmless
    const calls: Array<() => unknown> = [
      () => s.insert(newEvent('k2', 'c', T0)),
      () => s.claim({ owner: 'w', limit: 1, leaseMs: 1, now: T0 }),
      () => s.renew('k', 'w', T0),
      () => s.complete('k', 'w', T0),
      () => s.retry('k', 'w', T0, 'x'),
      () => s.deadLetter('k', 'w', 'x', T0),
      () => s.requeue('k', T0),
      () => s.requeueWhere({}, T0),
      () => s.get('k'),
      () => s.list(),
      () => s.purge({ before: T0 }),
      () => s.counts(),
      () => s.ping(),
    ];
    for (const call of calls) assert.throws(call, StoreUnavailableError);
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
          err instanceof StoreUnavailableError && err.cause instanceof Error && err.message.includes(path),
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
    assert.deepEqual(s.claim({ owner: 'w', limit: 5, leaseMs: 60_000, now: T0 + 1 }).map((r) => r.key), ['a']);
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
    assert.deepEqual(s.claim({ owner: 'w', limit: 5, leaseMs: 60_000, now: T0 + 600 }).map((r) => r.key), ['b']);
    s.close();
  });

  test('counts() agrees with a full count of the rows after every kind of change', async () => {
    const path = tempPath();
    const s = sqliteStore({ path });
    const raw = (await sqliteDriver()).openDatabase(path);
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
    const raw = (await sqliteDriver()).openDatabase(path);
    raw.exec(`DROP TRIGGER events_count_insert; DROP TRIGGER events_count_delete; DROP TRIGGER events_count_update;
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

  test('two stores on one file (two instances) never claim the same event and agree on each group head', () => {
    const path = tempPath();
    const a = sqliteStore({ path });
    const b = sqliteStore({ path });
    for (let i = 0; i < 40; i++) (i % 2 ? a : b).insert(newEvent(`e${i}`, `c${i % 10}`, T0 + i));
    const seen = new Set<string>();
    for (let round = 0; round < 8; round++) {
      for (
        const [store, owner] of [
          [a, 'wa'],
          [b, 'wb'],
        ] as const
      ) {
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
      assert.deepEqual(mine, [...mine].sort((x, y) => x - y));
    }
    a.close();
    b.close();
  });

  test('methods return plain values, not promises', () => {
    const s = sqliteStore({ path: ':memory:' });
    const r = s.insert(newEvent('k', 'c', T0));
    assert.ok(!(r instanceof Promise));
    assert.ok(Array.isArray(s.claim({ owner: 'w', limit: 1, leaseMs: 1000, now: T0 })));
    assert.equal(s.complete('k', 'w', T0), true);
    s.close();
  });

  test('claim() keeps one head per customer through requeue of an older event and a takeover', () => {
    const s = sqliteStore({ path: ':memory:' });
    s.insert(newEvent('a1', 'A', T0));
    s.insert(newEvent('a2', 'A', T0 + 1));
    s.insert(newEvent('a3', 'A', T0 + 2));
    s.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 });
    s.deadLetter('a1', 'w', 'x', T0 + 1);
    assert.deepEqual(
      s.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 + 2 }).map((r) => r.key),
      ['a2'],
    );
    // a1 comes back while a2 is leased: a1 is the head again, a2's lease still lets it finish.
    assert.equal(s.requeue('a1', T0 + 3), true);
    assert.deepEqual(
      s.claim({ owner: 'v', limit: 10, leaseMs: 1000, now: T0 + 4 }).map((r) => r.key),
      ['a1'],
    );
    assert.equal(s.complete('a2', 'w', T0 + 5), true);
    assert.deepEqual(s.claim({ owner: 'v', limit: 10, leaseMs: 1000, now: T0 + 6 }), [], 'a1 still leased');
    assert.equal(s.complete('a1', 'v', T0 + 7), true);
    assert.deepEqual(
      s.claim({ owner: 'v', limit: 10, leaseMs: 1000, now: T0 + 8 }).map((r) => r.key),
      ['a3'],
    );
    s.close();
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

  const bunOnly = typeof (globalThis as { Bun?: unknown }).Bun === 'undefined' ? 'the background checkpointer runs on Bun only' : false;
  test('a background thread checkpoints the WAL into the file while the writer never does; off, the file stays as it was', { skip: bunOnly }, async () => {
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
    await waitFor(() => statSync(onPath).size > onBefore + 300 * 2000, 5000, 'the database file to receive the checkpointed pages');
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
    for (const [path, prefix] of [[onPath, 'on'], [offPath, 'off']] as const) {
      const again = sqliteStore({ path, backgroundCheckpoint: false });
      assert.equal(again.counts().pending, 300);
      assert.equal(again.get(`${prefix}0`)?.body.byteLength, 2000);
      again.close();
    }
  });
});
