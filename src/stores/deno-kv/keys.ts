// The key layout under the store's prefix, and how event keys and customers become key parts.
import type { EventStatus } from '../store.ts';
import type { KvKey } from './kv.ts';
import type { Meta } from './record.ts';

export type Part = string | Uint8Array;

const encoder = new TextEncoder();
/** Keys longer than this go into KV keys as their SHA-256 (KV keys are capped at 2 KiB). */
export const MAX_PART_CHARS = 256;

export async function part(s: string): Promise<Part> {
  if (s.length <= MAX_PART_CHARS) return s;
  // A Uint8Array part sorts apart from strings, so a digest never collides with a short key.
  return new Uint8Array(await crypto.subtle.digest('SHA-256', encoder.encode(s)));
}

/** A string naming a key (or any list of key parts), to tell keys apart in a Set. */
export const keyId = (key: KvKey) =>
  key.map((p) => (p instanceof Uint8Array ? `b${p.join(',')}` : `${typeof p}:${String(p)}`)).join('\u0000');
export const keySize = (key: KvKey) =>
  key.reduce<number>(
    (n, p) => n + 9 + (typeof p === 'string' ? 3 * p.length : p instanceof Uint8Array ? p.length : 0),
    0,
  );

export function sameKey(a: KvKey, b: KvKey): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    const y = b[i];
    if (x instanceof Uint8Array && y instanceof Uint8Array) {
      if (x.length !== y.length || x.some((v, j) => v !== y[j])) return false;
    } else if (x !== y) return false;
  }
  return true;
}

/** A record's ordering group: its customer, or the record alone when it has none. */
export const groupOf = async (m: { key: string; customerId: string | null }): Promise<Part[]> =>
  m.customerId === null ? ['k', await part(m.key)] : ['c', await part(m.customerId)];

export const custPart = (m: { customerId: string | null }) =>
  m.customerId === null ? Promise.resolve(null) : part(m.customerId);

export type Keys = ReturnType<typeof keyLayout>;

/**
 * Layout under `prefix` (`kp` = the event key as a key part, `g` = ordering group parts, `seq` = arrival order):
 * - `ev,kp` record · `body,bodyId,i` body chunks · `staging,at,bodyId` chunks written ahead of a large insert
 * - `seq,seq` / `st,status,seq` / `cust,customer,seq` / `fin,status,finishedAt,seq` → kp: list, purge and requeue;
 *   a tombstone is under `tomb,status,finishedAt,seq` instead of `fin`, so purge does not scan it again each time
 * - `sig,coalesceKey` → [{seq, kp}]: the records identical copies of a signal may be counted into (see signals.ts)
 * - `g,…g` {n: open records, last: highest seq queued} and `q,…g,seq` → kp: each group's open records; the head is
 *   the first
 * - `ready,seq` (head, unleased, pending) and `wait,availableAt,seq` (head, leased or retrying) → kp: claim slots
 * - `n,status` counters (KvU64, `sum`) · `schema` {version}
 */
export function keyLayout(P: readonly string[]) {
  return {
    prefix: P,
    schema: [...P, 'schema'],
    meta: (kp: Part) => [...P, 'ev', kp],
    chunk: (bodyId: string, i: number) => [...P, 'body', bodyId, i],
    chunks: (bodyId: string) => [...P, 'body', bodyId],
    staging: (at: number, bodyId: string) => [...P, 'staging', at, bodyId],
    seq: (seq: number) => [...P, 'seq', seq],
    st: (status: EventStatus, seq: number) => [...P, 'st', status, seq],
    cust: (cp: Part, seq: number) => [...P, 'cust', cp, seq],
    fin: (status: EventStatus, at: number, seq: number) => [...P, 'fin', status, at, seq],
    tomb: (status: EventStatus, at: number, seq: number) => [...P, 'tomb', status, at, seq],
    waiting: (ckp: Part) => [...P, 'sig', ckp],
    group: (g: readonly Part[]) => [...P, 'g', ...g],
    queue: (g: readonly Part[], seq: number) => [...P, 'q', ...g, seq],
    count: (status: EventStatus) => [...P, 'n', status],
    /** Where a finished record is indexed by its finish time: `tomb` for a tombstone, else `fin`. */
    finKey: (m: Meta, at: number): KvKey => [...P, m.tombstone ? 'tomb' : 'fin', m.status, at, m.seq],
    /** A head's claim slot: `ready` while it may run now, else `wait` until its lease or retry time. */
    slot: (m: Meta): KvKey => {
      if (m.leaseUntil !== null) return [...P, 'wait', Math.max(m.leaseUntil, m.nextAttemptAt), m.seq];
      if (m.status === 'retrying') return [...P, 'wait', m.nextAttemptAt, m.seq];
      return [...P, 'ready', m.seq];
    },
  };
}
