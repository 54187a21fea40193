// SQLite store: the durable inbox in one local file (WAL), synchronous so the ack path never waits on a promise.
// The SQL lives here; sqlite-bun.ts / sqlite-node.ts only adapt the runtime's driver and are picked at load time.
import {
  type ClaimOptions,
  emptyCounts,
  EVENT_STATUSES,
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
  StoreSchemaError,
  StoreUnavailableError,
  afterThisTurn,
} from './store.ts';

export const DRIVER_NAME = 'sqlite';

/** The schema this build writes and understands (kept in `PRAGMA user_version`). */
export const SCHEMA_VERSION = 3;

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

// ---- Schema ----

// `head` marks the lowest-seq open event of each ordering group, so claim reads only heads (one per group) instead
// of walking every open event behind a busy customer. The unique partial index makes a second head impossible.
// body and headers come last so scans that stop at earlier columns never touch large values.
// seq is not AUTOINCREMENT: that writes sqlite_sequence on every insert, even a duplicate, which under
// durability 'full' turns each redelivery into an fsync. Instead meta.seq_floor remembers the highest seq a purge
// may have removed, and insert numbers from above it, so a seq is never handed out twice.
const SCHEMA = `
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY,
  key TEXT NOT NULL UNIQUE,
  grp TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending', 'retrying', 'done', 'dead')),
  head INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  lease_owner TEXT,
  lease_until INTEGER,
  attempts INTEGER NOT NULL DEFAULT 0,
  event TEXT NOT NULL,
  customer_id TEXT,
  received_at INTEGER NOT NULL,
  finished_at INTEGER,
  last_error TEXT,
  headers TEXT NOT NULL,
  body BLOB NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS events_open ON events (grp, seq, status) WHERE status IN ('pending', 'retrying');
CREATE INDEX IF NOT EXISTS events_heads ON events (seq) WHERE head = 1;
CREATE UNIQUE INDEX IF NOT EXISTS events_head_per_group ON events (grp) WHERE head = 1;
CREATE INDEX IF NOT EXISTS events_finished ON events (status, finished_at) WHERE status IN ('done', 'dead');
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT, WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('seq_floor', 0);
`;

// Schema 2: the number of events in each status, kept by triggers in the same transaction as every change, so
// counts() (polled by /metrics) reads four rows instead of counting every event kept (130-200 ms at a million rows,
// with the event loop blocked). Upgrading a schema-1 file counts its events once.
const COUNTS = `
CREATE TABLE IF NOT EXISTS counts (status TEXT PRIMARY KEY, n INTEGER NOT NULL) STRICT, WITHOUT ROWID;
INSERT OR REPLACE INTO counts (status, n)
  SELECT s.status, (SELECT count(*) FROM events e WHERE e.status = s.status)
  FROM (SELECT 'pending' AS status UNION ALL SELECT 'retrying' UNION ALL SELECT 'done' UNION ALL SELECT 'dead') s;
CREATE TRIGGER IF NOT EXISTS events_count_insert AFTER INSERT ON events BEGIN
  UPDATE counts SET n = n + 1 WHERE status = NEW.status;
END;
CREATE TRIGGER IF NOT EXISTS events_count_delete AFTER DELETE ON events BEGIN
  UPDATE counts SET n = n - 1 WHERE status = OLD.status;
END;
CREATE TRIGGER IF NOT EXISTS events_count_update AFTER UPDATE OF status ON events WHEN OLD.status IS NOT NEW.status
BEGIN
  UPDATE counts SET n = n - 1 WHERE status = OLD.status;
  UPDATE counts SET n = n + 1 WHERE status = NEW.status;
END;
`;

// Schema 3: identity policies (see IdentityPolicy in store.ts). ALTER TABLE appends the columns after body, so
// reading them from a row with a large body walks its overflow pages; nothing hot filters on them from the row:
// the coalescing lookup reads events_waiting, purge reads tombstone from events_finished_v3.
// - Rows of older builds get the policy their key implies: `customer.created:` / `customer.deleted:` keys (but not
//   the `:sha256:` keys of unparsable bodies) were already kept once per customer, everything else deduplicated.
// - Older builds stored Lava's signature among the headers; whoever reads the file could replay those deliveries,
//   so it is removed (openSchema runs this with secure_delete on, then scrubFile, so no old copy stays behind).
// - events_waiting finds the waiting copy of a signal; it holds only signals that were never claimed, so it stays
//   a handful of rows.
// - events_finished gains tombstone, so purge seeks past the tombstones kept for years instead of visiting each.
const IDENTITY = `
ALTER TABLE events ADD COLUMN policy TEXT NOT NULL DEFAULT 'dedupe' CHECK (policy IN ('once', 'dedupe', 'signal'));
ALTER TABLE events ADD COLUMN coalesce_key TEXT;
ALTER TABLE events ADD COLUMN deliveries INTEGER NOT NULL DEFAULT 1;
ALTER TABLE events ADD COLUMN tombstone INTEGER NOT NULL DEFAULT 0;
UPDATE events SET policy = 'once'
  WHERE substr(key, 1, 17) IN ('customer.created:', 'customer.deleted:') AND instr(key, ':sha256:') = 0;
UPDATE events SET headers = json_remove(headers, '$."x-webhook-signature"')
  WHERE instr(headers, '"x-webhook-signature"') > 0 AND json_valid(headers);
CREATE INDEX IF NOT EXISTS events_waiting ON events (coalesce_key)
  WHERE coalesce_key IS NOT NULL AND status = 'pending' AND attempts = 0;
DROP INDEX IF EXISTS events_finished;
CREATE INDEX IF NOT EXISTS events_finished_v3 ON events (status, tombstone, finished_at)
  WHERE status IN ('done', 'dead');
`;

const OPEN = `status IN ('pending', 'retrying')`;
// A head that may be claimed at ?1: due, and not leased (or its lease ran out). The claim's pick and its probe share it.
const CLAIMABLE = `head = 1 AND ${OPEN} AND next_attempt_at <= ?1 AND (lease_until IS NULL OR lease_until <= ?1)`;
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

// SQLITE_CORRUPT (11) and SQLITE_NOTADB (26): the file is not a database we can read.
function isNotADatabase(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const e = err as Error & { errcode?: number; errno?: number; code?: string };
  const primary = (e.errcode ?? e.errno ?? -1) & 0xff;
  if (primary === 11 || primary === 26) return true;
  if (e.code === 'SQLITE_NOTADB' || e.code === 'SQLITE_CORRUPT') return true;
  return /file is not a database|database disk image is malformed/i.test(e.message);
}

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

/** Statuses as a `,a,b,` list for `instr()`, so one prepared statement serves every filter. */
function statusList(statuses: readonly string[]): string {
  return `,${statuses.filter((s) => (EVENT_STATUSES as readonly string[]).includes(s)).join(',')},`;
}

/** `PRAGMA secure_delete` reads 0, 1 or 2 but takes 2 back only as FAST (a bare 2 would mean ON). */
function secureDeleteSetting(value: unknown): 'OFF' | 'ON' | 'FAST' {
  return value === 1 ? 'ON' : value === 2 ? 'FAST' : 'OFF';
}

/** Checks the file and creates or verifies the schema. Writes nothing to a file it does not recognise. */
function openSchema(db: SqliteConnection, path: string): void {
  let version: number;
  try {
    version = db.prepare('PRAGMA user_version').get()?.user_version as number;
  } catch (err) {
    if (isNotADatabase(err)) {
      throw new StoreSchemaError(
        `sqlite store: ${path} is not a SQLite database (${messageOf(err)}) — it was left untouched; point the ` +
          `store at another path or move the file away`,
        { cause: err },
      );
    }
    throw err;
  }
  if (version > SCHEMA_VERSION) {
    throw new StoreSchemaError(
      `sqlite store: ${path} was written by a newer version (schema ${version}, this build knows ` +
        `${SCHEMA_VERSION}) — upgrade`,
    );
  }
  if (version === 0) {
    const foreign = db
      .prepare(`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' LIMIT 1`)
      .get();
    if (foreign) {
      throw new StoreSchemaError(
        `sqlite store: ${path} is a SQLite database this store did not create (it has table ` +
          `"${String(foreign.name)}" and no schema version) — it was left untouched; use another path`,
      );
    }
  }
  // Only now is the file known to be ours (or new): WAL rewrites the header.
  db.exec('PRAGMA journal_mode = WAL');
  if (version >= SCHEMA_VERSION) return;
  // The schema-3 step rewrites headers that held a signature: with secure_delete the space their old bytes took is
  // zeroed instead of freed as is (and the space of the rows it rewrites for their policy, which is no secret, too).
  // It is this connection's setting, so it is put back once the upgrade is done.
  const secureDelete = secureDeleteSetting(db.prepare('PRAGMA secure_delete').get()?.secure_delete);
  db.exec('PRAGMA secure_delete = ON');
  let upgradedRows = false;
  try {
    // Another process may be creating the schema at the same moment: decide under the write lock.
    db.exec('BEGIN IMMEDIATE');
    try {
      const now = db.prepare('PRAGMA user_version').get()?.user_version as number;
      // A new file gets schema 1's tables, then every later step; a schema-1 file only the later steps.
      if (now < 1) db.exec(SCHEMA);
      if (now < 2) db.exec(COUNTS);
      if (now < 3) db.exec(IDENTITY);
      if (now < SCHEMA_VERSION) db.exec(`PRAGMA user_version = ${SCHEMA_VERSION};`);
      db.exec('COMMIT');
      upgradedRows = now >= 1 && now < 3;
    } catch (err) {
      try {
        db.exec('ROLLBACK');
      } catch {
        // The transaction is already gone; the first error is the one worth reporting.
      }
      throw err;
    }
  } finally {
    db.exec(`PRAGMA secure_delete = ${secureDelete}`);
  }
  if (upgradedRows) scrubFile(db);
}

/**
 * After the upgrade that stripped stored signatures: leaves no old copy of one in the file or its WAL.
 * secure_delete only zeroes what the upgrade itself frees. Older builds left copies of rows in the free space of
 * their pages (the old version of every row a completion rewrote, the leaf cells of a page that a split turned into
 * an interior page, pages a purge freed), and only VACUUM rebuilds every page from the rows alone. It rewrites the
 * whole file (and needs about its size in temporary space), once, at the first start of this version. Then the WAL,
 * which holds those page images, is copied back and cut to nothing.
 * Best effort: the signatures are gone from the rows already. A reader in another process can hold up the
 * checkpoint (SQLite's own checkpoints then finish copying later), a full disk the VACUUM.
 */
function scrubFile(db: SqliteConnection): void {
  try {
    db.exec('VACUUM');
  } catch {
    // Busy or out of space: the file keeps its free space as it was.
  }
  try {
    db.prepare('PRAGMA wal_checkpoint(TRUNCATE)').get();
  } catch {
    // Busy: nothing more to do here.
  }
}

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

/**
 * Opens (creating if needed) a SQLite database as the event store. Synchronous, and so is every store method.
 * Throws an Error when SQLite is not available on this runtime, `StoreSchemaError` when the file is not a
 * database of this store or was written by a newer version, `StoreUnavailableError` when it cannot be opened.
 */
export function sqliteStore(options: SqliteStoreOptions & { groupCommit: true }): SqliteGroupCommitStore;
export function sqliteStore(options: SqliteStoreOptions & { groupCommit?: false }): SqliteStore;
export function sqliteStore(options: SqliteStoreOptions): SqliteStore | SqliteGroupCommitStore;
export function sqliteStore(options: SqliteStoreOptions): SqliteStore | SqliteGroupCommitStore {
  if (driver === null) throw new Error(unavailableReason ?? 'sqlite store: no SQLite driver');
  const path = options.path;
  if (typeof path !== 'string' || path === '') {
    throw new Error('sqlite store: path is required — give a file path, or ":memory:" for a throwaway database');
  }
  const durability = options.durability ?? 'normal';
  if (durability !== 'normal' && durability !== 'full') {
    throw new Error(`sqlite store: durability must be 'normal' or 'full', got ${JSON.stringify(durability)}`);
  }
  const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
  if (!Number.isInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
    throw new Error(`sqlite store: busyTimeoutMs must be a whole number of ms >= 0, got ${busyTimeoutMs}`);
  }

  let db: SqliteConnection;
  // The connection's own secure_delete (SQLite's build default), put back after each purge.
  let secureDelete: 'OFF' | 'ON' | 'FAST' = 'OFF';
  try {
    db = driver.openDatabase(path);
  } catch (err) {
    if (isNotADatabase(err)) {
      throw new StoreSchemaError(`sqlite store: ${path} is not a SQLite database (${messageOf(err)})`, { cause: err });
    }
    throw new StoreUnavailableError(`sqlite store: cannot open ${path}: ${messageOf(err)}`, { cause: err });
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
    secureDelete = secureDeleteSetting(db.prepare('PRAGMA secure_delete').get()?.secure_delete);
  } catch (err) {
    try {
      db.close();
    } catch {
      // Closing is best effort; the open error is the one to report.
    }
    if (err instanceof StoreSchemaError) throw err;
    throw new StoreUnavailableError(`sqlite store: cannot open ${path}: ${messageOf(err)}`, { cause: err });
  }

  // Every statement is prepared once, here.
  const s = {
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

  const checkpointer = startCheckpointer(path, options.backgroundCheckpoint);

  let closed = false;
  const check = () => {
    if (closed) throw new StoreUnavailableError(`sqlite store: ${path} is closed`);
  };
  const failure = (op: string, err: unknown): Error => {
    if (err instanceof StoreUnavailableError || err instanceof StoreSchemaError) return err;
    return new StoreUnavailableError(`sqlite store: ${op} failed on ${path}: ${messageOf(err)}`, { cause: err });
  };
  // True while a group commit's transaction is open: the statements it runs are already inside one.
  let inBatch = false;
  const transaction = <T>(fn: () => T): T => {
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
  };
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

  // ---- Group commit: writes queued during one turn of the event loop share one transaction ----
  type Queued = { run: () => unknown; resolve: (value: never) => void; reject: (err: unknown) => void };
  let queue: Queued[] = [];
  let scheduled = false;
  let groupCommits = 0;
  const flush = () => {
    scheduled = false;
    const batch = queue;
    queue = [];
    if (batch.length === 0) return;
    const results: unknown[] = [];
    try {
      check();
      s.begin.run();
      inBatch = true;
      try {
        for (const q of batch) results.push(q.run());
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
    } catch (err) {
      // Nothing of the batch was committed: every caller hears so (intake answers 503, the sender retries).
      const error = failure('group commit', err);
      for (const q of batch) q.reject(error);
      return;
    }
    for (let i = 0; i < batch.length; i++) (batch[i] as Queued).resolve(results[i] as never);
  };
  const enqueue = <T>(run: () => T): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      queue.push({ run, resolve: resolve as (value: never) => void, reject });
      if (!scheduled) {
        scheduled = true;
        afterThisTurn(flush);
      }
    });

  const store: SqliteStore = {
    name: DRIVER_NAME,
    insert(event: NewEvent): InsertResult {
      check();
      try {
        const coalesceKey = event.coalesceKey ?? null;
        // The plain path stays one statement, committed on return; only a signal needs the look for a waiting copy
        // and the insert in one transaction (inside a group commit's, that one).
        if (coalesceKey === null) return add(event, null);
        return transaction(() => {
          const into = s.coalesce.get(coalesceKey, event.key);
          if (into) return { inserted: false, coalescedInto: into.key as string };
          return add(event, coalesceKey);
        });
      } catch (err) {
        throw failure('insert', err);
      }
    },
    claim({ owner, limit, leaseMs, now }: ClaimOptions): EventRecord[] {
      check();
      try {
        if (s.claimable.get(now) === undefined) return [];
        return transaction(() => {
          const out: EventRecord[] = [];
          for (const pick of s.claimPick.all(now, limit)) {
            const row = s.claimOne.get(owner, now + leaseMs, pick.seq as number);
            if (row) out.push(toRecord(row));
          }
          return out;
        });
      } catch (err) {
        throw failure('claim', err);
      }
    },
    renew(key, owner, leaseUntil) {
      check();
      try {
        return s.renew.run(key, owner, leaseUntil) > 0;
      } catch (err) {
        throw failure('renew', err);
      }
    },
    complete(key, owner, now) {
      check();
      try {
        return finish(key, owner, 'done', now, null);
      } catch (err) {
        throw failure('complete', err);
      }
    },
    retry(key, owner, at, error) {
      check();
      try {
        return s.retry.run(key, owner, at, error) > 0;
      } catch (err) {
        throw failure('retry', err);
      }
    },
    deadLetter(key, owner, error, now) {
      check();
      try {
        return finish(key, owner, 'dead', now, error);
      } catch (err) {
        throw failure('deadLetter', err);
      }
    },
    requeue(key, now) {
      check();
      try {
        return transaction(() => {
          const row = s.requeue.get(key, now);
          if (!row) return false;
          reseatHead(row.grp as string);
          return true;
        });
      } catch (err) {
        throw failure('requeue', err);
      }
    },
    requeueWhere(filter: RequeueFilter, now) {
      check();
      try {
        return transaction(() => {
          const rows = s.requeueWhere.all(statusList(filter.status ?? ['dead']), now, filter.event ?? null);
          for (const grp of new Set(rows.map((r) => r.grp as string))) reseatHead(grp);
          return rows.length;
        });
      } catch (err) {
        throw failure('requeueWhere', err);
      }
    },
    get(key) {
      check();
      try {
        const row = s.get.get(key);
        return row ? toRecord(row) : null;
      } catch (err) {
        throw failure('get', err);
      }
    },
    list(options: ListOptions = {}) {
      check();
      try {
        return s.list
          .all(
            options.afterSeq ?? 0,
            options.status ?? null,
            options.event ?? null,
            options.customerId ?? null,
            options.limit ?? 100,
          )
          .map(toRecord);
      } catch (err) {
        throw failure('list', err);
      }
    },
    purge({ before, status, tombstonesBefore }: PurgeOptions) {
      check();
      try {
        const statuses = statusList((status ?? ['done']).filter((x) => x === 'done' || x === 'dead'));
        // In batches, so one large purge does not hold the write lock against other processes' inserts for long.
        let total = 0;
        const inBatches = (step: () => number) => {
          for (;;) {
            const n = transaction(() => {
              s.raiseSeqFloor.run();
              return step();
            });
            total += n;
            if (n < PURGE_BATCH) return;
          }
        };
        // FAST zeroes what a purge frees wherever that costs no extra write (a body within its row's page; not the
        // overflow pages of a large one, which stay in the free list until reused), so purged bodies and headers
        // mostly do not linger in the file. Put back after, so the hot path's writes are untouched.
        db.exec('PRAGMA secure_delete = FAST');
        try {
          // Old tombstones go first, so a tombstone made by this purge is kept at least until the next one.
          if (tombstonesBefore !== undefined) {
            inBatches(() => s.purgeTombstones.run(tombstonesBefore, statuses, PURGE_BATCH));
          }
          inBatches(() => {
            const buried = s.bury.run(before, statuses, PURGE_BATCH);
            return buried + s.purge.run(before, statuses, PURGE_BATCH - buried);
          });
        } finally {
          db.exec(`PRAGMA secure_delete = ${secureDelete}`);
        }
        return total;
      } catch (err) {
        throw failure('purge', err);
      }
    },
    counts(): StatusCounts {
      check();
      try {
        const c = emptyCounts();
        for (const row of s.counts.all()) c[row.status as EventStatus] = row.n as number;
        return c;
      } catch (err) {
        throw failure('counts', err);
      }
    },
    ping() {
      check();
      try {
        s.ping.get();
      } catch (err) {
        throw failure('ping', err);
      }
    },
    pragma(name) {
      check();
      if (!['synchronous', 'journal_mode', 'user_version', 'busy_timeout'].includes(name)) {
        throw new Error(`sqlite store: pragma ${JSON.stringify(name)} is not readable here`);
      }
      try {
        const row = db.prepare(`PRAGMA ${name}`).get();
        return row ? (Object.values(row)[0] as string | number | null) : null;
      } catch (err) {
        throw failure('pragma', err);
      }
    },
    close() {
      if (closed) return;
      // Queued writes are committed (or rejected) before the connection goes.
      flush();
      closed = true;
      checkpointer?.stop();
      try {
        db.close();
      } catch (err) {
        throw failure('close', err);
      }
    },
  };
  if (!options.groupCommit) return store;
  const { insert, complete } = store;
  const grouped = store as unknown as SqliteGroupCommitStore;
  grouped.insert = (event: NewEvent) => {
    // A closed store says so at once rather than from a batch.
    check();
    return enqueue(() => insert(event));
  };
  grouped.complete = (key: string, owner: string, now: number) => {
    check();
    return enqueue(() => complete(key, owner, now));
  };
  Object.defineProperty(grouped, 'groupCommits', { get: () => groupCommits, enumerable: true });
  return grouped;
}
