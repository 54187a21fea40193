/**
 * PostgreSQL store for lava-webhooks: the durable inbox in one schema (`lava_webhooks` by default, created and
 * migrated on first use), shared safely by any number of receiver instances, serverless ones included. It imports
 * no Postgres library: pass the tagged-template client you already have, Bun's `SQL` (`Bun.sql`, `new SQL(url)`)
 * or a postgres.js `Sql` (`postgres(url)`, postgres.js 4.1 or later), as it is.
 *
 * @example
 * ```ts
 * import postgres from 'postgres';
 * import { createLavaWebhooks } from 'lava-webhooks';
 * import { postgresStore } from 'lava-webhooks/stores/postgres';
 *
 * const lava = createLavaWebhooks({
 *   secret: process.env.LAVA_WEBHOOK_SECRET,
 *   store: postgresStore({ sql: postgres(process.env.DATABASE_URL!, { max: 5 }), closeClient: true }),
 *   handlers: { 'customer.created': (event) => console.log(event.data.customer_id) },
 * });
 * ```
 *
 * @module
 */
// PostgreSQL store: the durable inbox in one schema, shared safely by any number of receiver instances.
// It takes the tagged-template client the user made (Bun's `SQL` or postgres.js) and imports neither. A postgres.js
// 3.x client is refused (isPostgresJs3): 3.x can crash the process when a connection drops.
// Schema and migrations: postgres-schema.ts; the longer statements: postgres-sql.ts; what text columns can hold:
// postgres-text.ts.
import { ConfigError, StoreUnavailableError } from '../errors.ts';
import { type Queued, groupCommit } from './group-commit.ts';
import { StoreGuard } from './guard.ts';
import { checkClaim, checkNow, listQuery, purgeQuery, requeueQuery } from './options.ts';
import { migrate } from './postgres-schema.ts';
import {
  COLUMNS,
  OPEN,
  type Row,
  claimRows,
  claimableSql,
  floorSql,
  coalesceSql,
  INSERT_COLUMNS,
  arrayLiteral,
  completeSql,
  hexOf,
  insertEventsSql,
  rows,
  toNumber,
} from './postgres-sql.ts';
import { leasedRecord } from './records.ts';
import { type StoredText, indexed, indexedOrNull, plainText, readOriginals, storedText } from './postgres-text.ts';
import {
  type ClaimOptions,
  type EventRecord,
  type EventStatus,
  type IdentityPolicy,
  type InsertLease,
  type InsertResult,
  type ListOptions,
  type NewEvent,
  type PurgeOptions,
  type RequeueFilter,
  type StatusCounts,
  type Store,
  afterThisTurn,
  emptyCounts,
} from './store.ts';

const DRIVER_NAME = 'postgres';

/** A transaction handle as both clients pass it to `begin`. */
export interface PostgresTransaction {
  unsafe(query: string, params?: unknown[]): PromiseLike<unknown>;
}

/**
 * The part of a tagged-template client the store uses. Bun's `new SQL(url)` / `Bun.sql` and postgres.js
 * `postgres(url)` (any `Sql<T>`, whatever its custom types or transforms) both fit as they are, with no cast;
 * anything else with `unsafe(text, params)` and `begin(fn)` does too. Methods, not function-valued properties, so
 * a client whose `unsafe` takes narrower parameters (postgres.js's `ParameterOrJSON[]`) still fits
 * (test/types/postgres-client.ts keeps both clients fitting).
 */
export interface PostgresClient extends PostgresTransaction {
  begin(fn: (tx: PostgresTransaction) => Promise<unknown>): PromiseLike<unknown>;
  end?(options?: { timeout?: number }): PromiseLike<unknown>;
}

export interface PostgresStoreOptions {
  /**
   * The client, e.g. `new SQL(process.env.DATABASE_URL)` on Bun or `postgres(url)` from postgres.js 4.1 or later
   * (a 3.x client is refused with ConfigError: it can crash the process when a connection drops). It stays
   * yours: `close()` does not end it unless `closeClient` is set. Column name transforms do not matter (the store
   * reads one-word aliases); int8 may come back as string, bigint or number.
   */
  sql: PostgresClient;
  /** Schema holding the store's tables, created on first use. Default `lava_webhooks`. */
  schema?: string;
  /** End the client in `close()` (for a client made only for this store). Default false. */
  closeClient?: boolean;
}

// Rows per INSERT and completions per UPDATE (Postgres allows 65 535 parameters in one statement).
const MAX_INSERT_BATCH = 256;
const MAX_COMPLETE_BATCH = 256;
/** How long close() waits for inserts and completions still in flight. */
const CLOSE_WAIT_MS = 5_000;
// Rows inserted by this instance before it refreshes the planner's statistics (see analyzer()).
const ANALYZE_MIN_ROWS = 1000;
// How often the claim's window floor is read again, and how long an insert may take from its seq to its commit and
// still be in the window at once (see windowFloor()).
const FLOOR_REFRESH_MS = 1000;
const FLOOR_HORIZON_MS = 2000;

/**
 * Whether a failed batch (a multi-row INSERT or completion UPDATE) is worth retrying one row at a time, as opposed to
 * the database not being reachable: Postgres refused it for the data it carried (SQLSTATE class 22 data exception,
 * 23 integrity violation, 54 program limit), or rolled it back (class 40: a deadlock with another instance's batch
 * holding the same keys in another order, or a serialization failure); a one-row statement holds no other row, so it
 * cannot deadlock. Bun's SQL puts the SQLSTATE in `errno`, postgres.js in `code` (postgres.js 4 also puts a
 * connection error's own code, such as CONNECTION_CLOSED, in both: no SQLSTATE); the store's own errors keep the
 * client's as their cause.
 */
function retryRowByRow(error: unknown): boolean {
  const e = (error instanceof StoreUnavailableError ? error.cause : error) as {
    code?: unknown;
    errno?: unknown;
  } | null;
  for (const v of [e?.errno, e?.code]) if (typeof v === 'string' && /^(22|23|40|54)[0-9A-Z]{3}$/.test(v)) return true;
  return false;
}

const quoteIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;

const toNullableNumber = (v: unknown): number | null => (v === null || v === undefined ? null : toNumber(v));
const toNullableString = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));

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

/** A row read with COLUMNS as a record, with the values its text columns could not hold put back. */
function toRecord(row: Row): EventRecord {
  const kept = readOriginals(row.orig);
  return {
    key: kept?.key ?? String(row.key),
    policy: row.policy as IdentityPolicy,
    coalesceKey: kept?.ck ?? toNullableString(row.ck),
    deliveries: toNumber(row.deliveries),
    // Bun and postgres.js both parse bool; a client that does not gives 't'.
    tombstone: row.tombstone === true || row.tombstone === 't',
    event: kept?.event ?? String(row.event),
    customerId: kept?.customer ?? toNullableString(row.customer),
    body: toBytes(row.body),
    // Purge takes the headers out of `originals` too when it makes a tombstone.
    headers: kept?.headers ?? (JSON.parse(String(row.headers)) as Record<string, string>),
    receivedAt: toNumber(row.received),
    status: row.status as EventStatus,
    seq: toNumber(row.seq),
    attempts: toNumber(row.attempts),
    nextAttemptAt: toNumber(row.due),
    leaseOwner: toNullableString(row.owner),
    leaseUntil: toNullableNumber(row.until),
    lastError: toNullableString(row.error),
    finishedAt: toNullableNumber(row.finished),
  };
}

/** What the store needs to send statements for a batch: its client, table, and its error handling. */
interface Context {
  client: PostgresClient;
  T: string;
  /** The schema's name, as claims key their per-customer locks with it, and the schema quoted. */
  schemaName: string;
  S: string;
  /** Runs `fn` once the schema is ready; any failure becomes StoreUnavailableError naming `operation`. */
  run<R>(operation: string, fn: () => Promise<R>): Promise<R>;
  /** Rows were inserted: the planner's statistics may want a refresh. */
  grew(rowsAdded: number): void;
}

// ---- Inserts: the ack path ----
// Inserts made in one turn of the event loop go to Postgres as one statement (a call of insert_events): one round
// trip and one commit (one WAL flush) for all of them, instead of one each. Under load that is most of the database's work per event;
// alone, an insert is still one statement, sent at the end of the turn it was made in.

/** An insert on its way: the event, its text values as the columns hold them, and the lease it was given. */
interface PendingInsert {
  event: NewEvent;
  text: StoredText;
  lease: InsertLease | null;
}

function pendingInsert(event: NewEvent, lease: InsertLease | null): PendingInsert {
  const text = storedText(
    event.key,
    event.customerId,
    event.event,
    event.coalesceKey ?? null,
    event.headers,
    event.lastError ?? null,
  );
  return { event, text, lease };
}

/** An insert's column values in INSERT_COLUMNS order up to `originals`, its body as given (bytes or hex digits). */
const insertParams = <B>({ event, text }: PendingInsert, body: B): (string | number | null | B)[] => [
  text.key,
  text.event,
  text.customer,
  body,
  text.headers,
  event.receivedAt,
  event.status,
  text.lastError,
  event.status === 'dead' ? event.receivedAt : null,
  event.policy ?? 'dedupe',
  text.originals,
];

/**
 * Inserts a batch in one statement (the schema's insert_events: insertEventsFunction) and resolves each insert:
 * whether its row is new (a key twice: the first is), whether it was leased, or, through coalesceBatch, the key of
 * the record its copy was counted into. A lease is offered to the first pending insert of each customer given one;
 * the function takes it only with the customer's lock (see insertEventsFunction), so two inserts of a customer in
 * two transactions, which would each find the other's row not yet committed, never both lease one.
 */
async function insertBatch(ctx: Context, batch: Queued<PendingInsert, InsertResult>[]): Promise<void> {
  if (repeatsCoalesceKey(batch)) return coalesceBatch(ctx, batch);
  const offers = leaseOffers(batch);
  const columns = INSERT_COLUMNS.map(() => [] as (string | number | null)[]);
  batch.forEach(({ item }, i) => {
    const lease = offers[i] ?? null;
    const row = [
      ...insertParams(item, hexOf(item.event.body)),
      item.text.ck,
      lease?.owner ?? null,
      lease?.leaseUntil ?? null,
    ];
    for (let c = 0; c < row.length; c++) columns[c]?.push(row[c] ?? null);
  });
  const params = [ctx.schemaName, ...columns.map(arrayLiteral)];
  const out = await ctx.run('insert', () => rows(ctx.client, insertEventsSql(ctx.S), params));
  const fresh = new Map(out.map((r) => [String(r.key), r]));
  ctx.grew(fresh.size);
  const left: Queued<PendingInsert, InsertResult>[] = [];
  batch.forEach((q, i) => {
    const { event, text } = q.item;
    const row = fresh.get(text.key);
    const lease = offers[i] ?? null;
    if (row !== undefined) {
      fresh.delete(text.key);
      const leased = lease !== null && (row.leased === true || row.leased === 't');
      q.resolve(
        leased ? { inserted: true, leased: leasedRecord(event, toNumber(row.seq), lease) } : { inserted: true },
      );
    } else if (text.ck !== null && event.status === 'pending') {
      // A copy of it waits, or its key is stored already: the statement that counts copies tells which.
      left.push(q);
    } else q.resolve({ inserted: false });
  });
  if (left.length > 0) await coalesceBatch(ctx, left);
}

/**
 * The lease each insert of a batch may take (see `Store.insert`): only the first pending insert of each customer
 * can be its customer's head (a later one is behind it); each event without a customer is its own group.
 */
function leaseOffers(batch: Queued<PendingInsert, InsertResult>[]): (InsertLease | null)[] {
  const seen = new Set<string>();
  return batch.map(({ item }) => {
    if (item.event.status !== 'pending') return null;
    const customer = item.text.customer;
    if (customer !== null) {
      if (seen.has(customer)) return null;
      seen.add(customer);
    }
    return item.lease;
  });
}

/** Whether two pending signals of the batch are copies of each other (the statement that counts copies merges them). */
function repeatsCoalesceKey(batch: Queued<PendingInsert, InsertResult>[]): boolean {
  const seen = new Set<string>();
  for (const { item } of batch) {
    const ck = item.text.ck;
    if (ck === null || item.event.status !== 'pending') continue;
    if (seen.has(ck)) return true;
    seen.add(ck);
  }
  return false;
}

/** The batch through the one statement that counts copies of signals into their waiting records (coalesceSql). */
async function coalesceBatch(ctx: Context, batch: Queued<PendingInsert, InsertResult>[]): Promise<void> {
  const params: unknown[] = [];
  for (const q of batch) params.push(...insertParams(q.item, q.item.event.body), q.item.text.ck);
  const out = await ctx.run('insert', () => rows(ctx.client, coalesceSql(ctx.T, batch.length), params));
  const fresh = new Set<string>();
  // Batch index of each coalescing copy -> the key of the waiting record it was counted into, or null.
  const copies = new Map<number, string | null>();
  for (const r of out) {
    if (r.key !== null && r.key !== undefined) fresh.add(String(r.key));
    else {
      const target = toNullableString(r.target);
      copies.set(toNumber(r.i), target === null ? null : (readOriginals(r.orig)?.key ?? target));
    }
  }
  ctx.grew(fresh.size);
  // Each group that nothing took is led by its first copy, inserted with the group's count.
  const leaders = new Map<string, { key: string; inserted: boolean }>();
  batch.forEach((q, i) => {
    const copy = copies.get(i);
    const ck = q.item.text.ck;
    if (copy === undefined || ck === null) {
      q.resolve({ inserted: fresh.delete(q.item.text.key) });
    } else if (copy !== null) {
      q.resolve({ inserted: false, coalescedInto: copy });
    } else {
      const leader = leaders.get(ck);
      if (leader === undefined) {
        const inserted = fresh.delete(q.item.text.key);
        leaders.set(ck, { key: q.item.event.key, inserted });
        q.resolve({ inserted });
      } else if (leader.inserted) {
        q.resolve({ inserted: false, coalescedInto: leader.key });
      } else {
        // Its leader's key was stored by another statement after this one looked: the copies it stood for are
        // recorded nowhere, so they must not be acknowledged (the sender delivers them again).
        q.reject(
          new StoreUnavailableError('postgres store: insert() failed: a concurrent insert took the key of its copy', {
            store: DRIVER_NAME,
            operation: 'insert',
          }),
        );
      }
    }
  });
}

/**
 * Copies of one signal that this instance sends go in one statement at a time: two statements in flight at once
 * would each find no waiting copy and both insert one. Copies made in the same turn share a batch (its statement
 * merges them); copies that come while that statement is on its way wait, and go together once it settled, to
 * count into its record. Copies reaching two instances at the same moment can still make two waiting records:
 * both run, none is lost.
 */
function signalLanes(send: (item: PendingInsert) => Promise<InsertResult>) {
  type Waiting = { item: PendingInsert; resolve: (r: InsertResult) => void; reject: (e: unknown) => void };
  type Lane = { open: boolean; sent: Promise<InsertResult>[]; waiting: Waiting[] };
  const lanes = new Map<string, Lane>();
  const insertSignal = (item: PendingInsert, coalesceKey: string): Promise<InsertResult> => {
    let lane = lanes.get(coalesceKey);
    if (lane && !lane.open) {
      const busy = lane;
      return new Promise((resolve, reject) => busy.waiting.push({ item, resolve, reject }));
    }
    if (!lane) {
      const opened: Lane = { open: true, sent: [], waiting: [] };
      lanes.set(coalesceKey, opened);
      // Scheduled before the insert below, so the lane closes before its batch is flushed.
      afterThisTurn(() => {
        opened.open = false;
        void Promise.allSettled(opened.sent).then(() => {
          lanes.delete(coalesceKey);
          for (const w of opened.waiting) insertSignal(w.item, coalesceKey).then(w.resolve, w.reject);
        });
      });
      lane = opened;
    }
    const sent = send(item);
    lane.sent.push(sent);
    return sent;
  };
  return insertSignal;
}

// ---- Completions: the worker's commits ----
// Like inserts, the completions made in one turn of the event loop go as one UPDATE: one round trip and one commit
// for all of them. Each is still fenced by its own owner, and each caller hears whether its own row changed. Two
// completion batches cannot deadlock on each other (a row matches only its lease owner's batch); another statement
// locking the same rows, such as a bulk requeue, can, and a completion sent alone holds one row.
interface Completion {
  /** The key as its column holds it. */
  key: string;
  owner: string;
  now: number;
}

async function completeBatch(ctx: Context, batch: Queued<Completion, boolean>[]): Promise<void> {
  // Each (key, owner) once, in batch order: a later copy in the same batch hears false, as it would after the first.
  const id = (key: string, owner: string) => `${owner.length}:${owner}${key}`;
  const sent = new Map<string, Completion>();
  for (const { item } of batch) {
    const k = id(item.key, item.owner);
    if (!sent.has(k)) sent.set(k, item);
  }
  const unique = [...sent.values()];
  const params = [
    arrayLiteral(unique.map((c) => c.key)),
    arrayLiteral(unique.map((c) => c.owner)),
    arrayLiteral(unique.map((c) => c.now)),
  ];
  const out = await ctx.run('complete', () => rows(ctx.client, completeSql(ctx.T), params));
  const changed = new Set(out.map((r) => id(String(r.key), String(r.owner))));
  // Each caller hears whether its own completion changed the row: the first of a (key, owner) twice in one batch did.
  for (const q of batch) q.resolve(changed.delete(id(q.item.key, q.item.owner)));
}

/**
 * Where the claim's window starts (`floor` in claimRows and claimableSql). The window is the oldest open events in
 * seq order, read from events_open_seq; but every event that finished left its entries there until a VACUUM reclaims
 * them, and they sort before the open ones, so a window read from the start walked all of them at every claim and
 * every check before one: 111 pages after 20,000 events, a tenth of a millisecond a scan per thousand pages however
 * few are open, and growing with every event until autovacuum got to the table (on a table of millions of rows, once
 * every million events or so; never where it is off).
 * The floor is read again at most once a second (FLOOR_REFRESH_MS), in the claim that comes next, with one walk: the
 * lowest open seq, and the highest seq stored. An event below it can only be one not yet committed when it was read,
 * or one made open again since (a requeue):
 * - an insert takes its seq when it starts, above every seq handed out before, and so above every seq stored then:
 *   the floor is never above the highest seq stored FLOOR_HORIZON_MS before (an insert taking longer than that to
 *   commit, or a requeue by another process, is found at the next reading, or by step 2 of a claim, which walks
 *   customer by customer and knows no floor);
 * - a requeue by this store puts the floor back to 0 at once (and a reading under way when it did is not used).
 * Order is kept either way: whether an event is its customer's head is asked of the customer's own index.
 */
function windowFloor(client: PostgresClient, T: string) {
  let floor = 0;
  let readAt = Number.NEGATIVE_INFINITY;
  let resets = 0;
  // The highest seq stored at each reading (performance.now(), which no clock step moves), oldest first; the readings
  // older than FLOOR_HORIZON_MS but the last of them are dropped.
  const stored: { at: number; seq: number }[] = [];
  return {
    /** The floor for a claim now, read again first when it is due. */
    async get(): Promise<number> {
      const at = performance.now();
      if (at - readAt < FLOOR_REFRESH_MS) return floor;
      readAt = at;
      const before = resets;
      let r: Row | undefined;
      try {
        [r] = await rows(client, floorSql(T));
      } catch (error) {
        readAt = Number.NEGATIVE_INFINITY;
        throw error;
      }
      if (resets !== before) return 0;
      stored.push({ at, seq: toNullableNumber(r?.highest) ?? 0 });
      while (stored.length > 1 && (stored[1] as { at: number }).at <= at - FLOOR_HORIZON_MS) stored.shift();
      const old = stored[0] as { at: number; seq: number };
      const lowest = toNullableNumber(r?.lowest) ?? Number.POSITIVE_INFINITY;
      floor = old.at <= at - FLOOR_HORIZON_MS ? Math.min(lowest, old.seq + 1) : 0;
      return floor;
    },
    /** An event of this store was made open again (a requeue): the window starts from the beginning until the next
     * reading. */
    reset(): void {
      resets++;
      floor = 0;
      readAt = Number.NEGATIVE_INFINITY;
    },
  };
}

/**
 * Planner statistics during a burst. Autovacuum analyzes a table at most once a minute, and a new one not before it
 * has a few hundred rows. A burst outruns that: with statistics from an empty table, Postgres plans the claim's walk
 * through open events as a bitmap scan that reads and sorts all of them (18 ms at 33k open events, against 1.7 ms
 * analyzed), and the worker crawls while it has the most to do (at 3k open events the first step of a claim took
 * 2.2 ms, 0.3 ms analyzed). So the store analyzes the table itself once it has grown by a fifth (and by at least
 * ANALYZE_MIN_ROWS) since the last time it did.
 */
function analyzer(client: PostgresClient, T: string): (rowsAdded: number) => void {
  let grownBy = 0;
  let analyzedAt = 0;
  let analyzing = false;
  return (rowsAdded) => {
    grownBy += rowsAdded;
    if (analyzing || grownBy < Math.max(ANALYZE_MIN_ROWS, analyzedAt / 5)) return;
    analyzing = true;
    const base = grownBy;
    void (async () => {
      try {
        // A small sample of the columns the claim filters and orders on: a few milliseconds, where a full ANALYZE
        // (30k sampled rows with their bodies) holds a connection long enough to delay the acks queued behind it.
        // Status and lease_until keep no statistics (schema 8): what matters here is the table's size.
        await client.begin(async (tx) => {
          await rows(tx, 'SET LOCAL default_statistics_target = 10');
          await rows(tx, `ANALYZE ${T} (seq, customer_id, next_attempt_at, finished_at)`);
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
  };
}

/**
 * Whether `client` is a postgres.js client older than 4: one with postgres.js's own members (`largeObject`, and
 * `options.shared` and `options.max_pipeline`, which Bun's SQL has none of) but without `batch`, which 4.x added
 * (4.1.0 is the first 4.x release). postgres.js 3.x (3.4.9, the last one, included) can end the whole process with an
 * uncaught TypeError when a connection drops while a small write is queued (porsager/postgres#1208); 4.1 cannot.
 */
function isPostgresJs3(client: unknown): boolean {
  const c = client as {
    largeObject?: unknown;
    batch?: unknown;
    options?: { shared?: unknown; max_pipeline?: unknown } | null;
  };
  return (
    typeof c.largeObject === 'function' &&
    typeof c.options?.shared === 'object' &&
    c.options.shared !== null &&
    'max_pipeline' in c.options &&
    typeof c.batch !== 'function'
  );
}

/** Checks the options; throws ConfigError saying how to fix them. */
function checkOptions(options: PostgresStoreOptions): { client: PostgresClient; schemaName: string } {
  const client = options?.sql;
  if (!client || typeof client.unsafe !== 'function' || typeof client.begin !== 'function') {
    throw new ConfigError(
      'postgres store: options.sql must be a tagged-template client, e.g. `new SQL(url)` from "bun" or `postgres(url)` from postgres.js',
    );
  }
  if (isPostgresJs3(client)) {
    throw new ConfigError(
      "postgres store: options.sql is a postgres.js 3.x client, which can crash the whole process with an uncaught TypeError (Cannot read properties of null (reading 'write')) when a connection drops while a write is queued (porsager/postgres#1208); install postgres.js 4.1 or later (`npm install postgres@^4.1.0`), or use Bun's SQL on Bun",
    );
  }
  const schemaName = options.schema ?? 'lava_webhooks';
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(schemaName)) {
    throw new ConfigError(
      `postgres store: schema "${schemaName}" is not a plain identifier; use letters, digits and _ (at most 63)`,
    );
  }
  return { client, schemaName };
}

/** Statuses (already checked) as the text `string_to_array($n, ',')` reads. */
const statusList = (statuses: readonly string[]) => statuses.join(',');

export function postgresStore(options: PostgresStoreOptions): Store {
  const { client, schemaName } = checkOptions(options);
  const S = quoteIdent(schemaName);
  const T = `${S}.events`;
  const guard = new StoreGuard(DRIVER_NAME, `schema ${schemaName}`);
  // Whether the last claim found fewer events than it asked for (see claim).
  let lastClaimShort = true;
  const floor = windowFloor(client, T);
  let ready: Promise<void> | null = null;

  // Migrates once; a failure (database down) is not remembered, so the next call tries again.
  const ensureReady = (): Promise<void> =>
    (ready ??= migrate(client, schemaName, S).catch((error: unknown) => {
      ready = null;
      throw error;
    }));

  async function run<R>(operation: string, fn: () => Promise<R>): Promise<R> {
    guard.check(operation);
    try {
      await ensureReady();
      return await fn();
    } catch (error) {
      throw guard.fail(operation, error);
    }
  }
  const ctx: Context = { client, T, schemaName, S, run, grew: analyzer(client, T) };

  /**
   * Batched writes. A batch Postgres refuses for a value in it (a number out of range, say), or rolls back (a
   * deadlock with another statement holding the same rows in another order), must not fail every write in it: each
   * is sent again alone, in order (so an insert's seq keeps the order the inserts were made in), and only what fails
   * alone fails. Any other failure (the database is away) fails them all at once: trying each again would only queue
   * more work on a client that is reconnecting.
   */
  const inserts = groupCommit<PendingInsert, InsertResult>({
    max: MAX_INSERT_BATCH,
    send: (batch) => insertBatch(ctx, batch),
    retryAlone: retryRowByRow,
  });
  const completions = groupCommit<Completion, boolean>({
    max: MAX_COMPLETE_BATCH,
    send: (batch) => completeBatch(ctx, batch),
    retryAlone: retryRowByRow,
  });
  const insertSignal = signalLanes((item) => inserts.add(item));

  // Fenced by owner: a worker whose lease was taken over changes nothing.
  const fenced = (operation: string, set: string, params: unknown[]) =>
    run(operation, async () => {
      const out = await rows(
        client,
        `UPDATE ${T} SET ${set} WHERE key = $1 AND lease_owner = $2 AND status IN ${OPEN} RETURNING 1 AS ok`,
        params,
      );
      return out.length > 0;
    });

  return {
    name: DRIVER_NAME,
    capabilities: { sync: false, batching: true, leaseOnInsert: true },

    insert(event: NewEvent, lease?: InsertLease): Promise<InsertResult> {
      if (guard.closed) return Promise.reject(guard.closedError('insert'));
      const item = pendingInsert(event, lease ?? null);
      return item.text.ck === null ? inserts.add(item) : insertSignal(item, item.text.ck);
    },

    async claim(options: ClaimOptions): Promise<EventRecord[]> {
      guard.check('claim');
      checkClaim(DRIVER_NAME, options);
      const { owner, limit, leaseMs, now } = options;
      return run('claim', async () => {
        // After a claim that found less than it wanted (a quiet worker that just finished its event), first check
        // whether anything may be claimable (claimableSql): one read instead of a transaction of four round trips.
        // While claims come back full (a backlog) that read would only add a round trip, so it is skipped.
        const from = await floor.get();
        if (lastClaimShort) {
          const [check] = await rows(client, claimableSql(T), [now, from]);
          if (check?.worth === false || check?.worth === 'f') return [];
        }
        const claimed = await claimRows(client, T, schemaName, {
          owner,
          take: limit,
          leaseUntil: now + leaseMs,
          now,
          floor: from,
        });
        lastClaimShort = claimed.length < limit;
        return claimed.map(toRecord).sort((a, b) => a.seq - b.seq);
      });
    },

    renew(key, owner, leaseUntil) {
      return fenced('renew', 'lease_until = $3', [indexed(key), owner, leaseUntil]);
    },
    complete(key, owner, now): Promise<boolean> {
      if (guard.closed) return Promise.reject(guard.closedError('complete'));
      return completions.add({ key: indexed(key), owner, now });
    },
    retry(key, owner, at, error) {
      return fenced(
        'retry',
        `status = 'retrying', next_attempt_at = $3, last_error = $4, lease_owner = NULL, lease_until = NULL`,
        [indexed(key), owner, at, plainText(error)],
      );
    },
    deadLetter(key, owner, error, now) {
      return fenced(
        'deadLetter',
        `status = 'dead', last_error = $3, finished_at = $4, lease_owner = NULL, lease_until = NULL`,
        [indexed(key), owner, plainText(error), now],
      );
    },

    async requeue(key, now) {
      guard.check('requeue');
      checkNow(DRIVER_NAME, 'requeue', now);
      return run('requeue', async () => {
        const out = await rows(
          client,
          `UPDATE ${T} SET status = 'pending', attempts = 0, next_attempt_at = $2, lease_owner = NULL,
             lease_until = NULL, last_error = NULL, finished_at = NULL
           WHERE key = $1 AND NOT tombstone RETURNING 1 AS ok`,
          [indexed(key), now],
        );
        if (out.length > 0) floor.reset();
        return out.length > 0;
      });
    },

    async requeueWhere(filter: RequeueFilter, now) {
      guard.check('requeueWhere');
      const q = requeueQuery(DRIVER_NAME, filter);
      checkNow(DRIVER_NAME, 'requeueWhere', now);
      return run('requeueWhere', async () => {
        // A tombstone is only a key: there is nothing left to run.
        const [row] = await rows(
          client,
          `WITH u AS (
             UPDATE ${T} SET status = 'pending', attempts = 0, next_attempt_at = $1, lease_owner = NULL,
               lease_until = NULL, last_error = NULL, finished_at = NULL
             WHERE status = ANY(string_to_array($2, ',')) AND NOT tombstone AND ($3::text IS NULL OR event = $3)
             RETURNING 1
           ) SELECT count(*) AS n FROM u`,
          [now, statusList(q.statuses), indexedOrNull(q.event)],
        );
        const n = toNumber(row?.n ?? 0);
        if (n > 0) floor.reset();
        return n;
      });
    },

    get(key) {
      return run('get', async () => {
        const [row] = await rows(client, `SELECT ${COLUMNS} FROM ${T} WHERE key = $1`, [indexed(key)]);
        return row ? toRecord(row) : null;
      });
    },

    async list(options?: ListOptions) {
      guard.check('list');
      const q = listQuery(DRIVER_NAME, options);
      return run('list', async () => {
        // Both seq bounds are always given (options.ts fills in the open end), so either order seeks by seq.
        const out = await rows(
          client,
          `SELECT ${COLUMNS} FROM ${T}
           WHERE seq > $1 AND seq < $6 AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR event = $3)
             AND ($4::text IS NULL OR customer_id = $4) AND ($7::float8 IS NULL OR received_at > $7)
             AND ($8::float8 IS NULL OR received_at < $8)
           ORDER BY seq ${q.order === 'desc' ? 'DESC' : 'ASC'} LIMIT $5`,
          [
            q.afterSeq,
            q.status,
            indexedOrNull(q.event),
            indexedOrNull(q.customerId),
            q.limit,
            q.beforeSeq,
            q.receivedAfter,
            q.receivedBefore,
          ],
        );
        return out.map(toRecord);
      });
    },

    async purge(options: PurgeOptions) {
      guard.check('purge');
      const q = purgeQuery(DRIVER_NAME, options);
      return run('purge', async () => {
        // One statement, so a purge is all or nothing. Its parts touch disjoint rows (finished `once` records,
        // other finished records, tombstones), and a record made a tombstone here waits for the next purge to go.
        const [row] = await rows(
          client,
          `WITH t AS (
             UPDATE ${T} SET tombstone = true, body = ''::bytea, headers = '{}'::jsonb, last_error = NULL,
               originals = CASE WHEN originals IS NULL THEN NULL ELSE (originals::jsonb - 'headers')::text END
             WHERE status = ANY(string_to_array($1, ',')) AND finished_at < $2 AND NOT tombstone AND policy = 'once'
             RETURNING 1
           ), d AS (
             DELETE FROM ${T}
             WHERE status = ANY(string_to_array($1, ','))
               AND ((finished_at < $2 AND NOT tombstone AND policy <> 'once') OR (finished_at < $3 AND tombstone))
             RETURNING 1
           ) SELECT (SELECT count(*) FROM t) + (SELECT count(*) FROM d) AS n`,
          [statusList(q.statuses), q.before, q.tombstonesBefore],
        );
        return toNumber(row?.n ?? 0);
      });
    },

    counts(): Promise<StatusCounts> {
      return run('counts', async () => {
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
      if (guard.closed) return;
      // Inserts and completions already made are sent and answered before the store closes; a query the client
      // never settles (its connection ended under it) holds the close up for CLOSE_WAIT_MS at most.
      inserts.flush();
      completions.flush();
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.all([inserts.idle(), completions.idle()]),
        new Promise((resolve) => {
          timer = setTimeout(resolve, CLOSE_WAIT_MS);
        }),
      ]);
      clearTimeout(timer);
      guard.close();
      if (options.closeClient) await client.end?.({ timeout: 5 });
    },
  };
}
