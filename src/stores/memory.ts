// In-memory store: for tests and demos. Keeps the whole contract, loses everything when the process exits.
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
  StoreUnavailableError,
  emptyCounts,
} from './store.ts';

export const DRIVER_NAME = 'memory';

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

const isOpen = (r: EventRecord) => r.status === 'pending' || r.status === 'retrying';

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

/** The open records of one ordering group in seq order; `start` skips completed heads without shifting the array. */
interface Group {
  items: EventRecord[];
  start: number;
}

export function memoryStore(options: MemoryStoreOptions = {}): Store {
  const maxRecords = options.maxRecords ?? 1_000_000;
  const records = new Map<string, EventRecord>();
  // Open (pending/retrying) records per ordering group, in seq order: the head is items[start].
  // Keyed by customer id; an event without a customer is a group of its own, kept apart by its key.
  const groups = new Map<string, Group>();
  const solo = new Map<string, Group>();
  let seq = 0;
  let closed = false;
  // Kept as records change status, so counts() (polled by /metrics) does not walk every record.
  const tally: StatusCounts = emptyCounts();
  const setStatus = (r: EventRecord, status: EventRecord['status']) => {
    tally[r.status]--;
    tally[status]++;
    r.status = status;
  };

  // Where each group head waits: `ready` (a heap by seq: may be claimable now), `delayed` (a heap by due time: a
  // retry not due yet) or `leased` (being run). Entries are not removed from a heap when a record stops being a
  // head or closes; `where` says which entry counts, and stale ones are dropped when they surface.
  const ready = new Heap<EventRecord>((a, b) => a.seq < b.seq);
  const delayed = new Heap<EventRecord>((a, b) => a.nextAttemptAt < b.nextAttemptAt);
  const leased = new Set<EventRecord>();
  const where = new Map<EventRecord, 'ready' | 'delayed' | 'leased'>();
  // The waiting (never claimed) record of each signal's coalesceKey: identical copies are counted into it.
  const waiting = new Map<string, EventRecord>();
  const isWaiting = (r: EventRecord) => r.status === 'pending' && r.attempts === 0 && r.leaseOwner === null;

  const groupsOf = (r: EventRecord) => (r.customerId === null ? solo : groups);
  const groupKey = (r: EventRecord) => r.customerId ?? r.key;
  const check = () => {
    if (closed) throw new StoreUnavailableError('memory store is closed');
  };
  const headOf = (g: Group | undefined) => (g ? g.items[g.start] : undefined);
  const isHead = (r: EventRecord) => headOf(groupsOf(r).get(groupKey(r))) === r;
  /** A record became (or, changed, still is) its group's head: it may be claimable. */
  const offer = (r: EventRecord) => {
    leased.delete(r);
    where.set(r, 'ready');
    ready.push(r);
  };
  const forget = (r: EventRecord) => {
    leased.delete(r);
    where.delete(r);
  };
  const leave = (r: EventRecord) => {
    forget(r);
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
      map.set(key, { items: [r], start: 0 });
      offer(r);
      return;
    }
    // Keep seq order (a requeued old record goes back in its place).
    let i = g.items.length;
    while (i > g.start && (g.items[i - 1] as EventRecord).seq > r.seq) i--;
    g.items.splice(i, 0, r);
    if (i === g.start) offer(r);
  };
  const held = (key: string, owner: string, now?: number): EventRecord | null => {
    check();
    const r = records.get(key);
    if (!r || !isOpen(r) || r.leaseOwner !== owner) return null;
    if (now !== undefined && r.leaseUntil !== null && r.leaseUntil < now) return null;
    return r;
  };

  return {
    name: DRIVER_NAME,
    insert(event: NewEvent): InsertResult {
      check();
      if (records.has(event.key)) return { inserted: false };
      const ck = event.coalesceKey ?? null;
      if (ck !== null) {
        const w = waiting.get(ck);
        if (w !== undefined && isWaiting(w)) {
          w.deliveries++;
          return { inserted: false, coalescedInto: w.key };
        }
      }
      if (records.size >= maxRecords) throw new StoreUnavailableError(`memory store is full (${maxRecords} records)`);
      const record: EventRecord = {
        key: event.key,
        policy: event.policy ?? 'dedupe',
        coalesceKey: ck,
        deliveries: 1,
        tombstone: false,
        event: event.event,
        customerId: event.customerId,
        body: event.body,
        headers: event.headers,
        receivedAt: event.receivedAt,
        status: event.status,
        seq: ++seq,
        attempts: 0,
        nextAttemptAt: event.receivedAt,
        leaseOwner: null,
        leaseUntil: null,
        lastError: event.lastError ?? null,
        finishedAt: event.status === 'dead' ? event.receivedAt : null,
      };
      records.set(record.key, record);
      tally[record.status]++;
      if (isOpen(record)) join(record);
      if (ck !== null && record.status === 'pending') waiting.set(ck, record);
      return { inserted: true };
    },
    claim({ owner, limit, leaseMs, now }: ClaimOptions): EventRecord[] {
      check();
      // Leases that ran out (a worker died or stalled) and retries now due are claimable again.
      for (const r of leased) if (r.leaseUntil === null || r.leaseUntil <= now) offer(r);
      while (delayed.size > 0 && (delayed.peek() as EventRecord).nextAttemptAt <= now) {
        const r = delayed.pop() as EventRecord;
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
          where.set(head, 'delayed');
          delayed.push(head);
          continue;
        }
        if (head.leaseUntil !== null && head.leaseUntil > now) {
          // Still leased by someone (a requeue while it ran): it waits for that lease like any other.
          where.set(head, 'leased');
          leased.add(head);
          continue;
        }
        head.leaseOwner = owner;
        head.leaseUntil = now + leaseMs;
        head.attempts += 1;
        // Its run begins: copies that arrive from now on get a run of their own.
        if (head.coalesceKey !== null && waiting.get(head.coalesceKey) === head) waiting.delete(head.coalesceKey);
        where.set(head, 'leased');
        leased.add(head);
        out.push(copy(head));
      }
      return out;
    },
    renew(key, owner, leaseUntil) {
      const r = held(key, owner);
      if (!r) return false;
      r.leaseUntil = leaseUntil;
      return true;
    },
    complete(key, owner, now) {
      const r = held(key, owner);
      if (!r) return false;
      leave(r);
      setStatus(r, 'done');
      r.finishedAt = now;
      r.leaseOwner = null;
      r.leaseUntil = null;
      return true;
    },
    retry(key, owner, at, error) {
      const r = held(key, owner);
      if (!r) return false;
      setStatus(r, 'retrying');
      r.nextAttemptAt = at;
      r.lastError = error;
      r.leaseOwner = null;
      r.leaseUntil = null;
      leased.delete(r);
      if (isHead(r)) {
        where.set(r, 'delayed');
        delayed.push(r);
      }
      return true;
    },
    deadLetter(key, owner, error, now) {
      const r = held(key, owner);
      if (!r) return false;
      leave(r);
      setStatus(r, 'dead');
      r.lastError = error;
      r.finishedAt = now;
      r.leaseOwner = null;
      r.leaseUntil = null;
      return true;
    },
    requeue(key, now) {
      check();
      const r = records.get(key);
      if (!r || r.tombstone) return false;
      const wasOpen = isOpen(r);
      setStatus(r, 'pending');
      r.attempts = 0;
      r.nextAttemptAt = now;
      r.leaseOwner = null;
      r.leaseUntil = null;
      r.lastError = null;
      r.finishedAt = null;
      if (!wasOpen) join(r);
      else if (isHead(r)) offer(r);
      if (r.coalesceKey !== null) {
        const w = waiting.get(r.coalesceKey);
        if (w === undefined || !isWaiting(w)) waiting.set(r.coalesceKey, r);
      }
      return true;
    },
    requeueWhere(filter: RequeueFilter, now) {
      check();
      const statuses = filter.status ?? ['dead'];
      let n = 0;
      // Requeueing changes a record in place (the map is not touched), so the live iteration is safe.
      for (const r of records.values()) {
        if (!statuses.includes(r.status) || r.tombstone) continue;
        if (filter.event !== undefined && r.event !== filter.event) continue;
        if (this.requeue(r.key, now)) n++;
      }
      return n;
    },
    get(key) {
      check();
      const r = records.get(key);
      return r ? copy(r) : null;
    },
    list(options: ListOptions = {}) {
      check();
      const limit = options.limit ?? 100;
      const out: EventRecord[] = [];
      // A Map iterates in insertion order, and seq grows with every insert: this is seq order, with no copy to sort.
      for (const r of records.values()) {
        if (out.length >= limit) break;
        if (options.afterSeq !== undefined && r.seq <= options.afterSeq) continue;
        if (options.status !== undefined && r.status !== options.status) continue;
        if (options.event !== undefined && r.event !== options.event) continue;
        if (options.customerId !== undefined && r.customerId !== options.customerId) continue;
        out.push(copy(r));
      }
      return out;
    },
    purge({ before, status, tombstonesBefore }: PurgeOptions) {
      check();
      const statuses = status ?? ['done'];
      let n = 0;
      // Deleting the entry just visited is safe while iterating a Map: no copy of every record (a million, hourly).
      for (const r of records.values()) {
        if (!(r.status === 'done' || r.status === 'dead') || !statuses.includes(r.status) || r.finishedAt === null) {
          continue;
        }
        if (r.tombstone) {
          if (tombstonesBefore === undefined || r.finishedAt >= tombstonesBefore) continue;
        } else if (r.finishedAt >= before) {
          continue;
        } else if (r.policy === 'once') {
          // The key outlives the event: a replay of it stays a duplicate for the tombstone horizon.
          r.tombstone = true;
          r.body = new Uint8Array(0);
          r.headers = {};
          r.lastError = null;
          n++;
          continue;
        }
        records.delete(r.key);
        tally[r.status]--;
        n++;
      }
      return n;
    },
    counts(): StatusCounts {
      check();
      return { ...tally };
    },
    ping() {
      check();
    },
    close() {
      closed = true;
    },
  };
}
