// Public API of the Lava webhook receiver.
export { createLavaWebhooks, ConfigError, DEFAULT_KEEP_HEADERS } from './receiver.ts';
export type { LavaWebhooks, LavaWebhooksOptions } from './receiver.ts';
export { schemas, customerData, envelope, EVENT_NAMES, LEGACY_EVENTS, validateEvent } from './intake/events.ts';
export type { EventName, EventPayload, UnknownEventPayload } from './intake/events.ts';
export type { Handler, HandlerContext, HandlerMap, UnknownHandler } from './processing/dispatch.ts';
export { NonRetryableError, DEFAULT_RETRY_SCHEDULE_MS } from './processing/retry.ts';
export type { RetryPolicy } from './processing/retry.ts';
export type { ProcessFn, Worker, DrainOptions } from './processing/worker.ts';
export { sign, subtleVerifier, parseSignatureHeader, sha256Hex } from './intake/signature.ts';
export type { Verifier, VerifierFactory } from './intake/signature.ts';
export type { IdentityRule, IdentityRules, KeyFunction, KeyInput } from './intake/identity.ts';
export { identityPolicies } from './intake/events.ts';
export { PayloadTooLargeError, BodyTimeoutError } from './intake/body.ts';
export { relay, RelayRetryableError, RelayRejectedError, parseRetryAfter } from './relay/relay.ts';
export type { RelayOptions, RelayOutcome } from './relay/relay.ts';
export { jsonLogger, silentLogger } from './observability/log.ts';
export type { Logger, LogLevel, LogFields } from './observability/log.ts';
export { Metrics } from './observability/metrics.ts';
export { memoryStore } from './stores/memory.ts';
export type { MemoryStoreOptions } from './stores/memory.ts';
export { StoreUnavailableError, StoreSchemaError, StoreUsageError } from './errors.ts';
export { EVENT_STATUSES } from './stores/store.ts';
export type {
  Store,
  EventRecord,
  EventStatus,
  NewEvent,
  InsertResult,
  ClaimOptions,
  ListOptions,
  PurgeOptions,
  RequeueFilter,
  StatusCounts,
  MaybePromise,
  IdentityPolicy,
} from './stores/store.ts';
