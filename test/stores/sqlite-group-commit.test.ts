// SQLite group commit: the contract suite with groupCommit on, and what group commit itself promises — writes that
// arrive together share one commit, each resolves only once committed, and a failed commit rejects all of them.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { sqliteStore, sqliteUnavailableReason } from '../../src/stores/sqlite.ts';
import { StoreUnavailableError } from '../../src/stores/store.ts';
import { waitFor } from '../helpers/lava.ts';
import { sqliteDriver, tempDatabases } from '../helpers/sqlite.ts';
import { newEvent, storeContract } from './contract.ts';

const skip = sqliteUnavailableReason ?? false;
const T0 = 1_700_000_000_000;

const temp = tempDatabases('lava-sqlite-gc-');
const tempPath = temp.path;
const removeTemp = temp.remove;

storeContract('sqlite (group commit, full)', {
  skip,
  make: () => sqliteStore({ path: tempPath(), durability: 'full', groupCommit: true }),
  teardown: removeTemp,
});

describe('sqliteStore({ groupCommit: true })', { skip }, () => {
  if (skip) console.log(`[skip] sqlite group commit tests: ${skip}`);
  after(removeTemp);

  test('concurrent inserts share one commit, and each resolves only after that commit', async () => {
    const path = tempPath();
    const s = sqliteStore({ path, durability: 'full', groupCommit: true });
    const reader = sqliteStore({ path });
    const before = s.groupCommits;
    const pending = Array.from({ length: 50 }, (_, i) => s.insert(newEvent(`k${i}`, `c${i % 7}`, T0 + i)));
    // Not committed yet: another connection sees none of them, and no promise has resolved.
    let resolved = 0;
    for (const p of pending) void p.then(() => resolved++);
    await Promise.resolve();
    assert.equal(resolved, 0);
    assert.equal(reader.get('k0'), null, 'nothing visible before the commit');
    const results = await Promise.all(pending);
    assert.ok(results.every((r) => r.inserted));
    assert.equal(s.groupCommits - before, 1, 'one commit for the fifty');
    assert.equal(reader.list({ limit: 100 }).length, 50, 'all visible to another connection once resolved');
    assert.deepEqual(
      reader.list({ limit: 100 }).map((r) => r.key),
      Array.from({ length: 50 }, (_, i) => `k${i}`),
      'arrival order kept',
    );
    reader.close();
    s.close();
  });

  test('the same key twice in one batch is inserted once, the second answers inserted: false', async () => {
    const s = sqliteStore({ path: tempPath(), groupCommit: true });
    const [a, b] = await Promise.all([s.insert(newEvent('same', 'c', T0)), s.insert(newEvent('same', 'c', T0 + 1))]);
    assert.deepEqual([a, b], [{ inserted: true }, { inserted: false }]);
    s.close();
  });

  test('identical signals in one batch are one record that counts both deliveries', async () => {
    const s = sqliteStore({ path: tempPath(), groupCommit: true });
    const sig = (key: string) =>
      newEvent(key, 'A', T0, { event: 'customer.wallet.balance.updated', policy: 'signal', coalesceKey: 'bal:A' });
    const before = s.groupCommits;
    const [a, b] = await Promise.all([s.insert(sig('s1')), s.insert(sig('s2'))]);
    assert.deepEqual([a, b], [{ inserted: true }, { inserted: false, coalescedInto: 's1' }]);
    assert.equal(s.groupCommits - before, 1, 'both in one commit');
    assert.equal((await s.get('s1'))?.deliveries, 2);
    assert.equal(await s.get('s2'), null);
    assert.deepEqual(await s.counts(), { pending: 1, retrying: 0, done: 0, dead: 0 });
    s.close();
  });

  test('a failed commit rejects every insert of the batch with StoreUnavailableError, and stores none of them', async () => {
    const path = tempPath();
    const s = sqliteStore({ path, groupCommit: true, busyTimeoutMs: 50 });
    const other = (await sqliteDriver()).openDatabase(path);
    other.exec('BEGIN IMMEDIATE');
    let outcomes: PromiseSettledResult<unknown>[];
    try {
      outcomes = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => s.insert(newEvent(`f${i}`, 'c', T0))));
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
    assert.ok(outcomes.every((o) => o.status === 'rejected' && o.reason instanceof StoreUnavailableError));
    assert.ok(
      outcomes.every((o) => (o as PromiseRejectedResult).reason.operation === 'insert'),
      'each names the method it was made by',
    );
    assert.equal((await s.list({ limit: 100 })).length, 0, 'nothing of the failed batch was stored');
    // The next batch works again.
    assert.deepEqual(await s.insert(newEvent('f0', 'c', T0)), { inserted: true });
    s.close();
  });

  test('complete() is grouped too, and close() commits what is still queued', async () => {
    const path = tempPath();
    const s = sqliteStore({ path, groupCommit: true });
    await Promise.all([s.insert(newEvent('a', 'c1', T0)), s.insert(newEvent('b', 'c2', T0))]);
    const claimed = await s.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 });
    assert.equal(claimed.length, 2);
    const before = s.groupCommits;
    assert.deepEqual(await Promise.all(claimed.map((r) => s.complete(r.key, 'w', T0 + 1))), [true, true]);
    assert.equal(s.groupCommits - before, 1);
    const late = s.insert(newEvent('late', 'c3', T0));
    await s.close();
    assert.deepEqual(await late, { inserted: true });
    const again = sqliteStore({ path });
    assert.equal(again.get('late')?.status, 'pending', 'queued insert committed by close()');
    assert.equal(again.get('a')?.status, 'done');
    again.close();
    await assert.rejects(async () => s.insert(newEvent('x', 'c', T0)), StoreUnavailableError);
  });
});

describe("sqliteStore({ groupCommit: true }) with durability 'full'", { skip }, () => {
  after(removeTemp);

  test('an insert resolves only after an fsync of the WAL, made off the event loop after its commit', async () => {
    const s = sqliteStore({ path: tempPath(), groupCommit: true });
    // The fsync is the store's own, after the commit: SQLite does not sync inside it.
    assert.equal(s.pragma('synchronous'), 1);
    const before = s.walSyncs;
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => s.insert(newEvent(`k${i}`, `c${i}`, T0))));
    assert.ok(results.every((r) => r.inserted));
    assert.ok(s.walSyncs > before, 'an fsync came between the commit and the answers');
    assert.ok(s.walSyncs - before <= 2, 'one fsync served the whole batch');
    await s.close();
  });

  test('an outcome resolves at its commit, and an fsync follows it on its own', async () => {
    const s = sqliteStore({ path: tempPath(), groupCommit: true });
    await s.insert(newEvent('a', 'c', T0));
    const [claimed] = await s.claim({ owner: 'w', limit: 1, leaseMs: 60_000, now: T0 });
    const syncs = s.walSyncs;
    assert.equal(await s.complete(claimed!.key, 'w', T0 + 1), true);
    await waitFor(() => s.walSyncs > syncs, 2000, 'the fsync after the completion');
    await s.close();
  });

  test("durability 'normal' syncs nothing itself; 'full' without group commit is SQLite's synchronous=FULL", async () => {
    const normal = sqliteStore({ path: tempPath(), groupCommit: true, durability: 'normal' });
    assert.equal(normal.pragma('synchronous'), 1);
    await normal.insert(newEvent('k', 'c', T0));
    assert.equal(normal.walSyncs, 0);
    await normal.close();
    const plain = sqliteStore({ path: tempPath() });
    assert.equal(plain.pragma('synchronous'), 2);
    plain.close();
  });

  test('close() syncs what is committed and settles every write that waited for it', async () => {
    const path = tempPath();
    const s = sqliteStore({ path, groupCommit: true });
    const pending = Array.from({ length: 5 }, (_, i) => s.insert(newEvent(`x${i}`, 'c', T0)));
    await s.close();
    assert.ok((await Promise.all(pending)).every((r) => r.inserted));
    const again = sqliteStore({ path });
    assert.equal(again.list().length, 5);
    again.close();
  });
});

describe('sqliteStore({ groupCommit: true }) beside another process (the CLI) on the same file', { skip }, () => {
  after(removeTemp);

  // The rule: claims, leases and outcomes live in the file, not in the server's memory, so what another process
  // writes takes effect at once: a requeue clears the lease (the server's outcome for that run is refused and the
  // event runs again), a purge removes what it removes, and neither waits for the server to notice.
  test("a requeue by another store takes the event from the server's run: its completion is refused, the event runs again", async () => {
    const path = tempPath();
    const server = sqliteStore({ path, groupCommit: true });
    const cli = sqliteStore({ path, groupCommit: true });
    await server.insert(newEvent('a', 'c', T0));
    const [run] = await server.claim({ owner: 'server', limit: 1, leaseMs: 60_000, now: T0 });
    assert.equal(run?.key, 'a');
    assert.equal(await cli.requeue('a', T0 + 1), true);
    assert.equal(await server.complete('a', 'server', T0 + 2), false, 'the run the requeue took over is not recorded');
    const [again] = await server.claim({ owner: 'server', limit: 1, leaseMs: 60_000, now: T0 + 3 });
    assert.equal(again?.key, 'a', 'claimed again');
    assert.equal(again?.attempts, 1, 'as a fresh run');
    assert.equal(await server.complete('a', 'server', T0 + 4), true);
    assert.equal(await cli.purge({ before: T0 + 5 }), 1);
    assert.equal(await server.get('a'), null, "the purge is the server's view at once");
    await cli.close();
    await server.close();
  });

  // What another process changes about which signals wait (a CLI requeue, a claim) must reach the server at once.
  test("a signal requeued by another store waits again in the server's view: the next copy is counted into it", async () => {
    const path = tempPath();
    const server = sqliteStore({ path, groupCommit: true });
    const cli = sqliteStore({ path });
    const copy = (key: string, at: number) => newEvent(key, 'c', at, { policy: 'signal', coalesceKey: 'ck' });
    assert.deepEqual(await server.insert(copy('s1', T0)), { inserted: true });
    assert.deepEqual(await server.insert(copy('s2', T0 + 1)), { inserted: false, coalescedInto: 's1' });
    const [run] = await server.claim({ owner: 'server', limit: 1, leaseMs: 60_000, now: T0 + 2 });
    assert.equal(run?.key, 's1');
    assert.equal(await server.complete('s1', 'server', T0 + 3), true);
    // s1 ran: a new copy is a record of its own, and it waits.
    assert.deepEqual(await server.insert(copy('s3', T0 + 4)), { inserted: true });
    // The CLI claims s3 (it no longer waits), then requeues s1 (which waits again, and is the oldest copy).
    assert.deepEqual(
      cli.claim({ owner: 'cli', limit: 5, leaseMs: 60_000, now: T0 + 5 }).map((r) => r.key),
      ['s3'],
    );
    assert.equal(cli.requeue('s1', T0 + 6), true);
    assert.deepEqual(await server.insert(copy('s4', T0 + 7)), { inserted: false, coalescedInto: 's1' });
    assert.equal((await server.get('s1'))?.deliveries, 3);
    // s3, run and requeued by the CLI, waits again; the CLI counts copies into it as the server does.
    assert.equal(cli.complete('s3', 'cli', T0 + 8), true);
    assert.equal(cli.requeue('s3', T0 + 9), true);
    const [next] = await server.claim({ owner: 'server', limit: 1, leaseMs: 60_000, now: T0 + 10 });
    assert.equal(next?.key, 's1');
    assert.deepEqual(await server.insert(copy('s5', T0 + 11)), { inserted: false, coalescedInto: 's3' });
    assert.deepEqual(cli.insert(copy('s6', T0 + 12)), { inserted: false, coalescedInto: 's3' });
    assert.equal((await server.get('s3'))?.deliveries, 3);
    cli.close();
    await server.close();
  });
});
