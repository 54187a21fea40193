// SQLite store: the durable inbox in one local file (WAL). Synchronous, or with group commit (what the server uses):
// every write of a turn in one batch (sqlite-group-commit.ts, where the writes' modes are described at QueuedWrite and
// the fsyncs at walSyncs). The statements are in sqlite-sql.ts, the schema in sqlite-schema.ts; sqlite-bun.ts /
// sqlite-node.ts only adapt the runtime's driver. Which driver is given to openSqliteStore is the entry point's
// choice: sqlite.ts picks by runtime at load time, and the npm package's conditional entries (sqlite-entry-*.ts) each
// import one, so a bundler never sees the other runtime's driver.
import { ConfigError, StoreSchemaError, StoreUnavailableError } from '../errors.ts';
import { StoreGuard } from './guard.ts';
import { type PurgeQuery, checkClaim, checkNow, listQuery, purgeQuery, requeueQuery } from './options.ts';
import { leasedRecord } from './records.ts';
import type { LoadedSqliteDriver, SqliteConnection, SqliteDriver, SqliteValue } from './sqlite-driver.ts';
import { groupCommitStore } from './sqlite-group-commit.ts';
import { COUNT_TRIGGERS, isNotADatabase, openSchema, secureDeleteSetting } from './sqlite-schema.ts';
import { PURGE_BATCH, type Statements, prepareStatements, statusList, toRecord } from './sqlite-sql.ts';
import {
  type ClaimOptions,
  type EventRecord,
  type EventStatus,
  type InsertLease,
  type InsertResult,
  type ListOptions,
  type NewEvent,
  type PurgeOptions,
  type RequeueFilter,
  type StatusCounts,
  type Store,
  EVENT_STATUSES,
  emptyCounts,
} from './store.ts';

const DRIVER_NAME = 'sqlite';

export interface SqliteStoreOptions {
  /** Database file; missing parent directories are created. `:memory:` keeps everything in this process only. */
  path: string;
  /**
   * `full` (default): power-loss durable. Every write is on disk (fsynced) before it returns or resolves, so an
   * acknowledged delivery survives a power cut or an OS crash, not only a crash of the process. Without group commit
   * this is SQLite's synchronous=FULL (an fsync inside each commit); with it, each commit is followed by one fsync of
   * the WAL on a thread of the runtime's pool, shared by every write of the batch and of any batch committed while it
   * ran, and the thread answering deliveries goes on meanwhile (see `groupCommit`).
   *
   * `normal`: synchronous=NORMAL. A commit survives a crash of the process (kill -9 included), but the last commits
   * before a power cut or OS crash may be lost; Lava never retries an acknowledged delivery, so such a loss is a lost
   * event. What it saves is the fsync per commit: with group commit the fsync runs off the event loop and costs little
   * throughput (bench targets d and e); without it, every commit waits for the disk. Take it only where the disk
   * itself is not durable anyway (tmpfs, a throwaway container) or losing the last moments of deliveries is fine.
   */
  durability?: 'normal' | 'full';
  /**
   * How long a write waits for another process (the CLI, a backup) holding the database lock before failing (503).
   * With group commit the wait never blocks the event loop for more than a few ms at a time: each try waits at most
   * 5 ms inside SQLite, then the batch tries again from a timer. Without it, SQLite's busy handler waits in place, so
   * the whole wait blocks the thread. Default 5000.
   */
  busyTimeoutMs?: number;
  /**
   * Group commit: every write made during one turn of the event loop (inserts, the worker's claims, completions,
   * retries, dead letters and lease renewals, requeues and purge steps) shares one `BEGIN IMMEDIATE … COMMIT`,
   * written at the end of the turn, and one fsync under `full`. Each write resolves once its batch is committed;
   * inserts, claims, requeues and purges also wait for that fsync (nothing is acknowledged or run before it is on
   * disk), while an outcome (complete, retry, dead letter, renewal) resolves at the commit and is on disk a moment
   * later: a power cut in between can only make its handler run again. A failed commit rejects every write of its
   * batch. Every writing method then returns a promise; reads (get, list, counts, ping) stay synchronous. Batches are
   * written one at a time, in the order they were made. Default false; the server turns it on.
   */
  groupCommit?: boolean;
  /**
   * Checkpoint the WAL from a Worker thread (its own connection, PASSIVE checkpoints every `everyMs`), so the
   * thread answering deliveries seldom stalls copying pages back into the file: under steady load the checkpoint
   * that lets the WAL start over is still the writer's own, every 4000 pages (docs/benchmarks.md). Bun only, file
   * databases only; elsewhere SQLite checkpoints on the writing connection as usual. Default true where available.
   */
  backgroundCheckpoint?: boolean | { everyMs?: number };
}

/** `Store` with every method answering a plain value: what a synchronous store promises its callers. */
export type SyncStore = {
  [K in keyof Store]: Store[K] extends (...args: infer A) => infer R ? (...args: A) => Awaited<R> : Store[K];
};

/** The SQLite store: synchronous, plus a read-only look at its connection for tests and diagnostics. */
export interface SqliteStore extends SyncStore {
  /** Reads a PRAGMA on this store's own connection (e.g. `synchronous` is per connection, so only it can tell). */
  pragma(name: 'synchronous' | 'journal_mode' | 'user_version' | 'busy_timeout'): string | number | null;
}

/** The methods that write, which `groupCommit` queues for the end of the turn. */
export type WritingMethod =
  | 'insert'
  | 'claim'
  | 'renew'
  | 'complete'
  | 'retry'
  | 'deadLetter'
  | 'requeue'
  | 'requeueWhere'
  | 'purge';

/**
 * The SQLite store with `groupCommit`: every method answers with a promise (`capabilities.sync` is false); a write
 * resolves once its batch committed (see `groupCommit`), a read at once.
 */
export type SqliteGroupCommitStore = {
  [K in keyof Store]: Store[K] extends (...args: infer A) => infer R ? (...args: A) => Promise<Awaited<R>> : Store[K];
} & Pick<SqliteStore, 'pragma'> & {
    /** Commits that carried queued writes so far (tests and diagnostics). */
    readonly groupCommits: number;
    /** fsyncs of the WAL made after group commits under `full` (tests and diagnostics; 0 under `normal`). */
    readonly walSyncs: number;
  };

/** What one insert statement did (see `add` in openSqliteStore). */
const NOT_INSERTED = 0;
const INSERTED = 1;
const LEASED = 2;
type Added = typeof NOT_INSERTED | typeof INSERTED | typeof LEASED;

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Why the runtime's SQLite driver could not be loaded: what `sqliteUnavailableReason` says. */
export function driverUnavailable(runtime: 'bun' | 'node', err: unknown): string {
  if (runtime === 'bun') return `sqlite store: bun:sqlite could not be loaded (${messageOf(err)}) — use another store`;
  const node = (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node;
  return (
    `sqlite store: node:sqlite is not available on this runtime${node ? ` (Node ${node})` : ''} — run with Bun, ` +
    'Deno, or Node >= 22.13, or use another store'
  );
}

/** A Worker thread checkpointing the WAL of `path` (see `backgroundCheckpoint`), or undefined where there is none. */
function startCheckpointer(
  driver: SqliteDriver,
  path: string,
  option: SqliteStoreOptions['backgroundCheckpoint'],
): { stop(): void } | undefined {
  if (option === false || driver.DRIVER !== 'bun:sqlite') return undefined;
  if (path === '' || path === ':memory:' || path.startsWith('file:')) return undefined;
  const WorkerCtor = (globalThis as { Worker?: new (url: string, options?: { type?: string }) => CheckpointWorker })
    .Worker;
  if (typeof WorkerCtor !== 'function') return undefined;
  const everyMs = (typeof option === 'object' ? option.everyMs : undefined) ?? 200;
  let worker: CheckpointWorker;
  try {
    worker = new WorkerCtor(new URL(CHECKPOINTER, import.meta.url).href, { type: 'module' });
  } catch {
    return undefined;
  }
  // Never keeps the process alive on its own; a stopped store stops it.
  worker.unref?.();
  worker.postMessage({ type: 'start', path, everyMs });
  return {
    stop() {
      worker.postMessage({ type: 'stop' });
    },
  };
}

// The worker's file beside this one: sqlite-checkpointer.ts in the repository, .js in the built package (a path
// built at run time, so bundlers leave it alone: it only runs on Bun, from the installed files).
const CHECKPOINTER = `./sqlite-checkpointer.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`;

interface CheckpointWorker {
  postMessage(message: unknown): void;
  unref?(): void;
}

/** Checks the options and opens the connection with its schema and pragmas; closes it again if any step fails. */
function openConnection(
  driver: SqliteDriver,
  options: SqliteStoreOptions,
): { db: SqliteConnection; secureDelete: 'OFF' | 'ON' | 'FAST' } {
  const path = options.path;
  if (typeof path !== 'string' || path === '') {
    throw new ConfigError('sqlite store: path is required — give a file path, or ":memory:" for a throwaway database');
  }
  const durability = options.durability ?? 'full';
  if (durability !== 'normal' && durability !== 'full') {
    throw new ConfigError(`sqlite store: durability must be 'normal' or 'full', got ${JSON.stringify(durability)}`);
  }
  const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
  if (!Number.isInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
    throw new ConfigError(`sqlite store: busyTimeoutMs must be a whole number of ms >= 0, got ${busyTimeoutMs}`);
  }
  let db: SqliteConnection;
  try {
    db = driver.openDatabase(path);
  } catch (err) {
    if (isNotADatabase(err)) {
      throw new StoreSchemaError(`sqlite store: ${path} is not a SQLite database (${messageOf(err)})`, { cause: err });
    }
    throw new StoreUnavailableError(`sqlite store: cannot open ${path}: ${messageOf(err)}`, {
      cause: err,
      store: DRIVER_NAME,
      operation: 'open',
    });
  }
  try {
    // The whole wait while opening (another process may be creating the schema); a group commit store then waits
    // LOCK_SPIN_MS at a time (see sqliteStore).
    db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
    openSchema(db, path);
    db.exec(`PRAGMA synchronous = ${durability === 'full' ? 'FULL' : 'NORMAL'}`);
    // Checkpoints copy the WAL back into the file (with its fsyncs). At SQLite's default of every 1000 pages they
    // came every few group commits under load and took two thirds of the insert time; every 4000 pages, a page
    // that many commits wrote in between is copied once. With a background checkpointer (below) this is only the
    // backstop. After a checkpoint the WAL file is cut back to 64 MiB.
    db.exec('PRAGMA wal_autocheckpoint = 4000');
    db.exec('PRAGMA journal_size_limit = 67108864');
    // The connection's own secure_delete (SQLite's build default), put back after each purge.
    return { db, secureDelete: secureDeleteSetting(db.prepare('PRAGMA secure_delete').get()?.secure_delete) };
  } catch (err) {
    try {
      db.close();
    } catch {
      // Closing is best effort; the open error is the one to report.
    }
    if (err instanceof StoreSchemaError) throw err;
    throw new StoreUnavailableError(`sqlite store: cannot open ${path}: ${messageOf(err)}`, {
      cause: err,
      store: DRIVER_NAME,
      operation: 'open',
    });
  }
}

/** Runs `fn` in one write transaction (or inside the one already open: `inBatch`), rolled back if it throws. */
function inTransaction<T>(s: Statements, inBatch: boolean, fn: () => T): T {
  if (inBatch) return fn();
  s.begin.run();
  try {
    const out = fn();
    s.commit.run();
    return out;
  } catch (err) {
    try {
      s.rollback.run();
    } catch {
      // SQLite may have rolled back already (e.g. on I/O errors); the first error is the one to report.
    }
    throw err;
  }
}

/**
 * Opens the store with the driver an entry point loaded (see sqliteStore in sqlite.ts for what it answers and
 * throws); with none, throws the Error saying why.
 */
export function openSqliteStore(
  loaded: LoadedSqliteDriver,
  options: SqliteStoreOptions,
): SqliteStore | SqliteGroupCommitStore {
  const driver = loaded.driver;
  if (driver === null) throw new Error(loaded.unavailableReason);
  const { db, secureDelete } = openConnection(driver, options);
  const path = options.path;
  const s = prepareStatements(db);
  const checkpointer = startCheckpointer(driver, path, options.backgroundCheckpoint);
  const guard = new StoreGuard(DRIVER_NAME, path);
  /** Runs one method: refused once closed, and any failure of SQLite's as StoreUnavailableError naming it. */
  const run = <T>(operation: string, fn: () => T): T => {
    guard.check(operation);
    try {
      return fn();
    } catch (err) {
      throw guard.fail(operation, err);
    }
  };
  // True while a group commit's transaction is open: the statements it runs are already inside one.
  let inBatch = false;
  // The status counts (see COUNT_TRIGGERS): without group commit, TEMP triggers on this connection keep them; with
  // it, the store's own writes move them here, and each batch writes the sum before its commit.
  const countsByTriggers = !options.groupCommit;
  if (countsByTriggers) db.exec(COUNT_TRIGGERS);
  const moves: StatusCounts = emptyCounts();
  const moved = (from: EventStatus | null, to: EventStatus | null, n = 1) => {
    if (countsByTriggers) return;
    if (from !== null) moves[from] -= n;
    if (to !== null) moves[to] += n;
  };
  const counted = {
    /** Writes the counts the batch moved (inside its transaction). */
    write() {
      for (const status of EVENT_STATUSES) {
        if (moves[status] !== 0) s.addCount.run(status, moves[status]);
        moves[status] = 0;
      }
    },
    /** The batch was rolled back: nothing it moved happened. */
    forget() {
      for (const status of EVENT_STATUSES) moves[status] = 0;
    },
  };
  // The events this store leased, by key: where each is (seq) and the status it was claimed in. An outcome
  // looks here first (see s.held); an event claimed elsewhere, or taken over since, is looked up by key instead.
  const leased = new Map<string, { seq: number; status: EventStatus }>();
  const held = (key: string, owner: string): { seq: number; status: EventStatus } | undefined => {
    const mine = leased.get(key);
    if (mine !== undefined) {
      leased.delete(key);
      return mine;
    }
    const row = s.held.get(key, owner);
    return row === undefined ? undefined : { seq: row.seq as number, status: row.status as EventStatus };
  };
  const transaction = <T>(fn: () => T): T => inTransaction(s, inBatch, fn);
  // Inside a group commit: the seq the next insert gets, read once per batch (0: not read yet, or no batch open).
  let nextSeq = 0;
  // The one-statement insert (see s.insert): NOT_INSERTED (the key is there already, nothing changes), INSERTED, or
  // LEASED (inserted as its group's head, leased to `lease.owner`: see s.batchInsert). In a group commit the batch
  // numbers its inserts (the seq the last one got is `addedSeq`) and may give them a lease; alone, the statement
  // numbers itself and takes none. `signal`: a pending signal, inserted only when no copy of it waits (see
  // s.insertSignal).
  let addedSeq = 0;
  const add = (event: NewEvent, coalesceKey: string | null, signal = false, lease?: InsertLease): Added => {
    const grp = event.customerId === null ? `k:${event.key}` : `c:${event.customerId}`;
    const headers = JSON.stringify(event.headers);
    const policy = event.policy ?? 'dedupe';
    const { key, status } = event;
    // The values both statements take first, in their order.
    const values = [
      key,
      grp,
      status,
      event.receivedAt,
      event.event,
      event.customerId,
      event.lastError ?? null,
      headers,
      event.body,
      policy,
      coalesceKey,
    ];
    if (!inBatch) {
      const changes = (signal ? s.insertSignal : s.insert).run(...values);
      if (changes === 0) return NOT_INSERTED;
      moved(null, status);
      return INSERTED;
    }
    if (nextSeq === 0) nextSeq = s.nextSeq.get()?.seq as number;
    const row = (signal ? s.batchInsertSignal : s.batchInsert).get(
      ...values,
      nextSeq,
      lease?.owner ?? null,
      lease?.leaseUntil ?? null,
    );
    if (row === undefined) return NOT_INSERTED;
    addedSeq = nextSeq++;
    moved(null, status);
    if (lease === undefined || row.head !== 1) return INSERTED;
    leased.set(key, { seq: addedSeq, status });
    return LEASED;
  };
  /** The answer to an insert that `add` made. */
  const answerAdded = (added: Added, event: NewEvent, lease: InsertLease | undefined): InsertResult => {
    if (added === NOT_INSERTED) return { inserted: false };
    if (added === INSERTED || lease === undefined) return { inserted: true };
    return { inserted: true, leased: leasedRecord(event, addedSeq, lease) };
  };
  // A pending signal (in a transaction): inserted, and waiting itself, unless a copy waits; then counted into the
  // oldest copy. A redelivery of a record's own key is a duplicate either way. The usual case (no copy waits, a new
  // key) is the one statement.
  const addSignal = (event: NewEvent, coalesceKey: string, lease: InsertLease | undefined): InsertResult => {
    const added = add(event, coalesceKey, true, lease);
    if (added !== NOT_INSERTED) return answerAdded(added, event, lease);
    const into = s.oldestWaiting.get(coalesceKey);
    // None waits: it was the key that was there already.
    if (into === undefined) return { inserted: false };
    const row = s.coalesce.get(into.seq as number, event.key);
    return row ? { inserted: false, coalescedInto: row.key as string } : { inserted: false };
  };
  const promote = (grp: string) => s.promote.run(grp);
  // After the open set of a group changed in a way that can move its head (requeue).
  const reseatHead = (grp: string) => {
    s.demote.run(grp);
    promote(grp);
  };
  const finish = (key: string, owner: string, status: 'done' | 'dead', now: number, error: string | null) =>
    transaction(() => {
      const at = held(key, owner);
      if (at === undefined) return false;
      const row = s.finish.get(at.seq, owner, status, now, error, at.status);
      if (!row) return false;
      moved(at.status, status);
      // The group's next open event, read by the same statement: in the usual case (none waits) nothing more runs.
      if (row.next !== null) s.promoteSeq.run(row.next as number);
      return true;
    });
  const retry = (key: string, owner: string, at: number, error: string) =>
    transaction(() => {
      const where = held(key, owner);
      if (where === undefined || s.retry.run(where.seq, owner, at, error, where.status) === 0) return false;
      moved(where.status, 'retrying');
      return true;
    });
  const claimRows = (owner: string, limit: number, leaseMs: number, now: number): EventRecord[] => {
    const out: EventRecord[] = [];
    // A bound on what runs that never report an outcome (lost with their process) can leave behind.
    if (leased.size > 100_000) leased.clear();
    for (const pick of s.claimPick.all(now, limit)) {
      const row = s.claimOne.get(owner, now + leaseMs, pick.seq as number);
      if (!row) continue;
      const record = toRecord(row);
      leased.set(record.key, { seq: record.seq, status: record.status });
      out.push(record);
    }
    return out;
  };
  /**
   * One step of a purge, in the transaction open: at most PURGE_BATCH records, so that a large purge does not hold the
   * write lock against other processes' inserts for long. FAST zeroes what a purge frees wherever that costs no extra
   * write (a body within its row's page; not the overflow pages of a large one, which stay in the free list until
   * reused), so purged bodies and headers mostly do not linger in the file. Put back after, so the hot path's writes
   * are untouched.
   */
  const purgeStep = (q: PurgeQuery, tombstones: boolean): number => {
    const statuses = statusList(q.statuses);
    db.exec('PRAGMA secure_delete = FAST');
    const deleted = (rows: Record<string, SqliteValue>[]) => {
      for (const row of rows) moved(row.status as EventStatus, null);
      return rows.length;
    };
    try {
      s.raiseSeqFloor.run();
      if (tombstones) return deleted(s.purgeTombstones.all(q.tombstonesBefore, statuses, PURGE_BATCH));
      const buried = s.bury.run(q.before, statuses, PURGE_BATCH);
      return buried + deleted(s.purge.all(q.before, statuses, PURGE_BATCH - buried));
    } finally {
      db.exec(`PRAGMA secure_delete = ${secureDelete}`);
    }
  };

  const store: SqliteStore = {
    name: DRIVER_NAME,
    capabilities: { sync: true, batching: false },
    // Not through run(): a closure per call is an allocation the ack path does not need.
    insert(event: NewEvent, lease?: InsertLease): InsertResult {
      guard.check('insert');
      try {
        const coalesceKey = event.coalesceKey ?? null;
        // The plain path stays one statement, committed on return. A pending signal is one statement too when no
        // copy of it waits; when it inserted nothing, the look for a waiting copy must be in the same transaction
        // (inside a group commit's, that one).
        if (coalesceKey === null || event.status !== 'pending') {
          return answerAdded(add(event, coalesceKey, false, lease), event, lease);
        }
        return transaction(() => addSignal(event, coalesceKey, lease));
      } catch (err) {
        throw guard.fail('insert', err);
      }
    },
    claim(options: ClaimOptions): EventRecord[] {
      return run('claim', () => {
        checkClaim(DRIVER_NAME, options);
        const { owner, limit, leaseMs, now } = options;
        if (s.claimable.get(now) === undefined) return [];
        return transaction(() => claimRows(owner, limit, leaseMs, now));
      });
    },
    renew(key, owner, leaseUntil) {
      return run('renew', () => s.renew.run(key, owner, leaseUntil) > 0);
    },
    complete(key, owner, now) {
      return run('complete', () => finish(key, owner, 'done', now, null));
    },
    retry(key, owner, at, error) {
      return run('retry', () => retry(key, owner, at, error));
    },
    deadLetter(key, owner, error, now) {
      return run('deadLetter', () => finish(key, owner, 'dead', now, error));
    },
    requeue(key, now) {
      return run('requeue', () => {
        checkNow(DRIVER_NAME, 'requeue', now);
        return transaction(() => {
          const before = s.statusOf.get(key);
          const row = s.requeue.get(key, now);
          if (!row) return false;
          moved(before?.status as EventStatus, 'pending');
          reseatHead(row.grp as string);
          return true;
        });
      });
    },
    requeueWhere(filter: RequeueFilter, now) {
      return run('requeueWhere', () => {
        const q = requeueQuery(DRIVER_NAME, filter);
        checkNow(DRIVER_NAME, 'requeueWhere', now);
        return transaction(() => {
          for (const c of s.statusesWhere.all(statusList(q.statuses), q.event)) {
            moved(c.status as EventStatus, 'pending', c.n as number);
          }
          const rows = s.requeueWhere.all(statusList(q.statuses), now, q.event);
          for (const grp of new Set(rows.map((r) => r.grp as string))) reseatHead(grp);
          return rows.length;
        });
      });
    },
    get(key) {
      return run('get', () => {
        const row = s.get.get(key);
        return row ? toRecord(row) : null;
      });
    },
    list(options?: ListOptions) {
      return run('list', () => {
        const q = listQuery(DRIVER_NAME, options);
        const statements =
          q.status === 'dead' ? s.listDead : q.status === 'pending' || q.status === 'retrying' ? s.listOpen : s.list;
        return statements[q.order]
          .all(q.afterSeq, q.status, q.event, q.customerId, q.limit, q.beforeSeq, q.receivedAfter, q.receivedBefore)
          .map(toRecord);
      });
    },
    purge(options: PurgeOptions) {
      return run('purge', () => {
        const q = purgeQuery(DRIVER_NAME, options);
        // Old tombstones go first, so a tombstone made by this purge is kept at least until the next one.
        let total = 0;
        for (const tombstones of q.tombstonesBefore === null ? [false] : [true, false]) {
          for (;;) {
            const n = transaction(() => purgeStep(q, tombstones));
            total += n;
            if (n < PURGE_BATCH) break;
          }
        }
        return total;
      });
    },
    counts(): StatusCounts {
      return run('counts', () => {
        const c = emptyCounts();
        for (const row of s.counts.all()) c[row.status as EventStatus] = row.n as number;
        return c;
      });
    },
    ping() {
      run('ping', () => s.ping.get());
    },
    pragma(name) {
      if (!['synchronous', 'journal_mode', 'user_version', 'busy_timeout'].includes(name)) {
        throw new TypeError(`sqlite store: pragma ${JSON.stringify(name)} is not readable here`);
      }
      return run('pragma', () => {
        const row = db.prepare(`PRAGMA ${name}`).get();
        return row ? (Object.values(row)[0] as string | number | null) : null;
      });
    },
    close() {
      if (guard.closed) return;
      guard.close();
      checkpointer?.stop();
      try {
        db.close();
      } catch (err) {
        throw guard.fail('close', err);
      }
    },
  };
  if (!options.groupCommit) return store;
  return groupCommitStore(store, {
    driver,
    db,
    s,
    guard,
    path,
    durability: options.durability ?? 'full',
    busyTimeoutMs: options.busyTimeoutMs ?? 5000,
    claimRows,
    purgeStep,
    inBatch: (open) => {
      inBatch = open;
      nextSeq = 0;
    },
    counted,
  });
}
