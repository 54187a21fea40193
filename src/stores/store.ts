// The store contract: the durable inbox every delivery is written to before it is acknowledged.
// Stores know nothing about HTTP or handlers; the worker never knows which store it has.

/** A value, or a promise of one: synchronous stores (memory, SQLite) stay synchronous. */
export type MaybePromise<T> = T | Promise<T>;

/**
 * Where a recorded event stands.
 * - `pending`: waiting for its first run (or requeued)
 * - `retrying`: a run failed; waits until `nextAttemptAt`
 * - `done`: the handler succeeded; kept until retention purges it (its key keeps deduplicating until then)
 * - `dead`: given up on (retries exhausted, non-retryable error, or a payload that failed validation)
 *
 * An event that is being run is `pending` or `retrying` with a live lease (`leaseUntil > now`).
 */
export type EventStatus = 'pending' | 'retrying' | 'done' | 'dead';

export const EVENT_STATUSES: readonly EventStatus[] = ['pending', 'retrying', 'done', 'dead'];

/**
 * How a delivery's identity is kept (the policy per event type lives in src/intake/identity.ts):
 * - `once`: one run per customer, ever. The key is `event:customer_id`; purging keeps a tombstone of the key.
 * - `dedupe`: the key is the event's own identity (an `id` field, a trusted `webhook-id`, a custom key, the hash of
 *   a rejected body); a second delivery with it is a duplicate until retention purges the record.
 * - `signal`: a "look again" signal whose copies are identical on purpose (a balance update). Every record has a
 *   key of its own; copies that arrive while one with the same `coalesceKey` still waits coalesce into it.
 */
export type IdentityPolicy = 'once' | 'dedupe' | 'signal';

export const IDENTITY_POLICIES: readonly IdentityPolicy[] = ['once', 'dedupe', 'signal'];

/** What intake hands to `insert`. */
export interface NewEvent {
  /** The record's key; unique across the store. */
  key: string;
  /** Default `dedupe`. */
  policy?: IdentityPolicy;
  /**
   * Set for `signal` deliveries: the identity of identical copies (`event:sha256:<hex of the body>`). When a record
   * with the same `coalesceKey` is still waiting (`pending`, `attempts` 0, no lease), the delivery is counted into
   * it (`deliveries + 1`) instead of being inserted.
   */
  coalesceKey?: string | null;
  /** Event name as delivered (`customer.created`, …), or `unknown` when the body had none. */
  event: string;
  /** Ordering group: events of one customer run one at a time, in arrival order. Null = its own group. */
  customerId: string | null;
  /** The raw request body, byte for byte. */
  body: Uint8Array;
  /** The selected request headers worth keeping (lower-case names). Lava's X-Webhook-Signature is not among them
   * by default: a stored signature would let anyone who reads the database replay the delivery. */
  headers: Record<string, string>;
  /** Epoch milliseconds when intake received it. */
  receivedAt: number;
  /** `pending` for a valid delivery, `dead` for one that failed validation. */
  status: 'pending' | 'dead';
  /** Why it is dead, when inserted dead. */
  lastError?: string | null;
}

/** A stored event. */
export interface EventRecord {
  key: string;
  policy: IdentityPolicy;
  /** See `NewEvent.coalesceKey`; null unless the policy is `signal`. */
  coalesceKey: string | null;
  /** Deliveries this record stands for: 1, plus each identical copy coalesced into it while it waited. */
  deliveries: number;
  /**
   * True once purge kept only the key of a finished `once` event: body empty, headers `{}`, error cleared. It still
   * answers inserts of its key as a duplicate, until the tombstone horizon removes it.
   */
  tombstone: boolean;
  event: string;
  customerId: string | null;
  body: Uint8Array;
  headers: Record<string, string>;
  receivedAt: number;
  status: EventStatus;
  /** Arrival order, assigned by the store; increases with each insert. */
  seq: number;
  /** Runs started so far (incremented by `claim`, so a crash mid-run counts as an attempt). */
  attempts: number;
  /** Epoch ms before which the event must not be claimed. */
  nextAttemptAt: number;
  /** Worker that holds the lease, if any. */
  leaseOwner: string | null;
  /** Epoch ms when the lease runs out; a lease in the past is free to be taken over. */
  leaseUntil: number | null;
  lastError: string | null;
  /** Epoch ms when it became `done` or `dead`. */
  finishedAt: number | null;
}

export interface InsertResult {
  /** False when the key was already there (a duplicate), or the delivery was coalesced into a waiting copy. */
  inserted: boolean;
  /** Set when a `signal` delivery was counted into the waiting record with this key. */
  coalescedInto?: string;
  /**
   * Set when the insert was given a lease and took it (see `Store.insert`): the record as `claim` would have returned
   * it, leased to the lease's owner.
   */
  leased?: EventRecord;
}

/** A lease an insert may take at once, instead of a claim taking it later (see `Store.insert`). */
export interface InsertLease {
  /** The worker that will run the event (as `ClaimOptions.owner`). */
  owner: string;
  /** The lease's end, epoch ms. */
  leaseUntil: number;
}

export interface ClaimOptions {
  /** Unique id of the claiming worker (fencing token for complete/retry/deadLetter/renew). */
  owner: string;
  /** At most this many events: a whole number from 1. */
  limit: number;
  /** Lease length in ms from `now`; more than 0. */
  leaseMs: number;
  /** The clock, epoch ms. */
  now: number;
}

export interface ListOptions {
  status?: EventStatus;
  event?: string;
  customerId?: string;
  /** A whole number from 1 to `MAX_LIST_LIMIT` (10,000); default 100. */
  limit?: number;
  /** Only records with `seq` greater than this (paging). */
  afterSeq?: number;
  /** Only records with `seq` less than this (paging newest first). */
  beforeSeq?: number;
  /** Only records received (`receivedAt`) later than this epoch ms. */
  receivedAfter?: number;
  /** Only records received (`receivedAt`) earlier than this epoch ms. */
  receivedBefore?: number;
  /** `asc` (default): oldest first, by `seq`; `desc`: newest first. The first `limit` matches in that order. */
  order?: 'asc' | 'desc';
}

export interface RequeueFilter {
  /** Which statuses to requeue; default `['dead']`. */
  status?: EventStatus[];
  event?: string;
}

export interface PurgeOptions {
  /**
   * Remove records that finished (`finishedAt`) before this epoch ms. A `once` record is not removed but becomes a
   * tombstone (its key, event, customer and times stay; body, headers and error go), so its key keeps answering
   * duplicate.
   */
  before: number;
  /** Default `['done']`; dead letters are purged only when asked for. */
  status?: Array<'done' | 'dead'>;
  /** Also delete tombstones (of those statuses) that finished before this epoch ms. Default: none. */
  tombstonesBefore?: number;
}

export type StatusCounts = Record<EventStatus, number>;

/**
 * How a store answers, declared by the store so callers never have to guess from a returned value.
 * - `sync`: every method answers with a plain value, never a promise (except `insert` and `complete` when
 *   `batching` is set). The ack path then writes without waiting on a promise.
 * - `batching`: `insert` and `complete` are queued and written together at the end of the current turn of the event
 *   loop (a group commit); each returns a promise that settles once that shared write did.
 */
export interface StoreCapabilities {
  readonly sync: boolean;
  readonly batching: boolean;
  /**
   * `insert` takes an `InsertLease` (see `Store.insert`). A store without it ignores the argument, and the worker
   * claims the event as usual.
   */
  readonly leaseOnInsert?: boolean;
}

/**
 * The store contract. Every method may return a value or a promise (see `capabilities`).
 *
 * Rules every implementation keeps (the contract suite in test/stores checks each, and a model of them on generated
 * histories):
 *
 * Ordering
 * - An ordering group is the events of one `customerId`; an event without a customer is a group of its own.
 * - At most one event per group runs at a time, always: at no moment do two events of a group hold a live lease
 *   (`leaseUntil > now`), whatever requeue, lease takeover or retry did before.
 * - A group's head is its open (`pending`/`retrying`) event with the lowest `seq`. `claim` takes an event only when it
 *   is its group's head, is due (`nextAttemptAt <= now`), and no event of its group holds a live lease. A head that
 *   is not due, or waits for a lease, holds its whole group back.
 * - `seq` is given once, at insert, and never changes: a requeued event takes its original arrival position among
 *   its group's open events. It waits for an event of its group that is running, and then goes before every
 *   later-arrived event of its group, started or not.
 *
 * Claiming and leases
 * - `claim` returns at most `limit` events, at most one per group, in `seq` order. Claiming sets the lease and
 *   increments `attempts`; two concurrent claims never return the same event.
 * - A lease whose time ran out is free: the next claim takes the event over (its attempts go up again).
 * - `complete`, `retry`, `deadLetter` and `renew` succeed only while `owner` holds the lease (it is the event's
 *   `leaseOwner` and the event is open); else they return false and change nothing, so a worker whose lease was
 *   taken over cannot overwrite the new owner's outcome. A lease that ran out but was not taken over still counts.
 * - `requeue` clears the event's own lease too (an operator's forced re-run): the old run's outcome is then refused.
 *
 * Identity
 * - `insert` is atomic insert-if-absent on `key` (a tombstone's key included), and durable when it returns.
 * - With a `coalesceKey` and status `pending`, it first looks for a waiting record with that `coalesceKey` (`pending`,
 *   `attempts` 0, no lease; the lowest `seq` if several): if there is one (and the key itself is new), that record's
 *   `deliveries` goes up by one, nothing else changes, and the answer is `{ inserted: false, coalescedInto: key }`.
 *   Once a record was claimed it takes no copies until a requeue makes it wait again. A delivery inserted `dead` is
 *   recorded as it is, never counted into another.
 * - `requeue` and `requeueWhere` leave tombstones alone (there is no body left to run) and keep `deliveries`.
 * - `purge` deletes finished non-`once` records of the given statuses whose `finishedAt` is before `before`, turns
 *   such `once` records into tombstones, and deletes tombstones only when `finishedAt` is before `tombstonesBefore`
 *   (a tombstone made by this purge waits for the next one). Tombstones keep their status and are counted in it.
 *
 * Options and errors
 * - Options are checked the same way by every store (src/stores/options.ts): a `limit` outside its range, an unknown
 *   status or a timestamp that is not a number throws `StoreUsageError` (a rejected promise from an async store)
 *   naming the option, before anything is read or written. `list` takes a `limit` from 1 to 10,000 (default 100).
 * - A store that cannot answer throws `StoreUnavailableError` naming the store and the method; after `close()` every
 *   method does. Data the store cannot use safely is `StoreSchemaError`.
 */
export interface Store {
  /** Short name for logs, e.g. `sqlite`. */
  readonly name: string;
  /** Whether it answers synchronously, and whether it batches writes (see `StoreCapabilities`). */
  readonly capabilities: StoreCapabilities;
  /**
   * With `lease`, on a store with `capabilities.leaseOnInsert`: a `pending` event that is inserted as its group's
   * head (no other open event in its group) is written already leased to `lease.owner` (attempts 1), as a claim
   * would lease it, in the same atomic write as the insert, and the answer carries it as `leased`. Anything else
   * (a duplicate, a coalesced copy, an event behind another of its group, a dead letter) is inserted or answered as
   * without a lease, and waits for a claim.
   */
  insert(event: NewEvent, lease?: InsertLease): MaybePromise<InsertResult>;
  claim(options: ClaimOptions): MaybePromise<EventRecord[]>;
  /** Extend a held lease to `leaseUntil`. */
  renew(key: string, owner: string, leaseUntil: number): MaybePromise<boolean>;
  /** Mark done; sets `finishedAt = now`, clears the lease. */
  complete(key: string, owner: string, now: number): MaybePromise<boolean>;
  /** Schedule another attempt at `at`; status `retrying`, clears the lease. */
  retry(key: string, owner: string, at: number, error: string): MaybePromise<boolean>;
  /** Give up; status `dead`, `finishedAt = now`, clears the lease. */
  deadLetter(key: string, owner: string, error: string, now: number): MaybePromise<boolean>;
  /**
   * Put one event back to `pending` (attempts 0, due now, lease, error and `finishedAt` cleared). False if the key is
   * absent or a tombstone.
   */
  requeue(key: string, now: number): MaybePromise<boolean>;
  /** Requeue every record matching the filter; returns how many. */
  requeueWhere(filter: RequeueFilter, now: number): MaybePromise<number>;
  get(key: string): MaybePromise<EventRecord | null>;
  /** Records in `seq` order (descending with `order: 'desc'`). */
  list(options?: ListOptions): MaybePromise<EventRecord[]>;
  /** Delete finished records; returns how many records it deleted or made tombstones. */
  purge(options: PurgeOptions): MaybePromise<number>;
  counts(): MaybePromise<StatusCounts>;
  /** Cheap liveness check for /healthz; throws when the store cannot answer. */
  ping(): MaybePromise<void>;
  close(): MaybePromise<void>;
}

// The error classes live in src/errors.ts (which imports nothing); stores and their users keep importing them here.
export { StoreSchemaError, StoreUnavailableError, StoreUsageError } from '../errors.ts';

/**
 * Runs `fn` once the I/O of this turn of the event loop has been handled (setImmediate on Bun, Deno and Node;
 * setTimeout 0 elsewhere), so everything that arrives in one turn can share one batch: a group commit, a multi-row
 * insert, a claim pass. Next.js's edge runtime defines a `setImmediate` that throws when called (it marks Node APIs
 * it does not support that way), so there the `EdgeRuntime` global it sets chooses setTimeout.
 */
export const afterThisTurn: (fn: () => void) => void =
  typeof setImmediate === 'function' && typeof (globalThis as { EdgeRuntime?: unknown }).EdgeRuntime !== 'string'
    ? (fn) => void setImmediate(fn)
    : (fn) => void setTimeout(fn, 0);

export function emptyCounts(): StatusCounts {
  return { pending: 0, retrying: 0, done: 0, dead: 0 };
}
