// Type-level tests of the public surface: each entry point exports what users need, and the internals stay out
// (tests and internal modules import those from their own files). Checked by `npm run typecheck`, never run.
import type * as lava from 'lava-webhooks';
import type * as denoKv from 'lava-webhooks/stores/deno-kv';
import type * as memory from 'lava-webhooks/stores/memory';
import type * as postgres from 'lava-webhooks/stores/postgres';
import type * as sqlite from 'lava-webhooks/stores/sqlite';

export type Public = [
  lava.LavaWebhooksOptions,
  lava.HandlerMap,
  lava.Store,
  lava.StoreCapabilities,
  lava.InsertLease,
  memory.MemoryStoreOptions,
  sqlite.SqliteStoreOptions,
  sqlite.SqliteStore,
  postgres.PostgresStoreOptions,
  postgres.PostgresClient,
  denoKv.DenoKvStoreOptions,
  denoKv.DenoKvLike,
];

// @ts-expect-error: event validation is the receiver's own
export type Validate = typeof lava.validateEvent;
// @ts-expect-error: the SubtleCrypto verifier is the default, not an API (pass `verifier` to replace it)
export type SubtleVerifier = typeof lava.subtleVerifier;
// @ts-expect-error: the body reader's errors are answered at the HTTP edge (413, 408), never seen by users
export type TooLarge = lava.PayloadTooLargeError;
// @ts-expect-error: the SQLite driver seam is internal
export type Connection = sqlite.SqliteConnection;
// @ts-expect-error: schema versions and migrations are the store's own
export type Migrations = typeof postgres.MIGRATIONS;
