// Event identity over a real HTTP server, on every store this runtime has: balance updates are signals (each one
// after a run began gets a run, copies that wait coalesce), customer.created/deleted run once per customer ever
// (tombstones outlive retention), and a customer.created after the customer's deletion is never run.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { type HandlerContext, type Store, createLavaWebhooks, memoryStore, silentLogger } from '../src/mod.ts';
import { samplePayload } from '../src/samples.ts';
import { isSqliteAvailable, sqliteStore } from '../src/stores/sqlite.ts';
import { SECRET, handlerGate, signedRequest, sleep, waitFor } from './helpers/lava.ts';
import { tempDatabases } from './helpers/sqlite.ts';
import { openPg } from './helpers/pg.ts';
import { serveReceiver } from './helpers/serve.ts';

const DAY = 86_400_000;
const temp = tempDatabases('lava-identity-');
after(temp.remove);
const isDeno = 'Deno' in globalThis;

interface Target {
  name: string;
  skip: string | false;
  make: () => Promise<Store>;
}

const pg = await openPg();
const targets: Target[] = [
  { name: 'memory', skip: false, make: async () => memoryStore() },
  {
    name: 'sqlite',
    skip: isSqliteAvailable() ? false : 'node:sqlite is not available on this runtime',
    make: async () => sqliteStore({ path: ':memory:' }),
  },
  {
    // As the server opens it: group commit, where an insert may take the lease a claim would (insert-lease.test.ts).
    name: 'sqlite (group commit)',
    skip: isSqliteAvailable() ? false : 'node:sqlite is not available on this runtime',
    make: async () => sqliteStore({ path: temp.path(), groupCommit: true }),
  },
  {
    name: 'deno-kv',
    skip: isDeno ? false : 'Deno KV runs on Deno only',
    make: async () => {
      const { denoKvStore } = await import('../src/stores/deno-kv/mod.ts');
      return denoKvStore({ path: ':memory:' });
    },
  },
  {
    name: 'postgres',
    skip: pg.pg ? false : `no PostgreSQL: ${pg.reason}`,
    make: async () => {
      const { postgresStore } = await import('../src/stores/postgres.ts');
      const h = pg.pg;
      if (!h) throw new Error('unreachable');
      return postgresStore({ sql: h.sql, schema: h.schema() });
    },
  },
];
after(async () => {
  await pg.pg?.done();
});

interface Run {
  event: string;
  customer: string;
  key: string;
  deliveries: number;
  policy: string;
}

/** A receiver on a real port with recording handlers, a clock that tests can move forward, and a gate on runs. */
async function receiver(store: Store) {
  let offset = 0;
  const runs: Run[] = [];
  const gate = handlerGate();
  const record = (e: { event: string; data: { customer_id: string } }, ctx: HandlerContext) => {
    runs.push({
      event: e.event,
      customer: e.data.customer_id,
      key: ctx.key,
      deliveries: ctx.deliveries,
      policy: ctx.policy,
    });
    return gate.wait();
  };
  const lava = createLavaWebhooks({
    secret: SECRET,
    store,
    logger: silentLogger,
    now: () => Date.now() + offset,
    pollMs: 50,
    handlers: { 'customer.created': record, 'customer.wallet.balance.updated': record, 'customer.deleted': record },
  });
  const served = await serveReceiver(lava);
  lava.start();
  return {
    lava,
    runs,
    url: served.url,
    post: async (body: string) => {
      const res = await fetch(signedRequest(served.url, body));
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    },
    advance(ms: number) {
      offset += ms;
    },
    hold: gate.hold,
    close: async () => {
      await served.close();
      await lava.close(2000);
    },
  };
}

const body = (event: string, customerId: string) => JSON.stringify(samplePayload(event, { customerId }));

for (const target of targets) {
  describe(`event identity on the ${target.name} store`, () => {
    if (target.skip) {
      console.log(`[skip] event identity on ${target.name}: ${target.skip}`);
      test(`skipped: ${target.skip}`, { skip: target.skip }, () => {});
      return;
    }

    test('identical balance updates sent 1.5 s apart each get a handler run', async () => {
      const r = await receiver(await target.make());
      try {
        const update = body('customer.wallet.balance.updated', 'cus_apart');
        for (let i = 0; i < 3; i++) {
          if (i > 0) await sleep(1500);
          assert.deepEqual(await r.post(update), { status: 200, body: { received: true } });
        }
        await waitFor(() => r.runs.length === 3, 5000, 'three balance runs');
        assert.ok(r.runs.every((x) => x.deliveries === 1 && x.policy === 'signal'));
        assert.equal(new Set(r.runs.map((x) => x.key)).size, 3, 'each run has a key of its own');
        const metrics = await (await fetch(new URL('/metrics', r.url))).text();
        assert.match(metrics, /lava_webhooks_deliveries_total\{outcome="accepted"\} 3/);
        assert.match(metrics, /lava_webhooks_deliveries_total\{outcome="duplicate"\} 0/);
      } finally {
        await r.close();
      }
    });

    test('twenty identical updates that arrive while the first waits behind a slow run coalesce into one run', async () => {
      const r = await receiver(await target.make());
      try {
        const release = r.hold();
        assert.equal((await r.post(body('customer.created', 'cus_busy'))).status, 200);
        await waitFor(() => r.runs.length === 1, 5000, 'the slow customer.created run');
        const update = body('customer.wallet.balance.updated', 'cus_busy');
        const answers = await Promise.all(Array.from({ length: 20 }, () => r.post(update)));
        assert.ok(answers.every((a) => a.status === 200));
        assert.equal(answers.filter((a) => a.body.coalesced === true).length, 19);
        assert.equal(answers.filter((a) => a.body.coalesced === undefined && a.body.duplicate === undefined).length, 1);
        const metrics = await (await fetch(new URL('/metrics', r.url))).text();
        assert.match(metrics, /lava_webhooks_deliveries_total\{outcome="coalesced"\} 19/);
        release();
        await waitFor(() => r.runs.length === 2, 5000, 'the balance run');
        await r.lava.drain();
        assert.equal(r.runs.length, 2, 'one run for the twenty copies');
        assert.equal(r.runs[1]?.event, 'customer.wallet.balance.updated');
        assert.equal(r.runs[1]?.deliveries, 20);
        // Its run began: the next identical update is a run of its own.
        assert.deepEqual(await r.post(update), { status: 200, body: { received: true } });
        await waitFor(() => r.runs.length === 3, 5000, 'the next balance run');
      } finally {
        await r.close();
      }
    });

    test('replays of customer.created and customer.deleted after retention are duplicates: tombstones keep the keys', async () => {
      const r = await receiver(await target.make());
      try {
        const created = body('customer.created', 'cus_gone');
        const deleted = body('customer.deleted', 'cus_gone');
        assert.deepEqual(await r.post(created), { status: 200, body: { received: true } });
        await waitFor(() => r.runs.length === 1, 5000, 'created run');
        assert.deepEqual(await r.post(deleted), { status: 200, body: { received: true } });
        await waitFor(
          async () => (await r.lava.store.get('customer.deleted:cus_gone'))?.status === 'done',
          5000,
          'deleted done',
        );
        r.advance(8 * DAY);
        assert.equal(await r.lava.purge(), 2);
        for (const key of ['customer.created:cus_gone', 'customer.deleted:cus_gone']) {
          const t = await r.lava.store.get(key);
          assert.equal(t?.tombstone, true, `${key} is a tombstone`);
          assert.equal(t?.body.byteLength, 0);
        }
        assert.deepEqual(await r.post(created), { status: 200, body: { received: true, duplicate: true } });
        assert.deepEqual(await r.post(deleted), { status: 200, body: { received: true, duplicate: true } });
        await sleep(200);
        await r.lava.drain();
        assert.deepEqual(
          r.runs.map((x) => x.event),
          ['customer.created', 'customer.deleted'],
        );
        // Past their own horizon (3 years by default) the tombstones go too.
        r.advance(3 * 365 * DAY);
        assert.equal(await r.lava.purge(), 2);
        assert.equal(await r.lava.store.get('customer.created:cus_gone'), null);
        assert.equal(await r.lava.store.get('customer.deleted:cus_gone'), null);
      } finally {
        await r.close();
      }
    });

    test('a customer.created after the customer’s customer.deleted is kept as a dead letter, not run', async () => {
      const r = await receiver(await target.make());
      try {
        assert.equal((await r.post(body('customer.deleted', 'cus_late'))).status, 200);
        await waitFor(() => r.runs.length === 1, 5000, 'deleted run');
        assert.deepEqual(await r.post(body('customer.created', 'cus_late')), { status: 200, body: { received: true } });
        const dead = await waitFor(
          async () => {
            const rec = await r.lava.store.get('customer.created:cus_late');
            return rec?.status === 'dead' ? rec : null;
          },
          5000,
          'the refused customer.created',
        );
        assert.match(dead.lastError ?? '', /customer cus_late was deleted .*not run/);
        assert.equal(r.runs.length, 1, 'the handler never ran for it');
        // Requeued by an operator, it is refused again for the same reason.
        assert.equal(await r.lava.store.requeue('customer.created:cus_late', Date.now()), true);
        await r.lava.drain();
        assert.equal((await r.lava.store.get('customer.created:cus_late'))?.status, 'dead');
        assert.equal(r.runs.length, 1);
      } finally {
        await r.close();
      }
    });

    test('a customer.created that came before the customer.deleted runs, then the deletion runs', async () => {
      const r = await receiver(await target.make());
      try {
        const release = r.hold();
        await r.post(body('customer.created', 'cus_order'));
        await waitFor(() => r.runs.length === 1, 5000, 'created run');
        await r.post(body('customer.deleted', 'cus_order'));
        release();
        await waitFor(() => r.runs.length === 2, 5000, 'deleted run');
        assert.deepEqual(
          r.runs.map((x) => [x.event, x.policy]),
          [
            ['customer.created', 'once'],
            ['customer.deleted', 'once'],
          ],
        );
        assert.equal((await r.lava.store.get('customer.created:cus_order'))?.status, 'done');
      } finally {
        await r.close();
      }
    });
  });
}
