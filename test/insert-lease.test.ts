// Leases taken by inserts (Store.insert with a lease; SQLite with group commit): an event inserted as its group's head
// is written already leased to the worker that will run it, in the insert's own write, and runs without a claim.
// What a claim promises holds for such a lease too: it is in the file (another process sees it, a requeue takes it
// over), it runs out as a claim's does, and only a group's head with nothing open before it gets one.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { type HandlerContext, createLavaWebhooks, jsonLogger, silentLogger } from '../src/mod.ts';
import { Metrics } from '../src/observability/metrics.ts';
import { createWorker } from '../src/processing/worker.ts';
import { samplePayload } from '../src/samples.ts';
import { sqliteStore, sqliteUnavailableReason } from '../src/stores/sqlite.ts';
import type { EventRecord, InsertLease } from '../src/stores/store.ts';
import { SECRET, handlerGate, signedRequest, waitFor } from './helpers/lava.ts';
import { sqliteDriver, tempDatabases } from './helpers/sqlite.ts';
import { newEvent } from './stores/contract.ts';

const skip = sqliteUnavailableReason ?? false;
const T0 = 1_700_000_000_000;
const LEASE: InsertLease = { owner: 'w', leaseUntil: T0 + 60_000 };

const temp = tempDatabases('lava-insert-lease-');
const tempPath = temp.path;
const removeTemp = temp.remove;

const signal = (key: string, customer: string, at: number) =>
  newEvent(key, customer, at, { event: 'customer.wallet.balance.updated', policy: 'signal', coalesceKey: 'ck' });

describe('sqlite store: an insert given a lease', { skip }, () => {
  if (skip) console.log(`[skip] insert lease tests: ${skip}`);
  after(removeTemp);

  test("writes its group's head leased, as a claim would, and answers the record a claim would have read", async () => {
    const s = sqliteStore({ path: tempPath(), groupCommit: true });
    assert.equal(s.capabilities.leaseOnInsert, true);
    const r = await s.insert(newEvent('a', 'c1', T0), LEASE);
    assert.equal(r.inserted, true);
    const leased = r.leased as EventRecord;
    const stored = (await s.get('a')) as EventRecord;
    assert.equal(stored.leaseOwner, 'w');
    assert.equal(stored.leaseUntil, LEASE.leaseUntil);
    assert.equal(stored.attempts, 1);
    assert.deepEqual({ ...leased, body: [...leased.body] }, { ...stored, body: [...stored.body] });
    // Nobody else can claim it while the lease lives; its owner records the outcome as after a claim.
    assert.deepEqual(await s.claim({ owner: 'x', limit: 10, leaseMs: 1000, now: T0 + 1 }), []);
    assert.equal(await s.complete('a', 'x', T0 + 2), false);
    assert.equal(await s.complete('a', 'w', T0 + 2), true);
    assert.equal((await s.get('a'))?.status, 'done');
    assert.deepEqual(await s.counts(), { pending: 0, retrying: 0, done: 1, dead: 0 });
    await s.close();
  });

  test('behind an open event of its group, as a duplicate, a coalesced copy or a dead letter, it takes no lease', async () => {
    const s = sqliteStore({ path: tempPath(), groupCommit: true });
    assert.deepEqual(await s.insert(newEvent('a', 'c1', T0)), { inserted: true });
    assert.deepEqual(await s.insert(newEvent('b', 'c1', T0 + 1), LEASE), { inserted: true }, 'behind a');
    assert.equal((await s.get('b'))?.leaseOwner, null);
    assert.equal((await s.get('b'))?.attempts, 0);
    assert.deepEqual(await s.insert(newEvent('a', 'c1', T0 + 2), LEASE), { inserted: false }, 'a duplicate');
    assert.deepEqual(await s.insert(signal('s1', 'c2', T0 + 3)), { inserted: true });
    assert.deepEqual(await s.insert(signal('s2', 'c2', T0 + 4), LEASE), { inserted: false, coalescedInto: 's1' });
    const dead = newEvent('d', 'c3', T0 + 5, { status: 'dead', lastError: 'invalid payload' });
    assert.deepEqual(await s.insert(dead, LEASE), { inserted: true });
    assert.equal((await s.get('d'))?.leaseOwner, null);
    // Nothing holds a lease: a claim takes the heads of c1 and c2 (c3's only event is dead).
    const claimed = await s.claim({ owner: 'x', limit: 10, leaseMs: 1000, now: T0 + 6 });
    assert.deepEqual(
      claimed.map((r) => r.key),
      ['a', 's1'],
    );
    await s.close();
  });

  test('a signal leased at its insert takes no copies: its run has begun, as after a claim', async () => {
    const s = sqliteStore({ path: tempPath(), groupCommit: true });
    assert.ok((await s.insert(signal('s1', 'c', T0), LEASE)).leased);
    assert.deepEqual(await s.insert(signal('s2', 'c', T0 + 1)), { inserted: true }, 'a record of its own');
    assert.equal((await s.get('s1'))?.deliveries, 1);
    await s.close();
  });

  test("its lease runs out as a claim's does: another worker takes the event over, and the first one's outcome is refused", async () => {
    const s = sqliteStore({ path: tempPath(), groupCommit: true });
    assert.ok((await s.insert(newEvent('a', 'c', T0), { owner: 'w', leaseUntil: T0 + 1000 })).leased);
    assert.deepEqual(await s.claim({ owner: 'x', limit: 1, leaseMs: 1000, now: T0 + 999 }), []);
    const [taken] = await s.claim({ owner: 'x', limit: 1, leaseMs: 1000, now: T0 + 1000 });
    assert.equal(taken?.key, 'a');
    assert.equal(taken?.attempts, 2);
    assert.equal(await s.complete('a', 'w', T0 + 1001), false);
    assert.equal(await s.complete('a', 'x', T0 + 1001), true);
    await s.close();
  });

  test('another process on the same file sees the lease, and its requeue takes the run over', async () => {
    const path = tempPath();
    const server = sqliteStore({ path, groupCommit: true });
    const cli = sqliteStore({ path });
    assert.ok((await server.insert(newEvent('a', 'c', T0), LEASE)).leased);
    assert.deepEqual(cli.claim({ owner: 'cli', limit: 5, leaseMs: 1000, now: T0 + 1 }), []);
    assert.equal(cli.requeue('a', T0 + 2), true);
    assert.equal(await server.complete('a', 'w', T0 + 3), false, 'the run the requeue took over is not recorded');
    const [again] = await server.claim({ owner: 'w', limit: 1, leaseMs: 1000, now: T0 + 4 });
    assert.equal(again?.key, 'a');
    cli.close();
    await server.close();
  });

  test('a batch whose commit fails leases nothing and stores nothing', async () => {
    const path = tempPath();
    const s = sqliteStore({ path, groupCommit: true, busyTimeoutMs: 50 });
    // Another connection holds the write lock for the whole of the batch's wait.
    const holder = (await sqliteDriver()).openDatabase(path);
    holder.exec('BEGIN IMMEDIATE');
    let outcome: PromiseSettledResult<unknown>;
    try {
      [outcome] = await Promise.allSettled([s.insert(newEvent('a', 'c', T0), LEASE)]);
    } finally {
      holder.exec('ROLLBACK');
      holder.close();
    }
    assert.equal(outcome.status, 'rejected');
    assert.equal(await s.get('a'), null);
    // The next insert of the same event leases it as usual.
    assert.ok((await s.insert(newEvent('a', 'c', T0), LEASE)).leased);
    await s.close();
  });

  test('a worker that stopped while an insert took its lease hands the event back at once', async () => {
    const s = sqliteStore({ path: tempPath(), groupCommit: true });
    const worker = createWorker({
      store: s,
      process: () => assert.fail('nothing runs after stop'),
      concurrency: 2,
      leaseMs: 60_000,
      pollMs: 1000,
      handlerTimeoutMs: 1000,
      retry: { scheduleMs: [10], jitter: 0 },
      logger: jsonLogger({ level: 'silent' }),
      metrics: new Metrics(),
    });
    assert.equal(worker.leaseForInsert(), undefined, 'no lease before the loop polls');
    worker.start();
    const lease = worker.leaseForInsert() as InsertLease;
    assert.equal(lease.owner, worker.owner);
    const inserting = s.insert(newEvent('a', 'c', Date.now()), lease);
    await worker.stop();
    assert.equal(worker.leaseForInsert(), undefined, 'none once stopping');
    worker.adopt((await inserting).leased);
    await waitFor(async () => (await s.get('a'))?.leaseOwner === null, 5000, 'the lease handed back');
    assert.equal((await s.get('a'))?.status, 'retrying');
    await s.close();
  });

  test('without group commit the store declares no such leases, and an insert given one inserts as usual', () => {
    const s = sqliteStore({ path: tempPath() });
    assert.ok(!s.capabilities.leaseOnInsert);
    assert.deepEqual(s.insert(newEvent('a', 'c', T0), LEASE), { inserted: true });
    assert.equal(s.get('a')?.leaseOwner, null);
    s.close();
  });
});

describe('the receiver on SQLite with group commit: deliveries leased by their insert', { skip }, () => {
  after(removeTemp);

  const URL_ = 'http://receiver.test/webhooks/lava';
  const balance = (customerId: string, n: number) =>
    JSON.stringify(samplePayload('customer.wallet.balance.updated', { customerId, data: { balance: String(n) } }));

  /** A receiver whose store reports every key a claim returned. */
  function setup() {
    const store = sqliteStore({ path: tempPath(), groupCommit: true });
    const claimedKeys: string[] = [];
    const claim = store.claim.bind(store);
    store.claim = async (options) => {
      const got = await claim(options);
      claimedKeys.push(...got.map((r) => r.key));
      return got;
    };
    const runs: Array<{ key: string; attempt: number }> = [];
    const gate = handlerGate();
    const handler = (_e: unknown, ctx: HandlerContext) => {
      runs.push({ key: ctx.key, attempt: ctx.attempt });
      return gate.wait();
    };
    const lava = createLavaWebhooks({
      secret: SECRET,
      store,
      logger: silentLogger,
      pollMs: 50,
      handlers: { 'customer.wallet.balance.updated': handler },
    });
    const post = async (body: string) => {
      const res = await lava.fetch(signedRequest(URL_, body));
      assert.equal(res.status, 200, await res.clone().text());
    };
    return { store, lava, claimedKeys, runs, post, hold: gate.hold };
  }

  test('a delivery the polling worker has room for runs without being claimed: its insert took the lease', async () => {
    const { store, lava, claimedKeys, runs, post } = setup();
    lava.start();
    try {
      await post(balance('cus_1', 1));
      await waitFor(() => runs.length === 1, 5000, 'the run');
      const [record] = await store.list();
      assert.equal(record?.key, runs[0]?.key);
      assert.equal(runs[0]?.attempt, 1);
      await waitFor(async () => (await store.get(record?.key as string))?.status === 'done', 5000, 'recorded done');
      assert.deepEqual(claimedKeys, [], 'no claim returned it');
    } finally {
      await lava.close();
    }
  });

  test('a delivery behind a running event of its customer waits for a claim, and runs after it in order', async () => {
    const { lava, claimedKeys, runs, post, hold } = setup();
    lava.start();
    try {
      const release = hold();
      await post(balance('cus_1', 1));
      await waitFor(() => runs.length === 1, 5000, 'the first run');
      await post(balance('cus_1', 2));
      release();
      await waitFor(() => runs.length === 2, 5000, 'the second run');
      assert.deepEqual(claimedKeys, [runs[1]?.key], 'the second was claimed, the first was not');
    } finally {
      await lava.close();
    }
  });

  test('without the polling loop (a serverless host) no lease is taken: the drain after the ack claims the event', async () => {
    const { lava, claimedKeys, runs, post } = setup();
    try {
      await post(balance('cus_1', 1));
      await waitFor(() => runs.length === 1, 5000, 'the drained run');
      assert.deepEqual(claimedKeys, [runs[0]?.key]);
    } finally {
      await lava.close();
    }
  });
});
