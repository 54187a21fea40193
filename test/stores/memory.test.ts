import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { memoryStore } from '../../src/stores/memory.ts';
import type { EventRecord } from '../../src/stores/store.ts';
import { newEvent, storeContract } from './contract.ts';

storeContract('memory', { make: () => memoryStore() });

// The memory store keeps heaps of group heads so a claim does not sort every group. This model does it the plain
// way (every open record, oldest open per group, sorted by seq), and the store must agree with it on any history.
interface ModelRecord {
  key: string;
  customer: string | null;
  seq: number;
  status: 'pending' | 'retrying' | 'done' | 'dead';
  due: number;
  owner: string | null;
  until: number | null;
}

class Model {
  records: ModelRecord[] = [];
  insert(key: string, customer: string | null, at: number) {
    if (this.records.some((r) => r.key === key)) return;
    this.records.push({ key, customer, seq: this.records.length + 1, status: 'pending', due: at, owner: null, until: null });
  }
  open = (r: ModelRecord) => r.status === 'pending' || r.status === 'retrying';
  claim(owner: string, limit: number, leaseMs: number, now: number): string[] {
    const heads = new Map<string, ModelRecord>();
    for (const r of [...this.records].sort((a, b) => a.seq - b.seq)) {
      if (!this.open(r)) continue;
      const group = r.customer === null ? `k:${r.key}` : `c:${r.customer}`;
      if (!heads.has(group)) heads.set(group, r);
    }
    const out = [...heads.values()]
      .filter((h) => h.due <= now && (h.until === null || h.until <= now))
      .sort((a, b) => a.seq - b.seq)
      .slice(0, limit);
    for (const h of out) {
      h.owner = owner;
      h.until = now + leaseMs;
    }
    return out.map((h) => h.key);
  }
  held(key: string, owner: string) {
    const r = this.records.find((x) => x.key === key);
    return r && this.open(r) && r.owner === owner ? r : undefined;
  }
  finish(key: string, owner: string, status: 'done' | 'dead'): boolean {
    const r = this.held(key, owner);
    if (!r) return false;
    Object.assign(r, { status, owner: null, until: null });
    return true;
  }
  retry(key: string, owner: string, at: number): boolean {
    const r = this.held(key, owner);
    if (!r) return false;
    Object.assign(r, { status: 'retrying', due: at, owner: null, until: null });
    return true;
  }
  requeue(key: string, now: number): boolean {
    const r = this.records.find((x) => x.key === key);
    if (!r) return false;
    Object.assign(r, { status: 'pending', due: now, owner: null, until: null });
    return true;
  }
}

type Op =
  | { op: 'insert'; key: number; customer: number | null }
  | { op: 'claim'; owner: number; limit: number }
  | { op: 'complete' | 'dead'; pick: number; owner: number }
  | { op: 'retry'; pick: number; owner: number; delay: number }
  | { op: 'requeue'; pick: number }
  | { op: 'tick'; ms: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant('insert' as const), key: fc.nat(60), customer: fc.option(fc.nat(6), { nil: null }) }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('claim' as const), owner: fc.nat(2), limit: fc.integer({ min: 1, max: 5 }) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constantFrom('complete' as const, 'dead' as const), pick: fc.nat(), owner: fc.nat(2) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('retry' as const), pick: fc.nat(), owner: fc.nat(2), delay: fc.nat(50) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('requeue' as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('tick' as const), ms: fc.nat(40) }) },
);

describe('memoryStore() claim order', () => {
  test('agrees with a plain model of heads, leases, retries and requeues on generated histories', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 120 }), (ops) => {
        const store = memoryStore();
        const model = new Model();
        let now = 1_000;
        const LEASE = 30;
        for (const o of ops) {
          const keys = model.records.map((r) => r.key);
          const pickKey = (n: number) => keys[n % Math.max(1, keys.length)] ?? 'none';
          switch (o.op) {
            case 'insert': {
              const key = `k${o.key}`;
              const customer = o.customer === null ? null : `c${o.customer}`;
              store.insert(newEvent(key, customer, now));
              model.insert(key, customer, now);
              break;
            }
            case 'claim': {
              const got = (store.claim({ owner: `w${o.owner}`, limit: o.limit, leaseMs: LEASE, now }) as EventRecord[]).map((r) => r.key);
              assert.deepEqual(got, model.claim(`w${o.owner}`, o.limit, LEASE, now));
              break;
            }
            case 'complete':
            case 'dead': {
              const key = pickKey(o.pick);
              const got = o.op === 'complete' ? store.complete(key, `w${o.owner}`, now) : store.deadLetter(key, `w${o.owner}`, 'x', now);
              assert.equal(got, model.finish(key, `w${o.owner}`, o.op === 'complete' ? 'done' : 'dead'));
              break;
            }
            case 'retry': {
              const key = pickKey(o.pick);
              assert.equal(store.retry(key, `w${o.owner}`, now + o.delay, 'x'), model.retry(key, `w${o.owner}`, now + o.delay));
              break;
            }
            case 'requeue': {
              const key = pickKey(o.pick);
              assert.equal(store.requeue(key, now), model.requeue(key, now));
              break;
            }
            case 'tick':
              now += o.ms;
              break;
          }
        }
        // Whatever happened, claiming far in the future hands out exactly the model's heads.
        const later = now + 10_000;
        assert.deepEqual(
          (store.claim({ owner: 'end', limit: 1000, leaseMs: LEASE, now: later }) as EventRecord[]).map((r) => r.key),
          model.claim('end', 1000, LEASE, later),
        );
      }),
      { numRuns: 1000 },
    );
  });
});

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
    assert.deepEqual(page.map((r) => r.key), ['k21', 'k23', 'k25']);
    // Purged keys are free again; kept ones still deduplicate.
    assert.deepEqual(store.insert(newEvent('k0', null, 8000)), { inserted: true });
    assert.deepEqual(store.insert(newEvent('k1', null, 8000)), { inserted: false });
    assert.deepEqual(store.counts(), { pending: n / 2 + 1, retrying: 0, done: 0, dead: 0 });
  });
});
