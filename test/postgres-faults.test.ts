// Postgres faults that come from the database server itself, not from the network: it ends the receiver's
// connections mid-load (pg_terminate_backend, what a failover or an admin does), and another session holds a lock on
// the events table. Every answer is 200 or 503, every 200 is stored and run, every stored event is completed once,
// and the receiver carries on by itself afterwards.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { createLavaWebhooks } from '../src/receiver.ts';
import { sqlClient } from '../src/runtime/sql-client.ts';
import { samplePayload } from '../src/samples.ts';
import { postgresStore } from '../src/stores/postgres.ts';
import { SECRET, signedRequest, sleep, waitFor } from './helpers/lava.ts';
import { FAULT_TEST_OPTIONS, countingCompletions, eventStatuses, openPg } from './helpers/pg.ts';

const opened = await openPg();
const pg = opened.pg;
const skip = opened.reason ?? false;
if (!pg) console.log(`[skip] postgres fault tests: ${skip}`);

after(async () => {
  await pg?.done();
});

/** A receiver on its own Postgres connections (named `app`, so the test can find them), recording what it runs. */
async function receiver(app: string, schema: string) {
  const url = new URL(pg!.url);
  url.searchParams.set('application_name', app);
  const inner = postgresStore({ sql: await sqlClient(url.toString(), { max: 4 }), schema, closeClient: true });
  const { store, completions } = countingCompletions(inner);
  const runs: string[] = [];
  const lava = createLavaWebhooks({
    secret: SECRET,
    store,
    process: async (record) => {
      runs.push(record.key);
    },
    concurrency: 4,
    ...FAULT_TEST_OPTIONS,
  });
  lava.start();
  const statuses = new Map<number, number>();
  const acked = new Set<string>();
  let n = 0;
  const deliver = async (prefix: string) => {
    const i = ++n;
    const key = `${prefix}-${i}`;
    const started = Date.now();
    const body = JSON.stringify(
      samplePayload('customer.wallet.balance.updated', { customerId: `cus_${i % 5}`, data: { balance: String(i) } }),
    );
    const res = await lava.fetch(
      signedRequest('http://receiver/webhooks/lava', body, { headers: { 'webhook-id': key } }),
    );
    await res.body?.cancel();
    statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    if (res.status === 200) acked.add(`id:${key}`);
    return { status: res.status, ms: Date.now() - started };
  };
  return { lava, runs, completions, statuses, acked, deliver };
}

/** close() must finish (a client that lost a query must not hang it): fails the test instead of hanging it. */
async function closeWithin(lava: { close(deadlineMs?: number): Promise<void> }, ms: number) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const closed = await Promise.race([
    lava.close(2_000).then(
      () => true,
      () => true,
    ),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), ms);
    }),
  ]);
  clearTimeout(timer);
  assert.ok(closed, `close() finished within ${ms} ms`);
}

/** Every stored event done and completed exactly once; every acknowledged one among them and run. */
async function settled(schema: string, r: Awaited<ReturnType<typeof receiver>>) {
  await waitFor(
    async () => {
      const s = await eventStatuses(pg!.sql, schema);
      return [...s].every(([k, status]) => status === 'done' && r.completions.has(k));
    },
    20_000,
    'every stored event to be done',
  );
  const s = await eventStatuses(pg!.sql, schema);
  for (const k of r.acked) assert.equal(s.get(k), 'done', `acknowledged ${k} is stored and done`);
  for (const [k] of s) {
    assert.equal(r.completions.get(k), 1, `${k} completed exactly once`);
    assert.ok(r.runs.includes(k), `${k} ran`);
  }
  for (const k of r.runs) assert.ok(s.has(k), `a run of an event that is not stored: ${k}`);
}

describe('postgres faults from the database server', { skip, timeout: 90_000 }, () => {
  test('the server ends the receiver’s connections mid-load: 200 or 503 only, every 200 runs, it recovers alone', async () => {
    const schema = pg!.schema();
    const app = `lava_fault_${Math.random().toString(36).slice(2, 10)}`;
    const r = await receiver(app, schema);
    try {
      assert.equal((await r.deliver('before')).status, 200, 'the store works before the fault');
      let loading = true;
      const senders = Array.from({ length: 4 }, async () => {
        while (loading) await r.deliver('load');
      });
      let terminated = 0;
      for (let k = 0; k < 4; k++) {
        await sleep(250);
        const rows = (await pg!.sql.unsafe(
          'SELECT count(*)::int AS n FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) t',
          [app],
        )) as Array<{ n: number }>;
        terminated += rows[0]?.n ?? 0;
      }
      await sleep(250);
      loading = false;
      await Promise.all(senders);
      assert.ok(terminated >= 4, `the receiver's connections were terminated (${terminated})`);
      for (const status of r.statuses.keys())
        assert.ok(status === 200 || status === 503, `unexpected status ${status}`);

      // Afterwards it takes deliveries again without a restart.
      await waitFor(async () => (await r.deliver('after')).status === 200, 10_000, 'a 200 after the terminations');
      for (let i = 0; i < 10; i++) assert.equal((await r.deliver('after')).status, 200);
      await settled(schema, r);
      assert.ok(r.acked.size >= 20, `enough acknowledged around the faults (${r.acked.size})`);
    } finally {
      await closeWithin(r.lava, 15_000);
    }
  });

  test('another session locks the events table: 503 within the store timeout, then everything resumes', async () => {
    const schema = pg!.schema();
    const r = await receiver(`lava_lock_${Math.random().toString(36).slice(2, 10)}`, schema);
    const locker = await pg!.client({ max: 1 });
    try {
      assert.equal((await r.deliver('before')).status, 200);
      await waitFor(
        async () => (await eventStatuses(pg!.sql, schema)).get('id:before-1') === 'done',
        10_000,
        'the first event done',
      );

      let release: () => void = () => {};
      const released = new Promise<void>((resolve) => {
        release = resolve;
      });
      let locked: () => void = () => {};
      const lockTaken = new Promise<void>((resolve) => {
        locked = resolve;
      });
      const holding = locker.begin(async (tx) => {
        await tx.unsafe(`LOCK TABLE "${schema}".events IN ACCESS EXCLUSIVE MODE`);
        locked();
        await released;
      });
      await lockTaken;
      const during = await Promise.all(Array.from({ length: 6 }, () => r.deliver('locked')));
      for (const d of during) {
        assert.equal(d.status, 503, 'nothing is acknowledged while the insert cannot commit');
        assert.ok(d.ms < 2_500, `the 503 came within the store timeout (${d.ms} ms)`);
      }
      release();
      await holding;

      // The inserts that timed out were still queued in Postgres: they commit now and run once, like any other.
      await waitFor(async () => (await r.deliver('after')).status === 200, 10_000, 'a 200 after the lock');
      for (let i = 0; i < 5; i++) assert.equal((await r.deliver('after')).status, 200);
      await settled(schema, r);
    } finally {
      await locker.end({ timeout: 2 }).catch(() => {});
      await closeWithin(r.lava, 15_000);
    }
  });
});
