// SQLite store: the durable inbox in one local file (WAL). Synchronous, or with group commit (what the server uses)
// every write of a turn in one batch: the writes' modes are described at QueuedWrite, the fsyncs at walSyncs. The SQL
// lives here; sqlite-bun.ts / sqlite-node.ts only adapt the runtime's driver. Which driver is given to
// openSqliteStore is the entry point's choice: sqlite.ts picks by runtime at load time, and the npm package's
// conditional entries (sqlite-entry-*.ts) each import one, so a bundler never sees the other runtime's driver.
import { ConfigError, StoreSchemaError, StoreUnavailableError } from '../errors.ts';
import { type Queued, groupCommit } from './group-commit.ts';
import { StoreGuard } from './guard.ts';
import { type PurgeQuery, checkClaim, checkNow, listQuery, purgeQuery, requeueQuery } from './options.ts';
import type { LoadedSqliteDriver, SqliteConnection, SqliteDriver, SqliteValue, WalSyncer } from './sqlite-driver.ts';
import { COUNT_TRIGGERS, isBusy, isNotADatabase, openSchema, secureDeleteSetting } from './sqlite-schema.ts';
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

/** The methods that write, which `groupCommit` queues for the end of the turn. */
type WritingMethod =
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
const FINISHED_BEFORE = `status IN ('done', 'dead') AND tombstone = 0 AND finished_at < ?1 AND instr(?2, ',' || status || ',') > 0`;
const PURGE_BATCH = 1000;
// list()'s filter. Both seq bounds are always given (options.ts fills in the open end), so either order seeks by seq.
const LISTED = `seq > ?1 AND seq < ?6 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR event = ?3)
  AND (?4 IS NULL OR customer_id = ?4) AND (?7 IS NULL OR received_at > ?7) AND (?8 IS NULL OR received_at < ?8)`;
// Open records and dead letters are few among many done ones: list() finds those through their partial indexes
// (walking seq instead would read every done record in between, with the event loop blocked).
const LISTED_OPEN = `seq IN (SELECT seq FROM events WHERE ${OPEN} AND status = ?2) AND ${LISTED}`;
const LISTED_DEAD = `seq IN (SELECT seq FROM events WHERE status IN ('done', 'dead') AND status = ?2) AND ${LISTED}`;

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

// The next seq: above every seq kept and every seq a purge may have removed (meta.seq_floor), so none is reused.
const NEXT_SEQ = `max(coalesce((SELECT max(seq) FROM events), 0),
  coalesce((SELECT value FROM meta WHERE name = 'seq_floor'), 0)) + 1`;
// The waiting copy of a signal with coalesce key ?11: never claimed since it was inserted or requeued. `+?11`: see
// COLUMNS (coalesce_key is the column of a partial index); the plan still searches events_waiting.
const WAITING = `coalesce_key = +?11 AND status = 'pending' AND attempts = 0 AND lease_owner IS NULL`;

/** The insert-if-absent of one event, numbered `seq`, made only where `where` holds. */
function insertSql(seq: string, where: string): string {
  return `INSERT INTO events (seq, key, grp, status, head, next_attempt_at, event, customer_id, received_at,
      finished_at, last_error, headers, body, policy, coalesce_key)
    SELECT ${seq}, ?1, ?2, ?3,
      CASE WHEN ?3 = 'pending' THEN NOT EXISTS (SELECT 1 FROM events WHERE grp = +?2 AND ${OPEN}) ELSE 0 END,
      ?4, ?5, ?6, ?4, CASE WHEN ?3 = 'dead' THEN ?4 END, ?7, ?8, ?9, ?10, ?11
    WHERE ${where}
    ON CONFLICT (key) DO NOTHING`;
}

function listStatements(db: SqliteConnection, where: string) {
  return {
    asc: db.prepare(`SELECT ${COLUMNS} FROM events WHERE ${where} ORDER BY seq LIMIT CAST(?5 AS INTEGER)`),
    desc: db.prepare(`SELECT ${COLUMNS} FROM events WHERE ${where} ORDER BY seq DESC LIMIT CAST(?5 AS INTEGER)`),
  };
}

/** Every statement the store runs, prepared once when it opens. */
function prepareStatements(db: SqliteConnection) {
  return {
    begin: db.prepare('BEGIN IMMEDIATE'),
    commit: db.prepare('COMMIT'),
    rollback: db.prepare('ROLLBACK'),
    // The hot path: one statement, committed on return (or in its group commit). A pending event is its group's
    // head when the group has no other open event; the subquery reads the open-events index only. Alone, it numbers
    // itself (`insertNext`); a group commit reads the next seq once per batch (`nextSeq`) and numbers its inserts
    // itself, which spares each of them two lookups.
    insert: db.prepare(insertSql('?12', '1')),
    insertNext: db.prepare(insertSql(NEXT_SEQ, '1')),
    // A pending signal is inserted only when no copy of it waits (see `coalesce`): in the usual case, no copy waits
    // and this one statement is all it takes; when it inserts nothing, `coalesce` tells a copy from a duplicate.
    insertSignal: db.prepare(insertSql('?12', `NOT EXISTS (SELECT 1 FROM events WHERE ${WAITING})`)),
    insertSignalNext: db.prepare(insertSql(NEXT_SEQ, `NOT EXISTS (SELECT 1 FROM events WHERE ${WAITING})`)),
    nextSeq: db.prepare(`SELECT ${NEXT_SEQ} AS seq`),
    // A signal first counts itself into the waiting copy (never claimed; the oldest, should there be several), unless
    // its own key is already there: a redelivery of a record is a duplicate, as for any other policy. `+?1`: see
    // above (coalesce_key is the column of a partial index); the plan still searches events_waiting.
    coalesce: db.prepare(
      `UPDATE events SET deliveries = deliveries + 1
       WHERE seq = (SELECT seq FROM events WHERE ${WAITING.replace('?11', '?1')} ORDER BY seq LIMIT 1)
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
    // An outcome is written by seq, with the status its event was claimed in (see `held`): the row without a look
    // through the key index, and the status it leaves for the counts.
    held: db.prepare(`SELECT seq, status FROM events WHERE key = ?1 AND lease_owner = ?2 AND ${OPEN}`),
    finish: db.prepare(
      `UPDATE events SET status = ?3, finished_at = ?4, last_error = coalesce(?5, last_error), lease_owner = NULL,
         lease_until = NULL, head = 0
       WHERE seq = ?1 AND lease_owner = ?2 AND status = ?6
       RETURNING grp`,
    ),
    retry: db.prepare(
      `UPDATE events SET status = 'retrying', next_attempt_at = ?3, last_error = ?4, lease_owner = NULL,
         lease_until = NULL
       WHERE seq = ?1 AND lease_owner = ?2 AND status = ?5`,
    ),
    statusOf: db.prepare('SELECT status FROM events WHERE key = ?1 AND tombstone = 0'),
    statusesWhere: db.prepare(
      `SELECT status, count(*) AS n FROM events
       WHERE instr(?1, ',' || status || ',') > 0 AND (?2 IS NULL OR event = ?2) AND tombstone = 0
       GROUP BY status`,
    ),
    addCount: db.prepare('UPDATE counts SET n = n + ?2 WHERE status = ?1'),
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
    list: listStatements(db, LISTED),
    listOpen: listStatements(db, LISTED_OPEN),
    listDead: listStatements(db, LISTED_DEAD),
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
         SELECT seq FROM events WHERE ${FINISHED_BEFORE} AND policy <> 'once' LIMIT CAST(?3 AS INTEGER))
       RETURNING status`,
    ),
    purgeTombstones: db.prepare(
      `DELETE FROM events WHERE seq IN (
         SELECT seq FROM events
         WHERE status IN ('done', 'dead') AND tombstone = 1 AND finished_at < ?1
           AND instr(?2, ',' || status || ',') > 0
         LIMIT CAST(?3 AS INTEGER))
       RETURNING status`,
    ),
    counts: db.prepare('SELECT status, n FROM counts'),
    ping: db.prepare('SELECT 1 FROM events LIMIT 1'),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

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
  // The one-statement insert (see s.insert); a duplicate key changes nothing and answers inserted: false. `signal`:
  // inserted only if no copy waits (see s.insertSignal).
  const add = (event: NewEvent, coalesceKey: string | null, signal: boolean): InsertResult => {
    const grp = event.customerId === null ? `k:${event.key}` : `c:${event.customerId}`;
    const headers = JSON.stringify(event.headers);
    const policy = event.policy ?? 'dedupe';
    let changes: number;
    if (inBatch) {
      if (nextSeq === 0) nextSeq = s.nextSeq.get()?.seq as number;
      changes = (signal ? s.insertSignal : s.insert).run(
        event.key,
        grp,
        event.status,
        event.receivedAt,
        event.event,
        event.customerId,
        event.lastError ?? null,
        headers,
        event.body,
        policy,
        coalesceKey,
        nextSeq,
      );
      if (changes > 0) nextSeq++;
    } else {
      changes = (signal ? s.insertSignalNext : s.insertNext).run(
        event.key,
        grp,
        event.status,
        event.receivedAt,
        event.event,
        event.customerId,
        event.lastError ?? null,
        headers,
        event.body,
        policy,
        coalesceKey,
      );
    }
    if (changes > 0) moved(null, event.status);
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
      const at = held(key, owner);
      if (at === undefined) return false;
      const row = s.finish.get(at.seq, owner, status, now, error, at.status);
      if (!row) return false;
      moved(at.status, status);
      const grp = row.grp as string;
      if (isCustomerGroup(grp)) promote(grp);
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
    insert(event: NewEvent): InsertResult {
      guard.check('insert');
      try {
        const coalesceKey = event.coalesceKey ?? null;
        // The plain path stays one statement, committed on return. A pending signal is one statement too when no
        // copy of it waits; when it inserted nothing, the look for a waiting copy must be in the same transaction
        // (inside a group commit's, that one).
        if (coalesceKey === null || event.status !== 'pending') return add(event, coalesceKey, false);
        return transaction(() => {
          const added = add(event, coalesceKey, true);
          if (added.inserted) return added;
          const into = s.coalesce.get(coalesceKey, event.key);
          return into ? { inserted: false, coalescedInto: into.key as string } : added;
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

// ---- Group commit ----

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

type QueuedItem = NewEvent | QueuedWrite;

const operationOf = (item: QueuedItem): WritingMethod => (item instanceof QueuedWrite ? item.operation : 'insert');

/** The parts of a synchronous store that its group-commit form needs. */
interface GroupParts {
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
function groupCommitStore(store: SqliteStore, parts: GroupParts): SqliteGroupCommitStore {
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
  const failed = (err: unknown) => {
    failedAt = Date.now();
    // SQLite's own words (the innermost cause): the store's message names the file, which /healthz must not show.
    let cause = err;
    while (cause instanceof Error && cause.cause !== undefined) cause = cause.cause;
    failure = messageOf(cause);
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
        if (!(item instanceof QueuedWrite)) results[i] = store.insert(item);
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
    capabilities: { sync: false, batching: true },
    get: (key) => answer(() => store.get(key)),
    list: (options) => answer(() => store.list(options)),
    counts: () => answer(() => store.counts()),
    pragma: (name) => store.pragma(name),
    insert(event: NewEvent) {
      if (guard.closed) return Promise.reject(guard.closedError('insert'));
      return queue.add(event) as Promise<InsertResult>;
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
