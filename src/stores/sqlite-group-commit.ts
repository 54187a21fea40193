// The SQLite store's group commit (see `groupCommit` in SqliteStoreOptions): every write of a turn of the event loop
// in one transaction, the fsync of the WAL after it off the event loop (`durability: 'full'`), and waits for another
// process's write lock from timers instead of in place. It wraps the synchronous store of sqlite-store.ts.
import { StoreUnavailableError } from '../errors.ts';
import { type Queued, groupCommit } from './group-commit.ts';
import type { StoreGuard } from './guard.ts';
import { type PurgeQuery, checkClaim, checkNow, purgeQuery, requeueQuery } from './options.ts';
import type { SqliteConnection, SqliteDriver, WalSyncer } from './sqlite-driver.ts';
import { isBusy, isFull } from './sqlite-schema.ts';
import { PURGE_BATCH, type Statements } from './sqlite-sql.ts';
import type { SqliteGroupCommitStore, SqliteStore, WritingMethod } from './sqlite-store.ts';
import type {
  ClaimOptions,
  EventRecord,
  InsertLease,
  InsertResult,
  NewEvent,
  PurgeOptions,
  RequeueFilter,
} from './store.ts';

const DRIVER_NAME = 'sqlite';

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * How long one try for the write lock may block the thread inside SQLite (its busy handler sleeps in place) before
 * the batch gives the event loop back and tries again from a timer: a few ms, so a lock held by another process
 * never stalls deliveries, /healthz or the worker for longer.
 */
const LOCK_SPIN_MS = 5;
/** The waits between tries for the write lock (the last one repeats), until `busyTimeoutMs` has passed. */
const LOCK_RETRY_MS = [1, 2, 5, 10, 20, 25];
/**
 * The least time between the starts of two fsyncs after group commits (`full`). An fsync off the thread costs about
 * 0.2 ms of CPU on this VM (the thread pool's wake-ups, the filesystem's flush; 0.13 ms in place), on the core that
 * answers deliveries; one right after each commit, under a moderate load, meant one per delivery or two. Acks wait
 * up to this much longer (at 3,400 deliveries/s, 0 to 2 ms: p50 2.7 to 3.4 ms, CPU per delivery 4 % less at 2 ms).
 */
const SYNC_INTERVAL_MS = 1;
/** The longest a commit of outcomes only (see walSyncs) waits for the fsync that puts it on disk. */
const SYNC_LATER_MS = 50;
/** How long a write that failed, or waited for the lock, keeps ping() (so /healthz) saying the store is degraded. */
const HEALTH_WINDOW_MS = 10_000;

/**
 * A write other than an insert (which is queued as its own NewEvent: the ack path allocates nothing more), queued
 * for a group commit: what it runs inside the batch's transaction.
 */
class QueuedWrite {
  readonly operation: WritingMethod;
  readonly fn: () => unknown;
  /** Under `full`, settles once the fsync after its commit is done; else (an outcome) at the commit. */
  readonly waitsForSync: boolean;
  /** Runs after the batch's other writes: a claim, so that it sees what they inserted and what they finished. */
  readonly last: boolean;
  /**
   * A claim's look, as a read, for anything claimable: when a batch holds only claims and none finds anything, it
   * answers [] without a transaction (which costs about as much as a small commit). In a batch with other writes
   * the claim just runs: its pick reads the same index.
   */
  readonly idle: (() => boolean) | undefined;
  constructor(operation: WritingMethod, fn: () => unknown, waitsForSync: boolean, last = false, idle?: () => boolean) {
    this.operation = operation;
    this.fn = fn;
    this.waitsForSync = waitsForSync;
    this.last = last;
    this.idle = idle;
  }
}

/** An insert given a lease (see `Store.insert`): queued with it, where a plain insert is queued as its NewEvent. */
class LeasedInsert {
  readonly event: NewEvent;
  readonly lease: InsertLease;
  constructor(event: NewEvent, lease: InsertLease) {
    this.event = event;
    this.lease = lease;
  }
}

type QueuedItem = NewEvent | LeasedInsert | QueuedWrite;

const operationOf = (item: QueuedItem): WritingMethod => (item instanceof QueuedWrite ? item.operation : 'insert');

/** The parts of a synchronous store that its group-commit form needs. */
export interface GroupParts {
  driver: SqliteDriver;
  db: SqliteConnection;
  s: Statements;
  guard: StoreGuard;
  path: string;
  durability: 'normal' | 'full';
  busyTimeoutMs: number;
  claimRows(owner: string, limit: number, leaseMs: number, now: number): EventRecord[];
  purgeStep(q: PurgeQuery, tombstones: boolean): number;
  /** Tells the store a batch's transaction opened or closed (its statements then run without one of their own). */
  inBatch(open: boolean): void;
  /** The status counts the batch moved: written before its commit, or forgotten with its rollback. */
  counted: { write(): void; forget(): void };
}

/**
 * fsyncs of the WAL after group commits (`full`), one at a time on the runtime's thread pool. Each covers every
 * commit made before it began, so the commits made while one runs share the next. A commit with writes that wait for
 * it (inserts: their acks) gets one at once; a commit of outcomes only waits up to SYNC_LATER_MS for one (each fsync
 * costs the thread pool a wake-up and the disk a flush; an outcome a power cut takes back only runs a handler again).
 */
function walSyncs(syncer: WalSyncer, failure: (error: unknown, item: QueuedItem) => unknown) {
  let running = false;
  // A commit was made since the running fsync began (or since the last one ended); `urgent`: writes wait for it.
  let pending = false;
  let urgent = false;
  let later: ReturnType<typeof setTimeout> | undefined;
  let laterUrgent = false;
  // Writes waiting for the next fsync, and what each resolves with.
  let waiting: Array<Queued<QueuedItem, unknown>> = [];
  let results: unknown[] = [];
  // The writes the fsync under way will settle.
  let syncing: Array<Queued<QueuedItem, unknown>> = [];
  let syncingValues: unknown[] = [];
  let count = 0;
  let closed = false;
  const settle = (batch: Array<Queued<QueuedItem, unknown>>, values: unknown[], error: Error | null) => {
    for (let i = 0; i < batch.length; i++) {
      const q = batch[i] as Queued<QueuedItem, unknown>;
      if (error) q.reject(failure(error, q.item));
      else q.resolve(values[i]);
    }
  };
  const start = () => {
    lastStart = performance.now();
    clearTimeout(later);
    later = undefined;
    laterUrgent = false;
    running = true;
    pending = false;
    urgent = false;
    const batch = waiting;
    const values = results;
    syncing = batch;
    syncingValues = values;
    waiting = [];
    results = [];
    syncer.sync((error) => {
      running = false;
      count++;
      // close() synced in place and settled these already.
      if (closed) return syncer.close();
      settle(batch, values, error);
      next();
    });
  };
  let lastStart = Number.NEGATIVE_INFINITY;
  const next = () => {
    if (running || !pending) return;
    const wait = urgent ? lastStart + SYNC_INTERVAL_MS - performance.now() : SYNC_LATER_MS;
    if (urgent && wait <= 0) return start();
    // A timer already set serves, unless it was set for outcomes alone and writes now wait.
    if (later !== undefined && (laterUrgent || !urgent)) return;
    clearTimeout(later);
    later = setTimeout(start, wait);
    laterUrgent = urgent;
    // Writes that wait for it keep the process alive; outcomes alone do not.
    if (!urgent) (later as { unref?: () => void }).unref?.();
  };
  return {
    get count() {
      return count;
    },
    /** A batch committed: `q` (its writes that wait) settle after the next fsync. */
    committed(q: Array<Queued<QueuedItem, unknown>>, values: unknown[]) {
      for (let i = 0; i < q.length; i++) {
        waiting.push(q[i] as Queued<QueuedItem, unknown>);
        results.push(values[i]);
      }
      pending = true;
      if (q.length > 0) urgent = true;
      next();
    },
    /** At close: one fsync now, in place, for everything committed so far; settles every write still waiting. */
    close() {
      closed = true;
      clearTimeout(later);
      let error: Error | null = null;
      try {
        syncer.syncNow();
      } catch (err) {
        error = err instanceof Error ? err : new Error(String(err));
      }
      if (running) settle(syncing, syncingValues, error);
      settle(waiting, results, error);
      waiting = [];
      results = [];
      // An fsync still under way closes the file when it ends.
      if (!running) syncer.close();
    },
  };
}

/**
 * The group-commit form of a synchronous store: every write is queued and written at the end of the turn, one batch
 * (one transaction) at a time, and waits for another process's write lock without blocking the thread.
 */
export function groupCommitStore(store: SqliteStore, parts: GroupParts): SqliteGroupCommitStore {
  const { db, s, guard, busyTimeoutMs } = parts;
  // A try for the lock blocks at most LOCK_SPIN_MS; the rest of busyTimeoutMs is waited from timers (see send).
  db.exec(`PRAGMA busy_timeout = ${LOCK_SPIN_MS}`);
  let syncer: WalSyncer | null = null;
  const file = parts.path !== ':memory:' && !parts.path.startsWith('file:');
  if (parts.durability === 'full' && file) {
    syncer = parts.driver.walSyncer?.(parts.path) ?? null;
    // The fsync is ours, after the commit and off the thread (see `durability`); where the WAL file cannot be
    // opened, the connection keeps synchronous=FULL and each commit syncs in place.
    if (syncer) db.exec('PRAGMA synchronous = NORMAL');
  }
  let groupCommits = 0;

  // What ping() tells /healthz: a write waiting for the lock now, or one that waited or failed lately.
  let waitingSince = 0;
  let waitedAt = 0;
  let waitedMs = 0;
  let failedAt = 0;
  let failure = '';
  // A write failed for want of disk space, and no full checkpoint has succeeded since (see reclaimWal).
  let diskFull = false;
  const failed = (err: unknown) => {
    failedAt = Date.now();
    // SQLite's own words (the innermost cause): the store's message names the file, which /healthz must not show.
    let cause = err;
    while (cause instanceof Error && cause.cause !== undefined) cause = cause.cause;
    failure = messageOf(cause);
    if (isFull(cause)) diskFull = true;
  };
  /**
   * After a write failed for want of disk space, each batch first tries to checkpoint the WAL in full and cut it to
   * nothing, until one such checkpoint succeeds. The WAL file keeps the size it grew to (up to the 16 MiB of commits
   * between checkpoints under load), and a checkpoint needs room to grow the database file: on a disk that filled
   * up, the WAL took back whatever space was freed before a checkpoint could use it, and every write after failed
   * for good (the fault suite's 3 MiB disk: one run in three). Cutting the WAL as soon as there is room for the
   * checkpoint hands its space back.
   */
  const checkpointTruncate = db.prepare('PRAGMA wal_checkpoint(TRUNCATE)');
  const reclaimWal = () => {
    try {
      const row = checkpointTruncate.get() as { busy?: number } | undefined;
      if (row?.busy === 0) diskFull = false;
    } catch {
      // Still no room (or busy): the batch goes ahead and says so if it fails; the next one tries again.
    }
  };
  const rejection = (err: unknown, item: QueuedItem) => {
    failed(err);
    return guard.fail(operationOf(item), err);
  };
  const syncs = syncer ? walSyncs(syncer, rejection) : null;

  /** Claims alone in their batch, none of which finds anything claimable: answered [] without a transaction. */
  const idleClaims = (batch: Array<Queued<QueuedItem, unknown>>): boolean => {
    for (const { item } of batch) {
      if (!(item instanceof QueuedWrite) || item.idle === undefined || !item.idle()) return false;
    }
    for (const q of batch) q.resolve([]);
    return true;
  };

  /** Begins, runs and commits one batch; false (nothing done) when another process holds the write lock. */
  const write = (batch: Array<Queued<QueuedItem, unknown>>): boolean => {
    if (idleClaims(batch)) return true;
    if (diskFull) reclaimWal();
    try {
      s.begin.run();
    } catch (err) {
      if (isBusy(err)) return false;
      throw err;
    }
    parts.inBatch(true);
    const results: unknown[] = new Array(batch.length);
    try {
      let last = false;
      for (let i = 0; i < batch.length; i++) {
        const item = (batch[i] as Queued<QueuedItem, unknown>).item;
        if (item instanceof LeasedInsert) results[i] = store.insert(item.event, item.lease);
        else if (!(item instanceof QueuedWrite)) results[i] = store.insert(item);
        else if (item.last) last = true;
        else results[i] = item.fn();
      }
      if (last) {
        for (let i = 0; i < batch.length; i++) {
          const item = (batch[i] as Queued<QueuedItem, unknown>).item;
          if (item instanceof QueuedWrite && item.last) results[i] = item.fn();
        }
      }
      parts.counted.write();
      s.commit.run();
    } catch (err) {
      parts.counted.forget();
      try {
        s.rollback.run();
      } catch {
        // SQLite may have rolled back already; the first error is the one to report.
      }
      throw err;
    } finally {
      parts.inBatch(false);
    }
    groupCommits++;
    if (!syncs) {
      for (let i = 0; i < batch.length; i++) (batch[i] as Queued<QueuedItem, unknown>).resolve(results[i]);
      return true;
    }
    // Outcomes settle now; the rest once the fsync after this commit is done.
    const wait: Array<Queued<QueuedItem, unknown>> = [];
    const values: unknown[] = [];
    for (let i = 0; i < batch.length; i++) {
      const q = batch[i] as Queued<QueuedItem, unknown>;
      if (q.item instanceof QueuedWrite && !q.item.waitsForSync) q.resolve(results[i]);
      else {
        wait.push(q);
        values.push(results[i]);
      }
    }
    syncs.committed(wait, values);
    return true;
  };

  /**
   * Another process holds the write lock: tries again from timers until it is free, or busyTimeoutMs has passed since
   * the oldest write of the batch was queued (a batch queued behind one that waited does not wait as long again).
   */
  const waitForLock = (batch: Array<Queued<QueuedItem, unknown>>): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const since = Date.now();
      const queuedAt = Math.min(since, (batch[0] as Queued<QueuedItem, unknown>).at);
      waitingSince = since;
      let tries = 0;
      const done = () => {
        waitingSince = 0;
        waitedAt = Date.now();
        waitedMs = waitedAt - since;
      };
      const again = () => {
        let written: boolean;
        try {
          guard.check(operationOf((batch[0] as Queued<QueuedItem, unknown>).item));
          written = write(batch);
        } catch (err) {
          done();
          return reject(err);
        }
        if (written) {
          done();
          return resolve();
        }
        const now = Date.now();
        const left = queuedAt + busyTimeoutMs - now;
        if (left <= 0) {
          done();
          return reject(
            new Error(
              `database is locked: another process held the write lock for the ${now - queuedAt} ms this write waited`,
            ),
          );
        }
        const pause = LOCK_RETRY_MS[Math.min(tries++, LOCK_RETRY_MS.length - 1)] as number;
        setTimeout(again, Math.min(pause, left));
      };
      setTimeout(again, Math.max(0, Math.min(LOCK_RETRY_MS[0] as number, queuedAt + busyTimeoutMs - since)));
    });

  const queue = groupCommit<QueuedItem, unknown>({
    serial: true,
    send(batch) {
      guard.check(operationOf((batch[0] as Queued<QueuedItem, unknown>).item));
      if (write(batch)) return;
      return waitForLock(batch);
    },
    // Nothing of the batch was committed: every caller hears so (intake answers 503, the sender retries).
    failure: rejection,
  });

  /** Queues a write; a closed store says so at once rather than from a batch. */
  const queued = <T>(
    operation: WritingMethod,
    fn: () => T,
    waitsForSync: boolean,
    last = false,
    idle?: () => boolean,
  ): Promise<T> => {
    if (guard.closed) return Promise.reject(guard.closedError(operation));
    return queue.add(new QueuedWrite(operation, fn, waitsForSync, last, idle)) as Promise<T>;
  };
  /** Checks a write's options before it is queued: a mistake must not fail the batch it would share. */
  const checked = <T>(operation: WritingMethod, check: () => void, then: () => Promise<T>): Promise<T> => {
    try {
      guard.check(operation);
      check();
    } catch (err) {
      return Promise.reject(err);
    }
    return then();
  };

  /** Why writes are not going well lately, or null. No file path in it: /healthz shows it to anyone. */
  const degraded = (now: number): string | null => {
    if (waitingSince > 0) {
      return `writes have waited ${now - waitingSince} ms for the database lock, which another process holds`;
    }
    if (failedAt > 0 && now - failedAt < HEALTH_WINDOW_MS) {
      return `a write failed ${Math.round((now - failedAt) / 1000)} s ago: ${failure}`;
    }
    if (waitedAt > 0 && now - waitedAt < HEALTH_WINDOW_MS) {
      return `writes waited ${waitedMs} ms for the database lock ${Math.round((now - waitedAt) / 1000)} s ago`;
    }
    return null;
  };

  /** A read's answer (or its error) as a promise, as every method of this form answers. */
  const answer = <T>(fn: () => T): Promise<T> => {
    try {
      return Promise.resolve(fn());
    } catch (err) {
      return Promise.reject(err);
    }
  };

  const grouped: SqliteGroupCommitStore = {
    name: store.name,
    capabilities: { sync: false, batching: true, leaseOnInsert: true },
    get: (key) => answer(() => store.get(key)),
    list: (options) => answer(() => store.list(options)),
    counts: () => answer(() => store.counts()),
    pragma: (name) => store.pragma(name),
    insert(event: NewEvent, lease?: InsertLease) {
      if (guard.closed) return Promise.reject(guard.closedError('insert'));
      return queue.add(lease === undefined ? event : new LeasedInsert(event, lease)) as Promise<InsertResult>;
    },
    claim(options: ClaimOptions) {
      return checked(
        'claim',
        () => checkClaim(DRIVER_NAME, options),
        () => {
          const { owner, limit, leaseMs, now } = options;
          const idle = () => s.claimable.get(now) === undefined;
          return queued('claim', () => parts.claimRows(owner, limit, leaseMs, now), false, true, idle);
        },
      );
    },
    renew: (key, owner, leaseUntil) => queued('renew', () => store.renew(key, owner, leaseUntil), false),
    complete: (key, owner, now) => queued('complete', () => store.complete(key, owner, now), false),
    retry: (key, owner, at, error) => queued('retry', () => store.retry(key, owner, at, error), false),
    deadLetter: (key, owner, error, now) => queued('deadLetter', () => store.deadLetter(key, owner, error, now), false),
    requeue(key, now) {
      return checked(
        'requeue',
        () => checkNow(DRIVER_NAME, 'requeue', now),
        () => queued('requeue', () => store.requeue(key, now), true),
      );
    },
    requeueWhere(filter: RequeueFilter, now) {
      return checked(
        'requeueWhere',
        () => {
          requeueQuery(DRIVER_NAME, filter);
          checkNow(DRIVER_NAME, 'requeueWhere', now);
        },
        () => queued('requeueWhere', () => store.requeueWhere(filter, now), true),
      );
    },
    purge(options: PurgeOptions) {
      let q: PurgeQuery;
      return checked(
        'purge',
        () => {
          q = purgeQuery(DRIVER_NAME, options);
        },
        async () => {
          // One step per batch, as the synchronous purge takes one transaction per step.
          let total = 0;
          for (const tombstones of q.tombstonesBefore === null ? [false] : [true, false]) {
            for (;;) {
              const n = await queued('purge', () => parts.purgeStep(q, tombstones), true);
              total += n;
              if (n < PURGE_BATCH) break;
            }
          }
          return total;
        },
      );
    },
    ping: () =>
      answer(() => {
        store.ping();
        const reason = degraded(Date.now());
        // `operation: 'write'`: the store answers, but its writes are not going well; /healthz says "degraded".
        if (reason !== null) {
          throw new StoreUnavailableError(`sqlite store: ${reason}`, { store: DRIVER_NAME, operation: 'write' });
        }
      }),
    close: () =>
      answer(() => {
        if (guard.closed) return;
        // Queued writes are committed (or rejected) before the connection goes, and synced to disk.
        queue.flush();
        syncs?.close();
        store.close();
      }),
    get groupCommits() {
      return groupCommits;
    },
    get walSyncs() {
      return syncs?.count ?? 0;
    },
  };
  return grouped;
}
