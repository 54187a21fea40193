// Leases taken by inserts (Store.insert with a lease: SQLite with group commit, Postgres, Deno KV): an event
// inserted as its group's head is written already leased to the worker that will run it, in the insert's own write,
// and runs without a claim. What a claim promises holds for such a lease too: it is stored (another process or
// instance sees it, a requeue takes it over), it runs out as a claim's does, and only a group's head with nothing
// open before it gets one; on Postgres, two instances inserting events of one customer at once never both lease one.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { type HandlerContext, type Store, createLavaWebhooks, jsonLogger, silentLogger } from '../src/mod.ts';
import { Metrics } from '../src/observability/metrics.ts';
import { createWorker } from '../src/processing/worker.ts';
import { samplePayload } from '../src/samples.ts';
import { sqliteStore, sqliteUnavailableReason } from '../src/stores/sqlite.ts';
import type { EventRecord, InsertLease } from '../src/stores/store.ts';
import { SECRET, handlerGate, signedRequest, sleep, waitFor } from './helpers/lava.ts';
import { openPg } from './helpers/pg.ts';
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

const pg = await openPg();
after(async () => {
  await pg.pg?.done();
});
const pgSkip = pg.pg ? false : `no PostgreSQL: ${pg.reason}`;
async function postgres(schema?: string): Promise<Store> {
  const { postgresStore } = await import('../src/stores/postgres.ts');
  const h = pg.pg;
  if (!h) throw new Error('unreachable');
  return postgresStore({ sql: h.sql, schema: schema ?? h.schema() });
}

/** The stores that declare leases taken by inserts, as the server and a multi-instance deployment open them. */
const targets: Array<{ name: string; skip: string | false; make: () => Promise<Store> }> = [
  { name: 'sqlite (group commit)', skip, make: async () => sqliteStore({ path: tempPath(), groupCommit: true }) },
  { name: 'postgres', skip: pgSkip, make: () => postgres() },
  {
    name: 'deno-kv',
    skip: 'Deno' in globalThis ? false : 'Deno KV runs on Deno only',
    make: async () => {
      const { denoKvStore } = await import('../src/stores/deno-kv/mod.ts');
      return denoKvStore({ path: ':memory:' });
    },
  },
];

for (const target of targets) {
  describe(`${target.name} store: an insert given a lease`, { skip: target.skip }, () => {
    if (target.skip) console.log(`[skip] insert lease tests on ${target.name}: ${target.skip}`);
    after(removeTemp);

    test("writes its group's head leased, as a claim would, and answers the record a claim would have read", async () => {
      const s = await target.make();
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
      const s = await target.make();
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

    test('of the inserts of one customer made together, only the first can take its lease', async () => {
      const s = await target.make();
      const results = await Promise.all([
        s.insert(newEvent('a', 'c1', T0), LEASE),
        s.insert(newEvent('b', 'c1', T0 + 1), LEASE),
        s.insert(newEvent('c', 'c2', T0 + 2), LEASE),
        s.insert(newEvent('n', null, T0 + 3), LEASE),
        s.insert(newEvent('m', null, T0 + 4), LEASE),
      ]);
      assert.deepEqual(
        results.map((r) => r.leased?.key ?? null),
        ['a', null, 'c', 'n', 'm'],
        'each event without a customer is its own group',
      );
      assert.equal((await s.get('b'))?.leaseOwner, null);
      await s.close();
    });

    test('a signal leased at its insert takes no copies: its run has begun, as after a claim', async () => {
      const s = await target.make();
      assert.ok((await s.insert(signal('s1', 'c', T0), LEASE)).leased);
      assert.deepEqual(await s.insert(signal('s2', 'c', T0 + 1)), { inserted: true }, 'a record of its own');
      assert.equal((await s.get('s1'))?.deliveries, 1);
      await s.close();
    });

    test("its lease runs out as a claim's does: another worker takes the event over, and the first one's outcome is refused", async () => {
      const s = await target.make();
      assert.ok((await s.insert(newEvent('a', 'c', T0), { owner: 'w', leaseUntil: T0 + 1000 })).leased);
      assert.deepEqual(await s.claim({ owner: 'x', limit: 1, leaseMs: 1000, now: T0 + 999 }), []);
      const [taken] = await s.claim({ owner: 'x', limit: 1, leaseMs: 1000, now: T0 + 1000 });
      assert.equal(taken?.key, 'a');
      assert.equal(taken?.attempts, 2);
      assert.equal(await s.complete('a', 'w', T0 + 1001), false);
      assert.equal(await s.complete('a', 'x', T0 + 1001), true);
      await s.close();
    });

    test('a worker that stopped while an insert took its lease hands the event back at once', async () => {
      const s = await target.make();
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
  });
}

describe('postgres store: leases taken by inserts across instances', { skip: pgSkip }, () => {
  /** Holds the lock a claim of `customer` on `schema` holds, in a transaction of its own, until `release()`. */
  async function holdCustomer(schema: string, customer: string) {
    const h = pg.pg;
    if (!h) throw new Error('unreachable');
    const client = await h.client({ max: 1 });
    let release = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    let locked = () => {};
    const holding = new Promise<void>((resolve) => {
      locked = resolve;
    });
    const done = client.begin(async (tx) => {
      await tx.unsafe('SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2)) IS NULL AS locked', [schema, customer]);
      locked();
      await released;
    });
    await holding;
    return async () => {
      release();
      await done;
      await client.end();
    };
  }

  test("an instance sees another's lease taken by an insert, and its requeue takes the run over", async () => {
    const schema = pg.pg?.schema() as string;
    const first = await postgres(schema);
    const second = await postgres(schema);
    assert.ok((await first.insert(newEvent('a', 'c', T0), LEASE)).leased);
    assert.deepEqual(await second.claim({ owner: 'x', limit: 5, leaseMs: 1000, now: T0 + 1 }), []);
    assert.equal(await second.requeue('a', T0 + 2), true);
    assert.equal(await first.complete('a', 'w', T0 + 3), false, 'the run the requeue took over is not recorded');
    const [again] = await second.claim({ owner: 'x', limit: 1, leaseMs: 1000, now: T0 + 4 });
    assert.equal(again?.key, 'a');
    await first.close();
    await second.close();
  });

  test('an insert whose customer another transaction is claiming takes no lease, and does not wait for it', async () => {
    const schema = pg.pg?.schema() as string;
    const s = await postgres(schema);
    await s.ping();
    const release = await holdCustomer(schema, 'busy');
    try {
      const [busy, free] = await Promise.all([
        s.insert(newEvent('a', 'busy', T0), LEASE),
        s.insert(newEvent('b', 'free', T0 + 1), LEASE),
      ]);
      assert.deepEqual(busy, { inserted: true }, 'left to a claim');
      assert.equal(free.leased?.key, 'b');
    } finally {
      await release();
    }
    const claimed = await s.claim({ owner: 'x', limit: 5, leaseMs: 1000, now: T0 + 2 });
    assert.deepEqual(
      claimed.map((r) => r.key),
      ['a'],
    );
    await s.close();
  });

  test('two instances inserting events of the same customers at once never both lease one customer', async () => {
    const h = pg.pg;
    if (!h) throw new Error('unreachable');
    const schema = h.schema();
    // Each instance on its own connections, as two receivers are.
    const { postgresStore } = await import('../src/stores/postgres.ts');
    const instances = [
      postgresStore({ sql: await h.client({ max: 4 }), schema, closeClient: true }),
      postgresStore({ sql: await h.client({ max: 4 }), schema, closeClient: true }),
    ];
    await instances[0]?.ping();
    const customers = Array.from({ length: 40 }, (_, i) => `c${i}`);
    let leasedBoth = 0;
    let leasedOne = 0;
    for (let round = 0; round < 15; round++) {
      const answers = await Promise.all(
        instances.flatMap((s, n) =>
          customers.map((c) => s.insert(newEvent(`r${round}:${n}:${c}`, c, T0 + round), { ...LEASE, owner: `w${n}` })),
        ),
      );
      const leased = answers.flatMap((a) => (a.leased ? [a.leased] : []));
      for (const c of customers) {
        const mine = leased.filter((r) => r.customerId === c);
        if (mine.length > 1) leasedBoth++;
        if (mine.length === 1) leasedOne++;
      }
      // What was leased runs and completes; what was not is claimed, one a customer, as a worker would.
      for (const r of leased)
        assert.equal(
          await instances[Number(r.leaseOwner?.slice(1))]?.complete(r.key, r.leaseOwner as string, T0),
          true,
        );
      for (;;) {
        const claimed = await instances[0]?.claim({ owner: 'w0', limit: 100, leaseMs: 60_000, now: T0 + round });
        if (!claimed || claimed.length === 0) break;
        const perCustomer = new Set(claimed.map((r) => r.customerId));
        assert.equal(perCustomer.size, claimed.length, 'a claim takes one event a customer');
        for (const r of claimed) assert.equal(await instances[0]?.complete(r.key, 'w0', T0), true);
      }
    }
    assert.equal(leasedBoth, 0, 'a customer leased by both instances at once');
    assert.ok(leasedOne > 0, 'inserts took leases');
    for (const s of instances) await s.close();
  });
});

describe('sqlite store: an insert given a lease, what is its own', { skip }, () => {
  after(removeTemp);

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

  test('without group commit the store declares no such leases, and an insert given one inserts as usual', () => {
    const s = sqliteStore({ path: tempPath() });
    assert.ok(!s.capabilities.leaseOnInsert);
    assert.deepEqual(s.insert(newEvent('a', 'c', T0), LEASE), { inserted: true });
    assert.equal(s.get('a')?.leaseOwner, null);
    s.close();
  });
});

for (const target of targets) {
  describe(`the receiver on ${target.name}: deliveries leased by their insert`, { skip: target.skip }, () => {
    after(removeTemp);

    const URL_ = 'http://receiver.test/webhooks/lava';
    const balance = (customerId: string, n: number) =>
      JSON.stringify(samplePayload('customer.wallet.balance.updated', { customerId, data: { balance: String(n) } }));

    /** A receiver whose store reports every key a claim returned. */
    async function setup(options: { concurrency?: number; handler?: (key: string, body: string) => unknown } = {}) {
      const store = await target.make();
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
        return options.handler ? options.handler(ctx.key, new TextDecoder().decode(ctx.body)) : gate.wait();
      };
      const lava = createLavaWebhooks({
        secret: SECRET,
        store,
        logger: silentLogger,
        pollMs: 50,
        ...(options.concurrency ? { concurrency: options.concurrency } : {}),
        handlers: { 'customer.wallet.balance.updated': handler },
      });
      const post = async (body: string) => {
        const res = await lava.fetch(signedRequest(URL_, body));
        assert.equal(res.status, 200, await res.clone().text());
      };
      return { store, lava, claimedKeys, runs, post, hold: gate.hold };
    }

    test('a delivery the polling worker has room for runs without being claimed: its insert took the lease', async () => {
      const { store, lava, claimedKeys, runs, post } = await setup();
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
      const { lava, claimedKeys, runs, post, hold } = await setup();
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

    test('deliveries arriving together beyond what the worker claims at once are each leased by their insert', async () => {
      // The claims' own room starts at one slot's worth and shrinks when claims come back with little, as they do
      // when the inserts took the leases: held to it, 56 of these 64 were refused a lease and had to be claimed.
      const { lava, claimedKeys, runs, post } = await setup({ handler: () => {} });
      lava.start();
      try {
        await Promise.all(Array.from({ length: 64 }, (_, i) => post(balance(`cus_${i}`, i))));
        await waitFor(() => runs.length === 64, 10_000, 'every run');
        assert.deepEqual(claimedKeys, [], 'none was claimed');
        assert.ok(runs.every((r) => r.attempt === 1));
      } finally {
        await lava.close();
      }
    });

    test("a claim still gets its turn while inserts keep taking leases: a customer's next event does not wait for the stream to end", async () => {
      // One slot, and runs let through one at a time while arrivals (each leased by its insert) come twice as fast:
      // runs wait beyond the claims' room throughout, so only the claim's turn (a slot's worth beyond the room once no
      // claim ran for 50 ms) can start cus_a's second event, which only a claim can start, before the stream ends.
      const order: string[] = [];
      let releaseFirst: () => void = () => {};
      const first = new Promise<void>((resolve) => {
        releaseFirst = resolve;
      });
      const waiting: Array<() => void> = [];
      let credit = 0;
      const turn = () => {
        if (credit > 0) {
          credit--;
          return Promise.resolve();
        }
        return new Promise<void>((resolve) => waiting.push(resolve));
      };
      const releaseOne = () => {
        const next = waiting.shift();
        if (next) next();
        else credit++;
      };
      const { lava, post } = await setup({
        concurrency: 1,
        handler: (_key, body) => {
          const data = (JSON.parse(body) as { data: { customer_id: string; balance: string } }).data;
          order.push(`${data.customer_id}#${data.balance}`);
          return data.customer_id === 'cus_a' && data.balance === '1' ? first : turn();
        },
      });
      lava.start();
      try {
        await post(balance('cus_a', 1));
        await waitFor(() => order.length === 1, 5000, "cus_a's first run");
        await post(balance('cus_a', 2)); // behind a running event of its customer: only a claim can start it
        await Promise.all([post(balance('cus_s', 0)), post(balance('cus_t', 0))]);
        releaseFirst();
        for (let i = 0; i < 20; i++) {
          await Promise.all([post(balance(`cus_s${i}`, 0)), post(balance(`cus_t${i}`, 0))]);
          releaseOne();
          await sleep(10);
        }
        credit = Number.POSITIVE_INFINITY;
        for (const next of waiting.splice(0)) next();
        await waitFor(() => order.length === 44, 20_000, 'every run');
        const second = order.indexOf('cus_a#2');
        assert.ok(second > 0, 'cus_a#2 ran');
        assert.ok(second < 29, `cus_a#2 ran as run ${second + 1} of 44: behind most of the stream`);
      } finally {
        await lava.close();
      }
    });

    test('without the polling loop (a serverless host) no lease is taken: the drain after the ack claims the event', async () => {
      const { lava, claimedKeys, runs, post } = await setup();
      try {
        await post(balance('cus_1', 1));
        await waitFor(() => runs.length === 1, 5000, 'the drained run');
        assert.deepEqual(claimedKeys, [runs[0]?.key]);
      } finally {
        await lava.close();
      }
    });
  });
}
