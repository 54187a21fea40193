// SQLite store: the durable inbox in one local file (WAL), synchronous so the ack path never waits on a promise.
// The SQL lives here; sqlite-bun.ts / sqlite-node.ts only adapt the runtime's driver and are picked at load time.
import { ConfigError, StoreSchemaError, StoreUnavailableError } from '../errors.ts';
import { groupCommit } from './group-commit.ts';
import { StoreGuard } from './guard.ts';
import { checkClaim, checkNow, listQuery, purgeQuery, requeueQuery } from './options.ts';
import { isNotADatabase, openSchema, secureDeleteSetting } from './sqlite-schema.ts';
import {
  type ClaimOptions,
  type EventRecord,
  type EventStatus,
  type IdentityPolicy,
  type InsertResult,
  type ListOptions,
  type NewEvent,
  type PurgeOptions,
  type RequeueFilter,
  type StatusCounts,
  type Store,
  emptyCounts,
} from './store.ts';

export { SCHEMA_VERSION } from './sqlite-schema.ts';

export const DRIVER_NAME = 'sqlite';

export interface SqliteStoreOptions {
  /** Database file; missing parent directories are created. `:memory:` keeps everything in this process only. */
  path: string;
  /**
   * `normal` (default): synchronous=NORMAL; a commit survives a crash of the process, the last commits may be lost
   * on power loss. `full`: synchronous=FULL; every insert is fsynced before it returns (power-loss durable, slower).
   */
  durability?: 'normal' | 'full';
  /** How long a write waits for another process holding the database lock before failing (503). Default 5000. */
  busyTimeoutMs?: number;
  /**
   * Group commit: inserts and completions that arrive together share one `BEGIN IMMEDIATE … COMMIT` (under `full`,
   * one fsync for all of them), written at the end of the current turn of the event loop; each resolves only after
   * that commit, and a failed commit rejects every one of them. `insert` and `complete` then return promises.
   * Power-loss durability at speed; it also spares `normal` most of its per-commit WAL writes. Default false.
   */
  groupCommit?: boolean;
  /**
   * Checkpoint the WAL from a Worker thread (its own connection, PASSIVE checkpoints every `everyMs`), so the
   * thread answering deliveries never stalls copying pages back into the file. Bun only, file databases only;
   * elsewhere SQLite checkpoints on the writing connection as usual. Default true where available.
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

/** The SQLite store with `groupCommit`: insert and complete resolve once their shared transaction committed. */
export interface SqliteGroupCommitStore extends Omit<SqliteStore, 'insert' | 'complete'> {
  insert(event: NewEvent): Promise<InsertResult>;
  complete(key: string, owner: string, now: number): Promise<boolean>;
  /** Commits that carried queued writes so far (tests and diagnostics). */
  readonly groupCommits: number;
}

// ---- The driver seam: what sqlite-bun.ts and sqlite-node.ts provide ----

export type SqliteValue = string | number | null | Uint8Array;

export interface SqliteStatement {
  /** Runs the statement; returns the number of rows changed. */
  run(...params: SqliteValue[]): number;
  get(...params: SqliteValue[]): Record<string, SqliteValue> | undefined;
  all(...params: SqliteValue[]): Record<string, SqliteValue>[];
}

export interface SqliteConnection {
  /** Runs one or more statements that bind nothing and return nothing. */
  exec(sql: string): void;
  prepare(sql: string): SqliteStatement;
  close(): void;
}

interface SqliteDriver {
  DRIVER: string;
  openDatabase(path: string): SqliteConnection;
}

const runtime = globalThis as { Bun?: unknown; process?: { versions?: { node?: string } } };

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// Top-level await keeps sqliteStore() synchronous without the core importing a runtime module.
let driver: SqliteDriver | null = null;
let unavailableReason: string | null = null;
try {
  driver = runtime.Bun !== undefined ? await import('./sqlite-bun.ts') : await import('./sqlite-node.ts');
} catch (err) {
  const node = runtime.process?.versions?.node;
  unavailableReason = runtime.Bun !== undefined
    ? `sqlite store: bun:sqlite could not be loaded (${messageOf(err)}) — use another store`
    : `sqlite store: node:sqlite is not available on this runtime${node ? ` (Node ${node})` : ''} — run with Bun, ` +
      `Deno, or Node >= 22.13, or use another store`;
}

/** Why SQLite cannot be used on this runtime, or null when it can. */
export const sqliteUnavailableReason: string | null = unavailableReason;

/** Whether `sqliteStore()` can open a database on this runtime (false on Node 20, which has no `node:sqlite`). */
export function isSqliteAvailable(): boolean {
  return driver !== null;
}

const OPEN = `status IN ('pending', 'retrying')`;
// A head that may be claimed at ?1: due, not leased (or its lease ran out), and no other event of its group running
// (a requeued older head waits for the newer event that runs; events_leased answers that in one probe). The claim's
// pick and its probe share it.
const CLAIMABLE = `head = 1 AND ${OPEN} AND next_attempt_at <= ?1 AND (lease_until IS NULL OR lease_until <= ?1)
  AND NOT EXISTS (SELECT 1 FROM events l WHERE l.grp = events.grp AND l.lease_owner IS NOT NULL AND l.lease_until > ?1)`;
// Where SQLite's planner reads a bound value to choose a plan, binding a new value re-prepares the statement: about
// 10 us a call in Bun's SQLite, more than the query itself. It does so for a bare parameter as LIMIT, and for
// `grp = ?` (the column of a partial index). LIMIT CAST(? AS INTEGER) and `grp = +?` mean the same without it (the
// plans are unchanged: EXPLAIN QUERY PLAN still searches the same indexes).
const COLUMNS =
  'seq, key, event, customer_id, received_at, status, attempts, next_attempt_at, lease_owner, lease_until, ' +
  'last_error, finished_at, headers, body, policy, coalesce_key, deliveries, tombstone';
// The purge's candidates of one status list: finished before ?1, not yet tombstones (the events_finished_v3 seek).
const FINISHED_BEFORE =
  `status IN ('done', 'dead') AND tombstone = 0 AND finished_at < ?1 AND instr(?2, ',' || status || ',') > 0`;
const PURGE_BATCH = 1000;

function toRecord(row: Record<string, SqliteValue>): EventRecord {
  return {
    key: row.key as string,
    policy: row.policy as IdentityPolicy,
    coalesceKey: row.coalesce_key as string | null,
    deliveries: row.deliveries as number,
    tombstone: row.tombstone === 1,
    event: row.event as string,
    customerId: row.customer_id as string | null,
    body: row.body as Uint8Array,
    headers: JSON.parse(row.headers as string) as Record<string, string>,
    receivedAt: row.received_at as number,
    status: row.status as EventStatus,
    seq: row.seq as number,
    attempts: row.attempts as number,
    nextAttemptAt: row.next_attempt_at as number,
    leaseOwner: row.lease_owner as string | null,
    leaseUntil: row.lease_until as number | null,
    lastError: row.last_error as string | null,
    finishedAt: row.finished_at as number | null,
  };
}

// Only groups of a customer can hold more than one event; a null customer's group is the event alone.
const isCustomerGroup = (grp: string) => grp.charCodeAt(0) === 99; /* 'c' */

/** Statuses (already checked) as a `,a,b,` list for `instr()`, so one prepared statement serves every filter. */
const statusList = (statuses: readonly string[]) => `,${statuses.join(',')},`;

/** Every statement the store runs, prepared once when it opens. */
function prepareStatements(db: SqliteConnection) {
  return {
    begin: db.prepare('BEGIN IMMEDIATE'),
    commit: db.prepare('COMMIT'),
    rollback: db.prepare('ROLLBACK'),
    // The hot path: one statement, committed on return. A pending event is its group's head when the group has no
    // other open event; the subquery reads the open-events index only.
    insert: db.prepare(
      `INSERT INTO events (seq, key, grp, status, head, next_attempt_at, event, customer_id, received_at,
         finished_at, last_error, headers, body, policy, coalesce_key)
       VALUES (
         max(coalesce((SELECT max(seq) FROM events), 0),
             coalesce((SELECT value FROM meta WHERE name = 'seq_floor'), 0)) + 1,
         ?1, ?2, ?3,
         CASE WHEN ?3 = 'pending' THEN NOT EXISTS (SELECT 1 FROM events WHERE grp = +?2 AND ${OPEN}) ELSE 0 END,
         ?4, ?5, ?6, ?4, CASE WHEN ?3 = 'dead' THEN ?4 END, ?7, ?8, ?9, ?10, ?11)
       ON CONFLICT (key) DO NOTHING`,
    ),
    // A signal first counts itself into the waiting copy (never claimed; the oldest, should there be several), unless
    // its own key is already there: a redelivery of a record is a duplicate, as for any other policy. `+?1`: see
    // above (coalesce_key is the column of a partial index); the plan still searches events_waiting.
    coalesce: db.prepare(
      `UPDATE events SET deliveries = deliveries + 1
       WHERE seq = (
         SELECT seq FROM events
         WHERE coalesce_key = +?1 AND status = 'pending' AND attempts = 0 AND lease_owner IS NULL
         ORDER BY seq LIMIT 1)
         AND NOT EXISTS (SELECT 1 FROM events WHERE key = ?2)
       RETURNING key`,
    ),
    // A claim picks the claimable heads, then leases each by its seq, inside one write transaction: measured
    // faster than one UPDATE … WHERE seq IN (SELECT …) RETURNING (a one-event claim on tmpfs: 29-38 us against 37-47).
    claimPick: db.prepare(`SELECT seq FROM events WHERE ${CLAIMABLE} ORDER BY seq LIMIT CAST(?2 AS INTEGER)`),
    claimOne: db.prepare(
      `UPDATE events SET lease_owner = ?1, lease_until = ?2, attempts = attempts + 1 WHERE seq = ?3
       RETURNING ${COLUMNS}`,
    ),
    // The claim's condition as a read: when nothing is claimable (the usual answer once a quiet worker finished its
    // event) claim returns without a write transaction, which costs about as much as a small commit.
    claimable: db.prepare(`SELECT 1 FROM events WHERE ${CLAIMABLE} LIMIT 1`),
    renew: db.prepare(`UPDATE events SET lease_until = ?3 WHERE key = ?1 AND lease_owner = ?2 AND ${OPEN}`),
    finish: db.prepare(
      `UPDATE events SET status = ?3, finished_at = ?4, last_error = coalesce(?5, last_error), lease_owner = NULL,
         lease_until = NULL, head = 0
       WHERE key = ?1 AND lease_owner = ?2 AND ${OPEN}
       RETURNING grp`,
    ),
    retry: db.prepare(
      `UPDATE events SET status = 'retrying', next_attempt_at = ?3, last_error = ?4, lease_owner = NULL,
         lease_until = NULL
       WHERE key = ?1 AND lease_owner = ?2 AND ${OPEN}`,
    ),
    requeue: db.prepare(
      `UPDATE events SET status = 'pending', attempts = 0, next_attempt_at = ?2, lease_owner = NULL,
         lease_until = NULL, last_error = NULL, finished_at = NULL
       WHERE key = ?1 AND tombstone = 0
       RETURNING grp`,
    ),
    requeueWhere: db.prepare(
      `UPDATE events SET status = 'pending', attempts = 0, next_attempt_at = ?2, lease_owner = NULL,
         lease_until = NULL, last_error = NULL, finished_at = NULL
       WHERE instr(?1, ',' || status || ',') > 0 AND (?3 IS NULL OR event = ?3) AND tombstone = 0
       RETURNING grp`,
    ),
    demote: db.prepare('UPDATE events SET head = 0 WHERE grp = +?1 AND head = 1'),
    firstOpen: db.prepare(`SELECT seq FROM events WHERE grp = +?1 AND ${OPEN} ORDER BY seq LIMIT 1`),
    promoteSeq: db.prepare('UPDATE events SET head = 1 WHERE seq = ?1 AND head = 0'),
    get: db.prepare(`SELECT ${COLUMNS} FROM events WHERE key = ?1`),
    list: db.prepare(
      `SELECT ${COLUMNS} FROM events
       WHERE seq > ?1 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR event = ?3)
         AND (?4 IS NULL OR customer_id = ?4)
       ORDER BY seq LIMIT CAST(?5 AS INTEGER)`,
    ),
    raiseSeqFloor: db.prepare(
      `UPDATE meta SET value = max(value, coalesce((SELECT max(seq) FROM events), 0)) WHERE name = 'seq_floor'`,
    ),
    // A tombstone keeps the key (and event, customer, status, times) of a finished once event; what the delivery
    // said goes.
    bury: db.prepare(
      `UPDATE events SET tombstone = 1, body = x'', headers = '{}', last_error = NULL WHERE seq IN (
         SELECT seq FROM events WHERE ${FINISHED_BEFORE} AND policy = 'once' LIMIT CAST(?3 AS INTEGER))`,
    ),
    purge: db.prepare(
      `DELETE FROM events WHERE seq IN (
         SELECT seq FROM events WHERE ${FINISHED_BEFORE} AND policy <> 'once' LIMIT CAST(?3 AS INTEGER))`,
    ),
    purgeTombstones: db.prepare(
      `DELETE FROM events WHERE seq IN (
         SELECT seq FROM events
         WHERE status IN ('done', 'dead') AND tombstone = 1 AND finished_at < ?1
           AND instr(?2, ',' || status || ',') > 0
         LIMIT CAST(?3 AS INTEGER))`,
    ),
    counts: db.prepare('SELECT status, n FROM counts'),
    ping: db.prepare('SELECT 1 FROM events LIMIT 1'),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

/** A Worker thread checkpointing the WAL of `path` (see `backgroundCheckpoint`), or undefined where there is none. */
function startCheckpointer(path: string, option: SqliteStoreOptions['backgroundCheckpoint']): { stop(): void } | undefined {
  if (option === false || runtime.Bun === undefined) return undefined;
  if (path === '' || path === ':memory:' || path.startsWith('file:')) return undefined;
  const WorkerCtor = (globalThis as { Worker?: new (url: string, options?: { type?: string }) => CheckpointWorker }).Worker;
  if (typeof WorkerCtor !== 'function') return undefined;
  const everyMs = (typeof option === 'object' ? option.everyMs : undefined) ?? 200;
  let worker: CheckpointWorker;
  try {
    worker = new WorkerCtor(new URL('./sqlite-checkpointer.ts', import.meta.url).href, { type: 'module' });
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

interface CheckpointWorker {
  postMessage(message: unknown): void;
  unref?(): void;
}


/** Checks the options and opens the connection with its schema and pragmas; closes it again if any step fails. */
function openConnection(options: SqliteStoreOptions): { db: SqliteConnection; secureDelete: 'OFF' | 'ON' | 'FAST' } {
  if (driver === null) throw new Error(unavailableReason ?? 'sqlite store: no SQLite driver');
  const path = options.path;
  if (typeof path !== 'string' || path === '') {
    throw new ConfigError('sqlite store: path is required — give a file path, or ":memory:" for a throwaway database');
  }
  const durability = options.durability ?? 'normal';
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

/** A completion waiting for its group commit (an insert waits as its own event). */
class QueuedCompletion {
  readonly key: string;
  readonly owner: string;
  readonly now: number;
  constructor(key: string, owner: string, now: number) {
    this.key = key;
    this.owner = owner;
    this.now = now;
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
 * Opens (creating if needed) a SQLite database as the event store. Synchronous, and so is every store method.
 * Throws an Error when SQLite is not available on this runtime, `ConfigError` for options it cannot use,
 * `StoreSchemaError` when the file is not a database of this store or was written by a newer version,
 * `StoreUnavailableError` when it cannot be opened.
 */
export function sqliteStore(options: SqliteStoreOptions & { groupCommit: true }): SqliteGroupCommitStore;
export function sqliteStore(options: SqliteStoreOptions & { groupCommit?: false }): SqliteStore;
export function sqliteStore(options: SqliteStoreOptions): SqliteStore | SqliteGroupCommitStore;
export function sqliteStore(options: SqliteStoreOptions): SqliteStore | SqliteGroupCommitStore {
  const { db, secureDelete } = openConnection(options);
  const path = options.path;
  const s = prepareStatements(db);
  const checkpointer = startCheckpointer(path, options.backgroundCheckpoint);
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
  const transaction = <T>(fn: () => T): T => inTransaction(s, inBatch, fn);
  // The one-statement insert (see s.insert); a duplicate key changes nothing and answers inserted: false.
  const add = (event: NewEvent, coalesceKey: string | null): InsertResult => {
    const changes = s.insert.run(
      event.key,
      event.customerId === null ? `k:${event.key}` : `c:${event.customerId}`,
      event.status,
      event.receivedAt,
      event.event,
      event.customerId,
      event.lastError ?? null,
      JSON.stringify(event.headers),
      event.body,
      event.policy ?? 'dedupe',
      coalesceKey,
    );
    return { inserted: changes > 0 };
  };
  // The group's lowest-seq open event becomes its head (when it is not already).
  const promote = (grp: string) => {
    const next = s.firstOpen.get(grp);
    if (next) s.promoteSeq.run(next.seq as number);
  };
  // After the open set of a group changed in a way that can move its head (requeue).
  const reseatHead = (grp: string) => {
    s.demote.run(grp);
    promote(grp);
  };
  const finish = (key: string, owner: string, status: 'done' | 'dead', now: number, error: string | null) =>
    transaction(() => {
      const row = s.finish.get(key, owner, status, now, error);
      if (!row) return false;
      const grp = row.grp as string;
      if (isCustomerGroup(grp)) promote(grp);
      return true;
    });
  const purgeInBatches = (step: () => number): number => {
    // In batches, so one large purge does not hold the write lock against other processes' inserts for long.
    let total = 0;
    for (;;) {
      const n = transaction(() => {
        s.raiseSeqFloor.run();
        return step();
      });
      total += n;
      if (n < PURGE_BATCH) return total;
    }
  };

  // ---- Group commit: writes queued during one turn of the event loop share one transaction ----
  // The synchronous insert and complete, taken from `store` before the group-commit store replaces them.
  let insert: SqliteStore['insert'];
  let complete: SqliteStore['complete'];
  let groupCommits = 0;
  // A write queued for the group commit: an insert's event as it is (no wrapper: the ack path allocates nothing
  // more than it did), or a completion's arguments.
  type Queued = NewEvent | QueuedCompletion;
  const operationOf = (item: Queued) => (item instanceof QueuedCompletion ? 'complete' : 'insert');
  const queue = groupCommit<Queued, unknown>({
    send(batch) {
      guard.check(batch[0] ? operationOf(batch[0].item) : 'insert');
      const results: unknown[] = [];
      s.begin.run();
      inBatch = true;
      try {
        for (const { item } of batch) {
          results.push(item instanceof QueuedCompletion ? complete(item.key, item.owner, item.now) : insert(item));
        }
        s.commit.run();
      } catch (err) {
        try {
          s.rollback.run();
        } catch {
          // SQLite may have rolled back already; the first error is the one to report.
        }
        throw err;
      } finally {
        inBatch = false;
      }
      groupCommits++;
      for (let i = 0; i < batch.length; i++) batch[i]?.resolve(results[i]);
    },
    // Nothing of the batch was committed: every caller hears so (intake answers 503, the sender retries).
    failure: (err, item) => guard.fail(operationOf(item), err),
  });

  const store: SqliteStore = {
    name: DRIVER_NAME,
    capabilities: { sync: true, batching: options.groupCommit === true },
    // Not through run(): a closure per call is an allocation the ack path does not need.
    insert(event: NewEvent): InsertResult {
      guard.check('insert');
      try {
        const coalesceKey = event.coalesceKey ?? null;
        // The plain path stays one statement, committed on return; only a waiting signal needs the look for a
        // waiting copy and the insert in one transaction (inside a group commit's, that one).
        if (coalesceKey === null || event.status !== 'pending') return add(event, coalesceKey);
        return transaction(() => {
          const into = s.coalesce.get(coalesceKey, event.key);
          if (into) return { inserted: false, coalescedInto: into.key as string };
          return add(event, coalesceKey);
        });
      } catch (err) {
        throw guard.fail('insert', err);
      }
    },
    claim(options: ClaimOptions): EventRecord[] {
      return run('claim', () => {
        checkClaim(DRIVER_NAME, options);
        const { owner, limit, leaseMs, now } = options;
        if (s.claimable.get(now) === undefined) return [];
        return transaction(() => {
          const out: EventRecord[] = [];
          for (const pick of s.claimPick.all(now, limit)) {
            const row = s.claimOne.get(owner, now + leaseMs, pick.seq as number);
            if (row) out.push(toRecord(row));
          }
          return out;
        });
      });
    },
    renew(key, owner, leaseUntil) {
      return run('renew', () => s.renew.run(key, owner, leaseUntil) > 0);
    },
    complete(key, owner, now) {
      return run('complete', () => finish(key, owner, 'done', now, null));
    },
    retry(key, owner, at, error) {
      return run('retry', () => s.retry.run(key, owner, at, error) > 0);
    },
    deadLetter(key, owner, error, now) {
      return run('deadLetter', () => finish(key, owner, 'dead', now, error));
    },
    requeue(key, now) {
      return run('requeue', () => {
        checkNow(DRIVER_NAME, 'requeue', now);
        return transaction(() => {
          const row = s.requeue.get(key, now);
          if (!row) return false;
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
        return s.list.all(q.afterSeq, q.status, q.event, q.customerId, q.limit).map(toRecord);
      });
    },
    purge(options: PurgeOptions) {
      return run('purge', () => {
        const q = purgeQuery(DRIVER_NAME, options);
        const statuses = statusList(q.statuses);
        // FAST zeroes what a purge frees wherever that costs no extra write (a body within its row's page; not the
        // overflow pages of a large one, which stay in the free list until reused), so purged bodies and headers
        // mostly do not linger in the file. Put back after, so the hot path's writes are untouched.
        db.exec('PRAGMA secure_delete = FAST');
        try {
          // Old tombstones go first, so a tombstone made by this purge is kept at least until the next one.
          let total = 0;
          const tombstonesBefore = q.tombstonesBefore;
          if (tombstonesBefore !== null) {
            total += purgeInBatches(() => s.purgeTombstones.run(tombstonesBefore, statuses, PURGE_BATCH));
          }
          return (
            total +
            purgeInBatches(() => {
              const buried = s.bury.run(q.before, statuses, PURGE_BATCH);
              return buried + s.purge.run(q.before, statuses, PURGE_BATCH - buried);
            })
          );
        } finally {
          db.exec(`PRAGMA secure_delete = ${secureDelete}`);
        }
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
      // Queued writes are committed (or rejected) before the connection goes.
      queue.flush();
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
  ({ insert, complete } = store);
  const grouped = store as unknown as SqliteGroupCommitStore;
  // A closed store says so at once rather than from a batch.
  grouped.insert = (event: NewEvent) => {
    guard.check('insert');
    return queue.add(event) as Promise<InsertResult>;
  };
  grouped.complete = (key: string, owner: string, now: number) => {
    guard.check('complete');
    return queue.add(new QueuedCompletion(key, owner, now)) as Promise<boolean>;
  };
  Object.defineProperty(grouped, 'groupCommits', { get: () => groupCommits, enumerable: true });
  return grouped;
}
