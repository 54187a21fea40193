/**
 * SQLite store for lava-webhooks: the durable inbox in one local file (WAL mode), for a single server or several
 * processes on one machine. It is synchronous, so the ack path never waits on a promise; `groupCommit: true` trades
 * that for one commit (and, with `durability: 'full'`, the default, one fsync off the event loop) per turn's batch of
 * writes, and waits for a lock another process holds without blocking the event loop. It uses `bun:sqlite` on
 * Bun and `node:sqlite` on Deno and Node 22.13+; `isSqliteAvailable()` says whether this runtime has either.
 *
 * @example
 * ```ts
 * import { createLavaWebhooks } from 'lava-webhooks';
 * import { sqliteStore } from 'lava-webhooks/stores/sqlite';
 *
 * const lava = createLavaWebhooks({
 *   secret: process.env.LAVA_WEBHOOK_SECRET,
 *   store: sqliteStore({ path: './data/lava.sqlite' }),
 *   handlers: { 'customer.created': (event) => console.log(event.data.customer_id) },
 * });
 * ```
 *
 * @module
 */
// The SQLite entry point: picks the runtime's driver when it loads (the store itself is sqlite-store.ts). This is
// the module the repository, the server, the CLI and JSR use, and the declarations every form of the entry shares.
// The npm package maps `lava-webhooks/stores/sqlite` by export condition instead (sqlite-entry-bun.ts,
// sqlite-entry-node.ts, sqlite-entry-unavailable.ts), so no bundler sees the other runtime's driver; those must
// export exactly what this file does, with these types.
import type { LoadedSqliteDriver } from './sqlite-driver.ts';
import {
  type SqliteGroupCommitStore,
  type SqliteStore,
  type SqliteStoreOptions,
  driverUnavailable,
  openSqliteStore,
} from './sqlite-store.ts';

export type { SqliteGroupCommitStore, SqliteStore, SqliteStoreOptions, SyncStore } from './sqlite-store.ts';

const onBun = (globalThis as { Bun?: unknown }).Bun !== undefined;

// Top-level await keeps sqliteStore() synchronous without the core importing a runtime module.
let loaded: LoadedSqliteDriver;
try {
  loaded = {
    driver: onBun ? await import('./sqlite-bun.ts') : await import('./sqlite-node.ts'),
    unavailableReason: null,
  };
} catch (err) {
  loaded = { driver: null, unavailableReason: driverUnavailable(onBun ? 'bun' : 'node', err) };
}

/** Why SQLite cannot be used on this runtime, or null when it can. */
export const sqliteUnavailableReason: string | null = loaded.unavailableReason;

/** Whether `sqliteStore()` can open a database on this runtime (false on Node 20, which has no `node:sqlite`). */
export function isSqliteAvailable(): boolean {
  return loaded.driver !== null;
}

/**
 * Opens (creating if needed) a SQLite database as the event store. Synchronous, and so is every store method unless
 * `groupCommit` is set (then each answers with a promise; see SqliteGroupCommitStore).
 * Throws an Error when SQLite is not available on this runtime, `ConfigError` for options it cannot use,
 * `StoreSchemaError` when the file is not a database of this store or was written by a newer version,
 * `StoreUnavailableError` when it cannot be opened.
 */
export function sqliteStore(options: SqliteStoreOptions & { groupCommit: true }): SqliteGroupCommitStore;
export function sqliteStore(options: SqliteStoreOptions & { groupCommit?: false }): SqliteStore;
export function sqliteStore(options: SqliteStoreOptions): SqliteStore | SqliteGroupCommitStore;
export function sqliteStore(options: SqliteStoreOptions): SqliteStore | SqliteGroupCommitStore {
  return openSqliteStore(loaded, options);
}
