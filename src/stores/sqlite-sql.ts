// The SQLite store's SQL: every statement it runs, prepared once per connection, and the mapping of a row to an
// EventRecord. What the statements rely on in the schema (indexes, partial index conditions) is in sqlite-schema.ts;
// when each runs, in sqlite-store.ts.
import type { SqliteConnection, SqliteValue } from './sqlite-driver.ts';
import type { EventRecord, EventStatus, IdentityPolicy } from './store.ts';

const OPEN = `status IN ('pending', 'retrying')`;
// A head that may be claimed at ?1: due, not leased (or its lease ran out), and no other event of its group running
// (a requeued older head waits for the newer event that runs). Only heads are ever claimed, so another event of the
// group that runs is leased and not the head: events_leased holds exactly those (usually none; schema 6), and
// answers in one probe. The claim's pick and its probe share it.
const CLAIMABLE = `head = 1 AND ${OPEN} AND next_attempt_at <= ?1 AND (lease_until IS NULL OR lease_until <= ?1)
  AND NOT EXISTS (SELECT 1 FROM events l
    WHERE l.grp = events.grp AND l.lease_owner IS NOT NULL AND l.head = 0 AND l.lease_until > ?1)`;
// Where SQLite's planner reads a bound value to choose a plan, binding a new value re-prepares the statement: about
// 10 us a call in Bun's SQLite, more than the query itself. It does so for a bare parameter as LIMIT, and for
// `grp = ?` (the column of a partial index). LIMIT CAST(? AS INTEGER) and `grp = +?` mean the same without it (the
// plans are unchanged: EXPLAIN QUERY PLAN still searches the same indexes).
const COLUMNS =
  'seq, key, event, customer_id, received_at, status, attempts, next_attempt_at, lease_owner, lease_until, ' +
  'last_error, finished_at, headers, body, policy, coalesce_key, deliveries, tombstone';
// The purge's candidates of one status list: finished before ?1, not yet tombstones (the events_finished_v3 seek).
const FINISHED_BEFORE = `status IN ('done', 'dead') AND tombstone = 0 AND finished_at < ?1 AND instr(?2, ',' || status || ',') > 0`;
export const PURGE_BATCH = 1000;
// list()'s filter. Both seq bounds are always given (options.ts fills in the open end), so either order seeks by seq.
const LISTED = `seq > ?1 AND seq < ?6 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR event = ?3)
  AND (?4 IS NULL OR customer_id = ?4) AND (?7 IS NULL OR received_at > ?7) AND (?8 IS NULL OR received_at < ?8)`;
// Open records and dead letters are few among many done ones: list() finds those through their partial indexes
// (walking seq instead would read every done record in between, with the event loop blocked).
const LISTED_OPEN = `seq IN (SELECT seq FROM events WHERE ${OPEN} AND status = ?2) AND ${LISTED}`;
const LISTED_DEAD = `seq IN (SELECT seq FROM events WHERE status IN ('done', 'dead') AND status = ?2) AND ${LISTED}`;

export function toRecord(row: Record<string, SqliteValue>): EventRecord {
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

/** Statuses (already checked) as a `,a,b,` list for `instr()`, so one prepared statement serves every filter. */
export const statusList = (statuses: readonly string[]) => `,${statuses.join(',')},`;

// The next seq: above every seq kept and every seq a purge may have removed (meta.seq_floor), so none is reused.
const NEXT_SEQ = `max(coalesce((SELECT max(seq) FROM events), 0),
  coalesce((SELECT value FROM meta WHERE name = 'seq_floor'), 0)) + 1`;

// A copy of signal ?1 that waits: pending, never claimed since it was inserted or requeued (attempts 0, no lease),
// found through events_waiting. `+?1`, not `?1`: coalesce_key is in that partial index's WHERE, so a bare parameter
// made SQLite re-prepare the statement at every new binding (see the note above COLUMNS): 6.4 us a lookup inside a
// transaction against 1.7 (4.6 against 0.4 when no copy waits, the usual answer). The plan is the same search of
// events_waiting.
const waitingCopy = (ck: string) =>
  `coalesce_key = +${ck} AND status = 'pending' AND attempts = 0 AND lease_owner IS NULL`;

// A pending event is its group's head when the group has no other open event (the subquery reads events_open only).
const HEAD = `CASE WHEN ?3 = 'pending' THEN NOT EXISTS (SELECT 1 FROM events WHERE grp = +?2 AND ${OPEN}) ELSE 0 END`;

const unlessWaitingSql = (unlessWaiting: boolean) =>
  unlessWaiting ? `NOT EXISTS (SELECT 1 FROM events WHERE ${waitingCopy('?11')})` : '1';

/**
 * The insert-if-absent of one event, numbering itself; with `unlessWaiting`, also only when no copy of the signal
 * waits (then it inserts nothing, as for a key already there). (`WHERE 1`: an INSERT … SELECT takes ON CONFLICT only
 * after a WHERE.)
 */
function insertSql(unlessWaiting: boolean): string {
  return `INSERT INTO events (seq, key, grp, status, head, next_attempt_at, event, customer_id, received_at,
      finished_at, last_error, headers, body, policy, coalesce_key)
    SELECT ${NEXT_SEQ}, ?1, ?2, ?3, ${HEAD}, ?4, ?5, ?6, ?4, CASE WHEN ?3 = 'dead' THEN ?4 END, ?7, ?8, ?9, ?10, ?11
    WHERE ${unlessWaitingSql(unlessWaiting)}
    ON CONFLICT (key) DO NOTHING`;
}

/**
 * The same insert inside a group commit: numbered ?12 by the batch, and given a lease or none (owner ?13, until ?14,
 * both NULL for none). With a lease, an event that is its group's head is written leased, as a claim leases it
 * (attempts 1; and so, a signal, never waiting for copies). Answers the row's `head` when it inserted (a lease given
 * was taken when 1), no row when it did not.
 */
function batchInsertSql(unlessWaiting: boolean): string {
  return `INSERT INTO events (seq, key, grp, status, head, next_attempt_at, event, customer_id, received_at,
      finished_at, last_error, headers, body, policy, coalesce_key, lease_owner, lease_until, attempts)
    SELECT ?12, ?1, ?2, ?3, h.head, ?4, ?5, ?6, ?4, CASE WHEN ?3 = 'dead' THEN ?4 END, ?7, ?8, ?9, ?10, ?11,
      CASE WHEN h.head THEN ?13 END, CASE WHEN h.head THEN ?14 END, h.head AND ?13 IS NOT NULL
    FROM (SELECT ${HEAD} AS head) h
    WHERE ${unlessWaitingSql(unlessWaiting)}
    ON CONFLICT (key) DO NOTHING
    RETURNING head`;
}

function listStatements(db: SqliteConnection, where: string) {
  return {
    asc: db.prepare(`SELECT ${COLUMNS} FROM events WHERE ${where} ORDER BY seq LIMIT CAST(?5 AS INTEGER)`),
    desc: db.prepare(`SELECT ${COLUMNS} FROM events WHERE ${where} ORDER BY seq DESC LIMIT CAST(?5 AS INTEGER)`),
  };
}

/** Every statement the store runs, prepared once when it opens. */
export function prepareStatements(db: SqliteConnection) {
  return {
    begin: db.prepare('BEGIN IMMEDIATE'),
    commit: db.prepare('COMMIT'),
    rollback: db.prepare('ROLLBACK'),
    // The hot path: one statement, committed on return (or in its group commit). A pending event is its group's
    // head when the group has no other open event; the subquery reads the open-events index only. Alone, it numbers
    // itself (`insert`); a group commit reads the next seq once per batch (`nextSeq`) and numbers its inserts itself,
    // which spares each of them two lookups, and may give each a lease (`batchInsert`, see batchInsertSql).
    insert: db.prepare(insertSql(false)),
    batchInsert: db.prepare(batchInsertSql(false)),
    // A pending signal: the same insert, made only when no copy of it waits (the usual case: one statement). When it
    // inserts nothing, either its key is there or a copy waits; `oldestWaiting` then tells which, in the same
    // transaction.
    insertSignal: db.prepare(insertSql(true)),
    batchInsertSignal: db.prepare(batchInsertSql(true)),
    nextSeq: db.prepare(`SELECT ${NEXT_SEQ} AS seq`),
    // A signal's oldest waiting copy (see waitingCopy).
    oldestWaiting: db.prepare(`SELECT seq, key FROM events WHERE ${waitingCopy('?1')} ORDER BY seq LIMIT 1`),
    // A signal counts itself into the waiting copy ?1 (see oldestWaiting), unless its own key is already there: a
    // redelivery of a record is a duplicate, as for any other policy.
    coalesce: db.prepare(
      `UPDATE events SET deliveries = deliveries + 1 WHERE seq = ?1 AND NOT EXISTS (SELECT 1 FROM events WHERE key = ?2)
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
       RETURNING (SELECT o.seq FROM events o WHERE o.grp = events.grp AND o.status IN ('pending', 'retrying')
         AND o.seq <> events.seq
         ORDER BY o.seq LIMIT 1) AS next`,
    ),
    // The event that follows a finished one in its group becomes the head (when it is not already: see finish).
    promoteSeq: db.prepare('UPDATE events SET head = 1 WHERE seq = ?1 AND head = 0'),
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
       RETURNING grp, seq, key, coalesce_key`,
    ),
    requeueWhere: db.prepare(
      `UPDATE events SET status = 'pending', attempts = 0, next_attempt_at = ?2, lease_owner = NULL,
         lease_until = NULL, last_error = NULL, finished_at = NULL
       WHERE instr(?1, ',' || status || ',') > 0 AND (?3 IS NULL OR event = ?3) AND tombstone = 0
       RETURNING grp, seq, key, coalesce_key`,
    ),
    demote: db.prepare('UPDATE events SET head = 0 WHERE grp = +?1 AND head = 1'),
    // The group's lowest-seq open event becomes its head (when it is not already): one statement, the subquery a
    // seek of events_open.
    promote: db.prepare(
      `UPDATE events SET head = 1
       WHERE seq = (SELECT seq FROM events WHERE grp = +?1 AND ${OPEN} ORDER BY seq LIMIT 1) AND head = 0`,
    ),
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

export type Statements = ReturnType<typeof prepareStatements>;
