// Makes a Postgres client for the server and the CLI: Bun's built-in SQL on Bun, postgres.js (4.1 or later) on Deno
// and Node. Only this edge file knows either library; the store takes whatever it is given (and refuses a
// postgres.js 3.x client, which can crash the process: see postgresStore).
import { ConfigError } from '../errors.ts';
import type { PostgresClient } from '../stores/postgres.ts';

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== 'undefined';
// Specifiers in variables keep Deno's and tsc's module graphs from pulling in the other runtime's library.
const BUN_MODULE = 'bun';
const POSTGRES_MODULE = 'postgres';

export interface SqlClientOptions {
  /** Pool size. Default 10. */
  max?: number;
}

export async function sqlClient(url: string, options: SqlClientOptions = {}): Promise<PostgresClient> {
  const max = options.max ?? 10;
  if (isBun) {
    const { SQL } = (await import(BUN_MODULE)) as {
      SQL: new (url: string, options: Record<string, unknown>) => PostgresClient;
    };
    return new SQL(url, { max, connectionTimeout: 5, idleTimeout: 30 });
  }
  let mod: { default: (url: string, options: Record<string, unknown>) => PostgresClient };
  try {
    mod = (await import(POSTGRES_MODULE)) as typeof mod;
  } catch (error) {
    throw new ConfigError(
      'postgres store: the `postgres` package (postgres.js) is not installed — run `npm install postgres` (4.1 or later)',
      {
        cause: error,
      },
    );
  }
  return mod.default(url, postgresJsOptions(max));
}

/**
 * The options the server and the CLI give postgres.js (4.1 or later: 3.x can crash the process when a connection
 * drops, see docs/stores.md). Exported for the tests that build the same client from another copy of postgres.js.
 */
export function postgresJsOptions(max: number): Record<string, unknown> {
  return {
    max,
    connect_timeout: 5,
    idle_timeout: 30,
    onnotice: () => {},
    // After a failed connection attempt postgres.js waits backoff(attempts) seconds before the next one, by default
    // up to 20 s (3^attempts / 100 s); capping it at 2 s lets the worker resume within seconds once the database
    // is back.
    backoff: (retries: number) => (0.5 + Math.random() / 2) * Math.min(3 ** retries / 100, 2),
  };
}
