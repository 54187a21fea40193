// PostgreSQL store: the durable inbox in one schema, shared safely by any number of receiver instances.
// It takes the tagged-template client the user made (Bun's `SQL` or postgres.js) and imports neither.
import {
  type ClaimOptions,
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
  emptyCounts,
} from './store.ts';

export const DRIVER_NAME = 'postgres';

/** The schema version this code creates and understands. */
export const SCHEMA_VERSION = 3;

/** A transaction handle as both clients pass it to `begin`. */
export interface PostgresTransaction {
  unsafe(query: string, params?: unknown[]): PromiseLike<unknown>;
}

/**
 * The part of a tagged-template client the store uses. Bun's `new SQL(url)` / `Bun.sql` and postgres.js
 * `postgres(url)` both fit; anything else with `unsafe(text, params)` and `begin(fn)` does too.
 */
export interface PostgresClient extends PostgresTransaction {
  begin(fn: (tx: PostgresTransaction) => Promise<unknown>): PromiseLike<unknown>;
  end?(options?: { timeout?: number }): PromiseLike<unknown>;
}

export interface PostgresStoreOptions {
  /**
   * The client, e.g. `new SQL(process.env.DATABASE_URL)` on Bun or `postgres(url)` from postgres.js. It stays
   * yours: `close()` does not end it unless `closeClient` is set. Column name transforms do not matter (the store
   * reads one-word aliases); int8 may come back as string, bigint or number.
   */
  sql: PostgresClient;
  /** Schema holding the store's tables, created on first use. Default `lava_webhooks`. */
  schema?: string;
  /** End the client in `close()` (for a client made only for this store). Default false. */
  closeClient?: boolean;
}

const OPEN = `('pending', 'retrying')`;
// Open events a claim looks through, oldest first, before it looks customer by customer instead.
const WINDOW = 1000;

// One-word lower-case aliases survive postgres.js column transforms such as postgres.camel.
const COLUMNS = `seq AS seq, key AS key, event AS event, customer_id AS customer, body AS body,
  headers::text AS headers, received_at AS received, status AS status, attempts AS attempts,
  next_attempt_at AS due, lease_owner AS owner, lease_until AS until, last_error AS error,
  finished_at AS finished, policy AS policy, coalesce_key AS ck, deliveries AS deliveries, tombstone AS tombstone`;

type Row = Record<string, unknown>;
/** A write waiting for its batch, and how to answer whoever made it. */
type Queued<I, R> = { item: I; resolve: (r: R) => void; reject: (e: unknown) => void };

// Parameters per inserted row, and rows per INSERT (Postgres allows 65 535 parameters in one statement).
const INSERT_PARAMS = 10;
// Parameters per row of a batch that carries coalescing copies (INSERT_PARAMS and the coalesce key).
const COALESCE_PARAMS = 11;
const MAX_INSERT_BATCH = 256;
// Parameters per completion, and completions per UPDATE.
const COMPLETE_PARAMS = 3;
const MAX_COMPLETE_BATCH = 256;
/** How long close() waits for inserts and completions still in flight. */
const CLOSE_WAIT_MS = 5_000;
// Rows inserted by this instance before it refreshes the planner's statistics (see grew()).
const ANALYZE_MIN_ROWS = 1000;

/**
 * Whether a failed batch (a multi-row INSERT or completion UPDATE) is worth retrying one row at a time, as opposed to
 * the database not being reachable: Postgres refused it for the data it carried (SQLSTATE class 22 data exception,
 * 23 integrity violation, 54 program limit), or rolled it back (class 40: a deadlock with another instance's batch
 * holding the same keys in another order, or a serialization failure); a one-row statement holds no other row, so it
 * cannot deadlock. Bun's SQL puts the SQLSTATE in `errno`, postgres.js in `code`; the store's own errors keep the
 * client's as their cause.
 */
function retryRowByRow(error: unknown): boolean {
  const e = (error instanceof StoreUnavailableError ? error.cause : error) as { code?: unknown; errno?: unknown } | null;
  for (const v of [e?.errno, e?.code]) if (typeof v === 'string' && /^(22|23|40|54)[0-9A-Z]{3}$/.test(v)) return true;
  return false;
}

const quoteIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;

const toNumber = (v: unknown): number => (typeof v === 'number' ? v : Number(v));
const toNullableNumber = (v: unknown): number | null => (v === null || v === undefined ? null : toNumber(v));

function toBytes(v: unknown): Uint8Array {
  // Both clients give a Buffer for bytea; copy into a plain Uint8Array so callers never hold a pooled Buffer.
  if (v instanceof Uint8Array) return new Uint8Array(v);
  if (typeof v === 'string' && v.startsWith('\\x')) {
    const hex = v.slice(2);
    const out = new Uint8Array(hex.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16);
    return out;
  }
  throw new TypeError(`postgres store: unexpected bytea value of type ${typeof v}`);
}

function toRecord(row: Row): EventRecord {
  return {
    key: String(row.key),
    policy: row.policy as IdentityPolicy,
    coalesceKey: row.ck === null || row.ck === undefined ? null : String(row.ck),
    deliveries: toNumber(row.deliveries),
    // Bun and postgres.js both parse bool; a client that does not gives 't'.
    tombstone: row.tombstone === true || row.tombstone === 't',
    event: String(row.event),
    customerId: row.customer === null || row.customer === undefined ? null : String(row.customer),
    body: toBytes(row.body),
    headers: JSON.parse(String(row.headers)) as Record<string, string>,
    receivedAt: toNumber(row.received),
    status: row.status as EventStatus,
    seq: toNumber(row.seq),
    attempts: toNumber(row.attempts),
    nextAttemptAt: toNumber(row.due),
    leaseOwner: row.owner === null || row.owner === undefined ? null : String(row.owner),
    leaseUntil: toNullableNumber(row.until),
    lastError: row.error === null || row.error === undefined ? null : String(row.error),
    finishedAt: toNullableNumber(row.finished),
  };
}

function statusList(statuses: readonly string[], allowed: readonly string[]): string {
  for (const s of statuses) {
    if (!allowed.includes(s)) throw new TypeError(`postgres store: unknown status "${s}"; use one of ${allowed.join(', ')}`);
  }
  return statuses.join(',');
}

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

/** Each schema version's statements, run in one transaction per upgrade (exported for the upgrade tests). */
export const MIGRATIONS: Record<number, (schema: string) => string[]> = { 1: migrationV1, 2: migrationV2, 3: migrationV3 };

export function postgresStore(options: PostgresStoreOptions): Store {
  const client = options?.sql;
  if (!client || typeof client.unsafe !== 'function' || typeof client.begin !== 'function') {
    throw new TypeError(
      'postgres store: options.sql must be a tagged-template client, e.g. `new SQL(url)` from "bun" or `postgres(url)` from postgres.js',
    );
  }
  const schemaName = options.schema ?? 'lava_webhooks';
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(schemaName)) {
    throw new TypeError(
      `postgres store: schema "${schemaName}" is not a plain identifier; use letters, digits and _ (at most 63)`,
    );
  }
  const S = quoteIdent(schemaName);
  const T = `${S}.events`;
  let closed = false;
  // Whether the last claim found fewer events than it asked for (see claim).
  let lastClaimShort = true;
  let ready: Promise<void> | null = null;

  const rows = async (runner: PostgresTransaction, text: string, params: unknown[] = []): Promise<Row[]> =>
    (await runner.unsafe(text, params)) as Row[];

  async function migrate(): Promise<void> {
    await client.begin(async (tx) => {
      // Notices such as "schema already exists" would otherwise land on the user's console.
      await rows(tx, `SET LOCAL client_min_messages = warning`);
      // Serialises every migrating instance of this schema; released at commit or rollback.
      await rows(tx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [`lava_webhooks.migrate:${schemaName}`]);
      let current = 0;
      const [found] = await rows(tx, `SELECT to_regclass($1) IS NOT NULL AS present`, [`${S}.schema_version`]);
      if (found?.present === true) {
        const [v] = await rows(tx, `SELECT coalesce(max(version), 0) AS version FROM ${S}.schema_version`);
        current = toNumber(v?.version ?? 0);
      }
      if (current > SCHEMA_VERSION) {
        throw new StoreSchemaError(
          `postgres store: schema "${schemaName}" is at version ${current} but this code knows up to ${SCHEMA_VERSION}; upgrade the receiver or point it at another schema`,
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

  // Migrates once; a failure (database down) is not remembered, so the next call tries again.
  const ensureReady = (): Promise<void> =>
    (ready ??= migrate().catch((error: unknown) => {
      ready = null;
      throw error;
    }));

  async function run<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (closed) throw new StoreUnavailableError('postgres store is closed');
    try {
      await ensureReady();
      return await fn();
    } catch (error) {
      if (error instanceof StoreSchemaError || error instanceof StoreUnavailableError) throw error;
      const message = error instanceof Error ? error.message : String(error);
      throw new StoreUnavailableError(`postgres store could not ${what}: ${message}`, { cause: error });
    }
  }

  // ---- Batched writes: inserts and completions ----
  // Batches on their way, so close() lets them finish before it ends the client.
  const sending = new Set<Promise<void>>();
  const flushes: Array<() => void> = [];

  /**
   * Queues the writes made in one turn of the event loop and sends them at the end of it, `max` to a statement, with
   * `send`, which settles each one. A batch Postgres refuses for a value in it (a NUL in a text field, say), or rolls
   * back (a deadlock with another statement holding the same rows in another order), must not fail every write in
   * it: each is sent again alone, in order (so an insert's seq keeps the order the inserts were made in), and only
   * what fails alone fails. Any other failure (the database is away) fails them all at once: trying each again would
   * only queue more work on a client that is reconnecting.
   */
  function batched<I, R>(max: number, send: (batch: Queued<I, R>[]) => Promise<void>): (item: I) => Promise<R> {
    const queue: Queued<I, R>[] = [];
    let scheduled = false;
    const flush = () => {
      scheduled = false;
      while (queue.length > 0) {
        const batch = queue.splice(0, max);
        const sent = send(batch).catch((error: unknown) => {
          if (batch.length === 1 || !retryRowByRow(error)) {
            for (const q of batch) q.reject(error);
            return;
          }
          return (async () => {
            for (const q of batch) await send([q]).catch(q.reject);
          })();
        });
        sending.add(sent);
        void sent.finally(() => sending.delete(sent));
      }
    };
    flushes.push(flush);
    return (item) => {
      if (closed) return Promise.reject(new StoreUnavailableError('postgres store is closed'));
      return new Promise<R>((resolve, reject) => {
        queue.push({ item, resolve, reject });
        if (!scheduled) {
          scheduled = true;
          afterThisTurn(flush);
        }
      });
    };
  }

  // ---- Inserts: the ack path ----
  // Inserts made in one turn of the event loop go to Postgres as one multi-row INSERT: one round trip and one commit
  // (one WAL flush) for all of them, instead of one each. Under load that is most of the database's work per event;
  // alone, an insert is still one statement, sent at the end of the turn it was made in.

  const insertSql = (rowsInBatch: number) => {
    const values: string[] = [];
    for (let i = 0; i < rowsInBatch; i++) {
      const b = i * INSERT_PARAMS;
      values.push(
        `($${b + 1}, $${b + 2}, $${b + 3}, $${b + 4}, $${b + 5}::text::jsonb, $${b + 6}, $${b + 7}, $${b + 6}, $${b + 8}, $${b + 9}, $${b + 10})`,
      );
    }
    return `INSERT INTO ${T} (key, event, customer_id, body, headers, received_at, status, next_attempt_at, last_error,
        finished_at, policy)
      VALUES ${values.join(', ')}
      ON CONFLICT (key) DO NOTHING RETURNING key AS key`;
  };
  const insertParams = (event: NewEvent): unknown[] => [
    event.key,
    event.event,
    event.customerId,
    event.body,
    JSON.stringify(event.headers),
    event.receivedAt,
    event.status,
    event.lastError ?? null,
    event.status === 'dead' ? event.receivedAt : null,
    event.policy ?? 'dedupe',
  ];

  // A record a copy of a signal may still be counted into: never claimed (a claim increments attempts, under the
  // row lock it takes, so a copy can never be counted into a run that already began). Kept in step with the
  // events_waiting_coalesce index.
  const waiting = (e: string) =>
    `${e}.coalesce_key IS NOT NULL AND ${e}.status = 'pending' AND ${e}.attempts = 0 AND ${e}.lease_owner IS NULL`;

  /**
   * One statement for a batch that carries copies of signals (a `coalesceKey`), so it commits or fails as a whole:
   * a batch retried row by row after a refused value must not count a copy twice.
   * - `w`: the copies that coalesce: pending, their key not stored yet and not earlier in the batch (a key sent
   *   again is a duplicate, not another copy);
   * - `g`: their groups by coalesce key, each led by its first copy;
   * - `c`: each group is counted into the oldest waiting record of its key. Under READ COMMITTED an UPDATE that
   *   waited for a claim's row lock checks its WHERE again on the claimed row, which no longer matches (attempts 1);
   * - `ins`: the rows that do not coalesce (plain events, dead letters), and the leader of each group nothing took,
   *   standing for its group. A copy left out of `w` as a duplicate is not inserted either.
   * Two such statements in flight at once (batches of two instances, or two turns of this one, carrying copies that
   * arrived within a round trip of each other) can both find no waiting record and each insert one: two waiting
   * records, both run. That is safe (no delivery is lost, one runs once more) and ends there: later copies are
   * counted into the older of the two. Closing it would take a lock per coalesce key in a transaction of its own.
   */
  const coalesceSql = (rowsInBatch: number) => {
    const values: string[] = [];
    for (let i = 0; i < rowsInBatch; i++) {
      const b = i * COALESCE_PARAMS;
      values.push(
        `(${i}, $${b + 1}::text, $${b + 2}::text, $${b + 3}::text, $${b + 4}::bytea, $${b + 5}::text::jsonb,
          $${b + 6}::bigint, $${b + 7}::text, $${b + 8}::text, $${b + 9}::bigint, $${b + 10}::text, $${b + 11}::text)`,
      );
    }
    return `WITH v (i, key, event, customer_id, body, headers, received_at, status, last_error, finished_at, policy, ck)
        AS (VALUES ${values.join(', ')}),
      w AS MATERIALIZED (
        SELECT v.i, v.ck FROM v
        WHERE v.ck IS NOT NULL AND v.status = 'pending'
          AND NOT EXISTS (SELECT 1 FROM v d WHERE d.key = v.key AND d.i < v.i)
          AND NOT EXISTS (SELECT 1 FROM ${T} t WHERE t.key = v.key)
      ),
      g AS MATERIALIZED (SELECT ck, count(*)::int AS n, min(i) AS first FROM w GROUP BY ck),
      c AS (
        UPDATE ${T} e SET deliveries = e.deliveries + g.n FROM g
        WHERE e.coalesce_key = g.ck AND ${waiting('e')} AND e.seq IN (
          SELECT DISTINCT ON (o.coalesce_key) o.seq FROM ${T} o
          WHERE ${waiting('o')} AND o.coalesce_key IN (SELECT ck FROM g)
          ORDER BY o.coalesce_key, o.seq
        )
        RETURNING e.key AS key, e.coalesce_key AS ck
      ),
      ins AS (
        INSERT INTO ${T} (key, event, customer_id, body, headers, received_at, status, next_attempt_at, last_error,
          finished_at, policy, coalesce_key, deliveries)
        SELECT v.key, v.event, v.customer_id, v.body, v.headers, v.received_at, v.status, v.received_at, v.last_error,
          v.finished_at, v.policy, v.ck, coalesce(g.n, 1)
        FROM v LEFT JOIN g ON g.first = v.i
        WHERE NOT (v.ck IS NOT NULL AND v.status = 'pending')
          OR (g.first IS NOT NULL AND NOT EXISTS (SELECT 1 FROM c WHERE c.ck = g.ck))
        ORDER BY v.i
        ON CONFLICT (key) DO NOTHING
        RETURNING key AS key
      )
      SELECT w.i AS i, c.key AS target, NULL::text AS key FROM w LEFT JOIN c ON c.ck = w.ck
      UNION ALL SELECT NULL::int, NULL::text, ins.key FROM ins`;
  };

  /**
   * Inserts a batch in one statement and resolves each insert: whether its row is new (a key twice: the first is),
   * or the key of the record its copy was counted into. A batch without copies of signals takes the plain INSERT.
   */
  async function insertBatch(batch: Queued<NewEvent, InsertResult>[]): Promise<void> {
    if (!batch.some((q) => q.item.coalesceKey != null)) {
      const params: unknown[] = [];
      for (const q of batch) params.push(...insertParams(q.item));
      const out = await run('insert', () => rows(client, insertSql(batch.length), params));
      const fresh = new Set(out.map((r) => String(r.key)));
      grew(fresh.size);
      for (const q of batch) q.resolve({ inserted: fresh.delete(q.item.key) });
      return;
    }
    const params: unknown[] = [];
    for (const q of batch) params.push(...insertParams(q.item), q.item.coalesceKey ?? null);
    const out = await run('insert', () => rows(client, coalesceSql(batch.length), params));
    const fresh = new Set<string>();
    // Batch index of each coalescing copy -> the key of the waiting record it was counted into, or null.
    const copies = new Map<number, string | null>();
    for (const r of out) {
      if (r.key !== null && r.key !== undefined) fresh.add(String(r.key));
      else copies.set(toNumber(r.i), r.target === null || r.target === undefined ? null : String(r.target));
    }
    grew(fresh.size);
    // Each group that nothing took is led by its first copy, inserted with the group's count.
    const leaders = new Map<string, { key: string; inserted: boolean }>();
    batch.forEach((q, i) => {
      const copy = copies.get(i);
      const ck = q.item.coalesceKey;
      if (copy === undefined || ck == null) {
        q.resolve({ inserted: fresh.delete(q.item.key) });
      } else if (copy !== null) {
        q.resolve({ inserted: false, coalescedInto: copy });
      } else {
        const leader = leaders.get(ck);
        if (leader === undefined) {
          const inserted = fresh.delete(q.item.key);
          leaders.set(ck, { key: q.item.key, inserted });
          q.resolve({ inserted });
        } else if (leader.inserted) {
          q.resolve({ inserted: false, coalescedInto: leader.key });
        } else {
          // Its leader's key was stored by another statement after this one looked: the copies it stood for are
          // recorded nowhere, so they must not be acknowledged (the sender delivers them again).
          q.reject(new StoreUnavailableError('postgres store could not insert: a concurrent insert took the key of its copy'));
        }
      }
    });
  }
  const insert = batched(MAX_INSERT_BATCH, insertBatch);

  // Copies of one signal that this instance sends go in one statement at a time: two statements in flight at once
  // would each find no waiting copy and both insert one. Copies made in the same turn share a batch (its statement
  // merges them); copies that come while that statement is on its way wait, and go together once it settled, to
  // count into its record. Copies reaching two instances at the same moment can still make two waiting records:
  // both run, none is lost.
  type Waiting = { event: NewEvent; resolve: (r: InsertResult) => void; reject: (e: unknown) => void };
  type Lane = { open: boolean; sent: Promise<InsertResult>[]; waiting: Waiting[] };
  const lanes = new Map<string, Lane>();
  function insertSignal(event: NewEvent, coalesceKey: string): Promise<InsertResult> {
    let lane = lanes.get(coalesceKey);
    if (lane && !lane.open) {
      const busy = lane;
      return new Promise((resolve, reject) => busy.waiting.push({ event, resolve, reject }));
    }
    if (!lane) {
      const opened: Lane = { open: true, sent: [], waiting: [] };
      lanes.set(coalesceKey, opened);
      // Scheduled before the insert below, so the lane closes before its batch is flushed.
      afterThisTurn(() => {
        opened.open = false;
        void Promise.allSettled(opened.sent).then(() => {
          lanes.delete(coalesceKey);
          for (const w of opened.waiting) insertSignal(w.event, coalesceKey).then(w.resolve, w.reject);
        });
      });
      lane = opened;
    }
    const sent = insert(event);
    lane.sent.push(sent);
    return sent;
  }

  // ---- Completions: the worker's commits ----
  // Like inserts, the completions made in one turn of the event loop go as one UPDATE: one round trip and one commit
  // for all of them. Each is still fenced by its own owner, and each caller hears whether its own row changed. Two
  // completion batches cannot deadlock on each other (a row matches only its lease owner's batch); another statement
  // locking the same rows, such as a bulk requeue, can, and a completion sent alone holds one row.
  type Completion = { key: string; owner: string; now: number };

  const completeSql = (rowsInBatch: number) => {
    const values: string[] = [];
    for (let i = 0; i < rowsInBatch; i++) {
      const b = i * COMPLETE_PARAMS;
      values.push(`($${b + 1}::text, $${b + 2}::text, $${b + 3}::bigint)`);
    }
    return `UPDATE ${T} e SET status = 'done', finished_at = v.now, lease_owner = NULL, lease_until = NULL
      FROM (VALUES ${values.join(', ')}) AS v(key, owner, now)
      WHERE e.key = v.key AND e.lease_owner = v.owner AND e.status IN ${OPEN}
      RETURNING e.key AS key`;
  };

  async function completeBatch(batch: Queued<Completion, boolean>[]): Promise<void> {
    const params: unknown[] = [];
    for (const { item } of batch) params.push(item.key, item.owner, item.now);
    const out = await run('complete', () => rows(client, completeSql(batch.length), params));
    const changed = new Set(out.map((r) => String(r.key)));
    // The same key twice in one batch changed its row once: the first caller completed it, as it would have alone.
    for (const q of batch) q.resolve(changed.delete(q.item.key));
  }
  const complete = batched(MAX_COMPLETE_BATCH, completeBatch);

  // ---- Planner statistics during a burst ----
  // Autovacuum analyzes a table at most once a minute, and a new one not before it has a few hundred rows. A burst
  // outruns that: with statistics from an empty table, Postgres plans the claim's walk through open events as a
  // bitmap scan that reads and sorts all of them (18 ms at 33k open events, against 1.7 ms analyzed), and the worker
  // crawls while it has the most to do (at 3k open events the first step of a claim took 2.2 ms, 0.3 ms analyzed). So
  // the store analyzes the table itself once it has grown by a fifth (and by at least ANALYZE_MIN_ROWS) since the
  // last time it did.
  let grownBy = 0;
  let analyzedAt = 0;
  let analyzing = false;
  function grew(rowsAdded: number): void {
    grownBy += rowsAdded;
    if (analyzing || grownBy < Math.max(ANALYZE_MIN_ROWS, analyzedAt / 5)) return;
    analyzing = true;
    const base = grownBy;
    void (async () => {
      try {
        // A small sample of the columns the claim filters and orders on: a few milliseconds, where a full ANALYZE
        // (30k sampled rows with their bodies) holds a connection long enough to delay the acks queued behind it.
        await client.begin(async (tx) => {
          await rows(tx, 'SET LOCAL default_statistics_target = 10');
          await rows(tx, `ANALYZE ${T} (seq, status, customer_id, next_attempt_at, lease_until, finished_at)`);
        });
        const [r] = await rows(client, `SELECT reltuples::bigint AS n FROM pg_class WHERE oid = $1::regclass`, [T]);
        analyzedAt = Math.max(0, toNumber(r?.n ?? 0));
      } catch {
        // Not the owner, or the database is away: autovacuum still gets to it; try again after more growth.
      } finally {
        grownBy -= base;
        analyzing = false;
      }
    })();
  }

  // Fenced by owner: a worker whose lease was taken over changes nothing.
  const fenced = (what: string, set: string, params: unknown[]) =>
    run(what, async () => {
      const out = await rows(
        client,
        `UPDATE ${T} SET ${set} WHERE key = $1 AND lease_owner = $2 AND status IN ${OPEN} RETURNING 1 AS ok`,
        params,
      );
      return out.length > 0;
    });

  return {
    name: DRIVER_NAME,

    insert(event: NewEvent): Promise<InsertResult> {
      return event.coalesceKey == null ? insert(event) : insertSignal(event, event.coalesceKey);
    },

    claim({ owner, limit, leaseMs, now }: ClaimOptions): Promise<EventRecord[]> {
      return run('claim', async () => {
        if (!(limit >= 1)) return [];
        const take = Math.floor(limit);
        // After a claim that found less than it wanted (a quiet worker that just finished its event), first check
        // whether anything is open at all: one indexed read instead of a transaction of four round trips. While
        // claims come back full (a backlog) that read would only add a round trip, so it is skipped.
        if (lastClaimShort && (await rows(client, `SELECT 1 FROM ${T} WHERE status IN ${OPEN} LIMIT 1`)).length === 0) {
          return [];
        }
        // A head is an open, due, unleased event with no earlier open event of its customer and no live lease in
        // its customer (a requeued older event must not start while a newer one runs). Null customer: own group.
        const head = (e: string, nowParam: string) => `
          ${e}.status IN ${OPEN} AND ${e}.next_attempt_at <= ${nowParam}
          AND (${e}.lease_until IS NULL OR ${e}.lease_until <= ${nowParam})
          AND NOT EXISTS (
            SELECT 1 FROM ${T} o
            WHERE o.customer_id = ${e}.customer_id AND o.status IN ${OPEN} AND o.seq < ${e}.seq)
          AND NOT EXISTS (
            SELECT 1 FROM ${T} o
            WHERE o.customer_id = ${e}.customer_id AND o.status IN ${OPEN} AND o.lease_until > ${nowParam})`;
        // Candidates go through a per-customer advisory lock (held to commit); try-lock never waits, so instances
        // skip each other's customers instead of blocking, and a look-ahead lets a claimer get past heads another holds.
        const lockPick = (candidates: string) => `
          WITH candidates AS MATERIALIZED (${candidates})
          SELECT seq AS seq FROM candidates
          WHERE customer_id IS NULL OR pg_try_advisory_xact_lock(hashtext($3), hashtext(customer_id))
          LIMIT $4`;
        const claimed = (await client.begin(async (tx) => {
          // 1. Heads among the oldest open events: a window of WINDOW events in seq order, so a customer with a long
          //    backlog behind a running or retrying head costs at most the window, not its whole backlog.
          const picked = await rows(
            tx,
            lockPick(`
              SELECT e.seq, e.customer_id FROM (
                SELECT seq, customer_id, status, next_attempt_at, lease_until FROM ${T}
                WHERE status IN ${OPEN} ORDER BY seq LIMIT ${WINDOW}
              ) e
              WHERE ${head('e', '$1')}
              ORDER BY e.seq LIMIT $2`),
            [now, take * 4 + 64, schemaName, take],
          );
          // 2. Too few there (the window was taken by blocked customers' backlogs, or there is little work): each
          //    customer's oldest open event, found by skipping from customer to customer through the index, and
          //    events without a customer. It costs one index probe per customer with open events.
          //    It locks only as many more customers as are still wanted, and none already picked: a customer
          //    locked here and then not claimed would be skipped by every other claimer until this one commits.
          if (picked.length < take) {
            const more = await rows(
              tx,
              lockPick(`
                WITH RECURSIVE firsts(customer_id, seq) AS (
                  -- Each step is the first entry after the previous customer in (customer_id, seq) order: the next
                  -- customer's oldest open event, one index probe each, however long any customer's backlog is.
                  (SELECT customer_id, seq FROM ${T}
                   WHERE status IN ${OPEN} AND customer_id IS NOT NULL ORDER BY customer_id, seq LIMIT 1)
                  UNION ALL
                  SELECT n.customer_id, n.seq FROM firsts CROSS JOIN LATERAL (
                    SELECT o.customer_id, o.seq FROM ${T} o
                    WHERE o.status IN ${OPEN} AND o.customer_id > firsts.customer_id
                    ORDER BY o.customer_id, o.seq LIMIT 1
                  ) n
                ),
                heads AS (
                  SELECT seq FROM firsts
                  UNION ALL
                  (SELECT o.seq FROM ${T} o WHERE o.customer_id IS NULL AND o.status IN ${OPEN}
                   ORDER BY o.seq LIMIT $2)
                )
                SELECT e.seq, e.customer_id FROM heads JOIN ${T} e ON e.seq = heads.seq
                WHERE ${head('e', '$1')} AND NOT (e.seq = ANY(string_to_array($5, ',')::bigint[]))
                ORDER BY e.seq LIMIT $2`),
              [now, take * 4 + 64, schemaName, take - picked.length, picked.map((r) => String(r.seq)).join(',')],
            );
            picked.push(...more);
          }
          if (picked.length === 0) return [];
          // 3. Re-check in a new statement, so its snapshot sees every claim committed before we got the lock:
          //    any other claim of these customers committed before it, or skips them until we commit.
          return rows(
            tx,
            `UPDATE ${T} SET lease_owner = $1, lease_until = $2, attempts = attempts + 1
             WHERE seq IN (
               SELECT c.seq FROM ${T} c
               WHERE c.seq = ANY(string_to_array($3, ',')::bigint[]) AND ${head('c', '$4')}
               FOR UPDATE SKIP LOCKED
             )
             RETURNING ${COLUMNS}`,
            [owner, now + leaseMs, picked.map((r) => String(r.seq)).join(','), now],
          );
        })) as Row[];
        lastClaimShort = claimed.length < take;
        return claimed.map(toRecord).sort((a, b) => a.seq - b.seq);
      });
    },

    renew(key, owner, leaseUntil) {
      return fenced('renew', 'lease_until = $3', [key, owner, leaseUntil]);
    },
    complete(key, owner, now): Promise<boolean> {
      return complete({ key, owner, now });
    },
    retry(key, owner, at, error) {
      return fenced(
        'retry',
        `status = 'retrying', next_attempt_at = $3, last_error = $4, lease_owner = NULL, lease_until = NULL`,
        [key, owner, at, error],
      );
    },
    deadLetter(key, owner, error, now) {
      return fenced(
        'dead-letter',
        `status = 'dead', last_error = $3, finished_at = $4, lease_owner = NULL, lease_until = NULL`,
        [key, owner, error, now],
      );
    },

    requeue(key, now) {
      return run('requeue', async () => {
        const out = await rows(
          client,
          `UPDATE ${T} SET status = 'pending', attempts = 0, next_attempt_at = $2, lease_owner = NULL,
             lease_until = NULL, last_error = NULL, finished_at = NULL
           WHERE key = $1 AND NOT tombstone RETURNING 1 AS ok`,
          [key, now],
        );
        return out.length > 0;
      });
    },

    async requeueWhere(filter: RequeueFilter, now) {
      const statuses = statusList(filter.status ?? ['dead'], EVENT_STATUSES);
      return run('requeue', async () => {
        const params: unknown[] = [now, statuses];
        // A tombstone is only a key: there is nothing left to run.
        let where = `status = ANY(string_to_array($2, ',')) AND NOT tombstone`;
        if (filter.event !== undefined) {
          params.push(filter.event);
          where += ` AND event = $3`;
        }
        const [row] = await rows(
          client,
          `WITH u AS (
             UPDATE ${T} SET status = 'pending', attempts = 0, next_attempt_at = $1, lease_owner = NULL,
               lease_until = NULL, last_error = NULL, finished_at = NULL
             WHERE ${where} RETURNING 1
           ) SELECT count(*) AS n FROM u`,
          params,
        );
        return toNumber(row?.n ?? 0);
      });
    },

    get(key) {
      return run('read', async () => {
        const [row] = await rows(client, `SELECT ${COLUMNS} FROM ${T} WHERE key = $1`, [key]);
        return row ? toRecord(row) : null;
      });
    },

    list(options: ListOptions = {}) {
      return run('list', async () => {
        const params: unknown[] = [];
        const where: string[] = [];
        const add = (clause: string, value: unknown) => {
          params.push(value);
          where.push(clause.replace('?', `$${params.length}`));
        };
        if (options.afterSeq !== undefined) add('seq > ?', options.afterSeq);
        if (options.status !== undefined) add('status = ?', options.status);
        if (options.event !== undefined) add('event = ?', options.event);
        if (options.customerId !== undefined) add('customer_id = ?', options.customerId);
        params.push(Math.max(0, Math.floor(options.limit ?? 100)));
        const out = await rows(
          client,
          `SELECT ${COLUMNS} FROM ${T} ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
           ORDER BY seq LIMIT $${params.length}`,
          params,
        );
        return out.map(toRecord);
      });
    },

    async purge({ before, status, tombstonesBefore }: PurgeOptions) {
      const statuses = statusList(status ?? ['done'], ['done', 'dead']);
      return run('purge', async () => {
        // One statement, so a purge is all or nothing. Its parts touch disjoint rows (finished `once` records,
        // other finished records, tombstones), and a record made a tombstone here waits for the next purge to go.
        const [row] = await rows(
          client,
          `WITH t AS (
             UPDATE ${T} SET tombstone = true, body = ''::bytea, headers = '{}'::jsonb, last_error = NULL
             WHERE status = ANY(string_to_array($1, ',')) AND finished_at < $2 AND NOT tombstone AND policy = 'once'
             RETURNING 1
           ), d AS (
             DELETE FROM ${T}
             WHERE status = ANY(string_to_array($1, ','))
               AND ((finished_at < $2 AND NOT tombstone AND policy <> 'once') OR (finished_at < $3 AND tombstone))
             RETURNING 1
           ) SELECT (SELECT count(*) FROM t) + (SELECT count(*) FROM d) AS n`,
          [statuses, before, tombstonesBefore ?? null],
        );
        return toNumber(row?.n ?? 0);
      });
    },

    counts(): Promise<StatusCounts> {
      return run('count', async () => {
        const [row] = await rows(
          client,
          `SELECT sum(pending) AS pending, sum(retrying) AS retrying, sum(done) AS done, sum(dead) AS dead FROM ${S}.counts`,
        );
        const c = emptyCounts();
        for (const status of Object.keys(c) as EventStatus[]) c[status] = toNumber(row?.[status] ?? 0);
        return c;
      });
    },

    // Migrates on first call, so a start-up ping reports a schema this code cannot use (StoreSchemaError).
    ping() {
      return run('ping', async () => {
        await rows(client, 'SELECT 1 AS ok');
      });
    },

    async close() {
      if (closed) return;
      // Inserts and completions already made are sent and answered before the store closes; a query the client
      // never settles (its connection ended under it) holds the close up for CLOSE_WAIT_MS at most.
      for (const flush of flushes) flush();
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.allSettled([...sending]),
        new Promise((resolve) => {
          timer = setTimeout(resolve, CLOSE_WAIT_MS);
        }),
      ]);
      clearTimeout(timer);
      closed = true;
      if (options.closeClient) await client.end?.({ timeout: 5 });
    },
  };
}
