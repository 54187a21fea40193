/**
 * Deno KV store for lava-webhooks: `denoKvStore({ path? | kv? })` keeps the durable inbox in Deno's built-in
 * key-value database, a local file or Deno Deploy's KV.
 *
 * @module
 */
export type { DenoKvLike } from './kv.ts';
export { DRIVER_NAME, denoKvStore, type DenoKvStoreOptions } from './store.ts';
