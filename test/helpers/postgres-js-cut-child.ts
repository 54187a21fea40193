// Run by test/postgres-client-crash.test.ts as a child process of the same runtime (node --import tsx, deno run -A,
// bun): one scenario in which a Postgres connection is cut at the moment the client writes a small statement on it,
// through postgres.js (LAVA_TEST_POSTGRES_MODULE's copy, or this project's). It prints one `RESULT {json}` line with
// what each step saw, then exits 0. postgres.js 3.x throws an uncaught TypeError from a timer in these scenarios
// and the process dies before that line (porsager/postgres#1208): exit 1; postgresStore refuses a 3.x client before
// it gets that far: exit 2.
//
// Environment: LAVA_CUT_SCENARIO (reserved | transaction | store | receiver), LAVA_CUT_SCHEMA (a schema of the parent's
// run, for store and receiver), LAVA_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/test).
import { createLavaWebhooks } from '../../src/receiver.ts';
import { postgresJsOptions } from '../../src/runtime/sql-client.ts';
import { samplePayload } from '../../src/samples.ts';
import { type PostgresClient, postgresStore } from '../../src/stores/postgres.ts';
import { SECRET, signedRequest, sleep, waitFor } from './lava.ts';
import { DEFAULT_PG_URL, FAULT_TEST_OPTIONS } from './pg.ts';
import { cutProxy, loadPostgresJs } from './postgres-js.ts';

/** In a statement of the client scenarios only. */
const MARK = 'lava_cut_here';
/** In the store's claim (its first statement, sent after BEGIN) and in no other statement of the store. */
const CLAIM_MARK = 'pg_try_advisory_xact_lock';
/** In the store's insert of new events (its call of the schema's function; the migration that creates it is sent
 * before a cut is armed). */
const INSERT_MARK = '.insert_events(';

type Outcome =
  | { ok: true; value: unknown }
  | { ok: false; name: string; code: string | null; message: string; causeCode: string | null };

const env = (name: string): string | undefined => process.env[name];

/** How a promise settled, as plain data. */
async function settle(p: unknown): Promise<Outcome> {
  try {
    return { ok: true, value: await p };
  } catch (error) {
    const e = error as { name?: unknown; code?: unknown; message?: unknown; cause?: { code?: unknown } };
    return {
      ok: false,
      name: String(e?.name),
      code: typeof e?.code === 'string' ? e.code : null,
      message: String(e?.message),
      causeCode: typeof e?.cause?.code === 'string' ? e.cause.code : null,
    };
  }
}

interface Client extends PostgresClient {
  reserve(): Promise<{ unsafe(text: string): Promise<unknown>; release(): void }>;
  end(options?: { timeout?: number }): Promise<void>;
}

if (env('LAVA_CUT_SCENARIO')) {
  // What Node and Deno do with an uncaught error or an unhandled rejection, made the same on Bun, which reports one
  // and carries on (and a scenario would then wait for a query that never settles).
  for (const event of ['uncaughtException', 'unhandledRejection'] as const) {
    process.on(event, (error: unknown) => {
      console.error(`${event}:`, error);
      process.exit(1);
    });
  }
  await main(env('LAVA_CUT_SCENARIO') as string).catch((error: unknown) => {
    console.error('the scenario failed:', error);
    process.exit(2);
  });
}

async function main(scenario: string): Promise<void> {
  const { postgres, version } = await loadPostgresJs();
  const url = new URL(env('LAVA_TEST_PG_URL') ?? DEFAULT_PG_URL);
  const proxy = await cutProxy({ host: url.hostname, port: Number(url.port || 5432) });
  const via = new URL(url);
  via.hostname = '127.0.0.1';
  via.port = String(proxy.port);
  const client = (max: number) => postgres(via.toString(), postgresJsOptions(max)) as Client;
  const schema = env('LAVA_CUT_SCHEMA') ?? 'lava_cut';

  let result: Record<string, unknown>;
  if (scenario === 'reserved') {
    // A reserved connection is pinned: a query on it after the cut cannot move to a fresh connection.
    const sql = client(1);
    const reserved = await sql.reserve();
    await reserved.unsafe('SELECT 1');
    const cut = proxy.cutOn(MARK);
    const cutQuery = await settle(reserved.unsafe(`SELECT '${MARK}'`));
    await cut;
    const afterCut = await settle(reserved.unsafe('SELECT 2 AS two'));
    reserved.release();
    const pool = await settle(sql.unsafe('SELECT 3 AS three'));
    await sql.end({ timeout: 1 }).catch(() => {});
    result = { cutQuery, afterCut, pool };
  } else if (scenario === 'transaction') {
    // A transaction holds its connection too; 3.x sends ROLLBACK on it once the failed query rejects.
    const sql = client(1);
    const cut = proxy.cutOn(MARK);
    const transaction = await settle(
      sql.begin(async (tx) => {
        await tx.unsafe('SELECT 1');
        await tx.unsafe(`SELECT '${MARK}'`);
      }),
    );
    await cut;
    const pool = await settle(sql.unsafe('SELECT 3 AS three'));
    await sql.end({ timeout: 1 }).catch(() => {});
    result = { transaction, pool };
  } else if (scenario === 'store') {
    const store = postgresStore({ sql: client(1), schema, closeClient: true });
    await store.ping();
    const event = (key: string) => ({
      key,
      event: 'customer.created',
      customerId: 'cus_cut',
      body: new TextEncoder().encode('{}'),
      headers: {},
      receivedAt: Date.now(),
      status: 'pending' as const,
    });
    const insertCut = proxy.cutOn(INSERT_MARK);
    const cutInsert = await settle(store.insert(event('cut-1')));
    await insertCut;
    const insertAgain = await settle(store.insert(event('cut-1')));
    const claimCut = proxy.cutOn(CLAIM_MARK);
    const claim = { owner: 'cut-worker', limit: 1, leaseMs: 60_000 };
    const cutClaim = await settle(store.claim({ ...claim, now: Date.now() }));
    await claimCut;
    const claimAgain = await settle(
      (async () => (await store.claim({ ...claim, now: Date.now() })).map((r) => r.key))(),
    );
    await store.close();
    result = { cutInsert, insertAgain, cutClaim, claimAgain };
  } else if (scenario === 'receiver') {
    const store = postgresStore({ sql: client(4), schema, closeClient: true });
    const runs: string[] = [];
    const lava = createLavaWebhooks({
      secret: SECRET,
      store,
      process: async (record) => {
        runs.push(record.key);
      },
      concurrency: 2,
      ...FAULT_TEST_OPTIONS,
    });
    const deliver = async (key: string) => {
      const body = JSON.stringify(
        samplePayload('customer.wallet.balance.updated', { customerId: `cus_${key}`, data: { balance: '1' } }),
      );
      const res = await lava.fetch(
        signedRequest('http://receiver/webhooks/lava', body, { headers: { 'webhook-id': key } }),
      );
      await res.body?.cancel();
      return res.status;
    };
    await store.ping();
    // No insert and no claim was prepared on any connection yet, so each marker shows the first one sent.
    const insertCut = proxy.cutOn(INSERT_MARK);
    const cutDelivery = await deliver('cut-1');
    await insertCut;
    // Lava delivers it again; the worker's first claim then has an open event to take (an empty table is answered
    // without the claim's transaction).
    const retried = await deliver('cut-1');
    const claimCut = proxy.cutOn(CLAIM_MARK);
    lava.start();
    await claimCut;
    const afterCut: number[] = [];
    for (const key of ['after-1', 'after-2', 'after-3']) afterCut.push(await deliver(key));
    const expected = ['id:cut-1', 'id:after-1', 'id:after-2', 'id:after-3'];
    const processed = await settle(
      waitFor(() => expected.every((k) => runs.includes(k)), 15_000, 'the events after the cuts to run'),
    );
    const health = (await lava.fetch(new Request('http://receiver/healthz'))).status;
    await lava.close(2_000);
    result = { cutDelivery, retried, afterCut, processed: processed.ok, runs: [...new Set(runs)].sort(), health };
  } else {
    throw new Error(`unknown LAVA_CUT_SCENARIO ${scenario}`);
  }
  // Turns of the event loop for a write queued on a dead connection to go off, before this process reports that it
  // lives on.
  await sleep(200);
  console.log(`RESULT ${JSON.stringify({ scenario, version, cuts: proxy.cuts, ...result })}`);
  await proxy.close();
  process.exit(0);
}
