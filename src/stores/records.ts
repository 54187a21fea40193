// Pure record transitions: what each store method does to one record, written once for the stores that keep
// records as values (memory; Deno KV). Each returns the fields that change, or null when the method must change
// nothing (the lease is someone else's, the record is finished, …). Apply a change with Object.assign (a store that
// owns its objects) or `{ ...record, ...change }` (a store of values). Nothing here touches a group or an index:
// claiming a group's head and fencing stay in each backend, where they are atomic.
import type { PurgeQuery } from './options.ts';
import type { EventRecord, InsertLease, NewEvent } from './store.ts';

/** The fields a transition changes. */
export type RecordChange = Partial<EventRecord>;

const EMPTY_BODY = new Uint8Array(0);

/** The record `insert` writes for a new key: one object, nothing else allocated (it runs on the ack path). */
export function newRecord(event: NewEvent, seq: number): EventRecord {
  return {
    key: event.key,
    policy: event.policy ?? 'dedupe',
    coalesceKey: event.coalesceKey ?? null,
    deliveries: 1,
    tombstone: false,
    event: event.event,
    customerId: event.customerId,
    body: event.body,
    headers: event.headers,
    receivedAt: event.receivedAt,
    status: event.status,
    seq,
    attempts: 0,
    nextAttemptAt: event.receivedAt,
    leaseOwner: null,
    leaseUntil: null,
    lastError: event.lastError ?? null,
    finishedAt: event.status === 'dead' ? event.receivedAt : null,
  };
}

/**
 * The record an insert leased (see `Store.insert`), as a claim would read it back: the record the insert wrote, with
 * the lease a claim would have set. The SQLite and Postgres stores build it from what they inserted, without reading
 * the row.
 */
export function leasedRecord(event: NewEvent, seq: number, lease: InsertLease): EventRecord {
  return leaseAtInsert(newRecord(event, seq), lease);
}

/** Sets on `r`, a record just made for an insert, the lease a claim would have set (attempts 1); returns `r`. */
export function leaseAtInsert<R extends Pick<EventRecord, 'attempts' | 'leaseOwner' | 'leaseUntil'>>(
  r: R,
  lease: InsertLease,
): R {
  r.attempts = 1;
  r.leaseOwner = lease.owner;
  r.leaseUntil = lease.leaseUntil;
  return r;
}

/** `pending` or `retrying`: it will run (again). */
export function isOpen(r: EventRecord): boolean {
  return r.status === 'pending' || r.status === 'retrying';
}

/** Someone runs it right now: a lease that has not run out. */
export function hasLiveLease(r: EventRecord, now: number): boolean {
  return r.leaseOwner !== null && r.leaseUntil !== null && r.leaseUntil > now;
}

/** Never claimed since it arrived (or was requeued): a copy of its signal may still be counted into it. */
export function isWaiting(r: EventRecord): boolean {
  return r.status === 'pending' && r.attempts === 0 && r.leaseOwner === null;
}

/** Whether a new delivery may be counted into `r` rather than stored: see `NewEvent.coalesceKey`. */
export function coalescesInto(event: NewEvent, r: EventRecord): boolean {
  return event.status === 'pending' && r.coalesceKey !== null && r.coalesceKey === event.coalesceKey && isWaiting(r);
}

/** Whether `owner` may record an outcome for `r` (see the fencing rule in store.ts). */
export function isHeldBy(r: EventRecord, owner: string): boolean {
  return isOpen(r) && r.leaseOwner === owner;
}

/** A copy of its signal counted into the waiting record. */
export function coalesceTransition(r: EventRecord): RecordChange {
  return { deliveries: r.deliveries + 1 };
}

/**
 * Leases `r` to `owner`: null unless it is open, due and not leased. Whether it is its group's head, and whether
 * another event of its group is running, is the caller's to check.
 */
export function claimTransition(r: EventRecord, owner: string, now: number, leaseMs: number): RecordChange | null {
  if (!isOpen(r) || r.nextAttemptAt > now || hasLiveLease(r, now)) return null;
  return { leaseOwner: owner, leaseUntil: now + leaseMs, attempts: r.attempts + 1 };
}

export function renewTransition(r: EventRecord, owner: string, leaseUntil: number): RecordChange | null {
  return isHeldBy(r, owner) ? { leaseUntil } : null;
}

export function completeTransition(r: EventRecord, owner: string, now: number): RecordChange | null {
  return isHeldBy(r, owner) ? { status: 'done', finishedAt: now, leaseOwner: null, leaseUntil: null } : null;
}

export function retryTransition(r: EventRecord, owner: string, at: number, error: string): RecordChange | null {
  if (!isHeldBy(r, owner)) return null;
  return { status: 'retrying', nextAttemptAt: at, lastError: error, leaseOwner: null, leaseUntil: null };
}

export function deadLetterTransition(r: EventRecord, owner: string, error: string, now: number): RecordChange | null {
  if (!isHeldBy(r, owner)) return null;
  return { status: 'dead', lastError: error, finishedAt: now, leaseOwner: null, leaseUntil: null };
}

/** Back to `pending`, due at `now`, as if it had just arrived (its `seq` and `deliveries` stay). Not a tombstone. */
export function requeueTransition(r: EventRecord, now: number): RecordChange | null {
  if (r.tombstone) return null;
  return {
    status: 'pending',
    attempts: 0,
    nextAttemptAt: now,
    leaseOwner: null,
    leaseUntil: null,
    lastError: null,
    finishedAt: null,
  };
}

/** What a purge keeps of a finished `once` record: its key (and event, customer, status, times) answers duplicates. */
export function tombstone(_r: EventRecord): RecordChange {
  return { tombstone: true, body: EMPTY_BODY, headers: {}, lastError: null };
}

/** What `purge` does to one record: leave it, delete it, or make it a tombstone. */
export function purgeAction(r: EventRecord, q: PurgeQuery): 'keep' | 'delete' | 'bury' {
  if (r.status !== 'done' && r.status !== 'dead') return 'keep';
  if (r.finishedAt === null || !q.statuses.includes(r.status)) return 'keep';
  if (r.tombstone) return q.tombstonesBefore !== null && r.finishedAt < q.tombstonesBefore ? 'delete' : 'keep';
  if (r.finishedAt >= q.before) return 'keep';
  return r.policy === 'once' ? 'bury' : 'delete';
}
