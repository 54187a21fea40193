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

export function memoryStore(options: MemoryStoreOptions = {}): Store {
  const maxRecords = options.maxRecords ?? 1_000_000;
  const records = new Map<string, EventRecord>();
  // Open (pending/retrying) records per ordering group, in seq order: the head is index 0.
  const groups = new Map<string, EventRecord[]>();
  let seq = 0;
  let closed = false;
  // Kept as records change status, so counts() (polled by /metrics) does not walk every record.
  const tally: StatusCounts = emptyCounts();
  const setStatus = (r: EventRecord, status: EventRecord['status']) => {
    tally[r.status]--;
    tally[status]++;
    r.status = status;
  };

  const groupOf = (r: EventRecord) => (r.customerId === null ? `key:${r.key}` : `c:${r.customerId}`);
  const check = () => {
    if (closed) throw new StoreUnavailableError('memory store is closed');
  };
  const leave = (r: EventRecord) => {
    const g = groupOf(r);
    const list = groups.get(g);
    if (!list) return;
    const i = list.indexOf(r);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) groups.delete(g);
  };
  const join = (r: EventRecord) => {
    const g = groupOf(r);
    const list = groups.get(g);
    if (!list) {
      groups.set(g, [r]);
      return;
    }
    // Keep seq order (a requeued old record goes back in its place).
    let i = list.length;
    while (i > 0 && (list[i - 1] as EventRecord).seq > r.seq) i--;
    list.splice(i, 0, r);
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
      if (records.size >= maxRecords) throw new StoreUnavailableError(`memory store is full (${maxRecords} records)`);
      const record: EventRecord = {
        key: event.key,
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
      return { inserted: true };
    },
    claim({ owner, limit, leaseMs, now }: ClaimOptions): EventRecord[] {
      check();
      const out: EventRecord[] = [];
      const heads: EventRecord[] = [];
      for (const list of groups.values()) {
        const head = list[0];
        if (!head) continue;
        if (head.nextAttemptAt > now) continue;
        if (head.leaseUntil !== null && head.leaseUntil > now) continue;
        heads.push(head);
      }
      heads.sort((a, b) => a.seq - b.seq);
      for (const head of heads.slice(0, limit)) {
        head.leaseOwner = owner;
        head.leaseUntil = now + leaseMs;
        head.attempts += 1;
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
      if (!r) return false;
      const wasOpen = isOpen(r);
      setStatus(r, 'pending');
      r.attempts = 0;
      r.nextAttemptAt = now;
      r.leaseOwner = null;
      r.leaseUntil = null;
      r.lastError = null;
      r.finishedAt = null;
      if (!wasOpen) join(r);
      return true;
    },
    requeueWhere(filter: RequeueFilter, now) {
      check();
      const statuses = filter.status ?? ['dead'];
      let n = 0;
      for (const r of [...records.values()]) {
        if (!statuses.includes(r.status)) continue;
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
      const all = [...records.values()].sort((a, b) => a.seq - b.seq);
      for (const r of all) {
        if (out.length >= limit) break;
        if (options.afterSeq !== undefined && r.seq <= options.afterSeq) continue;
        if (options.status !== undefined && r.status !== options.status) continue;
        if (options.event !== undefined && r.event !== options.event) continue;
        if (options.customerId !== undefined && r.customerId !== options.customerId) continue;
        out.push(copy(r));
      }
      return out;
    },
    purge({ before, status }: PurgeOptions) {
      check();
      const statuses = status ?? ['done'];
      let n = 0;
      for (const r of [...records.values()]) {
        if ((r.status === 'done' || r.status === 'dead') && statuses.includes(r.status)) {
          if (r.finishedAt !== null && r.finishedAt < before) {
            records.delete(r.key);
            tally[r.status]--;
            n++;
          }
        }
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
