// The store contract suite: every store runs these same tests (see src/stores/store.ts for the rules), and a model
// of the rules on generated histories (at the end of this file) that each store must agree with step by step.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import {
  type EventRecord,
  type EventStatus,
  type InsertResult,
  type NewEvent,
  type Store,
  StoreUnavailableError,
  StoreUsageError,
} from '../../src/stores/store.ts';

export interface ContractTarget {
  /** Makes a fresh, empty store. */
  make: () => Promise<Store> | Store;
  /** Set when the backend is absent: the suite is skipped and the reason printed. */
  skip?: string | false;
  /** Extra clean-up after the suite. */
  teardown?: () => Promise<void> | void;
  /** Generated histories the model test runs (each on a fresh store). Default 25: a few seconds on Postgres. */
  modelRuns?: number;
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

    test('requeue() of an older dead event while a newer one of its customer runs: none of the customer runs beside it', async () => {
      const s = await fresh();
      await s.insert(newEvent('a1', 'A', T0));
      await s.insert(newEvent('a2', 'A', T0 + 1));
      const [first] = await s.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 + 2 });
      assert.equal(first?.key, 'a1');
      assert.equal(await s.deadLetter('a1', 'w', 'gave up', T0 + 3), true);
      const [second] = await s.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 + 4 });
      assert.equal(second?.key, 'a2');
      await s.insert(newEvent('a3', 'A', T0 + 5));
      // An operator requeues a1 while a2 runs: a1 waits for a2, and goes before a3, which has not started.
      assert.equal(await s.requeue('a1', T0 + 6), true);
      assert.deepEqual(await s.claim({ owner: 'w2', limit: 10, leaseMs: 1000, now: T0 + 7 }), [], 'a2 still runs');
      assert.equal(await s.complete('a2', 'w', T0 + 8), true);
      const next = await s.claim({ owner: 'w2', limit: 10, leaseMs: 1000, now: T0 + 9 });
      assert.deepEqual(
        next.map((r) => r.key),
        ['a1'],
      );
      assert.equal(await s.complete('a1', 'w2', T0 + 10), true);
      assert.deepEqual(
        (await s.claim({ owner: 'w2', limit: 10, leaseMs: 1000, now: T0 + 11 })).map((r) => r.key),
        ['a3'],
      );
      await s.close();
    });

    test('claim() after a requeue behind a running event whose lease then runs out: the requeued older event goes first', async () => {
      const s = await fresh();
      await s.insert(newEvent('a1', 'A', T0));
      await s.insert(newEvent('a2', 'A', T0 + 1));
      await s.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 + 2 });
      assert.equal(await s.deadLetter('a1', 'w', 'gave up', T0 + 3), true);
      assert.deepEqual(
        (await s.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 + 4 })).map((r) => r.key),
        ['a2'],
      );
      assert.equal(await s.requeue('a1', T0 + 5), true);
      assert.deepEqual(await s.claim({ owner: 'v', limit: 10, leaseMs: 1000, now: T0 + 1003 }), [], 'a2 still runs');
      // a2's worker stalled past its lease: the group is free, and its head is a1, which arrived first.
      const [taken] = await s.claim({ owner: 'v', limit: 10, leaseMs: 1000, now: T0 + 1004 });
      assert.equal(taken?.key, 'a1');
      assert.deepEqual(await s.claim({ owner: 'x', limit: 10, leaseMs: 1000, now: T0 + 1005 }), [], 'a1 runs now');
      // a2's late outcome is still its own to record (its lease was never taken over), and frees nothing of a1's.
      assert.equal(await s.retry('a2', 'w', T0 + 1006, 'late'), true);
      assert.deepEqual(await s.claim({ owner: 'x', limit: 10, leaseMs: 1000, now: T0 + 1007 }), []);
      assert.equal(await s.complete('a1', 'v', T0 + 1008), true);
      assert.deepEqual(
        (await s.claim({ owner: 'x', limit: 10, leaseMs: 1000, now: T0 + 1009 })).map((r) => [r.key, r.attempts]),
        [['a2', 2]],
      );
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

    test('list() pages newest first with order desc and beforeSeq, and filters by receivedAt', async () => {
      const s = await fresh();
      for (let i = 0; i < 10; i++) await s.insert(newEvent(`k${i}`, i % 2 ? 'odd' : 'even', T0 + i * 1000));
      await s.insert(newEvent('dead', null, T0 + 500, { status: 'dead', lastError: 'x' }));
      const keys = async (o: Parameters<Store['list']>[0]) => (await s.list(o)).map((r) => r.key);
      const page1 = await s.list({ order: 'desc', limit: 4 });
      assert.deepEqual(
        page1.map((r) => r.key),
        ['dead', 'k9', 'k8', 'k7'],
      );
      assert.deepEqual(await keys({ order: 'desc', limit: 4, beforeSeq: page1[3]!.seq }), ['k6', 'k5', 'k4', 'k3']);
      const all = await s.list({ order: 'asc' });
      const seqOf = (key: string) => all.find((r) => r.key === key)!.seq;
      assert.deepEqual(
        await keys({ beforeSeq: seqOf('k3') }),
        ['k0', 'k1', 'k2'],
        'beforeSeq bounds an ascending list too',
      );
      assert.deepEqual(await keys({ order: 'desc', afterSeq: seqOf('k4'), beforeSeq: seqOf('k8') }), [
        'k7',
        'k6',
        'k5',
      ]);
      assert.deepEqual(
        await keys({ receivedAfter: T0 + 2000, receivedBefore: T0 + 6000 }),
        ['k3', 'k4', 'k5'],
        'both receivedAt bounds are exclusive',
      );
      assert.deepEqual(await keys({ receivedBefore: T0 + 1000 }), ['k0', 'dead']);
      assert.deepEqual(await keys({ customerId: 'odd', order: 'desc', receivedBefore: T0 + 8000, limit: 3 }), [
        'k7',
        'k5',
        'k3',
      ]);
      assert.deepEqual(await keys({ status: 'dead', order: 'desc' }), ['dead']);
      assert.deepEqual(await keys({ status: 'pending', order: 'desc', limit: 2 }), ['k9', 'k8']);
      const usage = (option: string) => (e: unknown) => {
        assert.ok(e instanceof StoreUsageError, `${option}: got ${e}`);
        assert.ok(e.message.includes(s.name) && e.message.includes(option), e.message);
        return true;
      };
      await assert.rejects(async () => s.list({ order: 'sideways' as 'asc' }), usage('order'));
      await assert.rejects(async () => s.list({ beforeSeq: Number.NaN }), usage('beforeSeq'));
      await assert.rejects(async () => s.list({ receivedAfter: Number.NaN }), usage('receivedAfter'));
      await assert.rejects(async () => s.list({ receivedBefore: Number.POSITIVE_INFINITY }), usage('receivedBefore'));
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
            newEvent(`c${i}`, 'A', T0 + i, {
              event: 'customer.wallet.balance.updated',
              policy: 'signal',
              coalesceKey: 'ck',
            }),
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

    test('insert() of a signal whose own key is stored is a duplicate, whether or not a copy waits', async () => {
      const s = await fresh();
      const sig = (key: string, at: number) =>
        newEvent(key, 'A', at, { event: 'customer.wallet.balance.updated', policy: 'signal', coalesceKey: 'ck:A' });
      assert.deepEqual(await s.insert(sig('s1', T0)), { inserted: true });
      // Waiting, its own key again: a duplicate, not a copy to count.
      assert.deepEqual(await s.insert(sig('s1', T0 + 1)), { inserted: false });
      assert.equal((await s.get('s1'))?.deliveries, 1);
      // Running (no copy waits), its own key again: still a duplicate, no record of its own.
      assert.equal((await s.claim({ owner: 'w', limit: 1, leaseMs: 60_000, now: T0 + 2 })).length, 1);
      assert.deepEqual(await s.insert(sig('s1', T0 + 3)), { inserted: false });
      // A new copy waits behind the run; the first key again is neither inserted nor counted into it.
      assert.deepEqual(await s.insert(sig('s2', T0 + 4)), { inserted: true });
      assert.deepEqual(await s.insert(sig('s1', T0 + 5)), { inserted: false });
      assert.equal((await s.get('s2'))?.deliveries, 1);
      assert.equal((await s.get('s1'))?.deliveries, 1);
      const c = await s.counts();
      assert.equal(c.pending + c.retrying, 2, 's1 (running) and s2');
      await s.close();
    });

    test('purge() keeps a tombstone of a finished once event, whose key stays a duplicate until its own horizon', async () => {
      const s = await fresh();
      await s.insert(newEvent('customer.created:A', 'A', T0, { policy: 'once', headers: { 'user-agent': 'lava' } }));
      await s.insert(newEvent('id:evt_1', 'B', T0));
      await s.insert(
        newEvent('sig1', 'C', T0, { policy: 'signal', coalesceKey: 'ck:C', event: 'customer.wallet.balance.updated' }),
      );
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
      assert.deepEqual(
        await s.insert(newEvent('id:evt_1', 'B', T0 + 100)),
        { inserted: true },
        'a dedupe key is freed',
      );
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

    test('insert() of a dead signal is recorded as it is, never counted into a waiting copy', async () => {
      const s = await fresh();
      const sig = (key: string, extra: Partial<NewEvent> = {}) =>
        newEvent(key, 'A', T0, {
          event: 'customer.wallet.balance.updated',
          policy: 'signal',
          coalesceKey: 'ck',
          ...extra,
        });
      assert.deepEqual(await s.insert(sig('s1')), { inserted: true });
      assert.deepEqual(await s.insert(sig('bad', { status: 'dead', lastError: 'invalid' })), { inserted: true });
      const bad = await s.get('bad');
      assert.equal(bad?.status, 'dead');
      assert.equal(bad?.coalesceKey, 'ck');
      assert.equal(bad?.deliveries, 1);
      assert.equal((await s.get('s1'))?.deliveries, 1);
      await s.close();
    });

    test('capabilities are declared, and the store answers as they say', async () => {
      const s = await fresh();
      const { sync, batching } = s.capabilities;
      assert.equal(typeof sync, 'boolean');
      assert.equal(typeof batching, 'boolean');
      const isPromise = (v: unknown) => v instanceof Promise;
      const inserted = s.insert(newEvent('k', 'c', T0));
      assert.equal(isPromise(inserted), !sync || batching, 'insert');
      await inserted;
      const claimed = s.claim({ owner: 'w', limit: 1, leaseMs: 1000, now: T0 });
      assert.equal(isPromise(claimed), !sync, 'claim');
      await claimed;
      const completed = s.complete('k', 'w', T0 + 1);
      assert.equal(isPromise(completed), !sync || batching, 'complete');
      assert.equal(await completed, true);
      for (const answer of [s.get('k'), s.list(), s.counts(), s.requeue('k', T0 + 2), s.purge({ before: T0 })]) {
        assert.equal(isPromise(answer), !sync);
        await answer;
      }
      await s.close();
    });

    test('options a store cannot use throw StoreUsageError naming the option, and change nothing', async () => {
      const s = await fresh();
      await s.insert(newEvent('k', 'c', T0));
      await s.insert(newEvent('d', null, T0, { status: 'dead', lastError: 'x' }));
      const usage = (option: string) => (e: unknown) => {
        assert.ok(e instanceof StoreUsageError, `${option}: got ${e}`);
        assert.ok(e instanceof TypeError);
        assert.ok(e.message.includes(s.name) && e.message.includes(option), e.message);
        return true;
      };
      for (const limit of [-1, 0, 1.5, 10_001, Number.NaN]) {
        await assert.rejects(async () => s.list({ limit }), usage('limit'), `list({ limit: ${limit} })`);
      }
      await assert.rejects(async () => s.list({ status: 'nope' as EventStatus }), usage('status'));
      await assert.rejects(
        async () => s.requeueWhere({ status: ['dead', 'nope' as EventStatus] }, T0),
        usage('status'),
      );
      await assert.rejects(async () => s.purge({ before: T0 + 10, status: ['pending' as 'done'] }), usage('status'));
      await assert.rejects(async () => s.purge({ before: Number.NaN }), usage('before'));
      await assert.rejects(
        async () => s.purge({ before: T0 + 10, tombstonesBefore: Number.NaN }),
        usage('tombstonesBefore'),
      );
      for (const limit of [0, -1, 2.5]) {
        await assert.rejects(async () => s.claim({ owner: 'w', limit, leaseMs: 1000, now: T0 }), usage('limit'));
      }
      await assert.rejects(async () => s.claim({ owner: '', limit: 1, leaseMs: 1000, now: T0 }), usage('owner'));
      await assert.rejects(async () => s.claim({ owner: 'w', limit: 1, leaseMs: 0, now: T0 }), usage('leaseMs'));
      assert.equal((await s.list({ limit: 10_000 })).length, 2, 'the largest page is allowed');
      assert.equal((await s.list({ limit: 1 })).length, 1);
      assert.deepEqual(await s.counts(), { pending: 1, retrying: 0, done: 0, dead: 1 }, 'nothing changed');
      assert.equal((await s.get('k'))?.attempts, 0);
      await s.close();
    });

    test('after close() every method refuses with StoreUnavailableError naming the store and the method', async () => {
      const s = await fresh();
      await s.insert(newEvent('k', 'c', T0));
      await s.ping();
      await s.close();
      await s.close(); // closing twice is harmless
      const calls: Array<[string, () => unknown]> = [
        ['insert', () => s.insert(newEvent('k2', 'c', T0))],
        ['claim', () => s.claim({ owner: 'w', limit: 1, leaseMs: 1, now: T0 })],
        ['renew', () => s.renew('k', 'w', T0)],
        ['complete', () => s.complete('k', 'w', T0)],
        ['retry', () => s.retry('k', 'w', T0, 'x')],
        ['deadLetter', () => s.deadLetter('k', 'w', 'x', T0)],
        ['requeue', () => s.requeue('k', T0)],
        ['requeueWhere', () => s.requeueWhere({}, T0)],
        ['get', () => s.get('k')],
        ['list', () => s.list()],
        ['purge', () => s.purge({ before: T0 })],
        ['counts', () => s.counts()],
        ['ping', () => s.ping()],
      ];
      for (const [method, call] of calls) {
        await assert.rejects(
          async () => call(),
          (e: unknown) => {
            assert.ok(e instanceof StoreUnavailableError, `${method}: got ${e}`);
            assert.equal(e.store, s.name, method);
            assert.equal(e.operation, method);
            assert.match(e.message, /closed/);
            return true;
          },
        );
      }
    });

    test('agrees with a model of the rules on generated histories of every method, lease takeovers and purges', async () => {
      await modelHistories(fresh, target.modelRuns ?? 25);
    });
  });
}

// ---- The model: the rules of store.ts done the plain way ----
// Every record in one map, heads found by sorting, no index or heap: a store must agree with it after every step of
// any history. Time only moves forward; `seq` is compared by order (Postgres spends a sequence value on a duplicate).

interface ModelRecord {
  key: string;
  policy: 'once' | 'dedupe' | 'signal';
  coalesceKey: string | null;
  deliveries: number;
  tombstone: boolean;
  event: string;
  customerId: string | null;
  bodyLength: number;
  headers: Record<string, string>;
  receivedAt: number;
  status: EventStatus;
  seq: number;
  attempts: number;
  nextAttemptAt: number;
  leaseOwner: string | null;
  leaseUntil: number | null;
  lastError: string | null;
  finishedAt: number | null;
}

const open = (r: ModelRecord) => r.status === 'pending' || r.status === 'retrying';
const waiting = (r: ModelRecord) => r.status === 'pending' && r.attempts === 0 && r.leaseOwner === null;

class StoreModel {
  // A Map keeps insertion order, and a key purged and inserted again goes to the end: this is seq order.
  readonly records = new Map<string, ModelRecord>();
  #seq = 0;

  insert(e: NewEvent): InsertResult {
    if (this.records.has(e.key)) return { inserted: false };
    const ck = e.coalesceKey ?? null;
    if (ck !== null && e.status === 'pending') {
      const into = [...this.records.values()].find((r) => r.coalesceKey === ck && waiting(r));
      if (into) {
        into.deliveries++;
        return { inserted: false, coalescedInto: into.key };
      }
    }
    this.records.set(e.key, {
      key: e.key,
      policy: e.policy ?? 'dedupe',
      coalesceKey: ck,
      deliveries: 1,
      tombstone: false,
      event: e.event,
      customerId: e.customerId,
      bodyLength: e.body.byteLength,
      headers: { ...e.headers },
      receivedAt: e.receivedAt,
      status: e.status,
      seq: ++this.#seq,
      attempts: 0,
      nextAttemptAt: e.receivedAt,
      leaseOwner: null,
      leaseUntil: null,
      lastError: e.lastError ?? null,
      finishedAt: e.status === 'dead' ? e.receivedAt : null,
    });
    return { inserted: true };
  }

  claim(owner: string, limit: number, leaseMs: number, now: number): string[] {
    const groups = new Map<string, ModelRecord[]>();
    for (const r of this.records.values()) {
      if (!open(r)) continue;
      const g = r.customerId === null ? `k:${r.key}` : `c:${r.customerId}`;
      groups.set(g, [...(groups.get(g) ?? []), r]);
    }
    const heads: ModelRecord[] = [];
    for (const members of groups.values()) {
      const head = members.reduce((a, b) => (b.seq < a.seq ? b : a));
      const running = members.some((r) => r.leaseOwner !== null && r.leaseUntil !== null && r.leaseUntil > now);
      if (!running && head.nextAttemptAt <= now) heads.push(head);
    }
    const out = heads.sort((a, b) => a.seq - b.seq).slice(0, limit);
    for (const r of out) {
      r.leaseOwner = owner;
      r.leaseUntil = now + leaseMs;
      r.attempts++;
    }
    return out.map((r) => r.key);
  }

  #held(key: string, owner: string): ModelRecord | undefined {
    const r = this.records.get(key);
    return r && open(r) && r.leaseOwner === owner ? r : undefined;
  }

  renew(key: string, owner: string, until: number): boolean {
    const r = this.#held(key, owner);
    if (r) r.leaseUntil = until;
    return r !== undefined;
  }

  finish(key: string, owner: string, status: 'done' | 'dead', now: number, error: string | null): boolean {
    const r = this.#held(key, owner);
    if (!r) return false;
    Object.assign(r, { status, finishedAt: now, leaseOwner: null, leaseUntil: null });
    if (error !== null) r.lastError = error;
    return true;
  }

  retry(key: string, owner: string, at: number, error: string): boolean {
    const r = this.#held(key, owner);
    if (!r) return false;
    Object.assign(r, { status: 'retrying', nextAttemptAt: at, lastError: error, leaseOwner: null, leaseUntil: null });
    return true;
  }

  requeue(key: string, now: number): boolean {
    const r = this.records.get(key);
    if (!r || r.tombstone) return false;
    Object.assign(r, {
      status: 'pending',
      attempts: 0,
      nextAttemptAt: now,
      leaseOwner: null,
      leaseUntil: null,
      lastError: null,
      finishedAt: null,
    });
    return true;
  }

  requeueWhere(statuses: EventStatus[], event: string | undefined, now: number): number {
    let n = 0;
    for (const r of this.records.values()) {
      if (statuses.includes(r.status) && (event === undefined || r.event === event) && this.requeue(r.key, now)) n++;
    }
    return n;
  }

  purge(before: number, statuses: Array<'done' | 'dead'>, tombstonesBefore: number | undefined): number {
    let n = 0;
    for (const r of [...this.records.values()]) {
      if (!(statuses as EventStatus[]).includes(r.status) || r.finishedAt === null) continue;
      if (r.tombstone) {
        if (tombstonesBefore !== undefined && r.finishedAt < tombstonesBefore) {
          this.records.delete(r.key);
          n++;
        }
      } else if (r.finishedAt < before) {
        if (r.policy === 'once') Object.assign(r, { tombstone: true, bodyLength: 0, headers: {}, lastError: null });
        else this.records.delete(r.key);
        n++;
      }
    }
    return n;
  }

  counts(): Record<EventStatus, number> {
    const c = { pending: 0, retrying: 0, done: 0, dead: 0 };
    for (const r of this.records.values()) c[r.status]++;
    return c;
  }
}

/** What is compared of a stored record: everything but `seq` (compared by order) and the bytes of the body. */
function view(r: EventRecord | ModelRecord) {
  if ('body' in r) {
    const { seq: _seq, body, ...fields } = r;
    return { ...fields, bodyLength: body.byteLength };
  }
  const { seq: _seq, ...fields } = r;
  return fields;
}

type Command =
  | {
      op: 'insert';
      key: number;
      customer: number | null;
      kind: 'dedupe' | 'once' | 'signal' | 'dead';
      ck: number;
      deleted: boolean;
    }
  | { op: 'claim'; owner: number; limit: number }
  | { op: 'complete' | 'dead' | 'renew'; pick: number; owner: number; stray: boolean }
  | { op: 'retry'; pick: number; owner: number; stray: boolean; delay: number }
  | { op: 'requeue'; pick: number; finished: boolean }
  | { op: 'requeueWhere'; statuses: EventStatus[]; deleted: boolean }
  | { op: 'purge'; back: number; dead: boolean; tombstones: number | null }
  | { op: 'tick'; ms: number }
  | { op: 'leap' }
  | { op: 'check' };

const STATUSES: EventStatus[] = ['pending', 'retrying', 'done', 'dead'];
const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      op: fc.constant('insert' as const),
      key: fc.nat(20),
      customer: fc.option(fc.nat(2), { nil: null, freq: 6 }),
      kind: fc.constantFrom('dedupe' as const, 'dedupe' as const, 'once' as const, 'signal' as const, 'dead' as const),
      ck: fc.nat(1),
      deleted: fc.boolean(),
    }),
  },
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant('claim' as const),
      owner: fc.nat(2),
      limit: fc.integer({ min: 1, max: 4 }),
    }),
  },
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constantFrom('complete' as const, 'dead' as const, 'renew' as const),
      pick: fc.nat(),
      owner: fc.nat(2),
      stray: fc.boolean(),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('retry' as const),
      pick: fc.nat(),
      owner: fc.nat(2),
      stray: fc.boolean(),
      delay: fc.nat(150),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant('requeue' as const),
      pick: fc.nat(),
      finished: fc.nat(3).map((n) => n > 0),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('requeueWhere' as const),
      statuses: fc.subarray(STATUSES, { minLength: 1 }),
      deleted: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('purge' as const),
      back: fc.nat(80),
      dead: fc.boolean(),
      tombstones: fc.option(fc.nat(120), { nil: null }),
    }),
  },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('tick' as const), ms: fc.nat(40) }) },
  { weight: 1, arbitrary: fc.constant({ op: 'leap' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'check' as const }) },
);

const LEASE_MS = 100;

async function agree(store: Store, model: StoreModel, step: string): Promise<void> {
  const listed = await store.list({ limit: 10_000 });
  assert.deepEqual(listed.map(view), [...model.records.values()].map(view), `records after ${step}`);
  for (let i = 1; i < listed.length; i++) assert.ok(listed[i]!.seq > listed[i - 1]!.seq, 'seq grows in list order');
  assert.deepEqual(await store.counts(), model.counts(), `counts after ${step}`);
}

/** Runs one generated history against a fresh store and the model, comparing every answer. */
async function runHistory(store: Store, commands: Command[]): Promise<void> {
  const model = new StoreModel();
  let now = 1_000_000;
  const enc = new TextEncoder();
  let signals = 0;
  for (const [i, c] of commands.entries()) {
    const step = `step ${i} ${JSON.stringify(c)}`;
    const keys = [...model.records.keys()];
    // Outcomes mostly go to events someone holds, by their holder; `stray` ones to any key, by anyone.
    const held = [...model.records.values()].filter((r) => r.leaseOwner !== null);
    const target = (pick: number, stray: boolean, owner: number): [string, string] => {
      if (!stray && held.length > 0) {
        const r = held[pick % held.length]!;
        return [r.key, r.leaseOwner!];
      }
      return [keys[pick % Math.max(1, keys.length)] ?? 'none', `w${owner}`];
    };
    switch (c.op) {
      case 'insert': {
        const signal = c.kind === 'signal';
        const customer = signal ? `c${c.ck}` : c.customer === null ? null : `c${c.customer}`;
        const key =
          c.kind === 'once' && customer !== null ? `once:${customer}` : signal ? `s${signals++ % 12}` : `k${c.key}`;
        const e: NewEvent = {
          key,
          event: c.deleted ? 'customer.deleted' : 'customer.created',
          customerId: customer,
          body: enc.encode(`{"n":${i}}`),
          headers: { 'content-type': 'application/json' },
          receivedAt: now,
          status: c.kind === 'dead' ? 'dead' : 'pending',
          lastError: c.kind === 'dead' ? 'invalid' : null,
          policy: c.kind === 'dead' ? undefined : c.kind,
          coalesceKey: signal || (c.kind === 'dead' && c.customer === 0) ? `ck${c.ck}` : null,
        };
        assert.deepEqual(await store.insert(e), model.insert(e), step);
        break;
      }
      case 'claim': {
        const got = await store.claim({ owner: `w${c.owner}`, limit: c.limit, leaseMs: LEASE_MS, now });
        const want = model.claim(`w${c.owner}`, c.limit, LEASE_MS, now);
        assert.deepEqual(
          got.map((r) => r.key),
          want,
          step,
        );
        assert.deepEqual(
          got.map(view),
          want.map((k) => view(model.records.get(k)!)),
          `claimed records at ${step}`,
        );
        break;
      }
      case 'complete':
      case 'dead': {
        const [key, owner] = target(c.pick, c.stray, c.owner);
        const got =
          c.op === 'complete'
            ? await store.complete(key, owner, now)
            : await store.deadLetter(key, owner, 'gave up', now);
        assert.equal(
          got,
          model.finish(key, owner, c.op === 'complete' ? 'done' : 'dead', now, c.op === 'dead' ? 'gave up' : null),
          step,
        );
        break;
      }
      case 'renew': {
        const [key, owner] = target(c.pick, c.stray, c.owner);
        assert.equal(await store.renew(key, owner, now + LEASE_MS), model.renew(key, owner, now + LEASE_MS), step);
        break;
      }
      case 'retry': {
        const [key, owner] = target(c.pick, c.stray, c.owner);
        assert.equal(
          await store.retry(key, owner, now + c.delay, 'boom'),
          model.retry(key, owner, now + c.delay, 'boom'),
          step,
        );
        break;
      }
      case 'requeue': {
        // Mostly a finished event (an operator's replay), often while a newer event of its customer runs.
        const finished = [...model.records.values()].filter((r) => !open(r)).map((r) => r.key);
        const pool = c.finished && finished.length > 0 ? finished : keys;
        const key = pool[c.pick % Math.max(1, pool.length)] ?? 'none';
        assert.equal(await store.requeue(key, now), model.requeue(key, now), step);
        break;
      }
      case 'requeueWhere': {
        const event = c.deleted ? 'customer.deleted' : undefined;
        assert.equal(
          await store.requeueWhere({ status: c.statuses, event }, now),
          model.requeueWhere(c.statuses, event, now),
          step,
        );
        break;
      }
      case 'purge': {
        const status: Array<'done' | 'dead'> = c.dead ? ['done', 'dead'] : ['done'];
        const tombstonesBefore = c.tombstones === null ? undefined : now - c.tombstones;
        assert.equal(
          await store.purge({ before: now - c.back, status, tombstonesBefore }),
          model.purge(now - c.back, status, tombstonesBefore),
          step,
        );
        break;
      }
      case 'tick':
        now += c.ms;
        break;
      case 'leap':
        // Past every lease: whatever runs now is a stalled worker's, free to be taken over.
        now += LEASE_MS + 1;
        break;
      case 'check':
        await agree(store, model, step);
        break;
    }
  }
  await agree(store, model, 'the last step');
  // Whatever happened, claiming far in the future hands out exactly the model's heads.
  const later = now + 1_000_000;
  assert.deepEqual(
    (await store.claim({ owner: 'end', limit: 1000, leaseMs: LEASE_MS, now: later })).map((r) => r.key),
    model.claim('end', 1000, LEASE_MS, later),
    'the final claim',
  );
}

async function modelHistories(make: () => Promise<Store>, runs: number): Promise<void> {
  await fc.assert(
    fc.asyncProperty(fc.array(commandArb, { minLength: 20, maxLength: 80, size: 'max' }), async (commands) => {
      const store = await make();
      try {
        await runHistory(store, commands);
      } finally {
        await store.close();
      }
    }),
    { numRuns: runs, endOnFailure: runs < 100 },
  );
}
