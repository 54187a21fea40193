// The CLI's bounded store reads, in-process against the memory store: finding an event by seq or key prefix, and
// counting what a purge would remove. Both stop at a limit and must say so rather than guess.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { countPurgeable } from '../src/cli/events.ts';
import { findEvent } from '../src/cli/find.ts';
import { CliError } from '../src/cli/output.ts';
import { memoryStore } from '../src/stores/memory.ts';
import type { Store } from '../src/stores/store.ts';

async function storeWith(keys: string[]): Promise<Store> {
  const store = memoryStore();
  for (const [i, key] of keys.entries()) {
    await store.insert({
      key,
      event: key.split(':')[0] as string,
      customerId: null,
      body: new TextEncoder().encode(`{"n":${i}}`),
      headers: {},
      receivedAt: 1_000 + i,
      status: 'pending',
    });
  }
  return store;
}

async function failure(p: Promise<unknown>): Promise<CliError> {
  try {
    await p;
  } catch (error) {
    assert.ok(error instanceof CliError, String(error));
    return error;
  }
  assert.fail('expected a CliError');
}

describe('findEvent()', () => {
  test('findEvent() finds by full key, seq, #seq and a unique key prefix', async () => {
    const store = await storeWith([
      'customer.created:cus_1',
      'id:evt_9',
      'customer.wallet.balance.updated:sha256:ab@x.y1',
    ]);
    const seqs = (await store.list()).map((r) => r.seq);
    assert.equal((await findEvent(store, 'id:evt_9')).key, 'id:evt_9');
    assert.equal((await findEvent(store, String(seqs[2]))).key, 'customer.wallet.balance.updated:sha256:ab@x.y1');
    assert.equal((await findEvent(store, `#${seqs[0]}`)).key, 'customer.created:cus_1');
    assert.equal((await findEvent(store, 'customer.w')).key, 'customer.wallet.balance.updated:sha256:ab@x.y1');
  });

  test('findEvent() lists the candidates of an ambiguous prefix, seq first, and exits 2', async () => {
    const store = await storeWith(['customer.created:cus_1', 'customer.created:cus_2', 'id:evt_9']);
    const e = await failure(findEvent(store, 'customer.created:'));
    assert.equal(e.exitCode, 2);
    assert.match(e.message, /customer\.created: is the start of 2 keys/);
    assert.match(e.message, /^\s+1 {2}customer\.created:cus_1$/m);
    assert.match(e.message, /^\s+2 {2}customer\.created:cus_2$/m);
  });

  test('findEvent() says not found with exit 1, for a key, a prefix and a #seq', async () => {
    const store = await storeWith(['id:evt_9']);
    const key = await failure(findEvent(store, 'id:evt_1'));
    assert.equal(key.exitCode, 1);
    assert.match(key.message, /no event with key id:evt_1, or a key that starts with it/);
    assert.match((await failure(findEvent(store, '#77'))).message, /no event with seq 77/);
  });

  test('findEvent() stops a prefix search at its limit and does not call a match unique', async () => {
    const keys = Array.from({ length: 10 }, (_, i) => `id:evt_${i}`);
    keys[1] = 'id:early';
    keys[8] = 'id:late';
    const store = await storeWith(keys);
    const late = await failure(findEvent(store, 'id:lat', 5));
    assert.equal(late.exitCode, 1);
    assert.match(late.message, /no event with key id:lat, or a key that starts with it among the first 5 events/);
    const early = await failure(findEvent(store, 'id:ear', 5));
    assert.equal(early.exitCode, 2);
    assert.match(early.message, /id:ear matched id:early \(seq 2\) among the first 5 events, but the store holds more/);
    assert.equal((await findEvent(store, 'id:lat')).key, 'id:late', 'found under the default limit');
    // A store no larger than the limit was searched whole: its only match is unique.
    const small = await storeWith(keys.slice(0, 5));
    assert.equal((await findEvent(small, 'id:ear', 5)).key, 'id:early');
  });
});

describe('countPurgeable()', () => {
  test('countPurgeable() counts what purge() then removes: finished before, of the statuses, no tombstones', async () => {
    const store = await storeWith(['customer.created:a', 'id:b', 'id:c', 'id:d']);
    const claimed = await store.claim({ owner: 'w', limit: 10, leaseMs: 60_000, now: 2_000 });
    assert.equal(claimed.length, 4);
    await store.complete('customer.created:a', 'w', 5_000);
    await store.complete('id:b', 'w', 5_000);
    await store.complete('id:c', 'w', 9_000); // after the cut-off
    await store.deadLetter('id:d', 'w', 'boom', 5_000);
    assert.deepEqual(await countPurgeable(store, 6_000, ['done']), { count: 2, exact: true });
    assert.deepEqual(await countPurgeable(store, 6_000, ['done', 'dead']), { count: 3, exact: true });
    assert.equal(await store.purge({ before: 6_000, status: ['done'] }), 2);
    // customer.created:a is a tombstone now: purge() would not count it again, and neither does the count.
    assert.deepEqual(await countPurgeable(store, 6_000, ['done']), { count: 0, exact: true });
    assert.equal(
      (await countPurgeable(store, 10_000, ['done', 'dead'], 1)).exact,
      false,
      'stopped at the limit: a lower bound',
    );
    assert.deepEqual(await countPurgeable(store, 10_000, ['done', 'dead']), { count: 2, exact: true });
  });
});
