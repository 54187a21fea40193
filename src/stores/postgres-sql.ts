// The statements of the Postgres store that are more than a line: the batched insert and completion, and the claim.
// Each builder takes the quoted table name; values always go as parameters.
import type { PostgresTransaction } from './postgres.ts';

export type Row = Record<string, unknown>;

export const rows = async (runner: PostgresTransaction, text: string, params: unknown[] = []): Promise<Row[]> =>
  (await runner.unsafe(text, params)) as Row[];

export const toNumber = (v: unknown): number => (typeof v === 'number' ? v : Number(v));

export const OPEN = `('pending', 'retrying')`;

// One-word lower-case aliases survive postgres.js column transforms such as postgres.camel.
export const COLUMNS = `seq AS seq, key AS key, event AS event, customer_id AS customer, body AS body,
  headers::text AS headers, received_at AS received, status AS status, attempts AS attempts,
  next_attempt_at AS due, lease_owner AS owner, lease_until AS until, last_error AS error,
  finished_at AS finished, policy AS policy, coalesce_key AS ck, deliveries AS deliveries, tombstone AS tombstone,
  originals AS orig`;

// Parameters per row of a batch that carries coalescing copies (Postgres allows 65 535 in one statement).
export const COALESCE_PARAMS = 12;
// Open events a claim looks through, oldest first, before it looks customer by customer instead.
const WINDOW = 1000;

// A record a copy of a signal may still be counted into: never claimed (a claim increments attempts, under the
// row lock it takes, so a copy can never be counted into a run that already began). Kept in step with the
// events_waiting_coalesce index.
const waiting = (e: string) =>
  `${e}.coalesce_key IS NOT NULL AND ${e}.status = 'pending' AND ${e}.attempts = 0 AND ${e}.lease_owner IS NULL`;

/**
 * A Postgres array literal of `values` (`{"a","b",NULL}`), sent as one text parameter and cast in the statement
 * (`$1::text::text[]`): a batch of any length then goes as the same statement text, which each connection prepares
 * and plans once, where a VALUES list of one row a batch was a new statement, planned again, for every length.
 */
export function arrayLiteral(values: readonly (string | number | null)[]): string {
  let out = '{';
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (i > 0) out += ',';
    if (v === null || v === undefined) out += 'NULL';
    else if (typeof v === 'number') out += String(v);
    else out += `"${v.replace(/["\\]/g, '\\$&')}"`;
  }
  return `${out}}`;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
type WithToHex = Uint8Array & { toHex?: () => string };

/** `bytes` as hex digits (for `decode(…, 'hex')`): the runtime's own `toHex` where it has one. */
export function hexOf(bytes: Uint8Array): string {
  const native = (bytes as WithToHex).toHex;
  if (typeof native === 'function') return native.call(bytes);
  let out = '';
  for (let i = 0; i < bytes.length; i++) out += HEX[bytes[i] as number];
  return out;
}

/** The arguments of the insert_events function after the lock space, one array each, in this order. */
export const INSERT_COLUMNS = [
  'key',
  'event',
  'customer_id',
  'body', // hex digits
  'headers', // JSON text
  'received_at',
  'status',
  'last_error',
  'finished_at',
  'policy',
  'originals',
  'ck',
  'owner', // the lease's owner, or NULL
  'until', // the lease's end, or NULL
] as const;
const BIGINT_COLUMNS = new Set(['received_at', 'finished_at', 'until']);

// What insert_events declares so that its INSERT is planned once per connection, then reused. With parameters
// (arrays here), Postgres otherwise plans a statement anew at each call while the plan for those values looks
// cheaper than the generic one, which for this one it always does, though its plan does not depend on them (each
// row probes two indexes, and the key's unique index arbitrates): under npm run bench:pg at 3,400 events/s it was
// planned at 10,029 of 11,626 calls, about 0.25 ms a plan, 60 µs of database time an event. One connection
// inserting batches of 4 spent 180-190 instead of 235-255 µs of CPU an event with this setting, one inserting one
// event at a time 540 instead of 740, and batches of 32 the same either way.
const PLANNED_ONCE = 'SET plan_cache_mode = force_generic_plan';

/**
 * `S.insert_events(lock_space, key[], event[], …)`: inserts a batch (any but one that carries copies of signals of
 * one another: coalesceSql), in batch order, and returns each new row's key and seq, and whether it was leased.
 * - A pending signal of which a copy waits is left out, and the caller sends it through coalesceSql (measured: that
 *   statement took six times the database's CPU per delivery that a plain INSERT does, though it rarely counts any).
 * - A row given a lease (see `Store.insert`) is written leased (attempts 1) when no event of its customer is open and
 *   the function got its customer's lock, the one a claim takes (lockPick), without waiting. The caller gives one
 *   only to the first pending row of each customer in the batch. In READ COMMITTED each statement of a VOLATILE
 *   function takes a new snapshot, so the INSERT, a statement after the locks, sees every lease and open event
 *   another transaction committed for those customers, and none can commit another until this one did; a customer
 *   another transaction holds (a claim, another insert) is left to a claim.
 * Both probes are scalar subqueries with LIMIT, not EXISTS: the planner turned EXISTS into one hashed subplan that
 * read every waiting record for each statement (6 ms a batch with 6,400 waiting, growing with the backlog), instead
 * of one index probe a row. The customer's probe asks for the first open event at or after the customer in
 * (customer_id, seq) order, which only events_open_customer gives without a sort, and compares its customer: asked
 * for an open event of the customer itself, where a few customers held most of the open events Postgres walked
 * events_open_seq (or the table) in seq order until one of the customer's, and walked all of it for a customer with
 * none (100,000 open events of three customers: 13 ms an insert for another customer, 0.5 for one of those three).
 */
export function insertEventsFunction(S: string): string {
  const T = `${S}.events`;
  const args = INSERT_COLUMNS.map((c) => `p_${c} ${BIGINT_COLUMNS.has(c) ? 'bigint' : 'text'}[]`).join(', ');
  const unnested = INSERT_COLUMNS.map((c) => `p_${c}`).join(', ');
  return `CREATE OR REPLACE FUNCTION ${S}.insert_events(p_lock_space text, ${args})
    RETURNS TABLE (r_key text, r_seq bigint, r_leased boolean) LANGUAGE plpgsql VOLATILE ${PLANNED_ONCE} AS $fn$
    DECLARE
      locked text[];
    BEGIN
      locked := ARRAY(
        SELECT u.c FROM unnest(p_customer_id, p_owner) AS u(c, o)
        WHERE u.o IS NOT NULL AND u.c IS NOT NULL AND pg_try_advisory_xact_lock(hashtext(p_lock_space), hashtext(u.c)));
      RETURN QUERY
      INSERT INTO ${T} AS t (key, event, customer_id, body, headers, received_at, status, next_attempt_at, last_error,
        finished_at, policy, originals, coalesce_key, attempts, lease_owner, lease_until)
      SELECT v.key, v.event, v.customer_id, decode(v.body, 'hex'), v.headers::jsonb, v.received_at, v.status,
        v.received_at, v.last_error, v.finished_at, v.policy, v.originals, v.ck, CASE WHEN l.head THEN 1 ELSE 0 END,
        CASE WHEN l.head THEN v.owner END, CASE WHEN l.head THEN v.until END
      FROM unnest(${unnested}) WITH ORDINALITY AS v (${INSERT_COLUMNS.join(', ')}, i)
      CROSS JOIN LATERAL (
        SELECT v.owner IS NOT NULL AND v.status = 'pending' AND (v.customer_id IS NULL OR (v.customer_id = ANY(locked)
          AND (SELECT o.customer_id FROM ${T} o WHERE o.status IN ${OPEN} AND (o.customer_id, o.seq) > (v.customer_id, 0)
               ORDER BY o.customer_id, o.seq LIMIT 1) IS DISTINCT FROM v.customer_id))
          AS head
        OFFSET 0
      ) l
      WHERE v.ck IS NULL OR v.status <> 'pending'
        OR (SELECT 1 FROM ${T} e WHERE e.coalesce_key = v.ck AND ${waiting('e')} LIMIT 1) IS NULL
      ORDER BY v.i
      ON CONFLICT (key) DO NOTHING
      RETURNING t.key, t.seq, t.lease_owner IS NOT NULL;
    END $fn$`;
}

/** The call of insert_events: the lock space, then one array literal (arrayLiteral) a column of INSERT_COLUMNS. */
export function insertEventsSql(S: string): string {
  const arrays = INSERT_COLUMNS.map((c, i) => `$${i + 2}::text::${BIGINT_COLUMNS.has(c) ? 'bigint' : 'text'}[]`);
  return `SELECT r_key AS key, r_seq AS seq, r_leased AS leased FROM ${S}.insert_events($1::text, ${arrays.join(', ')})`;
}

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
export function coalesceSql(T: string, rowsInBatch: number): string {
  const values: string[] = [];
  for (let i = 0; i < rowsInBatch; i++) {
    const b = i * COALESCE_PARAMS;
    values.push(
      `(${i}, $${b + 1}::text, $${b + 2}::text, $${b + 3}::text, $${b + 4}::bytea, $${b + 5}::text::jsonb,
        $${b + 6}::bigint, $${b + 7}::text, $${b + 8}::text, $${b + 9}::bigint, $${b + 10}::text, $${b + 11}::text,
        $${b + 12}::text)`,
    );
  }
  return `WITH v (i, key, event, customer_id, body, headers, received_at, status, last_error, finished_at, policy,
      originals, ck)
      AS (VALUES ${values.join(', ')}),
    w AS MATERIALIZED (
      SELECT v.i, v.ck FROM v
      WHERE v.ck IS NOT NULL AND v.status = 'pending'
        AND NOT EXISTS (SELECT 1 FROM v d WHERE d.key = v.key AND d.i < v.i)
        AND NOT EXISTS (SELECT 1 FROM ${T} t WHERE t.key = v.key)
    ),
    g AS MATERIALIZED (SELECT ck, count(*)::int AS n, min(i) AS first FROM w GROUP BY ck),
    c AS (
      -- From each group to the oldest waiting record of its key: one probe of the waiting index each, then the row
      -- by seq. The row's own test leaves out coalesce_key (its key is the group's, and never changes): with it, the
      -- planner read the whole waiting index into a hash for every statement (135 ms a batch with 6,400 waiting).
      UPDATE ${T} e SET deliveries = e.deliveries + x.n
      FROM (
        SELECT g.n, (
          SELECT o.seq FROM ${T} o WHERE o.coalesce_key = g.ck AND ${waiting('o')} ORDER BY o.seq LIMIT 1) AS seq
        FROM g
      ) x
      WHERE e.seq = x.seq AND e.status = 'pending' AND e.attempts = 0 AND e.lease_owner IS NULL
      RETURNING e.key AS key, e.coalesce_key AS ck, e.originals AS orig
    ),
    ins AS (
      INSERT INTO ${T} (key, event, customer_id, body, headers, received_at, status, next_attempt_at, last_error,
        finished_at, policy, originals, coalesce_key, deliveries)
      SELECT v.key, v.event, v.customer_id, v.body, v.headers, v.received_at, v.status, v.received_at, v.last_error,
        v.finished_at, v.policy, v.originals, v.ck, coalesce(g.n, 1)
      FROM v LEFT JOIN g ON g.first = v.i
      WHERE NOT (v.ck IS NOT NULL AND v.status = 'pending')
        OR (g.first IS NOT NULL AND NOT EXISTS (SELECT 1 FROM c WHERE c.ck = g.ck))
      ORDER BY v.i
      ON CONFLICT (key) DO NOTHING
      RETURNING key AS key
    )
    SELECT w.i AS i, c.key AS target, c.orig AS orig, NULL::text AS key FROM w LEFT JOIN c ON c.ck = w.ck
    UNION ALL SELECT NULL::int, NULL::text, NULL::text, ins.key FROM ins`;
}

/**
 * The completions of a batch, as three array parameters (keys, owners, times: arrayLiteral), returning the key and
 * owner of each that changed its row. The caller sends each (key, owner) once: a lease has one owner, so each row
 * then matches at most one completion, and which one does not depend on the plan. Planned at each call: a plan
 * made once per connection (PLANNED_ONCE) chose, on a new table, a hash join over every open event, which a backlog
 * would then make read all of it at each completion until statistics came again.
 * The open test is written as "neither done nor dead" (the same under the status CHECK), which no partial index's
 * condition follows from, so each completion is a probe of the key's index: written as an open status, it let the
 * planner hash every open event for a batch whenever the open ones looked few (3,000 read for 40 completions).
 */
export function completeSql(T: string): string {
  return `UPDATE ${T} e SET status = 'done', finished_at = v.now, lease_owner = NULL, lease_until = NULL
    FROM unnest($1::text::text[], $2::text::text[], $3::text::bigint[]) AS v(key, owner, now)
    WHERE e.key = v.key AND e.lease_owner = v.owner AND e.status NOT IN ('done', 'dead')
    RETURNING e.key AS key, v.owner AS owner`;
}

// A head is an open, due, unleased event with no earlier open event of its customer and no live lease in its
// customer (a requeued older event must not start while a newer one runs). Null customer: its own group.
// Each look at the customer is a scalar subquery whose row comparison only its own index can serve, so it is one
// probe: the customer's first open event (events_open_customer) must be this one, and the first live lease at or
// after (customer, now) (events_leased_customer) must be another customer's. Written as NOT EXISTS, they let the
// planner, whenever the last statistics counted few open events (a queue's count swings between ANALYZEs), scan
// events_open_seq whole for every row of the claim's window instead, with every index entry the updates left there:
// under a sustained backlog 28,820 buffers and 18 ms for a claim of 32 (auto_explain).
function head(T: string, e: string, nowParam: string): string {
  return `
    ${e}.status IN ${OPEN} AND ${e}.next_attempt_at <= ${nowParam}
    AND (${e}.lease_until IS NULL OR ${e}.lease_until <= ${nowParam})
    AND (${e}.customer_id IS NULL OR (
      (SELECT o.seq FROM ${T} o
       WHERE o.status IN ${OPEN} AND (o.customer_id, o.seq) >= (${e}.customer_id, 0)
       ORDER BY o.customer_id, o.seq LIMIT 1) = ${e}.seq
      AND (SELECT o.customer_id FROM ${T} o
           WHERE o.status IN ${OPEN} AND o.lease_until IS NOT NULL
             AND (o.customer_id, o.lease_until) > (${e}.customer_id, ${nowParam})
           ORDER BY o.customer_id, o.lease_until LIMIT 1) IS DISTINCT FROM ${e}.customer_id))`;
}

// Candidates go through a per-customer advisory lock (held to commit); try-lock never waits, so instances skip each
// other's customers instead of blocking, and a look-ahead lets a claimer get past heads another holds.
const lockFrom = (candidates: string) => `
  SELECT seq, customer_id FROM ${candidates}
  WHERE customer_id IS NULL OR pg_try_advisory_xact_lock(hashtext($3), hashtext(customer_id))
  LIMIT $4`;
const lockPick = (candidates: string) => `
  WITH candidates AS MATERIALIZED (${candidates})
  SELECT seq AS seq FROM (${lockFrom('candidates')}) l`;

/**
 * `columns` of the claim's window: the WINDOW oldest open events from seq `floor` on, in seq order (step 1 of
 * claimRows). `floor` (a parameter) is where the caller knows no open event to be below (see windowFloor in
 * postgres.ts): every event that finished left its entries in events_open_seq until a VACUUM, and they all sort before
 * the open ones, so a window read from the start walked them all, at every claim.
 */
const oldestOpen = (T: string, columns: string, floor: string) =>
  `SELECT ${columns} FROM ${T} WHERE status IN ${OPEN} AND seq >= ${floor} ORDER BY seq LIMIT ${WINDOW}`;
/** Whether the claim's window is full: step 2 of claimRows may then find heads beyond it. */
const windowFull = (T: string, floor: string) =>
  `EXISTS (SELECT 1 FROM ${T} WHERE status IN ${OPEN} AND seq >= ${floor} ORDER BY seq OFFSET ${WINDOW - 1} LIMIT 1)`;

/**
 * Whether a claim at `$1` (now) may find anything: some event of the claim's window (the WINDOW oldest open ones
 * from seq `$2` on) is due and not leased, or the window is full, so that step 2 of claimRows may find heads beyond
 * it. A read that stops at the first such event, and only when there is none skips to the window's last index entry,
 * instead of the claim's transaction, for a worker that finished what it had while the events still open are the
 * ones running. `$1` only filters what the window reads, so a client that prepares statements plans it once.
 */
export const claimableSql = (T: string): string =>
  `SELECT EXISTS (
       SELECT 1 FROM (${oldestOpen(T, 'next_attempt_at, lease_until', '$2')}) w
       WHERE next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until <= $1)
     ) OR ${windowFull(T, '$2')} AS worth`;

/**
 * The lowest open seq (the whole walk of events_open_seq that the window's floor spares the claims) and the highest
 * seq stored (one step to the last entry of the primary key), for windowFloor in postgres.ts.
 */
export const floorSql = (T: string): string =>
  `SELECT (SELECT seq FROM ${T} WHERE status IN ${OPEN} ORDER BY seq LIMIT 1) AS lowest,
     (SELECT max(seq) FROM ${T}) AS highest`;

/**
 * Claims up to `take` heads in one transaction of three statements, and returns the leased rows (COLUMNS).
 * `schemaName` keys the advisory locks, so two stores on two schemas of one database never skip each other.
 */
export async function claimRows(
  client: { begin(fn: (tx: PostgresTransaction) => Promise<unknown>): PromiseLike<unknown> },
  T: string,
  schemaName: string,
  claim: { owner: string; take: number; leaseUntil: number; now: number; floor: number },
): Promise<Row[]> {
  const { owner, take, leaseUntil, now, floor } = claim;
  return (await client.begin(async (tx) => {
    // 1. Heads among the oldest open events (from `floor` on): a window of WINDOW events in seq order, so a
    //    customer with a long backlog behind a running or retrying head costs at most the window, not its whole
    //    backlog. A last row (seq NULL) says, when fewer than `take` were picked, whether that window held every
    //    open event from `floor` on and every head in it was looked at (the tests are taken in that order, each
    //    only when the one before passes).
    const first = await rows(
      tx,
      `WITH candidates AS MATERIALIZED (
         SELECT e.seq, e.customer_id FROM (
           ${oldestOpen(T, 'seq, customer_id, status, next_attempt_at, lease_until', '$5')}
         ) e
         WHERE ${head(T, 'e', '$1')}
         ORDER BY e.seq LIMIT $2
       ),
       picked AS MATERIALIZED (${lockFrom('candidates')})
       SELECT seq AS seq, NULL::boolean AS whole FROM picked
       UNION ALL
       SELECT NULL, (SELECT count(*) FROM picked) < $4 AND (SELECT count(*) FROM candidates) < $2
         AND NOT ${windowFull(T, '$5')}`,
      [now, take * 4 + 64, schemaName, take, floor],
    );
    const whole = first.some((r) => r.seq === null && (r.whole === true || r.whole === 't'));
    const picked = first.filter((r) => r.seq !== null && r.seq !== undefined);
    // 2. Too few there (the window was taken by blocked customers' backlogs, or there is little work): each
    //    customer's oldest open event, found by skipping from customer to customer through the index, and
    //    events without a customer. It costs one index probe per customer with open events.
    //    It locks only as many more customers as are still wanted, and none already picked: a customer
    //    locked here and then not claimed would be skipped by every other claimer until this one commits.
    //    When step 1 saw every open event and tried every head among them, this finds none it did not: skipped
    //    (under a steady load below capacity nearly every claim is such, and this step's plan alone took about
    //    0.8 ms of the database's time).
    if (picked.length < take && !whole) {
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
          WHERE ${head(T, 'e', '$1')} AND NOT (e.seq = ANY(string_to_array($5, ',')::bigint[]))
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
         WHERE c.seq = ANY(string_to_array($3, ',')::bigint[]) AND ${head(T, 'c', '$4')}
         FOR UPDATE SKIP LOCKED
       )
       RETURNING ${COLUMNS}`,
      [owner, leaseUntil, picked.map((r) => String(r.seq)).join(','), now],
    );
  })) as Row[];
}
