/**
 * Deno KV store for lava-webhooks: the durable inbox in Deno's built-in key-value database, a local file
 * (`denoKvStore({ path })`, run with `--unstable-kv` or `"unstable": ["kv"]` in deno.json) or Deno Deploy's KV
 * (`denoKvStore()`). Several apps can share one database under their own key `prefix`; pass `kv` to use a
 * database you opened yourself.
 *
 * @example
 * ```ts
 * import { createLavaWebhooks } from '@lava-webhooks/receiver';
 * import { denoKvStore } from '@lava-webhooks/receiver/stores/deno-kv';
 *
 * const lava = createLavaWebhooks({
 *   secret: Deno.env.get('LAVA_WEBHOOK_SECRET'),
 *   store: denoKvStore({ path: './data/lava.kv' }),
 *   handlers: { 'customer.created': (event) => console.log(event.data.customer_id) },
 * });
 * Deno.serve(lava.fetch);
 * ```
 *
 * @module
 */
export type { DenoKvLike } from './kv.ts';
export { type DenoKvStoreOptions, denoKvStore } from './store.ts';
