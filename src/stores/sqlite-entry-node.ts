/**
 * SQLite store for lava-webhooks on Node 22.13+ and Deno (`node:sqlite`): what the npm package's
 * `lava-webhooks/stores/sqlite` resolves to by default. Same exports and types as the `./stores/sqlite` entry point;
 * on Node 20, which has no `node:sqlite`, it still loads, `isSqliteAvailable()` is false and `sqliteStore()` throws
 * an Error saying what to run instead.
 *
 * @module
 */
import type { LoadedSqliteDriver } from './sqlite-driver.ts';
import type * as api from './sqlite.ts';
import { type SqliteStoreOptions, driverUnavailable, openSqliteStore } from './sqlite-store.ts';

export type { SqliteGroupCommitStore, SqliteStore, SqliteStoreOptions, SyncStore } from './sqlite-store.ts';

// A dynamic import, so Node 20 (no node:sqlite) loads this entry and hears why when it opens a store.
let loaded: LoadedSqliteDriver;
try {
  loaded = { driver: await import('./sqlite-node.ts'), unavailableReason: null };
} catch (err) {
  loaded = { driver: null, unavailableReason: driverUnavailable('node', err) };
}

/** Why SQLite cannot be used on this runtime, or null when it can. */
export const sqliteUnavailableReason: typeof api.sqliteUnavailableReason = loaded.unavailableReason;

/** Whether `sqliteStore()` can open a database on this runtime (false on Node 20, which has no `node:sqlite`). */
export const isSqliteAvailable: typeof api.isSqliteAvailable = () => loaded.driver !== null;

/** Opens (creating if needed) a SQLite database as the event store; see `sqliteStore` of `./stores/sqlite`. */
export const sqliteStore: typeof api.sqliteStore = ((options: SqliteStoreOptions) =>
  openSqliteStore(loaded, options)) as typeof api.sqliteStore;
