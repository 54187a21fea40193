// The Postgres store's schema: each version's statements, and the migration that brings a schema up to date (under
// an advisory lock, so instances starting together migrate it once).
import { StoreSchemaError } from '../errors.ts';
import type { PostgresTransaction } from './postgres.ts';
import { insertEventsFunction } from './postgres-sql.ts';

/** The schema version this code creates and understands. */
export const SCHEMA_VERSION = 8;

const OPEN = `('pending', 'retrying')`;

// Version 1: events keyed by idempotency key, ordered by a bigserial; epoch-ms timestamps as bigint.
function migrationV1(s: string): string[] {
  return [
    `CREATE TABLE IF NOT EXISTS ${s}.events (
      seq bigserial PRIMARY KEY,
      key text NOT NULL UNIQUE,
      event text NOT NULL,
      customer_id text,
      body bytea NOT NULL,
      headers jsonb NOT NULL,
      received_at bigint NOT NULL,
      status text NOT NULL CHECK (status IN ('pending', 'retrying', 'done', 'dead')),
      attempts integer NOT NULL DEFAULT 0,
      next_attempt_at bigint NOT NULL,
      lease_owner text,
      lease_until bigint,
      last_error text,
      finished_at bigint
    )`,
    // Claim walks open events in seq order and looks up earlier open events of the same customer.
    `CREATE INDEX IF NOT EXISTS events_open_seq ON ${s}.events (seq) WHERE status IN ${OPEN}`,
    `CREATE INDEX IF NOT EXISTS events_open_customer ON ${s}.events (customer_id, seq) WHERE status IN ${OPEN}`,
    `CREATE INDEX IF NOT EXISTS events_leased_customer ON ${s}.events (customer_id, lease_until)
      WHERE status IN ${OPEN} AND lease_until IS NOT NULL`,
    `CREATE INDEX IF NOT EXISTS events_finished ON ${s}.events (finished_at) WHERE status IN ('done', 'dead')`,
  ];
}

/** Rows of the counts table: each connection adds to the row of its backend pid modulo this, so concurrent writers
 * of other connections rarely wait on one another's counter row. */
const COUNT_SLOTS = 16;

// Version 2: per-status counts kept by triggers, so counts() (what /metrics polls) sums 16 small rows instead of
// counting every kept event. Inserts (batched) and purges (bulk) are counted once per statement from their
// transition tables; a status change is counted per row, and only when the status really changed. Each statement
// touches one counter row, after all its event rows, so counters add no lock-order cycle.
function migrationV2(s: string): string[] {
  const T = `${s}.events`;
  const C = `${s}.counts`;
  const slot = `pg_backend_pid() % ${COUNT_SLOTS}`;
  const tally = (rows: string) =>
    `count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'retrying'),
     count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status = 'dead') FROM ${rows}`;
  const add = (sign: '+' | '-') =>
    `UPDATE ${C} SET pending = pending ${sign} p, retrying = retrying ${sign} r, done = done ${sign} d, dead = dead ${sign} x
     FROM (SELECT ${tally('changed')}) AS t(p, r, d, x) WHERE slot = ${slot} AND p + r + d + x > 0`;
  const is = (row: 'NEW' | 'OLD', status: string) => `(${row}.status = '${status}')::int`;
  return [
    // No writer may slip between the first count below and the triggers that keep it (released at commit).
    `LOCK TABLE ${T} IN SHARE ROW EXCLUSIVE MODE`,
    `CREATE TABLE IF NOT EXISTS ${C} (
      slot integer PRIMARY KEY,
      pending bigint NOT NULL DEFAULT 0,
      retrying bigint NOT NULL DEFAULT 0,
      done bigint NOT NULL DEFAULT 0,
      dead bigint NOT NULL DEFAULT 0
    )`,
    `INSERT INTO ${C} (slot) SELECT generate_series(0, ${COUNT_SLOTS - 1}) ON CONFLICT DO NOTHING`,
    `CREATE OR REPLACE FUNCTION ${s}.count_inserted() RETURNS trigger LANGUAGE plpgsql AS $fn$
     BEGIN ${add('+')}; RETURN NULL; END $fn$`,
    `CREATE OR REPLACE FUNCTION ${s}.count_deleted() RETURNS trigger LANGUAGE plpgsql AS $fn$
     BEGIN ${add('-')}; RETURN NULL; END $fn$`,
    `CREATE OR REPLACE FUNCTION ${s}.count_status_changed() RETURNS trigger LANGUAGE plpgsql AS $fn$
     BEGIN
       UPDATE ${C} SET
         pending = pending + ${is('NEW', 'pending')} - ${is('OLD', 'pending')},
         retrying = retrying + ${is('NEW', 'retrying')} - ${is('OLD', 'retrying')},
         done = done + ${is('NEW', 'done')} - ${is('OLD', 'done')},
         dead = dead + ${is('NEW', 'dead')} - ${is('OLD', 'dead')}
       WHERE slot = ${slot};
       RETURN NULL;
     END $fn$`,
    `DROP TRIGGER IF EXISTS events_count_inserted ON ${T}`,
    `CREATE TRIGGER events_count_inserted AFTER INSERT ON ${T} REFERENCING NEW TABLE AS changed
     FOR EACH STATEMENT EXECUTE FUNCTION ${s}.count_inserted()`,
    `DROP TRIGGER IF EXISTS events_count_deleted ON ${T}`,
    `CREATE TRIGGER events_count_deleted AFTER DELETE ON ${T} REFERENCING OLD TABLE AS changed
     FOR EACH STATEMENT EXECUTE FUNCTION ${s}.count_deleted()`,
    // A column list keeps claims and lease renewals (which never set status) from firing it at all.
    `DROP TRIGGER IF EXISTS events_count_status_changed ON ${T}`,
    `CREATE TRIGGER events_count_status_changed AFTER UPDATE OF status ON ${T}
     FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION ${s}.count_status_changed()`,
    // What the table already holds, counted once, under the lock above.
    `UPDATE ${C} SET pending = 0, retrying = 0, done = 0, dead = 0`,
    `UPDATE ${C} SET (pending, retrying, done, dead) = (SELECT ${tally(T)}) WHERE slot = 0`,
  ];
}

// Version 3: identity policies. A `once` record outlives retention as a tombstone of its key; a `signal` record
// counts the identical copies that arrived while it waited (`deliveries`), found through `coalesce_key`.
function migrationV3(s: string): string[] {
  const T = `${s}.events`;
  return [
    `ALTER TABLE ${T}
      ADD COLUMN IF NOT EXISTS policy text NOT NULL DEFAULT 'dedupe' CHECK (policy IN ('once', 'dedupe', 'signal')),
      ADD COLUMN IF NOT EXISTS coalesce_key text,
      ADD COLUMN IF NOT EXISTS deliveries integer NOT NULL DEFAULT 1,
      ADD COLUMN IF NOT EXISTS tombstone boolean NOT NULL DEFAULT false`,
    // Before policies, a customer.created/deleted event without an id was keyed `event:customer_id` (the hash of a
    // body without a customer has `:sha256:` in it): those keys already meant one run per customer.
    `UPDATE ${T} SET policy = 'once'
     WHERE (starts_with(key, 'customer.created:') OR starts_with(key, 'customer.deleted:'))
       AND strpos(key, ':sha256:') = 0 AND policy <> 'once'`,
    // Older versions stored Lava's signature with the headers: whoever reads the database could replay those
    // deliveries. Nothing needs it once the delivery was accepted.
    `UPDATE ${T} SET headers = headers - 'x-webhook-signature' WHERE headers -> 'x-webhook-signature' IS NOT NULL`,
    // Finds the waiting copy of a signal. The lease is not in the predicate: a claim increments attempts, and a
    // requeue, which resets attempts, also clears the lease.
    `CREATE INDEX IF NOT EXISTS events_waiting_coalesce ON ${T} (coalesce_key)
      WHERE coalesce_key IS NOT NULL AND status = 'pending' AND attempts = 0`,
  ];
}

// Version 4: what a text column cannot hold as it is (see postgres-text.ts) is kept in `originals`, and the column
// holds `h:<sha256>`. Values already stored that new code would hash (longer than 512 bytes, or starting with `h:`)
// are hashed here the same way, so their customer stays one ordering group and their key one key.
function migrationV4(s: string): string[] {
  const T = `${s}.events`;
  const needs = (column: string) => `(starts_with(${column}, 'h:') OR octet_length(${column}) > 512)`;
  const hashed = (column: string) =>
    `CASE WHEN ${needs(column)} THEN 'h:' || encode(sha256(convert_to(${column}, 'UTF8')), 'hex') ELSE ${column} END`;
  const original = (name: string, column: string) => `'${name}', CASE WHEN ${needs(column)} THEN ${column} END`;
  return [
    `ALTER TABLE ${T} ADD COLUMN IF NOT EXISTS originals text`,
    `UPDATE ${T} SET
       originals = jsonb_strip_nulls(jsonb_build_object(${original('key', 'key')}, ${original('customer', 'customer_id')},
         ${original('event', 'event')}, ${original('ck', 'coalesce_key')}))::text,
       key = ${hashed('key')}, customer_id = ${hashed('customer_id')}, event = ${hashed('event')},
       coalesce_key = ${hashed('coalesce_key')}
     WHERE ${needs('key')} OR ${needs('customer_id')} OR ${needs('event')} OR ${needs('coalesce_key')}`,
  ];
}

// Version 5: status changes counted once per statement instead of once per row. The row trigger of version 2 ran a
// PL/pgSQL call and an UPDATE of a counter row for every event a batch completed: 2.4-4 ms of a 9-13 ms completion
// of 200 events, against 0.2 ms for one statement trigger that sums the statement's old and new rows (EXPLAIN
// ANALYZE here). A trigger with transition tables cannot have a column list, so it fires for every UPDATE (claims,
// renewals, coalesced copies too); when no status changed, its sums are equal and no counter row is written, so it
// still takes no lock on one.
function migrationV5(s: string): string[] {
  const T = `${s}.events`;
  const C = `${s}.counts`;
  const sums = (rows: string) =>
    `SELECT coalesce(sum((status = 'pending')::int), 0) AS p, coalesce(sum((status = 'retrying')::int), 0) AS r,
       coalesce(sum((status = 'done')::int), 0) AS d, coalesce(sum((status = 'dead')::int), 0) AS x FROM ${rows}`;
  return [
    `DROP TRIGGER IF EXISTS events_count_status_changed ON ${T}`,
    `DROP FUNCTION IF EXISTS ${s}.count_status_changed()`,
    `CREATE OR REPLACE FUNCTION ${s}.count_updated() RETURNS trigger LANGUAGE plpgsql AS $fn$
     BEGIN
       UPDATE ${C} SET pending = pending + d.p, retrying = retrying + d.r, done = done + d.d, dead = dead + d.x
       FROM (SELECT n.p - o.p AS p, n.r - o.r AS r, n.d - o.d AS d, n.x - o.x AS x
             FROM (${sums('new_rows')}) n, (${sums('old_rows')}) o) AS d
       WHERE slot = pg_backend_pid() % ${COUNT_SLOTS} AND (d.p <> 0 OR d.r <> 0 OR d.d <> 0 OR d.x <> 0);
       RETURN NULL;
     END $fn$`,
    `DROP TRIGGER IF EXISTS events_count_updated ON ${T}`,
    `CREATE TRIGGER events_count_updated AFTER UPDATE ON ${T} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
     FOR EACH STATEMENT EXECUTE FUNCTION ${s}.count_updated()`,
  ];
}

// Version 6: the ack path's INSERT as a function (see insertEventsSql in postgres-sql.ts), so that it can try the
// per-customer locks of the events it is asked to lease and then insert in a statement of its own, whose snapshot
// sees what was committed before it got them, in one round trip.
function migrationV6(s: string): string[] {
  return [insertEventsFunction(s)];
}

// Version 7: insert_events planned once per connection (PLANNED_ONCE in postgres-sql.ts), where each call was
// planned anew.
function migrationV7(s: string): string[] {
  return [insertEventsFunction(s)];
}

// Version 8: no planner statistics for status and lease_until, the columns of the open and leased indexes'
// conditions. A queue's statistics swing: an ANALYZE that samples a moment with few events open or leased (the usual
// moment once the worker keeps up) tells the planner there are none, and the next backlog is then planned as if each
// scan of those indexes read one row: the claim's look at each event's customer walked every open event (and every
// entry the updates left behind) for each event of its window, 18 ms and 28,820 buffers for a claim of 32 under a
// sustained load, the search customer by customer over 2 million buffers (auto_explain). Without statistics Postgres
// takes a fixed share of the table for them (about 1 %), so a probe of the right index is always the cheaper plan, as
// it is whatever the backlog. Changing each column to its own type removes the statistics already gathered (SET
// STATISTICS alone would keep the last ones for good); it rebuilds the indexes whose conditions name the column, not
// the table.
function migrationV8(s: string): string[] {
  const T = `${s}.events`;
  return [
    `ALTER TABLE ${T} ALTER COLUMN status SET STATISTICS 0, ALTER COLUMN lease_until SET STATISTICS 0,
      ALTER COLUMN status TYPE text, ALTER COLUMN lease_until TYPE bigint`,
  ];
}

/** Each schema version's statements, run in one transaction per upgrade (exported for the upgrade tests). */
export const MIGRATIONS: Record<number, (schema: string) => string[]> = {
  1: migrationV1,
  2: migrationV2,
  3: migrationV3,
  4: migrationV4,
  5: migrationV5,
  6: migrationV6,
  7: migrationV7,
  8: migrationV8,
};

type Row = Record<string, unknown>;
const rows = async (runner: PostgresTransaction, text: string, params: unknown[] = []): Promise<Row[]> =>
  (await runner.unsafe(text, params)) as Row[];

/** Brings schema `name` (quoted as `S`) up to SCHEMA_VERSION, in one transaction; StoreSchemaError if it is newer. */
export async function migrate(
  client: { begin(fn: (tx: PostgresTransaction) => Promise<unknown>): PromiseLike<unknown> },
  name: string,
  S: string,
): Promise<void> {
  await client.begin(async (tx) => {
    // Notices such as "schema already exists" would otherwise land on the user's console.
    await rows(tx, `SET LOCAL client_min_messages = warning`);
    // Serialises every migrating instance of this schema; released at commit or rollback.
    await rows(tx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [`lava_webhooks.migrate:${name}`]);
    let current = 0;
    const [found] = await rows(tx, `SELECT to_regclass($1) IS NOT NULL AS present`, [`${S}.schema_version`]);
    if (found?.present === true) {
      const [v] = await rows(tx, `SELECT coalesce(max(version), 0) AS version FROM ${S}.schema_version`);
      current = Number(v?.version ?? 0);
    }
    if (current > SCHEMA_VERSION) {
      throw new StoreSchemaError(
        `postgres store: schema "${name}" is at version ${current} but this code knows up to ${SCHEMA_VERSION}; upgrade the receiver or point it at another schema`,
      );
    }
    if (current === SCHEMA_VERSION) return;
    await rows(tx, `CREATE SCHEMA IF NOT EXISTS ${S}`);
    await rows(
      tx,
      `CREATE TABLE IF NOT EXISTS ${S}.schema_version (version integer PRIMARY KEY, applied_at bigint NOT NULL)`,
    );
    for (let v = current + 1; v <= SCHEMA_VERSION; v++) {
      for (const statement of MIGRATIONS[v]?.(S) ?? []) await rows(tx, statement);
      await rows(tx, `INSERT INTO ${S}.schema_version (version, applied_at) VALUES ($1, $2)`, [v, Date.now()]);
    }
  });
}
