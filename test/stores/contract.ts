// The store contract suite: every store runs these same tests (see src/stores/store.ts for the rules).
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { NewEvent, Store } from '../../src/stores/store.ts';

export interface ContractTarget {
  /** Makes a fresh, empty store. */
  make: () => Promise<Store> | Store;
  /** Set when the backend is absent: the suite is skipped and the reason printed. */
  skip?: string | false;
  /** Extra clean-up after the suite. */
  teardown?: () => Promise<void> | void;
}

const enc = new TextEncoder();

export function newEvent(key: string, customerId: string | null, at: number, extra: Partial<NewEvent> = {}): NewEvent {
  return {
    key,
    event: 'customer.created',
    customerId,
    body: enc.encode(JSON.stringify({ event: 'customer.created', data: { customer_id: customerId, key } })),
    headers: { 'content-type': 'application/json' },
    receivedAt: at,
    status: 'pending',
    ...extra,
  };
}

export function storeContract(name: string, target: ContractTarget): void {
  if (target.skip) {
    console.log(`[skip] store contract for ${name}: ${target.skip}`);
    describe(`${name} store contract`, () => {
      test(`skipped: ${target.skip}`, { skip: target.skip }, () => {});
    });
    return;
  }
  describe(`${name} store contract`, () => {
    let store: Store;
    const fresh = async () => {
      store = await target.make();
      return store;
    };
    const T0 = 1_700_000_000_000;
    after(async () => {
      await target.teardown?.();
    });

    test('insert() is insert-if-absent and keeps the raw bytes and headers intact', async () => {
      const s = await fresh();
      const body = new Uint8Array([0, 1, 2, 250, 255, 10, 13]);
      assert.deepEqual(await s.insert(newEvent('k1', 'c1', T0, { body, headers: { 'webhook-id': 'x' } })), {
        inserted: true,
      });
      assert.deepEqual(await s.insert(newEvent('k1', 'c2', T0 + 5, { event: 'other' })), { inserted: false });
      const r = await s.get('k1');
      assert.ok(r);
      assert.deepEqual([...r.body], [...body]);
      assert.deepEqual(r.headers, { 'webhook-id': 'x' });
      assert.equal(r.customerId, 'c1');
      assert.equal(r.event, 'customer.created');
      assert.equal(r.status, 'pending');
      assert.equal(r.attempts, 0);
      assert.equal(r.receivedAt, T0);
      assert.equal(await s.get('nope'), null);
      await s.close();
    });

    test('insert() of the same key concurrently writes exactly one record', async () => {
      const s = await fresh();
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => s.insert(newEvent('same', `c${i}`, T0 + i))),
      );
      assert.equal(results.filter((r) => r.inserted).length, 1);
      assert.equal((await s.counts()).pending, 1);
      await s.close();
    });

    test('insert() of a dead letter keeps its reason and is never claimed', async () => {
      const s = await fresh();
      await s.insert(newEvent('bad', null, T0, { status: 'dead', lastError: 'schema: data.customer_id required' }));
      const r = await s.get('bad');
      assert.equal(r?.status, 'dead');
      assert.equal(r?.lastError, 'schema: data.customer_id required');
      assert.deepEqual(await s.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 + 1 }), []);
      assert.equal((await s.counts()).dead, 1);
      await s.close();
    });

    test('claim() gives one head per customer, in arrival order, and increments attempts', async () => {
      const s = await fresh();
      await s.insert(newEvent('a1', 'A', T0));
      await s.insert(newEvent('b1', 'B', T0 + 1));
      await s.insert(newEvent('a2', 'A', T0 + 2));
      await s.insert(newEvent('n1', null, T0 + 3));
      const got = await s.claim({ owner: 'w1', limit: 10, leaseMs: 1000, now: T0 + 10 });
      assert.deepEqual(
        got.map((r) => r.key),
        ['a1', 'b1', 'n1'],
      );
      assert.ok(got.every((r) => r.attempts === 1 && r.leaseOwner === 'w1' && r.leaseUntil === T0 + 1010));
      assert.ok(got[0]!.seq < got[1]!.seq && got[1]!.seq < got[2]!.seq);
      // a2 waits behind a1, which is leased.
      assert.deepEqual(await s.claim({ owner: 'w2', limit: 10, leaseMs: 1000, now: T0 + 20 }), []);
      assert.equal(await s.complete('a1', 'w1', T0 + 30), true);
      const next = await s.claim({ owner: 'w2', limit: 10, leaseMs: 1000, now: T0 + 31 });
      assert.deepEqual(
        next.map((r) => r.key),
        ['a2'],
      );
      await s.close();
    });

    test('claim() respects the limit and never hands the same event to two concurrent claimers', async () => {
      const s = await fresh();
      for (let i = 0; i < 30; i++) await s.insert(newEvent(`e${i}`, `c${i}`, T0 + i));
      const first = await s.claim({ owner: 'w', limit: 5, leaseMs: 1000, now: T0 + 100 });
      assert.equal(first.length, 5);
      assert.deepEqual(
        first.map((r) => r.key),
        ['e0', 'e1', 'e2', 'e3', 'e4'],
      );
      const batches = await Promise.all(
        Array.from({ length: 6 }, (_, i) => s.claim({ owner: `w${i}`, limit: 10, leaseMs: 1000, now: T0 + 100 })),
      );
      const keys = batches.flat().map((r) => r.key);
      assert.equal(new Set(keys).size, keys.length, 'no event claimed twice');
      assert.equal(keys.length, 25);
      await s.close();
    });

    test('an expired lease is taken over, and the old owner can no longer finish the event', async () => {
      const s = await fresh();
      await s.insert(newEvent('k', 'c', T0));
      const [first] = await s.claim({ owner: 'old', limit: 1, leaseMs: 1000, now: T0 });
      assert.equal(first?.key, 'k');
      assert.deepEqual(await s.claim({ owner: 'new', limit: 1, leaseMs: 1000, now: T0 + 999 }), []);
      const [taken] = await s.claim({ owner: 'new', limit: 1, leaseMs: 1000, now: T0 + 1001 });
      assert.equal(taken?.key, 'k');
      assert.equal(taken?.attempts, 2);
      assert.equal(await s.complete('k', 'old', T0 + 1002), false);
      assert.equal(await s.retry('k', 'old', T0 + 5000, 'x'), false);
      assert.equal(await s.deadLetter('k', 'old', 'x', T0 + 1002), false);
      assert.equal(await s.renew('k', 'old', T0 + 9000), false);
      assert.equal((await s.get('k'))?.leaseOwner, 'new');
      assert.equal(await s.renew('k', 'new', T0 + 9000), true);
      assert.equal((await s.get('k'))?.leaseUntil, T0 + 9000);
      assert.equal(await s.complete('k', 'new', T0 + 1003), true);
      const r = await s.get('k');
      assert.equal(r?.status, 'done');
      assert.equal(r?.finishedAt, T0 + 1003);
      assert.equal(r?.leaseOwner, null);
      assert.equal(await s.complete('k', 'new', T0 + 1004), false, 'a finished event cannot be completed again');
      await s.close();
    });

    test('retry() delays the event and holds back the customer until it is due', async () => {
      const s = await fresh();
      await s.insert(newEvent('a1', 'A', T0));
      await s.insert(newEvent('a2', 'A', T0 + 1));
      await s.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 });
      assert.equal(await s.retry('a1', 'w', T0 + 5000, 'boom'), true);
      const r = await s.get('a1');
      assert.equal(r?.status, 'retrying');
      assert.equal(r?.lastError, 'boom');
      assert.equal(r?.nextAttemptAt, T0 + 5000);
      assert.equal(r?.leaseOwner, null);
      assert.deepEqual(await s.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 + 4999 }), []);
      const again = await s.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 + 5000 });
      assert.deepEqual(
        again.map((x) => [x.key, x.attempts]),
        [['a1', 2]],
      );
      await s.close();
    });

    test('deadLetter() keeps the error and releases the customer’s next event', async () => {
      const s = await fresh();
      await s.insert(newEvent('a1', 'A', T0));
      await s.insert(newEvent('a2', 'A', T0 + 1));
      await s.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 });
      assert.equal(await s.deadLetter('a1', 'w', 'gave up', T0 + 10), true);
      const r = await s.get('a1');
      assert.equal(r?.status, 'dead');
      assert.equal(r?.lastError, 'gave up');
      assert.equal(r?.finishedAt, T0 + 10);
      const next = await s.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 + 11 });
      assert.deepEqual(
        next.map((x) => x.key),
        ['a2'],
      );
      await s.close();
    });

    test('requeue() and requeueWhere() bring dead letters back in their original order', async () => {
      const s = await fresh();
      for (const [k, c] of [
        ['a1', 'A'],
        ['b1', 'B'],
        ['a2', 'A'],
      ] as const)
        await s.insert(newEvent(k, c, T0));
      await s.insert(newEvent('x1', 'X', T0, { event: 'customer.deleted' }));
      const claimed = await s.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 });
      for (const r of claimed) await s.deadLetter(r.key, 'w', 'nope', T0 + 1);
      assert.equal((await s.counts()).dead, 3);
      assert.equal(await s.requeue('missing', T0 + 2), false);
      assert.equal(await s.requeueWhere({ event: 'customer.deleted' }, T0 + 2), 1);
      assert.equal((await s.get('x1'))?.status, 'pending');
      assert.equal(await s.requeueWhere({}, T0 + 2), 2);
      const r = await s.get('a1');
      assert.equal(r?.status, 'pending');
      assert.equal(r?.attempts, 0);
      assert.equal(r?.lastError, null);
      assert.equal(r?.finishedAt, null);
      // a1 is A's head again, before a2 which never ran.
      const got = await s.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 + 3 });
      assert.deepEqual(
        got.map((x) => x.key),
        ['a1', 'b1', 'x1'],
      );
      assert.equal(await s.requeue('a2', T0 + 4), true, 'a pending event can be requeued too');
      await s.close();
    });

    test('list() filters by status, event and customer, pages by seq, and counts() agrees', async () => {
      const s = await fresh();
      for (let i = 0; i < 10; i++) {
        await s.insert(
          newEvent(`k${i}`, i % 2 ? 'odd' : 'even', T0 + i, {
            event: i < 5 ? 'customer.created' : 'customer.deleted',
          }),
        );
      }
      await s.insert(newEvent('dead', null, T0, { status: 'dead', lastError: 'x' }));
      assert.equal((await s.list()).length, 11);
      assert.deepEqual(
        (await s.list({ customerId: 'odd', event: 'customer.deleted' })).map((r) => r.key),
        ['k5', 'k7', 'k9'],
      );
      assert.deepEqual(
        (await s.list({ status: 'dead' })).map((r) => r.key),
        ['dead'],
      );
      const page1 = await s.list({ limit: 4 });
      assert.deepEqual(
        page1.map((r) => r.key),
        ['k0', 'k1', 'k2', 'k3'],
      );
      const page2 = await s.list({ limit: 4, afterSeq: page1[3]!.seq });
      assert.deepEqual(
        page2.map((r) => r.key),
        ['k4', 'k5', 'k6', 'k7'],
      );
      assert.deepEqual(await s.counts(), { pending: 10, retrying: 0, done: 0, dead: 1 });
      await s.close();
    });

    test('purge() removes finished records before the cut-off and frees their keys', async () => {
      const s = await fresh();
      await s.insert(newEvent('old', 'A', T0));
      await s.insert(newEvent('new', 'B', T0));
      await s.insert(newEvent('open', 'C', T0));
      await s.insert(newEvent('dead', null, T0, { status: 'dead', lastError: 'x' }));
      const got = await s.claim({ owner: 'w', limit: 2, leaseMs: 1000, now: T0 });
      assert.deepEqual(
        got.map((r) => r.key),
        ['old', 'new'],
      );
      await s.complete('old', 'w', T0 + 10);
      await s.complete('new', 'w', T0 + 100);
      assert.equal(await s.purge({ before: T0 + 50 }), 1);
      assert.equal(await s.get('old'), null);
      assert.equal((await s.get('new'))?.status, 'done');
      assert.equal((await s.get('open'))?.status, 'pending');
      assert.equal((await s.get('dead'))?.status, 'dead', 'dead letters stay unless asked for');
      assert.equal(await s.purge({ before: T0 + 1000, status: ['dead'] }), 1);
      assert.equal(await s.get('dead'), null);
      assert.deepEqual(await s.insert(newEvent('old', 'A', T0 + 2000)), { inserted: true });
      await s.close();
    });

    test('insert() records the identity policy; a plain insert is dedupe with one delivery', async () => {
      const s = await fresh();
      await s.insert(newEvent('plain', 'A', T0));
      await s.insert(newEvent('customer.created:B', 'B', T0, { policy: 'once' }));
      const plain = await s.get('plain');
      assert.equal(plain?.policy, 'dedupe');
      assert.equal(plain?.coalesceKey, null);
      assert.equal(plain?.deliveries, 1);
      assert.equal(plain?.tombstone, false);
      assert.equal((await s.get('customer.created:B'))?.policy, 'once');
      assert.deepEqual(await s.insert(newEvent('customer.created:B', 'B', T0 + 1, { policy: 'once' })), {
        inserted: false,
      });
      await s.close();
    });

    test('insert() of a signal coalesces into a waiting copy, and never into one whose run began', async () => {
      const s = await fresh();
      const sig = (key: string, at: number, ck = 'bal:A') =>
        newEvent(key, 'A', at, { event: 'customer.wallet.balance.updated', policy: 'signal', coalesceKey: ck });
      assert.deepEqual(await s.insert(sig('s1', T0)), { inserted: true });
      assert.deepEqual(await s.insert(sig('s2', T0 + 1)), { inserted: false, coalescedInto: 's1' });
      assert.deepEqual(await s.insert(sig('s3', T0 + 2)), { inserted: false, coalescedInto: 's1' });
      assert.equal(await s.get('s2'), null, 'a coalesced copy writes no record of its own');
      const waiting = await s.get('s1');
      assert.equal(waiting?.deliveries, 3);
      assert.equal(waiting?.policy, 'signal');
      assert.equal(waiting?.coalesceKey, 'bal:A');
      // Another body (another coalesceKey) is another record.
      assert.deepEqual(await s.insert(sig('o1', T0 + 3, 'bal:A:other')), { inserted: true });
      const [claimed] = await s.claim({ owner: 'w', limit: 1, leaseMs: 1000, now: T0 + 10 });
      assert.equal(claimed?.key, 's1');
      assert.equal(claimed?.deliveries, 3, 'the claimed copy says how many deliveries it stands for');
      // The run began: the next copy is a record of its own, and copies after it coalesce into that one.
      assert.deepEqual(await s.insert(sig('s4', T0 + 11)), { inserted: true });
      assert.deepEqual(await s.insert(sig('s5', T0 + 12)), { inserted: false, coalescedInto: 's4' });
      // A failed run waiting for its retry takes no copies either.
      assert.equal(await s.retry('s1', 'w', T0 + 5000, 'boom'), true);
      assert.deepEqual(await s.insert(sig('s6', T0 + 13)), { inserted: false, coalescedInto: 's4' });
      assert.equal((await s.get('s1'))?.deliveries, 3);
      assert.equal((await s.get('s4'))?.deliveries, 3);
      const c = await s.counts();
      assert.equal(c.pending + c.retrying, 3, 's1 (retrying), o1 and s4');
      await s.close();
    });

    test('insert() of the same signal concurrently writes one record that counts every delivery', async () => {
      const s = await fresh();
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          s.insert(
            newEvent(`c${i}`, 'A', T0 + i, { event: 'customer.wallet.balance.updated', policy: 'signal', coalesceKey: 'ck' }),
          ),
        ),
      );
      const inserted = results.filter((r) => r.inserted);
      assert.equal(inserted.length, 1);
      const into = new Set(results.filter((r) => !r.inserted).map((r) => r.coalescedInto));
      assert.equal(into.size, 1);
      const [key] = [...into];
      assert.equal((await s.get(key as string))?.deliveries, 20);
      assert.equal((await s.counts()).pending, 1);
      await s.close();
    });

    test('purge() keeps a tombstone of a finished once event, whose key stays a duplicate until its own horizon', async () => {
      const s = await fresh();
      await s.insert(newEvent('customer.created:A', 'A', T0, { policy: 'once', headers: { 'user-agent': 'lava' } }));
      await s.insert(newEvent('id:evt_1', 'B', T0));
      await s.insert(newEvent('sig1', 'C', T0, { policy: 'signal', coalesceKey: 'ck:C', event: 'customer.wallet.balance.updated' }));
      for (const r of await s.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 })) {
        assert.equal(await s.complete(r.key, 'w', T0 + 10), true);
      }
      assert.equal(await s.purge({ before: T0 + 50 }), 3, 'one tombstone made, two records removed');
      assert.equal(await s.get('id:evt_1'), null);
      assert.equal(await s.get('sig1'), null);
      const t = await s.get('customer.created:A');
      assert.ok(t, 'the tombstone is kept');
      assert.equal(t.tombstone, true);
      assert.equal(t.status, 'done');
      assert.equal(t.event, 'customer.created');
      assert.equal(t.customerId, 'A');
      assert.equal(t.finishedAt, T0 + 10);
      assert.equal(t.body.byteLength, 0);
      assert.deepEqual(t.headers, {});
      assert.deepEqual(await s.insert(newEvent('customer.created:A', 'A', T0 + 100, { policy: 'once' })), {
        inserted: false,
      });
      assert.deepEqual(await s.insert(newEvent('id:evt_1', 'B', T0 + 100)), { inserted: true }, 'a dedupe key is freed');
      assert.equal(await s.purge({ before: T0 + 60 }), 0, 'a tombstone is not purged twice');
      assert.equal(
        await s.purge({ before: T0 + 60, tombstonesBefore: T0 + 5 }),
        0,
        'a tombstone younger than its horizon stays',
      );
      assert.equal(await s.purge({ before: T0 + 60, tombstonesBefore: T0 + 11 }), 1);
      assert.equal(await s.get('customer.created:A'), null);
      assert.deepEqual(await s.insert(newEvent('customer.created:A', 'A', T0 + 200, { policy: 'once' })), {
        inserted: true,
      });
      await s.close();
    });

    test('purge() of once dead letters, when asked, keeps their tombstones too', async () => {
      const s = await fresh();
      await s.insert(newEvent('customer.deleted:A', 'A', T0, { policy: 'once', event: 'customer.deleted' }));
      const [r] = await s.claim({ owner: 'w', limit: 1, leaseMs: 1000, now: T0 });
      assert.equal(await s.deadLetter(r!.key, 'w', 'gave up', T0 + 1), true);
      assert.equal(await s.purge({ before: T0 + 10 }), 0, 'dead letters stay unless asked for');
      assert.equal(await s.purge({ before: T0 + 10, status: ['dead'] }), 1);
      const t = await s.get('customer.deleted:A');
      assert.equal(t?.tombstone, true);
      assert.equal(t?.status, 'dead');
      assert.equal(t?.lastError, null);
      assert.deepEqual(await s.insert(newEvent('customer.deleted:A', 'A', T0 + 20, { policy: 'once' })), {
        inserted: false,
      });
      await s.close();
    });

    test('ping() answers while open; close() is final', async () => {
      const s = await fresh();
      await s.ping();
      await s.close();
      await assert.rejects(async () => {
        await s.insert(newEvent('k', 'c', T0));
      });
    });
  });
}

