/**
 * A durable, idempotent receiver for Lava webhooks. `createLavaWebhooks()` returns a web-standard `fetch` handler
 * that checks each delivery's signature, validates it, records it in a store and only then answers 200; your
 * handlers run after that, one event at a time per customer, with retries, dead letters and crash recovery. It runs
 * unchanged on Bun, Deno, Node and Cloudflare Workers. This entry point holds the receiver, the event and handler
 * types, the errors, `memoryStore`, the relay and the store contract; the durable stores have entry points of their
 * own (`lava-webhooks/stores/sqlite`, `/stores/postgres`, `/stores/deno-kv`). On JSR the package is
 * `@lava-webhooks/receiver`, with the same entry points.
 *
 * @example
 * ```ts
 * import { createLavaWebhooks, NonRetryableError } from 'lava-webhooks';
 * import { sqliteStore } from 'lava-webhooks/stores/sqlite';
 *
 * const lava = createLavaWebhooks({
 *   secret: process.env.LAVA_WEBHOOK_SECRET,
 *   store: sqliteStore({ path: './data/lava.sqlite' }),
 *   handlers: {
 *     // Runs after the 200, with retries; event.data is typed per event, ctx.key is stable across retries.
 *     'customer.created': async (event, ctx) => {
 *       if (!event.data.reference_id) throw new NonRetryableError('no reference_id'); // dead letter, no retry
 *       ctx.logger.info('customer created', { customer_id: event.data.customer_id, key: ctx.key });
 *     },
 *   },
 *   ignore: ['customer.wallet.balance.updated', 'customer.deleted'],
 * });
 * lava.start(); // a long-running server: retries, crash recovery, retention
 * Bun.serve(lava); // or Deno.serve(lava.fetch), serve(lava) from @hono/node-server, app.route('/', lava.app), …
 * ```
 *
 * @module
 */
// Only what a user of the package needs: internal modules import from their own files, and so do the tests.

// The receiver
export { createLavaWebhooks, DEFAULT_KEEP_HEADERS } from './receiver.ts';
export type { LavaWebhooks, LavaWebhooksOptions } from './receiver.ts';
export { DEFAULT_RETRY_SCHEDULE_MS } from './processing/retry.ts';
export type { RetryPolicy } from './processing/retry.ts';
export type { DrainOptions, ProcessFn, Worker } from './processing/worker.ts';

// Events and handlers: names and payload types derive from `schemas`
export { EVENT_NAMES, schemas } from './intake/events.ts';
export type { EventName, EventPayload, UnknownEventPayload } from './intake/events.ts';
export type { Handler, HandlerContext, HandlerMap, UnknownHandler } from './processing/dispatch.ts';
export type { IdentityRule, IdentityRules, KeyFunction, KeyInput } from './intake/identity.ts';

// Errors
export { ConfigError, StoreSchemaError, StoreUnavailableError, StoreUsageError } from './errors.ts';
export type { StoreErrorOptions } from './errors.ts';
export { NonRetryableError } from './processing/retry.ts';

// Signatures: `sign` makes Lava's signature for tests; the types are those of the `verifier` and `digest` options
export { sign } from './intake/signature.ts';
export type { Sha256Hex, Verifier, VerifierFactory } from './intake/signature.ts';

// Relay, logs and metrics
export { relay } from './relay/relay.ts';
export type { RelayOptions } from './relay/relay.ts';
export { jsonLogger, silentLogger } from './observability/log.ts';
export type { JsonLoggerOptions, LogFields, LogLevel, Logger } from './observability/log.ts';
export { Metrics } from './observability/metrics.ts';

// Stores: the in-memory one, and the contract for writing your own
export { memoryStore } from './stores/memory.ts';
export type { MemoryStoreOptions } from './stores/memory.ts';
export type {
  ClaimOptions,
  EventRecord,
  EventStatus,
  IdentityPolicy,
  InsertLease,
  InsertResult,
  ListOptions,
  MaybePromise,
  NewEvent,
  PurgeOptions,
  RequeueFilter,
  StatusCounts,
  Store,
  StoreCapabilities,
} from './stores/store.ts';
