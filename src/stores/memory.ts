/**
 * In-memory store for lava-webhooks: keeps the whole store contract (per-customer order, leases, identity,
 * retention) in this process, and loses everything when it exits. For tests, demos and `next dev`; use the SQLite,
 * Postgres or Deno KV store where an acknowledged event must survive a restart. The same `memoryStore` is also
 * exported by the main entry point.
 *
 * @example
 * ```ts
 * import { createLavaWebhooks } from 'lava-webhooks';
 * import { memoryStore } from 'lava-webhooks/stores/memory';
 *
 * const lava = createLavaWebhooks({ secret: 'test-secret', store: memoryStore(), handlers: {} });
 * ```
 *
 * @module
 */
// In-memory store: for tests and demos. Keeps the whole contract, loses everything when the process exits.
import { StoreGuard } from './guard.ts';
import { checkClaim, checkNow, listQuery, purgeQuery, requeueQuery } from './options.ts';
import {
  type RecordChange,
  claimTransition,
  coalescesInto,
  completeTransition,
  deadLetterTransition,
  hasLiveLease,
  isOpen,
  newRecord,
  purgeAction,
  renewTransition,
  requeueTransition,
  retryTransition,
  tombstone,
} from './records.ts';
import {
  type ClaimOptions,
  type EventRecord,
  type InsertResult,
  type ListOptions,
  type NewEvent,
  type PurgeOptions,
  type RequeueFilter,
  type StatusCounts,
  type Store,
  emptyCounts,
} from './store.ts';

const DRIVER_NAME = 'memory';

/**
 * Options of the memory store. It keeps the `body` and `headers` objects `insert` is given rather than copies
 * (intake hands it a fresh buffer and a fresh object per delivery); a caller that reuses a buffer must copy it first.
 */
export interface MemoryStoreOptions {
  /** Records kept at most; an insert beyond it fails (503) instead of growing without bound. Default 1,000,000. */
  maxRecords?: number;
}

function copy(record: EventRecord): EventRecord {
  return { ...record, headers: { ...record.headers } };
}

/** A binary min-heap: claim takes the oldest claimable head without sorting every group on every call. */
class Heap<T> {
  readonly #items: T[] = [];
  readonly before: (a: T, b: T) => boolean;
  constructor(before: (a: T, b: T) => boolean) {
    this.before = before;
  }
  get size(): number {
    return this.#items.length;
  }
  peek(): T | undefined {
    return this.#items[0];
  }
  push(item: T): void {
    const a = this.#items;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(a[i] as T, a[parent] as T)) break;
      [a[i], a[parent]] = [a[parent] as T, a[i] as T];
      i = parent;
    }
  }
  pop(): T | undefined {
    const a = this.#items;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last !== undefined) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.before(a[l] as T, a[m] as T)) m = l;
        if (r < a.length && this.before(a[r] as T, a[m] as T)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m] as T, a[i] as T];
        i = m;
      }
    }
    return top;
  }
}

/** The waiting (never claimed) records of each signal's coalesceKey, in seq order: copies are counted into the first. */
class WaitingCopies {
  readonly #byKey = new Map<string, EventRecord[]>();

  first(coalesceKey: string): EventRecord | undefined {
    return this.#byKey.get(coalesceKey)?.[0];
  }

  /** `r` waits (again): it was inserted, or requeued. */
  add(r: EventRecord): void {
    const ck = r.coalesceKey;
    if (ck === null) return;
    const list = this.#byKey.get(ck);
    if (list === undefined) {
      this.#byKey.set(ck, [r]);
      return;
    }
    if (list.includes(r)) return;
    let i = list.length;
    while (i > 0 && (list[i - 1] as EventRecord).seq > r.seq) i--;
    list.splice(i, 0, r);
  }

  /** `r` was claimed: its run began, copies that arrive from now on get a run of their own. */
  remove(r: EventRecord): void {
    const ck = r.coalesceKey;
    const list = ck === null ? undefined : this.#byKey.get(ck);
    const i = list ? list.indexOf(r) : -1;
    if (ck === null || list === undefined || i < 0) return;
    list.splice(i, 1);
    if (list.length === 0) this.#byKey.delete(ck);
  }
}

/**
 * The open records of one ordering group in seq order; `start` skips completed heads without shifting the array.
 * `leased` holds those of its records that have a lease (usually none or one; a requeued older event can put a
 * second one beside a running one, and a lease that ran out stays until it is taken over or finished).
 */
interface Group {
  items: EventRecord[];
  start: number;
  leased: EventRecord[] | null;
}

export function memoryStore(options: MemoryStoreOptions = {}): Store {
  const maxRecords = options.maxRecords ?? 1_000_000;
  const guard = new StoreGuard(DRIVER_NAME);
  const records = new Map<string, EventRecord>();
  // Open (pending/retrying) records per ordering group, in seq order: the head is items[start].
  // Keyed by customer id; an event without a customer is a group of its own, kept apart by its key.
  const groups = new Map<string, Group>();
  const solo = new Map<string, Group>();
  let seq = 0;
  // Kept as records change status, so counts() (polled by /metrics) does not walk every record.
  const tally: StatusCounts = emptyCounts();
  const apply = (r: EventRecord, change: RecordChange) => {
    if (change.status !== undefined && change.status !== r.status) {
      tally[r.status]--;
      tally[change.status]++;
    }
    Object.assign(r, change);
  };

  // Where each group head waits: `ready` (a heap by seq: may be claimable now), `delayed` (a heap by due time: a
  // retry not due yet) or `leased` (its group has a lease: it waits for that to end or run out). Entries are not
  // removed from a heap when a record stops being a head or closes; `where` says which entry counts, and stale ones
  // are dropped when they surface.
  const ready = new Heap<EventRecord>((a, b) => a.seq < b.seq);
  // Keyed by the due time the record had when it went in: a heap must not see its keys change under it, and a
  // requeue or another retry does change a record's due time while an old entry of it is still in the heap.
  const delayed = new Heap<{ r: EventRecord; at: number }>((a, b) => a.at < b.at);
  const delay = (r: EventRecord) => {
    leased.delete(r);
    where.set(r, 'delayed');
    delayed.push({ r, at: r.nextAttemptAt });
  };
  const leased = new Set<EventRecord>();
  const where = new Map<EventRecord, 'ready' | 'delayed' | 'leased'>();
  const waiting = new WaitingCopies();

  const groupsOf = (r: EventRecord) => (r.customerId === null ? solo : groups);
  const groupKey = (r: EventRecord) => r.customerId ?? r.key;
  const groupOf = (r: EventRecord) => groupsOf(r).get(groupKey(r));
  const headOf = (g: Group | undefined) => (g ? g.items[g.start] : undefined);
  const isHead = (r: EventRecord) => headOf(groupOf(r)) === r;
  /** Whether an event of the group runs at `now`: then none of the others may start. */
  const groupRunning = (g: Group | undefined, now: number) => {
    if (!g || g.leased === null) return false;
    for (const r of g.leased) if (hasLiveLease(r, now)) return true;
    return false;
  };
  const addLease = (r: EventRecord) => {
    const g = groupOf(r);
    if (!g) return;
    if (g.leased === null) g.leased = [r];
    else if (!g.leased.includes(r)) g.leased.push(r);
  };
  /** Before a change clears the lease of `r` (or takes it out of its group). */
  const dropLease = (r: EventRecord) => {
    if (r.leaseOwner === null) return;
    const g = groupOf(r);
    if (!g || g.leased === null) return;
    const i = g.leased.indexOf(r);
    if (i >= 0) g.leased.splice(i, 1);
    if (g.leased.length === 0) g.leased = null;
  };
  /** A record became (or, changed, still is) its group's head: it may be claimable. */
  const offer = (r: EventRecord) => {
    leased.delete(r);
    where.set(r, 'ready');
    ready.push(r);
  };
  const leave = (r: EventRecord) => {
    dropLease(r);
    leased.delete(r);
    where.delete(r);
    const map = groupsOf(r);
    const key = groupKey(r);
    const g = map.get(key);
    if (!g) return;
    const wasHead = g.items[g.start] === r;
    if (wasHead) {
      g.items[g.start] = undefined as unknown as EventRecord;
      g.start++;
    } else {
      const i = g.items.indexOf(r, g.start);
      if (i >= 0) g.items.splice(i, 1);
    }
    if (g.start >= g.items.length) {
      map.delete(key);
      return;
    }
    // Completed heads are dropped in bulk, so a long backlog is not shifted once per event.
    if (g.start > 64 && g.start * 2 > g.items.length) {
      g.items = g.items.slice(g.start);
      g.start = 0;
    }
    if (wasHead) offer(g.items[g.start] as EventRecord);
  };
  const join = (r: EventRecord) => {
    const map = groupsOf(r);
    const key = groupKey(r);
    const g = map.get(key);
    if (!g) {
      map.set(key, { items: [r], start: 0, leased: null });
      offer(r);
      return;
    }
    // Keep seq order (a requeued old record goes back in its place).
    let i = g.items.length;
    while (i > g.start && (g.items[i - 1] as EventRecord).seq > r.seq) i--;
    g.items.splice(i, 0, r);
    if (i === g.start) offer(r);
  };
  /** Runs a fenced outcome (complete, retry, dead letter) on `key`, or answers false. */
  const outcome = (operation: string, key: string, change: (r: EventRecord) => RecordChange | null): boolean => {
    guard.check(operation);
    const r = records.get(key);
    const c = r === undefined ? null : change(r);
    if (r === undefined || c === null) return false;
    dropLease(r);
    apply(r, c);
    if (!isOpen(r)) leave(r);
    // A retry: the head waits for its due time.
    else if (isHead(r)) delay(r);
    return true;
  };
  const requeue = (r: EventRecord, now: number): boolean => {
    const wasOpen = isOpen(r);
    const change = requeueTransition(r, now);
    if (change === null) return false;
    dropLease(r);
    apply(r, change);
    if (!wasOpen) join(r);
    else if (isHead(r)) offer(r);
    waiting.add(r);
    return true;
  };

  return {
    name: DRIVER_NAME,
    capabilities: { sync: true, batching: false },
    insert(event: NewEvent): InsertResult {
      guard.check('insert');
      if (records.has(event.key)) return { inserted: false };
      const ck = event.coalesceKey ?? null;
      if (ck !== null && event.status === 'pending') {
        const w = waiting.first(ck);
        if (w !== undefined && coalescesInto(event, w)) {
          // coalesceTransition, in place: the ack path allocates nothing it does not return.
          w.deliveries++;
          return { inserted: false, coalescedInto: w.key };
        }
      }
      if (records.size >= maxRecords) throw guard.unavailable('insert', `the store is full (${maxRecords} records)`);
      const record = newRecord(event, ++seq);
      records.set(record.key, record);
      tally[record.status]++;
      if (isOpen(record)) join(record);
      if (ck !== null && record.status === 'pending') waiting.add(record);
      return { inserted: true };
    },
    claim(options: ClaimOptions): EventRecord[] {
      guard.check('claim');
      checkClaim(DRIVER_NAME, options);
      const { owner, limit, leaseMs, now } = options;
      // Heads whose group's lease ended or ran out (a worker died or stalled), and retries now due, may go again.
      for (const r of leased) if (!groupRunning(groupOf(r), now)) offer(r);
      while (delayed.size > 0 && (delayed.peek()?.at as number) <= now) {
        const { r } = delayed.pop() as { r: EventRecord };
        if (where.get(r) === 'delayed') offer(r);
      }
      const out: EventRecord[] = [];
      while (out.length < limit && ready.size > 0) {
        const head = ready.pop() as EventRecord;
        if (where.get(head) !== 'ready') continue;
        if (!isOpen(head) || !isHead(head)) {
          where.delete(head);
          continue;
        }
        if (head.nextAttemptAt > now) {
          delay(head);
          continue;
        }
        const change = groupRunning(groupOf(head), now) ? null : claimTransition(head, owner, now, leaseMs);
        if (change === null) {
          // Its group runs an event (its own lease, or a newer event's beside a requeued head): it waits for that.
          where.set(head, 'leased');
          leased.add(head);
          continue;
        }
        dropLease(head);
        apply(head, change);
        addLease(head);
        // Its run begins: copies that arrive from now on get a run of their own.
        waiting.remove(head);
        where.set(head, 'leased');
        leased.add(head);
        out.push(copy(head));
      }
      return out;
    },
    renew(key, owner, leaseUntil) {
      guard.check('renew');
      const r = records.get(key);
      const change = r === undefined ? null : renewTransition(r, owner, leaseUntil);
      if (r === undefined || change === null) return false;
      apply(r, change);
      return true;
    },
    complete(key, owner, now) {
      return outcome('complete', key, (r) => completeTransition(r, owner, now));
    },
    retry(key, owner, at, error) {
      return outcome('retry', key, (r) => retryTransition(r, owner, at, error));
    },
    deadLetter(key, owner, error, now) {
      return outcome('deadLetter', key, (r) => deadLetterTransition(r, owner, error, now));
    },
    requeue(key, now) {
      guard.check('requeue');
      checkNow(DRIVER_NAME, 'requeue', now);
      const r = records.get(key);
      return r !== undefined && requeue(r, now);
    },
    requeueWhere(filter: RequeueFilter, now) {
      guard.check('requeueWhere');
      const q = requeueQuery(DRIVER_NAME, filter);
      checkNow(DRIVER_NAME, 'requeueWhere', now);
      let n = 0;
      // Requeueing changes a record in place (the map is not touched), so the live iteration is safe.
      for (const r of records.values()) {
        if (!q.statuses.includes(r.status)) continue;
        if (q.event !== null && r.event !== q.event) continue;
        if (requeue(r, now)) n++;
      }
      return n;
    },
    get(key) {
      guard.check('get');
      const r = records.get(key);
      return r ? copy(r) : null;
    },
    list(options?: ListOptions) {
      guard.check('list');
      const q = listQuery(DRIVER_NAME, options);
      const out: EventRecord[] = [];
      // A Map iterates in insertion order, and seq grows with every insert: this is seq order, with no copy to sort.
      // Newest first has no reverse iterator to use, so it walks a copy of the references.
      for (const r of q.order === 'asc' ? records.values() : [...records.values()].reverse()) {
        if (out.length >= q.limit) break;
        if (r.seq <= q.afterSeq || r.seq >= q.beforeSeq) continue;
        if (q.receivedAfter !== null && r.receivedAt <= q.receivedAfter) continue;
        if (q.receivedBefore !== null && r.receivedAt >= q.receivedBefore) continue;
        if (q.status !== null && r.status !== q.status) continue;
        if (q.event !== null && r.event !== q.event) continue;
        if (q.customerId !== null && r.customerId !== q.customerId) continue;
        out.push(copy(r));
      }
      return out;
    },
    purge(options: PurgeOptions) {
      guard.check('purge');
      const q = purgeQuery(DRIVER_NAME, options);
      let n = 0;
      // Deleting the entry just visited is safe while iterating a Map: no copy of every record (a million, hourly).
      for (const r of records.values()) {
        const action = purgeAction(r, q);
        if (action === 'keep') continue;
        n++;
        if (action === 'bury') {
          // The key outlives the event: a replay of it stays a duplicate for the tombstone horizon.
          apply(r, tombstone(r));
          continue;
        }
        records.delete(r.key);
        tally[r.status]--;
      }
      return n;
    },
    counts(): StatusCounts {
      guard.check('counts');
      return { ...tally };
    },
    ping() {
      guard.check('ping');
    },
    close() {
      guard.close();
    },
  };
}
