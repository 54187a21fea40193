// Test helper: a PostgreSQL connection through the runtime's own client (Bun's SQL on Bun, postgres.js on Deno
// and Node), throwaway schemas unique to this run, and clean-up. Null with a reason when no Postgres answers.
import type { PostgresClient } from '../../src/stores/postgres.ts';
import type { Store } from '../../src/stores/store.ts';

/** A client the tests can close themselves; `end` is what both Bun's SQL and postgres.js have. */
export interface TestClient extends PostgresClient {
  end(options?: { timeout?: number }): Promise<void>;
}

export interface PgHarness {
  /** Which client library this run uses: `bun` or `postgres.js`. */
  library: string;
  url: string;
  /** The run's own client (a small pool). */
  sql: TestClient;
  /** The run's unique schema; `schema()` names more under the same prefix. */
  runSchema: string;
  /** A fresh, unused schema name unique to this run (dropped by `done()`). */
  schema(): string;
  /** Another client on its own connections (closed by `done()` unless closed before). */
  client(options?: { max?: number; url?: string }): Promise<TestClient>;
  /** Drops every schema of this run and closes every client it made. */
  done(): Promise<void>;
}

export type PgOpen = { pg: PgHarness; reason: null } | { pg: null; reason: string };

export const DEFAULT_PG_URL = 'postgres://postgres@127.0.0.1:5432/test';

const env = (name: string): string | undefined =>
  (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env[name];

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== 'undefined';

// Specifiers in variables keep Deno's and tsc's module graphs from pulling in the other runtime's library.
const BUN_MODULE = 'bun';
const POSTGRES_MODULE = 'postgres';

type MakeClient = (url: string, max: number) => Promise<TestClient>;

async function clientFactory(): Promise<{ library: string; make: MakeClient }> {
  if (isBun) {
    const { SQL } = (await import(BUN_MODULE)) as {
      SQL: new (url: string, options: Record<string, unknown>) => TestClient;
    };
    return {
      library: 'bun',
      make: async (url, max) => new SQL(url, { max, connectionTimeout: 5, idleTimeout: 30 }),
    };
  }
  const mod = (await import(POSTGRES_MODULE)) as {
    default: (url: string, options: Record<string, unknown>) => TestClient;
  };
  return {
    library: 'postgres.js',
    make: async (url, max) => mod.default(url, { max, connect_timeout: 5, idle_timeout: 30, onnotice: () => {} }),
  };
}

// A run that was killed, or filtered so the suite's teardown never ran, leaves its schemas behind: drop those over
// an hour old (the prefix carries the run's start time).
async function dropStale(sql: TestClient): Promise<void> {
  const rows = (await sql.unsafe(
    `SELECT nspname AS name FROM pg_namespace WHERE starts_with(nspname, 'lava_t_')`,
  )) as Array<{ name: string }>;
  for (const { name } of rows) {
    const started = Number.parseInt(name.split('_')[3] ?? '', 36);
    if (Number.isFinite(started) && Date.now() - started > 3_600_000) {
      await sql.unsafe(`DROP SCHEMA IF EXISTS "${name}" CASCADE`).then(undefined, () => {});
    }
  }
}

/** Connects and creates this run's schema; `{ pg: null, reason }` when Postgres is not reachable. */
export async function openPg(): Promise<PgOpen> {
  const url = env('LAVA_TEST_PG_URL') ?? DEFAULT_PG_URL;
  let factory: { library: string; make: MakeClient };
  try {
    factory = await clientFactory();
  } catch (error) {
    return { pg: null, reason: `no Postgres client library on this runtime (${(error as Error).message})` };
  }
  const sql = await factory.make(url, 4);
  try {
    await sql.unsafe('SELECT 1');
  } catch (error) {
    await sql.end({ timeout: 1 }).catch(() => {});
    return { pg: null, reason: `no Postgres at ${url} (${(error as Error).message}); set LAVA_TEST_PG_URL` };
  }
  const runtime = isBun ? 'bun' : typeof (globalThis as { Deno?: unknown }).Deno !== 'undefined' ? 'deno' : 'node';
  const prefix = `lava_t_${runtime}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
  await dropStale(sql);
  const runSchema = `${prefix}_run`;
  await sql.unsafe(`CREATE SCHEMA "${runSchema}"`);
  const clients = new Set<TestClient>();
  let n = 0;
  const pg: PgHarness = {
    library: factory.library,
    url,
    sql,
    runSchema,
    schema: () => `${prefix}_${++n}`,
    async client(options = {}) {
      const c = await factory.make(options.url ?? url, options.max ?? 1);
      const end = c.end.bind(c);
      // Remember it so done() closes it; closing it early takes it off the list.
      const tracked = Object.assign(c, {
        end: (o?: { timeout?: number }) => {
          clients.delete(tracked);
          return end(o);
        },
      });
      clients.add(tracked);
      return tracked;
    },
    async done() {
      // A timeout: postgres.js end() never resolves after one of its connections was terminated by the server.
      await Promise.all([...clients].map((c) => c.end({ timeout: 2 }).catch(() => {})));
      try {
        const rows = (await sql.unsafe(`SELECT nspname AS name FROM pg_namespace WHERE starts_with(nspname, $1)`, [
          `${prefix}_`,
        ])) as Array<{ name: string }>;
        for (const { name } of rows) await sql.unsafe(`DROP SCHEMA IF EXISTS "${name}" CASCADE`);
      } finally {
        await sql.end({ timeout: 2 }).catch(() => {});
      }
    },
  };
  return { pg, reason: null };
}

/** The status of each event in `schema`, read straight from the database on `sql` (the test's own connections). */
export async function eventStatuses(sql: TestClient, schema: string): Promise<Map<string, string>> {
  const rows = (await sql.unsafe(`SELECT key AS key, status AS status FROM "${schema}".events`)) as Array<{
    key: string;
    status: string;
  }>;
  return new Map(rows.map((r) => [r.key, r.status]));
}

/** `inner`, counting its successful completions by key: a run may repeat (at least once), a completion must not. */
export function countingCompletions(inner: Store): { store: Store; completions: Map<string, number> } {
  const completions = new Map<string, number>();
  const store: Store = {
    ...inner,
    async complete(key, owner, now) {
      const ok = await inner.complete(key, owner, now);
      if (ok) completions.set(key, (completions.get(key) ?? 0) + 1);
      return ok;
    },
  };
  return { store, completions };
}

/**
 * Receiver settings for the database-fault tests: a short store timeout, lease, poll and retry schedule, so a fault
 * and the recovery after it both show within seconds; no logs; and keys taken from each delivery's webhook-id (as a
 * proxy in front of the receiver would set it), so the test knows every key it sent.
 */
export const FAULT_TEST_OPTIONS = {
  storeTimeoutMs: 1_000,
  leaseMs: 1_000,
  pollMs: 100,
  retry: { scheduleMs: [100, 200, 400, 800], jitter: 0 },
  logLevel: 'silent',
  trustWebhookIdHeader: true,
} as const;
