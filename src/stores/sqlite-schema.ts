// The SQLite store's schema: the tables, each upgrade step, and the checks that keep it from writing to a file that
// is not its own (a foreign database, garbage bytes, a newer version).
import { StoreSchemaError } from '../errors.ts';
import type { SqliteConnection } from './sqlite-driver.ts';

/** The schema this build writes and understands (kept in `PRAGMA user_version`). */
export const SCHEMA_VERSION = 7;

// `head` marks the lowest-seq open event of each ordering group, so claim reads only heads (one per group) instead
// of walking every open event behind a busy customer. (Schema 1's unique index of heads per group goes in schema 5.)
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

// Schema 4: the leased events of each group, so claim can tell that a group runs an event other than its head (a
// requeued older event became the head while a newer one still runs): none of the group may start beside it. Only
// leased events are in it (a few per worker), so it costs a claim one probe and nothing on insert.
const LEASES = `
CREATE INDEX IF NOT EXISTS events_leased ON events (grp, lease_until) WHERE lease_owner IS NOT NULL;
`;

// Schema 5: less work per event on the write path, measured on the group commit under load (bench/run.mjs):
// - the status counts are kept by the store's own code, once per transaction, instead of by triggers that ran an
//   UPDATE of `counts` for every insert and two for every completion (about a sixth of the database work of an
//   event); a connection that writes without group commit keeps them with the same triggers, made TEMP on it
//   (COUNT_TRIGGERS), so each writer counts exactly once;
// - events_head_per_group goes: it only proved the code right (one head per group), at an index entry written and
//   removed with every head; the claim never read it.
const LEAN = `
DROP TRIGGER IF EXISTS events_count_insert;
DROP TRIGGER IF EXISTS events_count_delete;
DROP TRIGGER IF EXISTS events_count_update;
DROP INDEX IF EXISTS events_head_per_group;
`;

// Schema 6: events_leased holds only the leased events that are not their group's head. A claim leases heads only,
// and a completion clears the lease and the head mark together, so in the usual run no event ever enters it: claims
// and completions no longer write an index entry each (a page per group commit, and its b-tree work). An event gets
// there only when a requeue made an older event its group's head while it ran; the claim's probe asks for those,
// and a head's own lease it reads from the head itself (see CLAIMABLE in sqlite-sql.ts).
const LEASES_BEHIND = `
DROP INDEX IF EXISTS events_leased;
CREATE INDEX IF NOT EXISTS events_leased ON events (grp, lease_until) WHERE lease_owner IS NOT NULL AND head = 0;
`;

// Schema 7: events_waiting again, for files a schema-6 build upgraded. Schema 6 kept the waiting copies of signals in
// a map in memory instead, to save the index's page writes (its keys are hashes, so each signal wrote a random page);
// the map grew with every waiting signal (about 400 bytes each, 800 MB of RSS at a backlog of a million), and after
// another connection's commit it was read again inside the ack path's write transaction. A file upgraded from 5 or
// older still has the index, and IF NOT EXISTS leaves it be.
const WAITING_AGAIN = `
CREATE INDEX IF NOT EXISTS events_waiting ON events (coalesce_key)
  WHERE coalesce_key IS NOT NULL AND status = 'pending' AND attempts = 0;
`;

/** The status counts kept by triggers, for a connection whose writes do not count themselves (see LEAN). */
export const COUNT_TRIGGERS = `
CREATE TEMP TRIGGER IF NOT EXISTS events_count_insert AFTER INSERT ON main.events BEGIN
  UPDATE counts SET n = n + 1 WHERE status = NEW.status;
END;
CREATE TEMP TRIGGER IF NOT EXISTS events_count_delete AFTER DELETE ON main.events BEGIN
  UPDATE counts SET n = n - 1 WHERE status = OLD.status;
END;
CREATE TEMP TRIGGER IF NOT EXISTS events_count_update AFTER UPDATE OF status ON main.events
  WHEN OLD.status IS NOT NEW.status
BEGIN
  UPDATE counts SET n = n - 1 WHERE status = OLD.status;
  UPDATE counts SET n = n + 1 WHERE status = NEW.status;
END;
`;

/**
 * Whether `err` is SQLite's error of one of `codes` (primary result code and its name): bun:sqlite gives the code,
 * node:sqlite at times only the message, so `message` is tried last.
 */
function isSqliteError(err: unknown, codes: Record<number, string>, message: RegExp): boolean {
  if (!(err instanceof Error)) return false;
  const e = err as Error & { errcode?: number; errno?: number; code?: string };
  const primary = (e.errcode ?? e.errno ?? -1) & 0xff;
  if (codes[primary] !== undefined || Object.values(codes).includes(e.code ?? '')) return true;
  return message.test(e.message);
}

// SQLITE_CORRUPT (11) and SQLITE_NOTADB (26): the file is not a database we can read.
export const isNotADatabase = (err: unknown): boolean =>
  isSqliteError(
    err,
    { 11: 'SQLITE_CORRUPT', 26: 'SQLITE_NOTADB' },
    /file is not a database|database disk image is malformed/i,
  );

// SQLITE_FULL (13): the disk (or the file system's quota) has no room for the write.
export const isFull = (err: unknown): boolean => isSqliteError(err, { 13: 'SQLITE_FULL' }, /database or disk is full/i);

// SQLITE_BUSY (5): another connection holds the lock (bun:sqlite gives the code; node:sqlite only the message).
export const isBusy = (err: unknown): boolean => isSqliteError(err, { 5: 'SQLITE_BUSY' }, /database is locked/i);

/** `PRAGMA secure_delete` reads 0, 1 or 2 but takes 2 back only as FAST (a bare 2 would mean ON). */
export function secureDeleteSetting(value: unknown): 'OFF' | 'ON' | 'FAST' {
  return value === 1 ? 'ON' : value === 2 ? 'FAST' : 'OFF';
}

/** Checks the file and creates or verifies the schema. Writes nothing to a file it does not recognise. */
export function openSchema(db: SqliteConnection, path: string): void {
  let version: number;
  try {
    version = db.prepare('PRAGMA user_version').get()?.user_version as number;
  } catch (err) {
    if (isNotADatabase(err)) {
      throw new StoreSchemaError(
        `sqlite store: ${path} is not a SQLite database (${err instanceof Error ? err.message : String(err)}) — it was left untouched; point the ` +
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
      if (now < 4) db.exec(LEASES);
      if (now < 5) db.exec(LEAN);
      if (now < 6) db.exec(LEASES_BEHIND);
      if (now < 7) db.exec(WAITING_AGAIN);
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
