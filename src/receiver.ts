// createLavaWebhooks: wires intake, store, worker, metrics and the Hono app into one `{ fetch }` object.
import type { Hono } from 'hono';
import { ConfigError } from './errors.ts';
import { type DeliveryRoute, createApp, createDeliveryHandler, createMetricsHandler } from './app.ts';
import { BodyBudget, DEFAULT_BODY_MEMORY_LIMIT } from './intake/budget.ts';
import type { EventName } from './intake/events.ts';
import { type IdentityRules, type KeyFunction, refusal } from './intake/identity.ts';
import { createIntake, createIntakeSteps } from './intake/intake.ts';
import { type Sha256Hex, type VerifierFactory, subtleVerifier } from './intake/signature.ts';
import {
  DEFAULT_REJECTION_LOG_RATE,
  type LogLevel,
  type Logger,
  jsonLogger,
  rateLimited,
} from './observability/log.ts';
import { Metrics } from './observability/metrics.ts';
import { type HandlerMap, ParsedCache, type UnknownHandler, createDispatcher } from './processing/dispatch.ts';
import { handlerProblems, unhandledEvents } from './processing/handler-names.ts';
import { DEFAULT_RETRY_SCHEDULE_MS, type RetryPolicy } from './processing/retry.ts';
import { NonRetryableError } from './processing/retry.ts';
import {
  type DrainOptions,
  type LazySignalProcess,
  type ProcessFn,
  type Worker,
  createWorker,
} from './processing/worker.ts';
import type { EventRecord, Store } from './stores/store.ts';

export interface LavaWebhooksOptions {
  /** The webhook secret Lava showed when the endpoint was created. */
  secret?: string;
  /** Several secrets during a rotation (new and old); a delivery signed with any of them is accepted. */
  secrets?: readonly string[];
  /** Where events are recorded before the 200. */
  store: Store;
  /** One handler per known event; payloads are typed and validated. */
  handlers?: HandlerMap;
  /**
   * Known events you mean not to handle: they are recorded as done without running anything. A known event with
   * neither a handler nor a place here becomes a dead letter ("no handler for …"), never done unprocessed.
   */
  ignore?: readonly EventName[];
  /** Runs for events this version does not know (new Lava events are kept, not rejected). */
  onUnknown?: UnknownHandler;
  /**
   * Replaces the handler dispatch entirely (e.g. the relay). Receives each claimed record; throw to retry.
   * When set, `handlers` and `onUnknown` are not used.
   */
  process?: ProcessFn;
  /** Route that receives deliveries. Default `/webhooks/lava`. */
  path?: string;
  /** Largest body accepted, in bytes; larger answers 413 before it is buffered. Default 256 KiB. */
  bodyLimit?: number;
  /** The whole body must arrive within this many ms, else 408. Default 10 000 (Lava's own timeout). */
  bodyTimeoutMs?: number;
  /**
   * Bytes all request bodies being read may hold together (a declared Content-Length counts from the start, else
   * bytes as they arrive); past it a delivery answers 503 with Retry-After. Default 64 MiB; at least `bodyLimit`.
   */
  bodyMemoryLimit?: number;
  /**
   * Log lines a second for rejections anyone can cause before being authenticated (401, 413, 408, a 503 for
   * memory, a refused /metrics request); past it they are counted in one "suppressed K similar lines" line.
   * Default 10; 0 logs none of them (the metrics still count them).
   */
  rejectionLogRate?: number;
  /** When set, GET /metrics requires `Authorization: Bearer <token>` (compared in constant time); 401 without. */
  metricsToken?: string;
  /** Serve GET /metrics from `fetch`. Default true; false when you serve `metricsFetch` on a port of its own. */
  metricsRoute?: boolean;
  /**
   * When set, `/admin` serves the operators' web console (overview, events, requeue), behind a login with this token
   * (at least 16 characters). Unset, nothing is served there. See docs/operations.md.
   */
  adminToken?: string;
  /** An insert slower than this answers 503. Default 5 000. */
  storeTimeoutMs?: number;
  /** Handlers running at once (across customers; one at a time per customer). Default 8. */
  concurrency?: number;
  /** Lease on an event being run; renewed while it runs, reclaimed after a crash once expired. Default 30 000. */
  leaseMs?: number;
  /** How often the background loop looks for due retries and expired leases. Default 1 000. */
  pollMs?: number;
  /** A handler running longer is aborted and retried. Default 60 000. */
  handlerTimeoutMs?: number;
  /** Retry waits (ms) after each failed run, and the jitter fraction. Default about 1 s, 5 s, 30 s, 2 min, 10 min, 1 h; ±20 %. */
  retry?: Partial<RetryPolicy>;
  /**
   * Completed events are purged after this many ms. Default 7 days. A `once` event (customer.created/deleted)
   * keeps a tombstone of its key, so a replay of it stays a duplicate; other keys are freed.
   */
  retentionMs?: number;
  /** How long tombstones of `once` events are kept (tens of bytes each). Default 3 years. */
  tombstoneRetentionMs?: number;
  /**
   * Per-event identity overrides: a policy (`once`, `dedupe`, `signal`) and/or a key function, e.g.
   * `{ 'customer.wallet.balance.updated': { policy: 'dedupe' } }`. See the README's "Idempotency" section.
   */
  identity?: IdentityRules;
  /** Per-event key functions under the `dedupe` policy: shorthand for `identity: { [event]: { key, policy: 'dedupe' } }`. */
  idempotencyKey?: Record<string, KeyFunction>;
  /**
   * Use a `webhook-id` request header, when present, as the idempotency key. Default false: Lava sends none, and
   * its signature does not cover headers, so a captured delivery could be replayed under new ids and run again.
   * Turn it on only behind a proxy you control that sets the header and drops any a client sent.
   */
  trustWebhookIdHeader?: boolean;
  /**
   * Request headers stored with each event (lower-case). Lava's `x-webhook-signature` is left out by default: a
   * stored signature lets anyone who reads the database (or a backup) replay the delivery. Add it only when a relay
   * must forward it.
   */
  keepHeaders?: readonly string[];
  /** Signature verifier; default SubtleCrypto. Runtime entries may pass a faster native one. */
  verifier?: VerifierFactory;
  /** SHA-256 (hex) for body-hash idempotency keys; default SubtleCrypto. Runtime entries may pass a native one. */
  digest?: Sha256Hex;
  logger?: Logger;
  /** The metrics registry rendered at /metrics; pass one to share it with add-ons such as the relay. */
  metrics?: Metrics;
  /** Used when `logger` is not given. Default `info`. */
  logLevel?: LogLevel;
  /** The clock (tests). Default Date.now. */
  now?: () => number;
  /**
   * Internal, not part of the API: registers the webhook route in place of the default (the benchmark's comparison
   * point, src/http/delivery-chain.ts). When set, deliveries go through Hono's router like every other request.
   */
  deliveryRoute?: DeliveryRoute;
}

export interface LavaWebhooks {
  /** The web-standard entry point: `fetch(request, env?, executionCtx?)`. */
  fetch: (request: Request, env?: unknown, executionCtx?: unknown) => Response | Promise<Response>;
  /** The Hono app underneath, to mount in a larger app (`app.route('/', lava.app)`). */
  app: Hono;
  /** GET /metrics alone (with the token check when `metricsToken` is set), to serve on a private port; 404 else. */
  metricsFetch: (request: Request) => Promise<Response>;
  store: Store;
  metrics: Metrics;
  worker: Worker;
  logger: Logger;
  /** Starts the background loop: retries, crash recovery and retention (long-running servers). */
  start(): void;
  /** Processes everything due now and resolves when done (serverless, cron, tests). */
  drain(options?: DrainOptions): Promise<{ processed: number }>;
  /** Purges completed events older than the retention period (tombstones after theirs); returns how many. */
  purge(): Promise<number>;
  /** Graceful shutdown: intake answers 503, running handlers get up to `deadlineMs`, then the store closes. */
  close(deadlineMs?: number): Promise<void>;
}

export { ConfigError };

let defaultDeliveryRoute: DeliveryRoute | undefined;

/**
 * Internal, not part of the API: the `deliveryRoute` of every receiver created after this call, for the benchmark's
 * and the test suites' pass over the Hono-chain variant (loaded as a preload: src/http/use-delivery-chain.ts).
 * Returns the one it replaces.
 */
export function setDefaultDeliveryRoute(route: DeliveryRoute | undefined): DeliveryRoute | undefined {
  const previous = defaultDeliveryRoute;
  defaultDeliveryRoute = route;
  return previous;
}

export const DEFAULT_KEEP_HEADERS = ['content-type', 'user-agent', 'webhook-id', 'x-request-id'] as const;
const DAY = 86_400_000;

/** The identity rules from both options: `identity` wins over the `idempotencyKey` shorthand for the same event. */
function identityRules(options: LavaWebhooksOptions): IdentityRules | undefined {
  if (!options.idempotencyKey) return options.identity;
  const rules: Record<string, { key?: KeyFunction; policy?: 'once' | 'dedupe' | 'signal' }> = {};
  for (const [event, key] of Object.entries(options.idempotencyKey)) rules[event] = { key, policy: 'dedupe' };
  return { ...rules, ...options.identity } as IdentityRules;
}

/**
 * Runs `inner` only for records the identity policy lets run (see `refusal`); a refused record becomes a dead
 * letter with the reason. Keeps the dispatcher's lazy-signal entry, so a run that never asks for a signal makes none.
 */
function gated(store: Store, inner: LazySignalProcess): LazySignalProcess {
  const lazy = inner.withSignal;
  const refuse = (reason: string) => {
    throw new NonRetryableError(reason);
  };
  const run = (record: EventRecord, signal: () => AbortSignal): Promise<void> | void => {
    const why = refusal(record, store);
    const go = (reason: string | null) => {
      if (reason !== null) refuse(reason);
      return lazy ? lazy(record, signal) : inner(record, signal());
    };
    return why instanceof Promise ? why.then(go) : go(why);
  };
  const out: LazySignalProcess = (record, signal) => run(record, () => signal);
  out.withSignal = run;
  return out;
}

function positive(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isFinite(v) || v <= 0) throw new ConfigError(`${name} must be a positive number, got ${value}`);
  return v;
}

/** The path of an absolute URL without building a URL object (null when it is not a plain absolute URL). */
function pathOf(url: string): string | null {
  const scheme = url.indexOf('://');
  if (scheme < 0) return null;
  const start = url.indexOf('/', scheme + 3);
  if (start < 0) return '/';
  const query = url.indexOf('?', start);
  const hash = url.indexOf('#', start);
  const end = query < 0 ? (hash < 0 ? url.length : hash) : hash < 0 ? query : Math.min(query, hash);
  return url.slice(start, end);
}

/** Workers and other hosts pass an execution context as fetch's third argument; Bun, Deno and Node do not. */
function waitUntilOf(executionCtx: unknown): ((p: Promise<unknown>) => void) | null {
  const ctx = executionCtx as { waitUntil?: (p: Promise<unknown>) => void } | null | undefined;
  if (ctx && typeof ctx.waitUntil === 'function') return (p) => ctx.waitUntil?.(p);
  return null;
}

export function createLavaWebhooks(options: LavaWebhooksOptions): LavaWebhooks {
  const secrets = (options.secrets ?? (options.secret !== undefined ? [options.secret] : []))
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (secrets.length === 0) {
    throw new ConfigError(
      'createLavaWebhooks: no webhook secret — pass `secret` (the webhook_secret Lava showed when you created the endpoint) or `secrets: [new, old]`',
    );
  }
  if (!options.store)
    throw new ConfigError('createLavaWebhooks: `store` is required, e.g. memoryStore() or sqliteStore({ path })');
  const now = options.now ?? Date.now;
  const logger = options.logger ?? jsonLogger({ level: options.logLevel ?? 'info' });
  const metrics = options.metrics ?? new Metrics();
  const store = options.store;
  const retentionMs = positive('retentionMs', options.retentionMs, 7 * DAY);
  const tombstoneRetentionMs = positive('tombstoneRetentionMs', options.tombstoneRetentionMs, 3 * 365 * DAY);
  if (tombstoneRetentionMs < retentionMs) {
    throw new ConfigError(
      `tombstoneRetentionMs (${tombstoneRetentionMs}) must be at least retentionMs (${retentionMs}): a tombstone ` +
        'that went before its event would let a replay of it run again',
    );
  }
  const path = options.path ?? '/webhooks/lava';
  if (!path.startsWith('/')) throw new ConfigError(`path must start with "/", got ${JSON.stringify(path)}`);
  const bodyLimit = positive('bodyLimit', options.bodyLimit, 256 * 1024);
  const bodyMemoryLimit = positive(
    'bodyMemoryLimit',
    options.bodyMemoryLimit,
    Math.max(DEFAULT_BODY_MEMORY_LIMIT, bodyLimit),
  );
  if (bodyMemoryLimit < bodyLimit) {
    throw new ConfigError(
      `bodyMemoryLimit (${bodyMemoryLimit}) must be at least bodyLimit (${bodyLimit}), or no body of the largest ` +
        'accepted size could ever be read',
    );
  }
  const rejectionLogRate = options.rejectionLogRate ?? DEFAULT_REJECTION_LOG_RATE;
  if (!Number.isFinite(rejectionLogRate) || rejectionLogRate < 0) {
    throw new ConfigError(`rejectionLogRate must be 0 or more lines a second, got ${options.rejectionLogRate}`);
  }
  if (options.metricsToken !== undefined && options.metricsToken.trim().length === 0) {
    throw new ConfigError('metricsToken is empty: pass a random token, or leave it out to serve /metrics without one');
  }
  const ignore: readonly string[] = options.ignore ?? [];
  const handlers = (options.handlers ?? {}) as Record<string, unknown>;
  // A misspelt key would never run, and its events would look handled: refuse it here, where the mistake was made.
  const problems = handlerProblems(handlers, ignore);
  if (problems.length === 1) throw new ConfigError(`createLavaWebhooks: ${problems[0]}`);
  if (problems.length > 1) throw new ConfigError(`createLavaWebhooks:\n${problems.map((p) => `  ${p}`).join('\n')}`);
  if (!options.process) {
    const unhandled = unhandledEvents(handlers, ignore);
    if (unhandled.length > 0) {
      logger.warn('known events without a handler become dead letters; add a handler or list them in ignore', {
        events: unhandled,
      });
    }
  }
  const budget = new BodyBudget(bodyMemoryLimit);
  metrics.bodyMemory = budget;
  const unauthenticatedLogger = rateLimited(logger, { perSecond: rejectionLogRate });

  // Events validated here are handed to the worker already parsed (only when the built-in dispatcher runs them).
  const parsedCache = options.process ? undefined : new ParsedCache();
  const steps = createIntakeSteps({
    store,
    verifier: (options.verifier ?? subtleVerifier)(secrets),
    digest: options.digest,
    bodyLimit,
    bodyBudget: budget,
    unauthenticatedLogger,
    bodyTimeoutMs: positive('bodyTimeoutMs', options.bodyTimeoutMs, 10_000),
    storeTimeoutMs: positive('storeTimeoutMs', options.storeTimeoutMs, 5_000),
    keepHeaders: (options.keepHeaders ?? DEFAULT_KEEP_HEADERS).map((h) => h.toLowerCase()),
    identityRules: identityRules(options),
    trustIdHeader: options.trustWebhookIdHeader === true,
    logger,
    metrics,
    now,
    onAccepted: parsedCache
      ? (key, receivedAt, bytes, parsed) => parsedCache.set(key, receivedAt, bytes, parsed)
      : undefined,
    // The insert of a delivery may take the lease a claim would (see Store.insert): the worker offers one while it
    // polls and has room, and runs what the store leased to it. (`worker` is made below; these run per delivery.)
    leases: {
      offer: () => worker.leaseForInsert(),
      adopt: (record) => worker.adopt(record),
    },
  });
  const intake = createIntake(steps);

  const worker = createWorker({
    store,
    process: gated(
      store,
      options.process ?? createDispatcher(options.handlers ?? {}, options.onUnknown, logger, parsedCache, ignore),
    ),
    concurrency: positive('concurrency', options.concurrency, 8),
    leaseMs: positive('leaseMs', options.leaseMs, 30_000),
    pollMs: positive('pollMs', options.pollMs, 1_000),
    handlerTimeoutMs: positive('handlerTimeoutMs', options.handlerTimeoutMs, 60_000),
    retry: {
      scheduleMs: options.retry?.scheduleMs ?? DEFAULT_RETRY_SCHEDULE_MS,
      jitter: options.retry?.jitter ?? 0.2,
    },
    logger,
    metrics,
    now,
  });

  let closing = false;
  let started = false;
  let retentionTimer: ReturnType<typeof setInterval> | undefined;

  async function purge(): Promise<number> {
    const t = now();
    const n = await store.purge({ before: t - retentionMs, tombstonesBefore: t - tombstoneRetentionMs });
    if (n > 0) logger.info('retention: purged completed events', { purged: n });
    return n;
  }

  const deps: Parameters<typeof createApp>[0] = {
    path,
    intake,
    steps,
    store,
    metrics,
    logger,
    now,
    metricsToken: options.metricsToken,
    metricsRoute: options.metricsRoute,
    adminToken: options.adminToken,
    unauthenticatedLogger,
    isClosing: () => closing,
    onRecorded(waitUntil) {
      if (started) {
        void worker.notify();
        return;
      }
      // No loop (serverless): process right after the ack, kept alive by waitUntil where the runtime has one.
      const work = worker.drain().catch((error) => logger.error('processing after the ack failed', { error }));
      waitUntil()?.(work);
    },
  };
  const deliver = createDeliveryHandler(deps);
  const route = options.deliveryRoute ?? defaultDeliveryRoute;
  const app = createApp(deps, deliver, route);
  const metricsHandler = createMetricsHandler(deps);
  // Deliveries skip Hono's routing and context: a POST whose path is exactly the webhook path goes straight to the
  // handler; everything else (and any path needing decoding) goes through the app. Measured against the idiomatic
  // Hono chain in docs/architecture.md ("Why deliveries skip Hono's router").
  const fastPath = route || path.includes('%') ? null : path;

  return {
    fetch: (request, env, executionCtx) => {
      if (fastPath !== null && request.method === 'POST' && pathOf(request.url) === fastPath) {
        return deliver(request, () => waitUntilOf(executionCtx));
      }
      return app.fetch(request, env as never, executionCtx as Parameters<Hono['fetch']>[2]);
    },
    app,
    metricsFetch(request) {
      if (pathOf(request.url) === '/metrics' && (request.method === 'GET' || request.method === 'HEAD')) {
        return metricsHandler(request);
      }
      return Promise.resolve(
        new Response(JSON.stringify({ error: 'not found' }), {
          status: 404,
          headers: { 'content-type': 'application/json' },
        }),
      );
    },
    store,
    metrics,
    worker,
    logger,
    start() {
      if (started) return;
      started = true;
      worker.start();
      const every = Math.min(retentionMs, 3_600_000);
      const tick = () => purge().catch((error) => logger.warn('retention purge failed', { error }));
      retentionTimer = setInterval(tick, every);
      (retentionTimer as { unref?: () => void }).unref?.();
      void tick();
    },
    drain: (o) => worker.drain(o),
    purge,
    async close(deadlineMs = 10_000) {
      if (closing) return;
      closing = true;
      if (retentionTimer) clearInterval(retentionTimer);
      const { unfinished } = await worker.stop(deadlineMs);
      await store.close();
      logger.info('closed', { unfinished });
    },
  };
}
