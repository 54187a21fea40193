// What is stored under a record's key, how a record written by an older version is read, and the record's states.
import type { EventRecord, EventStatus, IdentityPolicy, NewEvent } from '../store.ts';
import type { Part } from './keys.ts';
import { newRecord } from '../records.ts';

/** What is stored under the record key. The body is inline when small, else in chunks under `bodyId`. */
export interface Meta extends Omit<EventRecord, 'body'> {
  /** The lowest-seq open record of its ordering group: the only one with a claim slot. */
  head: boolean;
  /**
   * Head only: records behind it in its group that hold a lease (heads a requeue put an older event in front of while
   * they ran). It is not claimed while one of those leases is live; each is dropped when its record lets the lease go.
   */
  leasedBehind?: Part[];
  size: number;
  body: Uint8Array | null;
  bodyId: string | null;
  chunks: number;
  /**
   * On its coalesceKey's waiting list (see signals.ts) since it was inserted or requeued, and not claimed since: set
   * only while it waits. Claim clears it and leaves the list entry to go stale.
   */
  waits: boolean;
}

/** Under `g,…g`: how many open records the group has, and the highest seq ever queued in it while open. */
export type GroupValue = { n: number; last?: number };

/** A delivery's signature: never kept at rest, since it would let anyone who reads the database replay it. */
export const SIGNATURE_HEADER = 'x-webhook-signature';
/** Error texts are capped so a record always fits in one 64 KiB value. */
const MAX_ERROR_CHARS = 8192;

export const isOpen = (s: EventStatus) => s === 'pending' || s === 'retrying';
/** A record copies of its signal may be counted into: never claimed since it was (re)queued. */
export const isWaiting = (m: Meta) =>
  m.status === 'pending' && m.attempts === 0 && m.leaseOwner === null && !m.tombstone && m.coalesceKey !== null;
export const isFinished = (s: EventStatus): s is 'done' | 'dead' => s === 'done' || s === 'dead';
export const capError = (e: string | null | undefined) =>
  e == null ? null : e.length > MAX_ERROR_CHARS ? `${e.slice(0, MAX_ERROR_CHARS)}…` : e;

export const hasSignature = (headers: Record<string, string>) =>
  Object.keys(headers).some((h) => h.toLowerCase() === SIGNATURE_HEADER);

/** The policy of a record written before policies were stored: a customer's created/deleted event ran once. */
function inferPolicy(key: string): IdentityPolicy {
  return /^customer\.(created|deleted):/.test(key) && !key.includes(':sha256:') ? 'once' : 'dedupe';
}

/** A record as stored by any version: one written by schema version 1 has no policy fields yet. */
export function normalize(m: Meta): Meta {
  if ((m as Partial<Meta>).policy !== undefined) return m;
  return { ...m, policy: inferPolicy(m.key), coalesceKey: null, deliveries: 1, tombstone: false, waits: false };
}

export function toRecord(m: Meta, body: Uint8Array): EventRecord {
  return {
    key: m.key,
    policy: m.policy,
    coalesceKey: m.coalesceKey,
    deliveries: m.deliveries,
    tombstone: m.tombstone,
    event: m.event,
    customerId: m.customerId,
    body,
    headers: { ...m.headers },
    receivedAt: m.receivedAt,
    status: m.status,
    seq: m.seq,
    attempts: m.attempts,
    nextAttemptAt: m.nextAttemptAt,
    leaseOwner: m.leaseOwner,
    leaseUntil: m.leaseUntil,
    lastError: m.lastError,
    finishedAt: m.finishedAt,
  };
}

/** The record a new event is stored as (records.ts's newRecord, less the body); the caller adds the body fields. */
export function newMeta(event: NewEvent, seq: number, head: boolean): Meta {
  const { body: _body, ...record } = newRecord(event, seq);
  return {
    ...record,
    // A copy: the stored value must not change with the caller's object. The error is capped as every write caps it.
    headers: { ...event.headers },
    lastError: capError(event.lastError),
    head,
    size: event.body.length,
    body: null,
    bodyId: null,
    chunks: 0,
    waits: false,
  };
}
