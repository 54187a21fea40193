// PostgreSQL store: the contract suite plus what only a shared database has to get right (migrations racing,
// several instances claiming at once, connection loss). Each run works in schemas of its own.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MIGRATIONS, SCHEMA_VERSION } from '../../src/stores/postgres-schema.ts';
import { type PostgresTransaction, postgresStore } from '../../src/stores/postgres.ts';
import {
  type EventRecord,
  type InsertResult,
  type NewEvent,
  type Store,
  StoreSchemaError,
  StoreUnavailableError,
} from '../../src/stores/store.ts';
import { ConfigError } from '../../src/errors.ts';
import { type TestClient, openPg } from '../helpers/pg.ts';
import { newEvent, storeContract } from './contract.ts';

const opened = await openPg();
const pg = opened.pg;
const skip = opened.reason ?? false;
const label = pg ? `postgres (${pg.library})` : 'postgres';
const T0 = 1_700_000_000_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
// A receivedAt no bigint column can hold: the one value left that makes Postgres refuse an insert's row.
const REFUSED_TIME = 1e30;

/** Schema `S` (quoted) as a receiver of schema `version` left it: the migrations up to it, each recorded. */
async function schemaAtVersion(S: string, version: number): Promise<void> {
  await pg!.sql.begin(async (tx) => {
    await tx.unsafe(`CREATE SCHEMA ${S}`);
    await tx.unsafe(`CREATE TABLE ${S}.schema_version (version integer PRIMARY KEY, applied_at bigint NOT NULL)`);
    for (let v = 1; v <= version; v++) {
      for (const statement of MIGRATIONS[v]!(S)) await tx.unsafe(statement);
      await tx.unsafe(`INSERT INTO ${S}.schema_version VALUES (${v}, 0)`);
    }
  });
}
const scalar = async (text: string, params: unknown[] = []): Promise<unknown> => {
  const rows = (await pg!.sql.unsafe(text, params)) as Array<Record<string, unknown>>;
  return rows[0] ? Object.values(rows[0])[0] : undefined;
};

if (!pg) {
  console.log(`[skip] ${label} store tests: ${skip}`);
}

/**
 * `figure`, an SQL expression read beside pg_stat_user_tables' row of schema `S`'s events table, once that row's
 * `counter` shows at least `atLeast`. A backend reports its statistics when a transaction of its own ends (at most once
 * a second, else after 10 s idle), so they are read on the connection that did the work, and waited for.
 */
async function statOnceCounted(
  one: TestClient,
  S: string,
  counter: 'n_tup_ins' | 'n_tup_upd',
  atLeast: number,
  figure: string,
): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const [t] = (await one.unsafe(
      `SELECT ${counter}::int AS counted, (${figure})::int AS figure
       FROM pg_stat_user_tables WHERE relid = '${S}.events'::regclass`,
    )) as Array<{ counted: number; figure: number }>;
    if (t && t.counted >= atLeast) return t.figure;
    await sleep(50);
  }
  throw new Error(`the statistics never showed ${atLeast} in ${counter}`);
}

/**
 * `count` events written into schema `S`'s table by one statement, outside the store (as a backlog, or an older
 * build, would have left them): keys `prefix`1…`prefix``count`, customer `customerPrefix` + (g % `customers`), received
 * and due at T0 + `from` + g, in `status` (a done one finished then).
 */
async function bulkEvents(
  sql: TestClient,
  S: string,
  e: {
    prefix: string;
    count: number;
    customers: number;
    status: 'pending' | 'done';
    customerPrefix?: string;
    from?: number;
  },
): Promise<void> {
  const at = `${T0 + (e.from ?? 0)} + g`;
  const done = e.status === 'done';
  await sql.unsafe(
    `INSERT INTO ${S}.events (key, event, customer_id, body, headers, received_at, status, next_attempt_at
       ${done ? ', finished_at' : ''})
     SELECT '${e.prefix}' || g, 'customer.created', '${e.customerPrefix ?? 'c'}' || (g % ${e.customers}),
       '\\x7b7d'::bytea, '{}'::jsonb, ${at}, '${e.status}', ${at} ${done ? `, ${at}` : ''}
     FROM generate_series(1, ${e.count}) g`,
  );
}

/**
 * A store on a fresh schema over a connection of its own (`one`), so that the statistics views read on it show what
 * this backend did (see statOnceCounted). The schema is made before it returns.
 */
async function storeOnOneConnection() {
  const schema = pg!.schema();
  const one = await pg!.client({ max: 1 });
  const s = postgresStore({ sql: one, schema });
  await s.ping();
  return { S: `"${schema}"`, schema, one, s };
}

/** The run's client, recording the text of every statement sent outside a transaction. */
function countingClient() {
  const statements: string[] = [];
  const counting = {
    unsafe: (text: string, params?: unknown[]) => {
      statements.push(text);
      return pg!.sql.unsafe(text, params);
    },
    begin: (fn: (tx: PostgresTransaction) => Promise<unknown>) => pg!.sql.begin(fn),
  };
  return { statements, counting };
}

// Declared before the contract suite, whose teardown drops the run's schemas and closes the clients.
describe(`${label} store`, { skip }, () => {
  test('postgresStore() migrates once when several instances start together on one schema', async () => {
    for (let round = 0; round < 4; round++) {
      const schema = pg!.schema();
      const clients = await Promise.all([1, 2, 3, 4].map(() => pg!.client()));
      const stores = clients.map((sql) => postgresStore({ sql, schema }));
      await Promise.all(stores.map((s) => s.ping()));
      assert.deepEqual(
        ((await pg!.sql.unsafe(`SELECT version FROM "${schema}".schema_version`)) as Array<{ version: number }>).map(
          (r) => Number(r.version),
        ),
        Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1),
      );
      // Every instance sees the others' writes: one inbox, not four.
      await stores[0]!.insert(newEvent('k', 'c', T0));
      assert.equal((await stores[3]!.get('k'))?.key, 'k');
      // A later start on the migrated schema changes nothing.
      const again = postgresStore({ sql: pg!.sql, schema });
      await again.ping();
      assert.equal(Number(await scalar(`SELECT count(*) FROM "${schema}".schema_version`)), SCHEMA_VERSION);
      for (const s of [...stores, again]) await s.close();
      for (const c of clients) await c.end({ timeout: 2 });
    }
  });

  test('postgresStore() refuses a schema written by a newer version and changes nothing', async () => {
    const schema = pg!.schema();
    await pg!.sql.unsafe(`CREATE SCHEMA "${schema}"`);
    await pg!.sql.unsafe(`CREATE TABLE "${schema}".schema_version (version integer PRIMARY KEY, applied_at bigint)`);
    await pg!.sql.unsafe(`INSERT INTO "${schema}".schema_version VALUES (${SCHEMA_VERSION + 1}, 0)`);
    const s = postgresStore({ sql: pg!.sql, schema });
    await assert.rejects(
      async () => s.ping(),
      (e: unknown) => {
        assert.ok(e instanceof StoreSchemaError);
        assert.match(e.message, new RegExp(`version ${SCHEMA_VERSION + 1}.*knows up to ${SCHEMA_VERSION}`));
        return true;
      },
    );
    await assert.rejects(async () => s.insert(newEvent('k', 'c', T0)), StoreSchemaError);
    assert.equal(await scalar(`SELECT to_regclass($1)::text`, [`"${schema}".events`]), null);
    await s.close();

    // The same once a store has already created version 1 and a newer receiver moved it on.
    const upgraded = pg!.schema();
    const first = postgresStore({ sql: pg!.sql, schema: upgraded });
    await first.insert(newEvent('k', 'c', T0));
    await first.close();
    await pg!.sql.unsafe(`INSERT INTO "${upgraded}".schema_version VALUES (${SCHEMA_VERSION + 1}, 0)`);
    const old = postgresStore({ sql: pg!.sql, schema: upgraded });
    await assert.rejects(async () => old.get('k'), StoreSchemaError);
    await old.close();
  });

  test('postgresStore() rejects a schema name that is not a plain identifier, and a missing client, with ConfigError', () => {
    const config = (pattern: RegExp) => (e: unknown) => e instanceof ConfigError && pattern.test(e.message);
    assert.throws(() => postgresStore({ sql: pg!.sql, schema: 'a"; drop table x; --' }), config(/plain identifier/));
    assert.throws(() => postgresStore({ sql: {} as never }), config(/tagged-template client/));
  });

  test('insert() stores every byte value of a sub-array view exactly, and seq is a number', async () => {
    const s = postgresStore({ sql: pg!.sql, schema: pg!.schema() });
    const backing = new Uint8Array(300);
    for (let i = 0; i < backing.length; i++) backing[i] = (i * 7 + 3) & 0xff;
    const body = backing.subarray(17, 17 + 256);
    await s.insert(newEvent('bytes', 'c', T0, { body, headers: { 'x-note': 'naïve ✓', 'content-type': 'a/b' } }));
    await s.insert(newEvent('empty', 'c', T0 + 1, { body: new Uint8Array(0) }));
    const r = await s.get('bytes');
    assert.ok(r);
    assert.deepEqual([...r.body], [...body]);
    assert.equal(r.body.constructor, Uint8Array);
    assert.deepEqual(r.headers, { 'x-note': 'naïve ✓', 'content-type': 'a/b' });
    assert.equal(typeof r.seq, 'number');
    assert.equal(r.receivedAt, T0);
    assert.equal(r.nextAttemptAt, T0);
    assert.equal((await s.get('empty'))?.body.length, 0);
    await s.close();
  });

  test('inserts made together share one statement, keep their order, and each learns whether it was new', async () => {
    const { statements, counting } = countingClient();
    const s = postgresStore({ sql: counting, schema: pg!.schema() });
    await s.insert(newEvent('old', 'c1', T0)); // migrates, then one insert
    statements.length = 0;
    const keys = Array.from({ length: 40 }, (_, i) => `k${i}`);
    const results = await Promise.all([
      ...keys.map((k, i) => s.insert(newEvent(k, `c${i % 3}`, T0 + i))),
      s.insert(newEvent('old', 'c1', T0)), // already stored
      s.insert(newEvent('k7', 'c1', T0)), // the same key twice in one batch: the first one is new
    ]);
    assert.deepEqual(
      statements.map((t) => /\.insert_events\(/.test(t)),
      [true],
      'one statement for the 42 inserts',
    );
    assert.deepEqual(
      results.map((r) => r.inserted),
      [...keys.map(() => true), false, false],
    );
    // seq follows the order the inserts were made in.
    const listed = (await s.list({ limit: 100 })).map((r) => r.key);
    assert.deepEqual(listed, ['old', ...keys]);
    assert.equal((await s.get('k7'))?.customerId, 'c1');
    await s.close();
  });

  test('completions made together share one UPDATE, and each is fenced by its own lease', async () => {
    const { statements, counting } = countingClient();
    const s = postgresStore({ sql: counting, schema: pg!.schema() });
    const keys = Array.from({ length: 30 }, (_, i) => `k${i}`);
    await Promise.all(keys.map((k, i) => s.insert(newEvent(k, `c${i}`, T0 + i))));
    assert.equal((await s.claim({ owner: 'w', limit: 30, leaseMs: 60_000, now: T0 + 100 })).length, 30);
    statements.length = 0;
    const results = await Promise.all([
      s.complete('k9', 'intruder', T0 + 199), // not its lease, made before the one that holds it
      ...keys.map((k, i) => s.complete(k, 'w', T0 + 200 + i)),
      s.complete('k3', 'intruder', T0 + 300), // not its lease
      s.complete('k5', 'w', T0 + 301), // the same completion twice in one batch: the first one did it
      s.complete('missing', 'w', T0 + 302),
    ]);
    assert.equal(statements.filter((t) => t.includes(`status = 'done'`)).length, 1, 'one statement for 34');
    assert.deepEqual(results, [false, ...keys.map(() => true), false, false, false]);
    const stored = await s.list({ limit: 100 });
    assert.deepEqual(
      stored.map((r) => [r.key, r.status, r.finishedAt, r.leaseOwner]),
      keys.map((k, i) => [k, 'done', T0 + 200 + i, null]),
    );
    assert.deepEqual(await s.counts(), { pending: 0, retrying: 0, done: 30, dead: 0 });
    assert.equal(await s.complete('k0', 'w', T0 + 400), false, 'a finished event cannot be completed again');
    await s.close();
  });

  test('a completion Postgres refuses fails alone: the rest of its batch is retried one by one and completes', async () => {
    const s = postgresStore({ sql: pg!.sql, schema: pg!.schema() });
    await Promise.all(['a', 'b'].map((k, i) => s.insert(newEvent(k, k, T0 + i))));
    await s.claim({ owner: 'w', limit: 2, leaseMs: 60_000, now: T0 + 10 });
    // Postgres text cannot hold a NUL character: the whole statement is refused (SQLSTATE 22021) before any row
    // changes, so the batch is tried again one completion at a time and only that one fails.
    const outcomes = await Promise.allSettled([
      s.complete('a', 'w', T0 + 20),
      s.complete('a', 'w\u0000x', T0 + 21),
      s.complete('b', 'w', T0 + 22),
    ]);
    assert.deepEqual(outcomes[0], { status: 'fulfilled', value: true });
    assert.equal(outcomes[1]?.status, 'rejected');
    const failed = (outcomes[1] as PromiseRejectedResult).reason;
    assert.ok(failed instanceof StoreUnavailableError, `got ${failed}`);
    assert.deepEqual(outcomes[2], { status: 'fulfilled', value: true });
    assert.deepEqual(
      (await s.list()).map((r) => [r.key, r.status, r.finishedAt, r.leaseOwner]),
      [
        ['a', 'done', T0 + 20, null],
        ['b', 'done', T0 + 22, null],
      ],
    );
    await s.close();
  });

  test('close() waits a bounded time for a query its client never answers', async () => {
    const schema = pg!.schema();
    // A client that loses the INSERTs (as postgres.js can when a connection ends under a queued query).
    const losing = {
      unsafe: (text: string, params?: unknown[]) =>
        /\.insert_events\(/.test(text) ? new Promise<never>(() => {}) : pg!.sql.unsafe(text, params),
      begin: (fn: (tx: PostgresTransaction) => Promise<unknown>) => pg!.sql.begin(fn),
    };
    const s = postgresStore({ sql: losing, schema });
    await s.ping();
    void s.insert(newEvent('lost', 'c', T0));
    const started = Date.now();
    await s.close();
    const ms = Date.now() - started;
    assert.ok(ms >= 4_000 && ms < 8_000, `close() gave up after about 5 s (${ms} ms)`);
  });

  test('close() sends the completions already made before it closes', async () => {
    const schema = pg!.schema();
    const s = postgresStore({ sql: pg!.sql, schema });
    await s.insert(newEvent('x', 'c', T0));
    await s.claim({ owner: 'w', limit: 1, leaseMs: 60_000, now: T0 + 1 });
    const completing = s.complete('x', 'w', T0 + 2);
    await s.close();
    assert.equal(await completing, true);
    await assert.rejects(async () => s.complete('x', 'w', T0 + 3), StoreUnavailableError);
    const again = postgresStore({ sql: pg!.sql, schema });
    assert.equal((await again.get('x'))?.status, 'done');
    await again.close();
  });

  test('a burst of inserts gets the table analyzed, so claims are planned for its real size', async () => {
    const schema = pg!.schema();
    const s = postgresStore({ sql: pg!.sql, schema });
    const lastAnalyze = async () =>
      scalar(`SELECT last_analyze FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'events'`, [schema]);
    await s.insert(newEvent('first', 'c0', T0));
    assert.equal(await lastAnalyze(), null, 'a new table is not analyzed by the store');
    const burst = async (from: number, to: number) => {
      for (let b = from; b < to; b += 500) {
        await Promise.all(
          Array.from({ length: 500 }, (_, j) => s.insert(newEvent(`k${b + j}`, `c${(b + j) % 50}`, T0 + b + j))),
        );
      }
    };
    const until = async <T>(what: () => Promise<T>, ok: (v: T) => boolean): Promise<T> => {
      let v = await what();
      for (let i = 0; i < 100 && !ok(v); i++) {
        await sleep(50);
        v = await what();
      }
      return v;
    };
    // Early: a never-analyzed table is planned as if it held a handful of open events (a bitmap scan and a sort of
    // all of them per claim), so the first refresh comes after a thousand rows, not after autovacuum's minute.
    await burst(0, 1500);
    assert.notEqual(await until(lastAnalyze, (v) => v !== null), null, 'analyzed after 1,500 new rows');
    await burst(1500, 6000);
    const reltuples = async () =>
      Number(
        (
          (await pg!.sql.unsafe(`SELECT reltuples::bigint AS n FROM pg_class WHERE oid = $1::regclass`, [
            `"${schema}".events`,
          ])) as Array<{ n: unknown }>
        )[0]?.n,
      );
    const planned = await until(reltuples, (n) => n >= 5000);
    assert.ok(planned >= 5000, `the planner counts about 6000 rows after the burst, got ${planned}`);
    // Claims work as before on the analyzed table.
    const claimed = await s.claim({ owner: 'w', limit: 60, leaseMs: 60_000, now: T0 + 10_000 });
    assert.equal(claimed.length, 50, 'one head per customer');
    await s.close();
  });

  // What counts() must agree with: a full count of the table (what it ran before the counters existed).
  const counted = async (schema: string) => {
    const c: Record<string, number> = { pending: 0, retrying: 0, done: 0, dead: 0 };
    for (const row of (await pg!.sql.unsafe(
      `SELECT status, count(*) AS n FROM "${schema}".events GROUP BY status`,
    )) as Array<{ status: string; n: unknown }>) {
      c[row.status] = Number(row.n);
    }
    return c;
  };

  test('counts() agrees with a full count through every kind of write, from several connections at once', async () => {
    const schema = pg!.schema();
    const clients = await Promise.all([1, 2, 3].map(() => pg!.client()));
    const stores = clients.map((sql) => postgresStore({ sql, schema }));
    const [a, b, c] = stores as [
      ReturnType<typeof postgresStore>,
      ReturnType<typeof postgresStore>,
      ReturnType<typeof postgresStore>,
    ];
    await Promise.all(stores.map((s) => s.ping()));
    const agree = async (what: string) => assert.deepEqual(await a.counts(), await counted(schema), what);
    await agree('empty');
    // Batched inserts from three connections at once, with keys sent twice (once new, once a duplicate).
    await Promise.all(
      stores.map((s, i) =>
        Promise.all(
          Array.from({ length: 120 }, (_, j) => s.insert(newEvent(`k${(i * 80 + j) % 300}`, `c${j % 7}`, T0 + j))),
        ),
      ),
    );
    await c.insert(newEvent('bad', 'c1', T0, { status: 'dead', lastError: 'invalid' }));
    await agree('after inserts');
    // Rows written by hand, outside the store, are counted too (one statement, many rows).
    await pg!.sql.unsafe(
      `INSERT INTO "${schema}".events (key, event, customer_id, body, headers, received_at, status, next_attempt_at)
       SELECT 'raw' || g, 'customer.created', NULL, '\\x7b7d'::bytea, '{}'::jsonb, ${T0}, 'pending', ${T0}
       FROM generate_series(1, 40) g`,
    );
    await agree('after a raw insert');
    // Claims and renewals change no status; completions, retries and dead letters do, from every connection.
    const now = T0 + 1000;
    const claimed = await Promise.all(
      stores.map((s, i) => s.claim({ owner: `w${i}`, limit: 30, leaseMs: 60_000, now })),
    );
    assert.ok(claimed.flat().length >= 30);
    await agree('after claims');
    await Promise.all(
      claimed.flatMap((records, i) =>
        records.map((r, j) => {
          const s = stores[i]!;
          if (j % 3 === 0) return s.retry(r.key, `w${i}`, now + 5000, 'again');
          if (j % 3 === 1) return s.deadLetter(r.key, `w${i}`, 'no', now);
          return Promise.resolve(s.renew(r.key, `w${i}`, now + 90_000)).then(() => s.complete(r.key, `w${i}`, now));
        }),
      ),
    );
    await agree('after finishing');
    // Finishing again (a lost lease) changes nothing.
    const first = claimed.flat()[0]!;
    await a.complete(first.key, 'w0', now);
    await agree('after a fenced-off completion');
    assert.ok((await b.requeueWhere({ status: ['dead'] }, now + 1)) > 0);
    await c.requeue(first.key, now + 2);
    await agree('after requeues');
    const more = await b.claim({ owner: 'z', limit: 10, leaseMs: 60_000, now: now + 10_000 });
    for (const r of more) await b.complete(r.key, 'z', now + 10);
    assert.ok((await c.purge({ before: now + 100 })) > 0);
    await agree('after a purge');
    // A status change by hand, many rows in one statement, some of which do not change status.
    await pg!.sql.unsafe(
      `UPDATE "${schema}".events SET status = CASE WHEN seq % 2 = 0 THEN 'dead' ELSE status END WHERE key LIKE 'raw%'`,
    );
    await agree('after a raw update');
    const totals = await a.counts();
    assert.ok(totals.pending > 0 && totals.retrying > 0, JSON.stringify(totals));
    for (const s of stores) await s.close();
    for (const sql of clients) await sql.end({ timeout: 2 });
  });

  test('a version-1 schema is upgraded in place and its existing rows are counted once', async () => {
    const schema = pg!.schema();
    const s1 = postgresStore({ sql: pg!.sql, schema });
    for (let i = 0; i < 50; i++) await s1.insert(newEvent(`k${i}`, `c${i % 5}`, T0 + i));
    const [r] = await s1.claim({ owner: 'w', limit: 1, leaseMs: 60_000, now: T0 + 100 });
    await s1.complete(r!.key, 'w', T0 + 100);
    await s1.close();
    // Back to what version 1 left: no counters, no triggers.
    const S = `"${schema}"`;
    await pg!.sql.unsafe(`DROP TABLE ${S}.counts`);
    for (const t of ['events_count_inserted', 'events_count_deleted', 'events_count_updated']) {
      await pg!.sql.unsafe(`DROP TRIGGER ${t} ON ${S}.events`);
    }
    await pg!.sql.unsafe(`DELETE FROM ${S}.schema_version WHERE version > 1`);
    const s2 = postgresStore({ sql: pg!.sql, schema });
    assert.deepEqual(await s2.counts(), { pending: 49, retrying: 0, done: 1, dead: 0 });
    assert.equal(Number(await scalar(`SELECT max(version) FROM ${S}.schema_version`)), SCHEMA_VERSION);
    await s2.insert(newEvent('after', null, T0 + 200));
    assert.deepEqual(await s2.counts(), await counted(schema));
    await s2.close();
  });

  test('a row Postgres refuses fails only its own insert, not the others made with it', async () => {
    const s = postgresStore({ sql: pg!.sql, schema: pg!.schema() });
    await s.ping();
    // A time no bigint column can hold (nothing intake makes, but a value Postgres refuses): this insert fails alone.
    const outcomes = await Promise.allSettled([
      s.insert(newEvent('a', 'c1', T0)),
      s.insert(newEvent('bad', 'c3', REFUSED_TIME)),
      s.insert(newEvent('b', 'c2', T0 + 2)),
    ]);
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
    const failed = outcomes[1] as PromiseRejectedResult;
    assert.ok(failed.reason instanceof StoreUnavailableError, `got ${failed.reason}`);
    assert.deepEqual(
      (await s.list()).map((r) => r.key),
      ['a', 'b'],
    );
    await s.close();
  });

  test('two instances inserting the same keys in opposite orders at once: no deadlock reaches a delivery', async () => {
    // Each instance sends its batch as one multi-row INSERT; with the keys in opposite orders the two statements
    // meet in the middle, each waiting for a key the other has inserted, and Postgres aborts one as a deadlock.
    // Every delivery must still be answered, and each key recorded exactly once.
    const schema = pg!.schema();
    const [c1, c2] = await Promise.all([pg!.client({ max: 1 }), pg!.client({ max: 1 })]);
    const a = postgresStore({ sql: c1, schema });
    const b = postgresStore({ sql: c2, schema });
    await a.ping();
    await b.ping();
    for (let round = 0; round < 4; round++) {
      const keys = Array.from({ length: 256 }, (_, i) => `r${round}-k${i}`);
      const fromA = keys.map((k, i) => a.insert(newEvent(k, `c${i % 7}`, T0 + i)));
      const fromB = [...keys].reverse().map((k, i) => b.insert(newEvent(k, `c${i % 7}`, T0 + i)));
      const outcomes = await Promise.allSettled([...fromA, ...fromB]);
      const failed = outcomes.filter((o) => o.status === 'rejected') as PromiseRejectedResult[];
      assert.equal(failed.length, 0, `every insert answered; first failure: ${failed[0]?.reason}`);
      const answers = outcomes.map((o) => (o as PromiseFulfilledResult<{ inserted: boolean }>).value.inserted);
      assert.equal(answers.filter(Boolean).length, keys.length, 'each key is new exactly once across both');
    }
    assert.equal((await a.list({ limit: 5000 })).length, 4 * 256);
    await a.close();
    await b.close();
  });

  test('close() sends the inserts already made before it closes', async () => {
    const schema = pg!.schema();
    const s = postgresStore({ sql: pg!.sql, schema });
    await s.ping();
    const inserting = [s.insert(newEvent('x', 'c', T0)), s.insert(newEvent('y', 'c', T0 + 1))];
    await s.close();
    assert.deepEqual(
      (await Promise.all(inserting)).map((r) => r.inserted),
      [true, true],
    );
    await assert.rejects(async () => s.insert(newEvent('z', 'c', T0)), StoreUnavailableError);
    const again = postgresStore({ sql: pg!.sql, schema });
    assert.deepEqual(
      (await again.list()).map((r) => r.key),
      ['x', 'y'],
    );
    await again.close();
  });

  test('insert() rejects with StoreUnavailableError when the database cannot be reached', async () => {
    const unreachable = await pg!.client({ url: 'postgres://postgres@127.0.0.1:1/test' });
    const s = postgresStore({ sql: unreachable, schema: pg!.schema() });
    await assert.rejects(
      async () => s.insert(newEvent('k', 'c', T0)),
      (e: unknown) => {
        assert.ok(e instanceof StoreUnavailableError);
        assert.ok(e.cause, 'the client error is kept as the cause');
        return true;
      },
    );
    await assert.rejects(async () => s.ping(), StoreUnavailableError);
    // Inserts made together fail together, each with the store's error.
    const together = await Promise.allSettled([1, 2, 3].map((i) => s.insert(newEvent(`t${i}`, 'c', T0))));
    for (const o of together) {
      assert.equal(o.status, 'rejected');
      assert.ok((o as PromiseRejectedResult).reason instanceof StoreUnavailableError);
    }
    await unreachable.end({ timeout: 1 });

    // A client the user has closed behaves the same.
    const closed = await pg!.client();
    const s2 = postgresStore({ sql: closed, schema: pg!.schema() });
    await s2.insert(newEvent('k', 'c', T0));
    await closed.end({ timeout: 2 });
    await assert.rejects(async () => s2.insert(newEvent('k2', 'c', T0)), StoreUnavailableError);
    await assert.rejects(async () => s2.claim({ owner: 'w', limit: 1, leaseMs: 1, now: T0 }), StoreUnavailableError);
  });

  test('the store works again by itself after the server drops its connection', async () => {
    const sql = await pg!.client({ max: 1 });
    const s = postgresStore({ sql, schema: pg!.schema() });
    await s.insert(newEvent('before', 'c', T0));
    const pid = await (async () => {
      const rows = (await sql.unsafe('SELECT pg_backend_pid() AS pid')) as Array<{ pid: number }>;
      return Number(rows[0]!.pid);
    })();
    await pg!.sql.unsafe('SELECT pg_terminate_backend($1::int)', [pid]);
    let recovered = false;
    for (let i = 0; i < 50 && !recovered; i++) {
      try {
        await s.insert(newEvent('after', 'c', T0));
        recovered = true;
      } catch (e) {
        assert.ok(e instanceof StoreUnavailableError, `a lost connection is StoreUnavailableError, got ${e}`);
        await sleep(100);
      }
    }
    assert.ok(recovered, 'the store answers again within 5 s');
    assert.deepEqual(
      (await s.list()).map((r) => r.key),
      ['before', 'after'],
    );
    await s.close();
    await sql.end({ timeout: 1 });
  });

  test('close() leaves the user’s client open unless closeClient is set', async () => {
    const sql = await pg!.client();
    const schema = pg!.schema();
    const s = postgresStore({ sql, schema });
    await s.ping();
    await s.close();
    await assert.rejects(async () => s.ping(), StoreUnavailableError);
    await sql.unsafe('SELECT 1');
    const owned = postgresStore({ sql, schema, closeClient: true });
    await owned.ping();
    await owned.close();
    await assert.rejects(async () => sql.unsafe('SELECT 1'));
  });

  test('claim() skips a customer that another instance is claiming at that moment', async () => {
    const schema = pg!.schema();
    const other = await pg!.client();
    const s = postgresStore({ sql: other, schema });
    await s.insert(newEvent('a1', 'A', T0));
    await s.insert(newEvent('b1', 'B', T0 + 1));
    // Hold customer A's claim lock in an open transaction, as an instance between its two claim statements does.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let locked!: () => void;
    const isLocked = new Promise<void>((resolve) => (locked = resolve));
    const tx = pg!.sql.begin(async (t) => {
      await t.unsafe('SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))', [schema, 'A']);
      locked();
      await held;
    });
    await isLocked;
    try {
      const got = await s.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 + 10 });
      assert.deepEqual(
        got.map((r) => r.key),
        ['b1'],
      );
    } finally {
      release();
      await tx;
    }
    const later = await s.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 + 10 });
    assert.deepEqual(
      later.map((r) => r.key),
      ['a1'],
    );
    await s.close();
    await other.end({ timeout: 2 });
  });

  test('claim() asks no more of the database than what is open can give', async () => {
    // Every statement, those of the claim's transaction too.
    const statements: string[] = [];
    const sql = {
      unsafe: (text: string, params?: unknown[]) => {
        statements.push(text);
        return pg!.sql.unsafe(text, params);
      },
      begin: (fn: (tx: PostgresTransaction) => Promise<unknown>) =>
        pg!.sql.begin((tx) =>
          fn({
            unsafe: (text: string, params?: unknown[]) => {
              statements.push(text);
              return tx.unsafe(text, params);
            },
          } as unknown as PostgresTransaction),
        ),
    };
    const s = postgresStore({ sql, schema: pg!.schema() });
    for (const [i, customer] of ['a', 'b', 'a'].entries()) await s.insert(newEvent(`e${i}`, customer, T0 + i));
    statements.length = 0;
    // The window holds every open event: its heads are all there is, and the customer-by-customer search is skipped.
    const first = await s.claim({ owner: 'w', limit: 10, leaseMs: 60_000, now: T0 + 10 });
    assert.deepEqual(
      first.map((r) => r.key),
      ['e0', 'e1'],
    );
    assert.equal(statements.filter((t) => t.includes('WITH RECURSIVE')).length, 0, statements.join('\n---\n'));
    assert.ok(
      statements.some((t) => t.includes('FOR UPDATE SKIP LOCKED')),
      'the heads were leased',
    );
    // Nothing claimable now (two leased, the third behind a leased head, due): the check finds e2, so the claim runs
    // and comes back empty, again without the search.
    statements.length = 0;
    assert.deepEqual(await s.claim({ owner: 'w', limit: 10, leaseMs: 60_000, now: T0 + 20 }), []);
    assert.equal(statements.filter((t) => t.includes('WITH RECURSIVE')).length, 0);
    // Once every open event is leased, one read answers and no transaction starts.
    await s.complete('e1', 'w', T0 + 30);
    await s.complete('e0', 'w', T0 + 30);
    const [e2] = await s.claim({ owner: 'w', limit: 10, leaseMs: 60_000, now: T0 + 40 });
    assert.equal(e2?.key, 'e2');
    statements.length = 0;
    assert.deepEqual(await s.claim({ owner: 'w', limit: 10, leaseMs: 60_000, now: T0 + 50 }), []);
    assert.equal(statements.length, 1, statements.join('\n---\n'));
    assert.match(statements[0]!, /AS worth/);
    // A lease that ran out makes its event claimable again: the read says so, and the claim takes it over.
    const [again] = await s.claim({ owner: 'x', limit: 10, leaseMs: 60_000, now: T0 + 40 + 60_000 });
    assert.equal(again?.key, 'e2');
    await s.close();
  });

  test('an insert for a customer with nothing open reads no other customer’s open events, however many', async () => {
    // One connection for everything here: a backend reports its table statistics when a transaction of its own ends
    // (at most once a second, else after 10 s idle), so the reads below must run where the inserts did.
    const { S, one, s } = await storeOnOneConnection();
    // A backlog held by three customers: 20,000 open events, analyzed, as after a handler outage.
    await bulkEvents(one, S, { prefix: 'b', count: 20_000, customers: 3, customerPrefix: 'big', status: 'pending' });
    await one.unsafe(`ANALYZE ${S}.events`);
    // What the events table and its seq-ordered index of open events have been read for so far, once the counters
    // show `inserted` rows.
    const readsAfter = (inserted: number) =>
      statOnceCounted(
        one,
        S,
        'n_tup_ins',
        inserted,
        `coalesce(seq_tup_read, 0)
           + (SELECT idx_tup_read FROM pg_stat_user_indexes WHERE indexrelid = '${S}.events_open_seq'::regclass)`,
      );
    const before = await readsAfter(20_000);
    const lease = { owner: 'w', leaseUntil: T0 + 60_000 };
    const quiet = await s.insert(newEvent('quiet', 'small', T0 + 30_000), lease);
    assert.ok(quiet.leased, 'nothing of its customer is open: leased at its insert');
    assert.ok((await readsAfter(20_001)) - before < 100, 'the insert read the other customers’ open events');
    const busy = await s.insert(newEvent('busy', 'big1', T0 + 30_001), lease);
    assert.equal(busy.inserted, true);
    assert.equal(busy.leased, undefined, 'its customer has open events: left to a claim');
    await s.close();
    await one.end({ timeout: 2 });
  });

  test('a claim and its completions over a backlog the last statistics did not see read their own rows, not every open event', async () => {
    // One connection, so that the statistics views below show what this backend read (see the test above).
    const { S, one, s } = await storeOnOneConnection();
    // A quiet spell analyzed: 2,000 events, every one done. Then a backlog the statistics never saw: 3,000 open
    // events of 300 customers.
    await bulkEvents(one, S, { prefix: 'd', count: 2000, customers: 300, status: 'done' });
    await one.unsafe(`ANALYZE ${S}.events`);
    await bulkEvents(one, S, { prefix: 'b', count: 3000, customers: 300, status: 'pending', from: 3000 });
    // Index entries and table rows read so far, once the counters show `updated` row updates.
    const readsAfter = (updated: number) =>
      statOnceCounted(
        one,
        S,
        'n_tup_upd',
        updated,
        `coalesce(seq_tup_read, 0)
           + (SELECT sum(idx_tup_read) FROM pg_stat_user_indexes WHERE relid = '${S}.events'::regclass)`,
      );
    const before = await readsAfter(0);
    const claimed = await s.claim({ owner: 'w', limit: 8, leaseMs: 60_000, now: T0 + 10_000 });
    assert.deepEqual(
      claimed.map((r) => r.key),
      ['b1', 'b2', 'b3', 'b4', 'b5', 'b6', 'b7', 'b8'],
    );
    const read = (await readsAfter(8)) - before;
    // Each head costs a few entries (its customer's first open event, its leases); every open event once per head
    // would be tens of thousands.
    assert.ok(read < 500, `the claim read ${read} index entries and rows`);
    // Their completions, one batch: a probe of the key's index each, not every open event hashed.
    const after = await readsAfter(8);
    const done = await Promise.all(claimed.map((r) => s.complete(r.key, 'w', T0 + 10_001)));
    assert.deepEqual(
      done,
      claimed.map(() => true),
    );
    const completing = (await readsAfter(16)) - after;
    assert.ok(completing < 500, `the completions read ${completing} index entries and rows`);
    await s.close();
    await one.end({ timeout: 2 });
  });

  test('claims read the window from the lowest open event, not through the entries finished events left', async () => {
    // One connection, so that the statistics views below show what this backend read (see the tests above).
    const { S, schema, one, s } = await storeOnOneConnection();
    // 20,000 events that ran: each left its entry in the seq-ordered index of open events, until a VACUUM (none here).
    await bulkEvents(one, S, { prefix: 'd', count: 20_000, customers: 300, status: 'pending' });
    await one.unsafe(`UPDATE ${S}.events SET status = 'done', finished_at = ${T0} + 30000`);
    // The floor is read at the first claim; the highest seq handed out then bounds it once two seconds passed.
    assert.deepEqual(await s.claim({ owner: 'w', limit: 1, leaseMs: 60_000, now: T0 + 40_000 }), []);
    await sleep(2100);
    assert.deepEqual(await s.claim({ owner: 'w', limit: 1, leaseMs: 60_000, now: T0 + 40_000 }), []);
    await s.insert(newEvent('new', 'c1', T0 + 40_000));
    // Pages of events_open_seq read so far, once the counters show `updated` row updates.
    const pages = (updated: number) =>
      statOnceCounted(
        one,
        S,
        'n_tup_upd',
        updated,
        `(SELECT idx_blks_hit + idx_blks_read FROM pg_statio_user_indexes
          WHERE indexrelid = '${S}.events_open_seq'::regclass)`,
      );
    const before = await pages(20_000);
    const [claimed] = await s.claim({ owner: 'w', limit: 1, leaseMs: 60_000, now: T0 + 40_001 });
    assert.equal(claimed?.key, 'new');
    const read = (await pages(20_001)) - before;
    assert.ok(read < 20, `the claim read ${read} pages of events_open_seq`);
    // A requeue made here is claimable at once, though its seq is below the floor.
    await s.complete('new', 'w', T0 + 40_002);
    assert.equal(await s.requeue('d7', T0 + 40_003), true);
    assert.deepEqual(
      (await s.claim({ owner: 'w', limit: 5, leaseMs: 60_000, now: T0 + 40_004 })).map((r) => r.key),
      ['d7'],
    );
    await s.complete('d7', 'w', T0 + 40_005);
    // One made by another process (the CLI, another instance) is found at the next reading of the floor, within a
    // second and a bit.
    const other = postgresStore({ sql: pg!.sql, schema });
    assert.equal(await other.requeue('d9', T0 + 40_006), true);
    await other.close();
    let found: string[] = [];
    for (let i = 0; i < 30 && found.length === 0; i++) {
      found = (await s.claim({ owner: 'w', limit: 5, leaseMs: 60_000, now: T0 + 40_007 })).map((r) => r.key);
      if (found.length === 0) await sleep(100);
    }
    assert.deepEqual(found, ['d9']);
    await s.close();
    await one.end({ timeout: 2 });
  });

  test('a version-7 schema is upgraded: status and lease_until lose their statistics and gather none', async () => {
    const schema = pg!.schema();
    const S = `"${schema}"`;
    await schemaAtVersion(S, 7);
    await bulkEvents(pg!.sql, S, { prefix: 'd', count: 500, customers: 7, status: 'done' });
    await pg!.sql.unsafe(
      `INSERT INTO ${S}.events (key, event, customer_id, body, headers, received_at, status, next_attempt_at,
         lease_owner, lease_until, attempts)
       VALUES ('held', 'customer.created', 'c1', '\\x7b7d'::bytea, '{}'::jsonb, ${T0}, 'pending', ${T0}, 'w', ${T0 + 60_000}, 1)`,
    );
    await pg!.sql.unsafe(`ANALYZE ${S}.events`);
    const gathered = async () =>
      (
        (await pg!.sql.unsafe(
          `SELECT attname FROM pg_stats WHERE schemaname = $1 AND tablename = 'events'
             AND attname IN ('status', 'lease_until', 'customer_id') ORDER BY attname`,
          [schema],
        )) as Array<{ attname: string }>
      ).map((r) => r.attname);
    const indexes = async () =>
      (
        (await pg!.sql.unsafe(
          `SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'events' ORDER BY indexname`,
          [schema],
        )) as Array<{ indexname: string }>
      ).map((r) => r.indexname);
    assert.deepEqual(await gathered(), ['customer_id', 'lease_until', 'status']);
    const before = await indexes();
    const s = postgresStore({ sql: pg!.sql, schema });
    assert.equal(await s.complete('held', 'w', T0 + 1000), true, 'a lease taken before the upgrade ends after it');
    assert.equal(Number(await scalar(`SELECT max(version) FROM ${S}.schema_version`)), SCHEMA_VERSION);
    assert.deepEqual(await gathered(), ['customer_id']);
    assert.deepEqual(await indexes(), before, 'the indexes are rebuilt, all of them');
    await pg!.sql.unsafe(`ANALYZE ${S}.events`);
    assert.deepEqual(await gathered(), ['customer_id'], 'a later ANALYZE gathers none for them');
    await s.insert(newEvent('after', 'c2', T0 + 2000));
    const [r] = await s.claim({ owner: 'x', limit: 1, leaseMs: 60_000, now: T0 + 3000 });
    assert.equal(r?.key, 'after');
    assert.equal(await s.complete('after', 'x', T0 + 3000), true);
    assert.deepEqual(await s.counts(), { pending: 0, retrying: 0, done: 502, dead: 0 });
    await s.close();
  });

  test('claim() finds the heads behind one customer’s backlog longer than its look-ahead window, oldest first', async () => {
    const schema = pg!.schema();
    const s = postgresStore({ sql: pg!.sql, schema });
    await s.ping();
    // 3,000 open events of one customer (three times the window), written in one statement.
    await pg!.sql.unsafe(
      `INSERT INTO "${schema}".events (key, event, customer_id, body, headers, received_at, status, next_attempt_at)
       SELECT 'hot' || g, 'customer.created', 'hot', '\\x7b7d'::bytea, '{}'::jsonb, ${T0}, 'pending', ${T0}
       FROM generate_series(1, 3000) g`,
    );
    await s.insert(newEvent('q1', 'quiet1', T0));
    await s.insert(newEvent('n1', null, T0));
    await s.insert(newEvent('q2', 'quiet2', T0));
    const [running] = await s.claim({ owner: 'w', limit: 1, leaseMs: 60_000, now: T0 + 1 });
    assert.equal(running?.key, 'hot1');
    // hot1 runs; hot2… wait behind it. Everything else is found, in arrival order, past the whole backlog.
    assert.deepEqual(
      (await s.claim({ owner: 'x', limit: 10, leaseMs: 60_000, now: T0 + 2 })).map((r) => r.key),
      ['q1', 'n1', 'q2'],
    );
    assert.equal(await s.complete('q1', 'x', T0 + 3), true);
    assert.equal(await s.retry('hot1', 'w', T0 + 10, 'not yet'), true);
    // A retrying head holds its customer back until due; then it is the only one of its customer to run.
    assert.deepEqual(await s.claim({ owner: 'y', limit: 10, leaseMs: 60_000, now: T0 + 5 }), []);
    assert.deepEqual(
      (await s.claim({ owner: 'y', limit: 10, leaseMs: 60_000, now: T0 + 10 })).map((r) => r.key),
      ['hot1'],
    );
    await s.close();
  });

  test('claim() from four connections never runs two events of one customer at once and keeps their order', async () => {
    const schema = pg!.schema();
    const TOTAL = 200;
    const CUSTOMERS = 20;
    const producerSql = await pg!.client();
    const producer = postgresStore({ sql: producerSql, schema });
    await producer.ping();
    const expected = new Map<string, string[]>(); // customer -> keys in insert order
    const events: Array<[string, string | null]> = [];
    for (let i = 0; i < TOTAL; i++) {
      const customer = i % 10 === 9 ? null : `c${Math.floor(Math.random() * CUSTOMERS)}`;
      events.push([`e${i}`, customer]);
    }
    const running = new Set<string>();
    const claims = new Map<string, number>();
    const retried = new Set<string>();
    const finished = new Map<string, string[]>(); // customer -> keys in the order their run ended
    let done = 0;
    const violations: string[] = [];
    const deadline = Date.now() + 60_000;

    const produce = async () => {
      // Half up front, half while the workers run: arrival order is insert order either way.
      for (const [i, [key, customer]] of events.entries()) {
        await producer.insert(newEvent(key, customer, Date.now()));
        if (customer) expected.set(customer, [...(expected.get(customer) ?? []), key]);
        if (i > TOTAL / 2 && i % 10 === 0) await sleep(1);
      }
    };
    const work = async (owner: string) => {
      const sql = await pg!.client({ max: 2 });
      const store = postgresStore({ sql, schema });
      while (done < TOTAL && Date.now() < deadline) {
        const batch = await store.claim({ owner, limit: 4, leaseMs: 60_000, now: Date.now() });
        if (batch.length === 0) {
          await sleep(2);
          continue;
        }
        await Promise.all(
          batch.map(async (r: EventRecord) => {
            claims.set(r.key, (claims.get(r.key) ?? 0) + 1);
            const group = r.customerId;
            if (group !== null) {
              if (running.has(group)) violations.push(`${owner} ran ${r.key} while ${group} was running`);
              running.add(group);
            }
            await sleep(Math.random() * 3);
            // Runs end before the outcome is written: the next event of the customer may start right after.
            if (group !== null) running.delete(group);
            if (!retried.has(r.key) && Math.random() < 0.1) {
              retried.add(r.key);
              assert.equal(await store.retry(r.key, owner, Date.now(), 'flaky'), true);
              return;
            }
            if (group !== null) finished.set(group, [...(finished.get(group) ?? []), r.key]);
            assert.equal(await store.complete(r.key, owner, Date.now()), true);
            done++;
          }),
        );
      }
      await store.close();
      await sql.end({ timeout: 2 });
    };

    await Promise.all([produce(), work('w1'), work('w2'), work('w3'), work('w4')]);
    assert.deepEqual(violations, []);
    assert.equal(done, TOTAL, 'every event completed');
    for (const [key] of events) {
      assert.equal(claims.get(key), retried.has(key) ? 2 : 1, `${key} claimed once per run`);
    }
    for (const [customer, keys] of expected) assert.deepEqual(finished.get(customer), keys, `order of ${customer}`);
    assert.deepEqual(await producer.counts(), { pending: 0, retrying: 0, done: TOTAL, dead: 0 });
    await producer.close();
    await producerSql.end({ timeout: 2 });
  });

  const signal = (key: string, at: number, ck = 'balance:A', extra: Partial<NewEvent> = {}) =>
    newEvent(key, 'A', at, { event: 'customer.wallet.balance.updated', policy: 'signal', coalesceKey: ck, ...extra });

  test('a version-6 schema is upgraded: its insert function is planned once per connection', async () => {
    const schema = pg!.schema();
    const S = `"${schema}"`;
    // What a version-6 receiver left: insert_events without the setting, and a leased event.
    await schemaAtVersion(S, 6);
    await pg!.sql.unsafe(`ALTER FUNCTION ${S}.insert_events RESET ALL`);
    await pg!.sql.unsafe(
      `INSERT INTO ${S}.events (key, event, customer_id, body, headers, received_at, status, next_attempt_at,
         attempts, lease_owner, lease_until)
       VALUES ('old', 'customer.created', 'c', '\\x7b7d'::bytea, '{}'::jsonb, ${T0}, 'pending', ${T0}, 1, 'w', ${T0 + 60_000})`,
    );
    const s = postgresStore({ sql: pg!.sql, schema });
    assert.equal(await s.complete('old', 'w', T0 + 10), true, 'an event leased before the upgrade completes after it');
    assert.equal(Number(await scalar(`SELECT max(version) FROM ${S}.schema_version`)), SCHEMA_VERSION);
    assert.equal(
      await scalar(
        `SELECT array_to_string(proconfig, ',') FROM pg_proc
         WHERE pronamespace = $1::regnamespace AND proname = 'insert_events'`,
        [schema],
      ),
      'plan_cache_mode=force_generic_plan',
    );
    await s.insert(newEvent('new', 'c', T0 + 20));
    const [r] = await s.claim({ owner: 'x', limit: 1, leaseMs: 60_000, now: T0 + 30 });
    assert.equal(r?.key, 'new');
    assert.equal(await s.complete('new', 'x', T0 + 40), true);
    assert.deepEqual(await s.counts(), { pending: 0, retrying: 0, done: 2, dead: 0 });
    await s.close();
  });

  test('a version-4 schema is upgraded to counting status changes once per statement, its counts kept', async () => {
    const schema = pg!.schema();
    const S = `"${schema}"`;
    // What a version-4 receiver left: its DDL (the row trigger), and events in every status.
    await schemaAtVersion(S, 4);
    await pg!.sql.unsafe(
      `INSERT INTO ${S}.events (key, event, customer_id, body, headers, received_at, status, next_attempt_at)
       SELECT 'k' || g, 'customer.created', 'c' || (g % 5), '\\x7b7d'::bytea, '{}'::jsonb, ${T0} + g,
         (ARRAY['pending', 'retrying', 'done', 'dead'])[1 + g % 4], ${T0} + g
       FROM generate_series(1, 40) g`,
    );
    await pg!.sql.unsafe(`UPDATE ${S}.events SET status = 'done' WHERE key IN ('k1', 'k2')`);
    const before = await counted(schema);
    const s = postgresStore({ sql: pg!.sql, schema });
    assert.deepEqual(await s.counts(), before, 'the counts version 4 kept carry over');
    assert.equal(Number(await scalar(`SELECT max(version) FROM ${S}.schema_version`)), SCHEMA_VERSION);
    const triggers = (
      (await pg!.sql.unsafe(
        `SELECT tgname FROM pg_trigger WHERE tgrelid = '${S}.events'::regclass AND NOT tgisinternal ORDER BY tgname`,
      )) as Array<{ tgname: string }>
    ).map((t) => t.tgname);
    assert.deepEqual(triggers, ['events_count_deleted', 'events_count_inserted', 'events_count_updated']);
    const [r] = await s.claim({ owner: 'w', limit: 1, leaseMs: 60_000, now: T0 + 1000 });
    await s.complete(r!.key, 'w', T0 + 1000);
    assert.ok((await s.requeueWhere({ status: ['dead'] }, T0 + 1001)) > 0);
    assert.deepEqual(await s.counts(), await counted(schema), 'status changes after the upgrade are counted');
    await s.close();
  });

  test('a version-2 schema is upgraded to policies: signatures leave the stored headers, old keys get a policy', async () => {
    const schema = pg!.schema();
    const S = `"${schema}"`;
    // What a version-2 receiver left: its DDL, and rows whose headers carry Lava's signature.
    await schemaAtVersion(S, 2);
    const signed = JSON.stringify({ 'content-type': 'application/json', 'x-webhook-signature': 't=1,v1=abc' });
    for (const [i, key] of [
      'customer.created:cus_1',
      'customer.deleted:cus_2',
      'customer.created:sha256:ab12',
      'id:evt_1',
    ].entries()) {
      await pg!.sql.unsafe(
        `INSERT INTO ${S}.events (key, event, customer_id, body, headers, received_at, status, next_attempt_at)
         VALUES ($1, $2, 'cus_1', '\\x7b7d'::bytea, $3::text::jsonb, $4, 'pending', $4)`,
        [key, key.split(':')[0], signed, T0 + i],
      );
    }
    const s = postgresStore({ sql: pg!.sql, schema });
    const upgraded = await s.get('customer.created:cus_1');
    assert.deepEqual(upgraded?.headers, { 'content-type': 'application/json' });
    assert.equal(Number(await scalar(`SELECT max(version) FROM ${S}.schema_version`)), SCHEMA_VERSION);
    const stored = (await pg!.sql.unsafe(`SELECT headers::text AS h FROM ${S}.events`)) as Array<{ h: string }>;
    assert.equal(stored.length, 4);
    for (const { h } of stored) assert.doesNotMatch(h, /x-webhook-signature/);
    assert.deepEqual(
      (await s.list()).map((r) => [r.key, r.policy, r.coalesceKey, r.deliveries, r.tombstone]),
      [
        ['customer.created:cus_1', 'once', null, 1, false],
        ['customer.deleted:cus_2', 'once', null, 1, false],
        ['customer.created:sha256:ab12', 'dedupe', null, 1, false],
        ['id:evt_1', 'dedupe', null, 1, false],
      ],
    );
    assert.deepEqual(await s.counts(), { pending: 4, retrying: 0, done: 0, dead: 0 });
    await s.close();
  });

  test('a plain batch is one call of insert_events, and a batch carrying copies of a signal one statement too', async () => {
    const { statements, counting } = countingClient();
    const s = postgresStore({ sql: counting, schema: pg!.schema() });
    await s.ping();
    statements.length = 0;
    await Promise.all([s.insert(newEvent('p1', 'A', T0)), s.insert(newEvent('p2', 'B', T0 + 1))]);
    assert.equal(statements.length, 1);
    assert.match(statements[0]!, /\.insert_events\(/, 'the ack path of plain events');
    statements.length = 0;
    const results = await Promise.all([
      s.insert(signal('s1', T0 + 2)),
      s.insert(newEvent('p3', 'C', T0 + 3)),
      s.insert(signal('s2', T0 + 4)),
      s.insert(signal('o1', T0 + 5, 'balance:other')),
      s.insert(signal('s3', T0 + 6)),
    ]);
    assert.equal(statements.length, 1, 'one statement for the batch');
    assert.deepEqual(results, [
      { inserted: true },
      { inserted: true },
      { inserted: false, coalescedInto: 's1' },
      { inserted: true },
      { inserted: false, coalescedInto: 's1' },
    ]);
    // The next batch is counted into the waiting record; seq keeps the order the inserts were made in.
    assert.deepEqual(await Promise.all([s.insert(signal('s4', T0 + 7)), s.insert(signal('s5', T0 + 8))]), [
      { inserted: false, coalescedInto: 's1' },
      { inserted: false, coalescedInto: 's1' },
    ]);
    assert.deepEqual(
      (await s.list()).map((r) => [r.key, r.deliveries]),
      [
        ['p1', 1],
        ['p2', 1],
        ['s1', 5],
        ['p3', 1],
        ['o1', 1],
      ],
    );
    await s.close();
  });

  test('a signal whose key is already stored is a duplicate, not another copy', async () => {
    const s = postgresStore({ sql: pg!.sql, schema: pg!.schema() });
    assert.deepEqual(await s.insert(signal('s1', T0)), { inserted: true });
    assert.deepEqual(await s.insert(signal('s1', T0 + 1)), { inserted: false });
    assert.deepEqual(
      await Promise.all([
        s.insert(signal('s1', T0 + 2)),
        s.insert(signal('s2', T0 + 3)),
        s.insert(signal('s2', T0 + 4)),
      ]),
      [{ inserted: false }, { inserted: false, coalescedInto: 's1' }, { inserted: false }],
    );
    assert.equal((await s.get('s1'))?.deliveries, 2);
    // A dead signal (it failed validation) is recorded as it is, never counted into a waiting one.
    assert.deepEqual(await s.insert(signal('bad', T0 + 5, 'balance:A', { status: 'dead', lastError: 'invalid' })), {
      inserted: true,
    });
    assert.equal((await s.get('bad'))?.coalesceKey, 'balance:A');
    assert.equal((await s.get('s1'))?.deliveries, 2);
    await s.close();
  });

  test('a batch with a refused row retried row by row counts each copy once', async () => {
    const s = postgresStore({ sql: pg!.sql, schema: pg!.schema() });
    await s.insert(signal('s1', T0));
    // The refused value fails the whole statement (nothing of it is kept), so each insert is sent again alone.
    const outcomes = await Promise.allSettled([
      s.insert(signal('s2', T0 + 1)),
      s.insert(newEvent('bad', 'c3', REFUSED_TIME)),
      s.insert(signal('s3', T0 + 3)),
    ]);
    assert.deepEqual(
      outcomes.map((o) => (o.status === 'fulfilled' ? o.value : 'rejected')),
      [{ inserted: false, coalescedInto: 's1' }, 'rejected', { inserted: false, coalescedInto: 's1' }],
    );
    assert.equal((await s.get('s1'))?.deliveries, 3);
    await s.close();
  });

  // Issue 21: every delivery that passed the signature is stored, whatever its text values hold.
  const LONG_CUSTOMER = `cus_${'x'.repeat(4996)}`;
  const NUL_CUSTOMER = 'cus_\u0000_1';

  test("a batch's values go as array literals: quotes, backslashes, braces, commas, NULL and empty text come back as sent", async () => {
    const s = postgresStore({ sql: pg!.sql, schema: pg!.schema() });
    const odd = ['a"b', 'c\\d', '{e,f}', 'NULL', '', ' g ', '\\"', 'h\nі'];
    const events = odd.map((v, i) =>
      newEvent(`k${v}`, v === '' ? null : `cus${v}`, T0 + i, {
        event: `customer.${v}`,
        headers: { 'x-odd': v, [`x-${i}`]: `{"quoted": "${v}"}` },
        body: new TextEncoder().encode(`{"v":${JSON.stringify(v)}}\u0000${v}`),
      }),
    );
    // All in one batch: one array literal a column.
    const results = await Promise.all(events.map((e) => s.insert(e, { owner: 'w', leaseUntil: T0 + 60_000 })));
    assert.deepEqual(
      results.map((r) => [r.inserted, r.leased?.key]),
      events.map((e) => [true, e.key]),
      "each its customer's head (the one without a customer its own group), leased",
    );
    for (const e of events) {
      const r = await s.get(e.key);
      assert.ok(r, `get(${JSON.stringify(e.key)})`);
      assert.equal(r.key, e.key);
      assert.equal(r.customerId, e.customerId);
      assert.equal(r.event, e.event);
      assert.deepEqual(r.headers, e.headers);
      assert.deepEqual([...r.body], [...e.body]);
      assert.equal(r.leaseOwner, 'w');
    }
    await s.close();
  });

  test('insert() takes what text columns cannot hold as it is (5,000 characters, NUL, lone surrogates), and get() returns it as sent', async () => {
    const schema = pg!.schema();
    const s = postgresStore({ sql: pg!.sql, schema });
    const longKey = `id:${'k'.repeat(3000)}`;
    const events = [
      newEvent('long-customer', LONG_CUSTOMER, T0),
      newEvent('nul-customer', NUL_CUSTOMER, T0 + 1),
      newEvent(longKey, 'c1', T0 + 2),
      newEvent('nul\u0000key', 'c2', T0 + 3),
      newEvent('event-nul', 'c3', T0 + 4, { event: 'customer.\u0000created' }),
      newEvent('event-long', 'c4', T0 + 5, { event: 'e'.repeat(4000) }),
      newEvent('h:looks-hashed', 'h:cus', T0 + 6),
      newEvent('lone', 'cus_\uD800', T0 + 7, {
        headers: { 'x-note': 'a\u0000b' },
        status: 'dead',
        lastError: 'bad \u0000 input \uDC00',
      }),
    ];
    // All in one batch, as intake sends deliveries that arrive together.
    assert.deepEqual(
      await Promise.all(events.map((e) => s.insert(e))),
      events.map(() => ({ inserted: true })),
    );
    for (const e of events) {
      const r = await s.get(e.key);
      assert.ok(r, `get(${JSON.stringify(e.key.slice(0, 20))})`);
      assert.equal(r.key, e.key);
      assert.equal(r.customerId, e.customerId);
      assert.equal(r.event, e.event);
      assert.deepEqual(r.headers, e.headers);
      assert.deepEqual([...r.body], [...e.body]);
    }
    assert.equal(
      (await s.get('lone'))?.lastError,
      'bad \uFFFD input \uFFFD',
      'an error message loses only what text cannot hold',
    );
    // Each is a key like any other: sent again, a duplicate.
    for (const e of events) assert.deepEqual(await s.insert(e), { inserted: false }, e.key.slice(0, 20));
    assert.deepEqual(
      (await s.list({ customerId: LONG_CUSTOMER })).map((r) => r.key),
      ['long-customer'],
    );
    assert.deepEqual(
      (await s.list({ customerId: NUL_CUSTOMER })).map((r) => r.key),
      ['nul-customer'],
    );
    assert.deepEqual(
      (await s.list({ event: 'e'.repeat(4000) })).map((r) => r.key),
      ['event-long'],
    );
    // What the columns hold: a value that does not fit is its hash, the same one Postgres computes for it.
    const hashedLong = (await pg!.sql.unsafe(
      `SELECT count(*)::int AS n FROM "${schema}".events WHERE customer_id = 'h:' || encode(sha256(convert_to($1, 'UTF8')), 'hex')`,
      [LONG_CUSTOMER],
    )) as Array<{ n: number }>;
    assert.equal(hashedLong[0]?.n, 1, 'the column holds the SHA-256 of the customer id');
    await s.close();
  });

  test('a 5,000-character or NUL customer id is one ordering group: one event at a time, in arrival order, through requeue', async () => {
    const s = postgresStore({ sql: pg!.sql, schema: pg!.schema() });
    await s.insert(newEvent('a1', LONG_CUSTOMER, T0));
    await s.insert(newEvent('b1', NUL_CUSTOMER, T0 + 1));
    await s.insert(newEvent('a2', LONG_CUSTOMER, T0 + 2));
    await s.insert(newEvent('b2', NUL_CUSTOMER, T0 + 3));
    await s.insert(newEvent('a3', LONG_CUSTOMER, T0 + 4));
    const claim = async (now: number) =>
      (await s.claim({ owner: 'w', limit: 10, leaseMs: 60_000, now })).map((r) => [r.key, r.customerId]);
    assert.deepEqual(await claim(T0 + 10), [
      ['a1', LONG_CUSTOMER],
      ['b1', NUL_CUSTOMER],
    ]);
    assert.deepEqual(await claim(T0 + 11), [], 'both groups run');
    assert.equal(await s.complete('a1', 'w', T0 + 12), true);
    assert.equal(await s.deadLetter('b1', 'w', 'no', T0 + 12), true);
    assert.deepEqual(await claim(T0 + 13), [
      ['a2', LONG_CUSTOMER],
      ['b2', NUL_CUSTOMER],
    ]);
    // b1 comes back while b2 runs: it waits for b2, then goes first.
    assert.equal(await s.requeue('b1', T0 + 14), true);
    assert.deepEqual(await claim(T0 + 15), []);
    assert.equal(await s.complete('b2', 'w', T0 + 16), true);
    assert.equal(await s.complete('a2', 'w', T0 + 16), true);
    assert.deepEqual(await claim(T0 + 17), [
      ['b1', NUL_CUSTOMER],
      ['a3', LONG_CUSTOMER],
    ]);
    await s.close();
  });

  test('a long key and coalesce key work through every method: signals coalesce into it, and it completes', async () => {
    const s = postgresStore({ sql: pg!.sql, schema: pg!.schema() });
    const ck = `customer.wallet.balance.updated:sha256:${'f'.repeat(3000)}`;
    const k1 = `sig:${'1'.repeat(3000)}`;
    assert.deepEqual(await s.insert(signal(k1, T0, ck)), { inserted: true });
    assert.deepEqual(await s.insert(signal('sig:2', T0 + 1, ck)), { inserted: false, coalescedInto: k1 });
    assert.deepEqual(
      await Promise.all([s.insert(signal('sig:3', T0 + 2, ck)), s.insert(signal('sig:4', T0 + 3, ck))]),
      [
        { inserted: false, coalescedInto: k1 },
        { inserted: false, coalescedInto: k1 },
      ],
    );
    const [r] = await s.claim({ owner: 'w', limit: 1, leaseMs: 1000, now: T0 + 10 });
    assert.equal(r?.key, k1);
    assert.equal(r?.coalesceKey, ck);
    assert.equal(r?.deliveries, 4);
    assert.equal(await s.renew(k1, 'w', T0 + 5000), true);
    assert.equal(await s.retry(k1, 'w', T0 + 20, 'again'), true);
    await s.claim({ owner: 'w', limit: 1, leaseMs: 1000, now: T0 + 20 });
    assert.equal(await s.complete(k1, 'w', T0 + 30), true);
    assert.equal((await s.get(k1))?.status, 'done');
    assert.equal(await s.requeue(k1, T0 + 40), true);
    assert.equal(await s.purge({ before: T0 + 50 }), 0);
    await s.close();
  });

  test('a version-3 schema is upgraded: stored values that now hash are hashed too, so their groups and keys hold', async () => {
    const schema = pg!.schema();
    const S = `"${schema}"`;
    await schemaAtVersion(S, 3);
    // What a version-3 receiver could store: a 600-byte customer id, and values that start with `h:`.
    const long = `cus_${'y'.repeat(596)}`;
    for (const [i, [key, customer, event]] of [
      ['old1', long, 'customer.created'],
      ['h:old2', 'h:cus', 'h:event'],
    ].entries()) {
      await pg!.sql.unsafe(
        `INSERT INTO ${S}.events (key, event, customer_id, body, headers, received_at, status, next_attempt_at)
         VALUES ($1, $2, $3, '\\x7b7d'::bytea, '{}'::jsonb, $4, 'pending', $4)`,
        [key, event, customer, T0 + i],
      );
    }
    const s = postgresStore({ sql: pg!.sql, schema });
    await s.insert(newEvent('new1', long, T0 + 10));
    await s.insert(newEvent('new2', 'h:cus', T0 + 11));
    assert.deepEqual(
      (await s.list()).map((r) => [r.key, r.customerId, r.event]),
      [
        ['old1', long, 'customer.created'],
        ['h:old2', 'h:cus', 'h:event'],
        ['new1', long, 'customer.created'],
        ['new2', 'h:cus', 'customer.created'],
      ],
    );
    // Old and new events of one customer are one group: the new ones wait.
    assert.deepEqual(
      (await s.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 + 20 })).map((r) => r.key),
      ['old1', 'h:old2'],
    );
    assert.deepEqual(
      await s.insert(newEvent('h:old2', 'x', T0 + 21)),
      { inserted: false },
      'the old key still deduplicates',
    );
    assert.equal(await s.complete('h:old2', 'w', T0 + 22), true);
    assert.deepEqual(
      (await s.claim({ owner: 'w', limit: 10, leaseMs: 1000, now: T0 + 23 })).map((r) => r.key),
      ['new2'],
    );
    await s.close();
  });

  test('two instances inserting the same signal at once, while a third claims, never lose a delivery', async () => {
    const schema = pg!.schema();
    const clients = await Promise.all([1, 2, 3].map(() => pg!.client({ max: 2 })));
    const [a, b, worker] = clients.map((sql) => postgresStore({ sql, schema })) as [Store, Store, Store];
    await Promise.all([a.ping(), b.ping(), worker.ping()]);
    const ROUNDS = 20;
    const PER_ROUND = 10;
    // What each claimed record said it stood for when its run began: copies must never be counted in after that.
    const atClaim = new Map<string, number>();
    let inserting = true;
    const claiming = (async () => {
      while (inserting) {
        for (const r of await worker.claim({ owner: 'w', limit: 5, leaseMs: 60_000, now: T0 + 1_000_000 })) {
          atClaim.set(r.key, r.deliveries);
          assert.equal(await worker.complete(r.key, 'w', T0 + 1_000_000), true);
        }
        await sleep(1);
      }
    })();
    const answers: InsertResult[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      // Each instance batches its copies of a round into one statement; the two statements race.
      const sent = [a, b].flatMap((s, n) =>
        Array.from({ length: PER_ROUND }, (_, i) => s.insert(signal(`r${round}-${n}-${i}`, T0 + round, 'balance:X'))),
      );
      answers.push(...(await Promise.all(sent)));
      if (round % 4 === 3) await sleep(5);
    }
    inserting = false;
    await claiming;
    const records = await a.list({ limit: 10_000 });
    const keys = new Set(records.map((r) => r.key));
    for (const r of answers) {
      if (!r.inserted) assert.ok(r.coalescedInto && keys.has(r.coalescedInto), JSON.stringify(r));
    }
    assert.equal(answers.filter((r) => r.inserted).length, records.length, 'one record per insert answered new');
    assert.equal(
      records.reduce((sum, r) => sum + r.deliveries, 0),
      2 * ROUNDS * PER_ROUND,
      'the records stand for every delivery',
    );
    for (const [key, deliveries] of atClaim) {
      assert.equal(records.find((r) => r.key === key)?.deliveries, deliveries, `${key} took no copy after its claim`);
    }
    assert.ok(atClaim.size > 0, 'the worker ran some of them meanwhile');
    for (const s of [a, b, worker]) await s.close();
    for (const sql of clients) await sql.end({ timeout: 2 });
  });
});

storeContract(label, {
  skip,
  make: () => postgresStore({ sql: pg!.sql, schema: pg!.schema() }),
  teardown: () => pg?.done(),
});
