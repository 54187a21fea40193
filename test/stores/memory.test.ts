import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { memoryStore } from '../../src/stores/memory.ts';
import type { EventRecord } from '../../src/stores/store.ts';
import { newEvent, storeContract } from './contract.ts';

// The memory store keeps heaps of group heads so a claim does not sort every group: the contract's model, which does
// it the plain way, gets many histories here, where each costs next to nothing.
storeContract('memory', { make: () => memoryStore(), modelRuns: 400 });

describe('memory store: purge and list walk the records in place', () => {
  test('purging every other record keeps the rest, in seq order, with their keys still taken', () => {
    const store = memoryStore();
    const n = 1000;
    for (let i = 0; i < n; i++) store.insert(newEvent(`k${i}`, null, 1000 + i));
    const claimed = store.claim({ owner: 'w', limit: n, leaseMs: 60_000, now: 5000 }) as EventRecord[];
    assert.equal(claimed.length, n);
    // Finish the even ones (done and dead alternately), so deletable records sit next to each other and apart.
    for (let i = 0; i < n; i += 2) {
      if (i % 4 === 0) assert.equal(store.complete(`k${i}`, 'w', 6000), true);
      else assert.equal(store.deadLetter(`k${i}`, 'w', 'x', 6000), true);
    }
    assert.equal(store.purge({ before: 7000, status: ['done', 'dead'] }), n / 2);
    const left = store.list({ limit: n }) as EventRecord[];
    assert.deepEqual(
      left.map((r) => r.key),
      Array.from({ length: n / 2 }, (_, j) => `k${2 * j + 1}`),
    );
    assert.ok(left.every((r, j) => j === 0 || r.seq > (left[j - 1] as EventRecord).seq));
    // Paging by seq continues where the last page ended.
    const page = store.list({ limit: 3, afterSeq: (left[9] as EventRecord).seq }) as EventRecord[];
    assert.deepEqual(
      page.map((r) => r.key),
      ['k21', 'k23', 'k25'],
    );
    // Purged keys are free again; kept ones still deduplicate.
    assert.deepEqual(store.insert(newEvent('k0', null, 8000)), { inserted: true });
    assert.deepEqual(store.insert(newEvent('k1', null, 8000)), { inserted: false });
    assert.deepEqual(store.counts(), { pending: n / 2 + 1, retrying: 0, done: 0, dead: 0 });
  });
});
