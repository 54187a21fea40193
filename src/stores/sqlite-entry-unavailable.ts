/**
 * SQLite store for lava-webhooks where there is no SQLite: what the npm package's `lava-webhooks/stores/sqlite`
 * resolves to under the `workerd`, `edge-light`, `worker` and `browser` export conditions (Cloudflare Workers,
 * Vercel's edge runtime, browser bundles). Same exports and types as the `./stores/sqlite` entry point, and it
 * imports no driver, so such a bundle builds; `isSqliteAvailable()` is false and `sqliteStore()` throws an Error
 * naming the stores that work there.
 *
 * @module
 */
import type * as api from './sqlite.ts';
import { type SqliteStoreOptions, openSqliteStore } from './sqlite-store.ts';

export type { SqliteGroupCommitStore, SqliteStore, SqliteStoreOptions, SyncStore } from './sqlite-store.ts';

const REASON =
  'sqlite store: this build targets a runtime without SQLite (Cloudflare Workers, an edge runtime or a browser) — ' +
  'use the Postgres store there (on Workers, postgres.js over Hyperdrive), or the memory store for a demo';

/** Why SQLite cannot be used on this runtime. */
export const sqliteUnavailableReason: typeof api.sqliteUnavailableReason = REASON;

/** Whether `sqliteStore()` can open a database on this runtime: never, here. */
export const isSqliteAvailable: typeof api.isSqliteAvailable = () => false;

/** Throws the Error saying why (`sqliteUnavailableReason`); see `sqliteStore` of `./stores/sqlite`. */
export const sqliteStore: typeof api.sqliteStore = ((options: SqliteStoreOptions) =>
  openSqliteStore({ driver: null, unavailableReason: REASON }, options)) as typeof api.sqliteStore;
