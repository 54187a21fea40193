/**
 * SQLite store for lava-webhooks on Bun (`bun:sqlite`): what the npm package's `lava-webhooks/stores/sqlite`
 * resolves to under the `bun` export condition. Same exports and types as the `./stores/sqlite` entry point.
 *
 * @module
 */
import * as driver from './sqlite-bun.ts';
import type * as api from './sqlite.ts';
import { type SqliteStoreOptions, openSqliteStore } from './sqlite-store.ts';

export type { SqliteGroupCommitStore, SqliteStore, SqliteStoreOptions, SyncStore } from './sqlite-store.ts';

/** Why SQLite cannot be used on this runtime: never, on Bun. */
export const sqliteUnavailableReason: typeof api.sqliteUnavailableReason = null;

/** Whether `sqliteStore()` can open a database on this runtime: always, on Bun. */
export const isSqliteAvailable: typeof api.isSqliteAvailable = () => true;

/** Opens (creating if needed) a SQLite database as the event store; see `sqliteStore` of `./stores/sqlite`. */
export const sqliteStore: typeof api.sqliteStore = ((options: SqliteStoreOptions) =>
  openSqliteStore({ driver, unavailableReason: null }, options)) as typeof api.sqliteStore;
