// Type-level tests of the Postgres store's client: Bun's `SQL` and a postgres.js `Sql` are passed as they are, with
// no `as unknown as`. Checked by `npm run typecheck`, never run.
import { SQL } from 'bun';
import postgres, { type Sql } from 'postgres';
import { type PostgresClient, postgresStore } from 'lava-webhooks/stores/postgres';

export function bunSql(): void {
  postgresStore({ sql: new SQL('postgres://localhost/app') });
  postgresStore({ sql: new SQL({ url: 'postgres://localhost/app', max: 5 }), closeClient: true });
  postgresStore({ sql: Bun.sql, schema: 'lava_webhooks' });
}

export function postgresJs(plain: Sql, typed: Sql<{ bigint: bigint }>): PostgresClient {
  postgresStore({ sql: postgres('postgres://localhost/app', { max: 5 }), closeClient: true });
  postgresStore({ sql: postgres('postgres://localhost/app', { types: { bigint: postgres.BigInt } }) });
  postgresStore({ sql: postgres('postgres://localhost/app', { transform: postgres.camel }) });
  postgresStore({ sql: typed });
  return plain;
}

export function notAClient(): void {
  // @ts-expect-error: a client without `unsafe` and `begin` (here node-postgres' Pool API) is refused
  postgresStore({ sql: { query: async (_text: string) => ({ rows: [] }) } });
  // @ts-expect-error: the client is required
  postgresStore({ schema: 'lava_webhooks' });
}
