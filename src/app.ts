// The Hono app: routes and the mapping of intake results to HTTP. Nothing runtime-specific lives here.
import { type Context, Hono } from 'hono';
import { bearerCheck } from './observability/bearer.ts';
import type { Logger } from './observability/log.ts';
import type { Metrics } from './observability/metrics.ts';
import { type IntakeResult, type IntakeSteps, RECEIVED } from './intake/intake.ts';
import { StoreUnavailableError } from './errors.ts';
import type { Store } from './stores/store.ts';
import { checkAdminToken } from './admin/token.ts';

export interface AppDeps {
  path: string;
  intake: (request: Request) => Promise<IntakeResult>;
  /** The same request path as steps (what `intake` runs), for a route that runs them as middleware. */
  steps: IntakeSteps;
  store: Store;
  metrics: Metrics;
  logger: Logger;
  /**
   * Called after a new event was recorded. `waitUntil()` gives the runtime's waitUntil when it has one; it is a
   * function because asking costs a thrown Error on runtimes without one, and a running worker never needs it.
   */
  onRecorded: (waitUntil: () => ((p: Promise<unknown>) => void) | null) => void;
  /** True once shutdown began: intake answers 503 so the sender (or load balancer) goes elsewhere. */
  isClosing: () => boolean;
  now: () => number;
  /** When set, GET /metrics answers 401 unless the request carries `Authorization: Bearer <token>`. */
  metricsToken?: string;
  /** Serve GET /metrics in this app. False when it is served elsewhere (another port): it answers 404 here. */
  metricsRoute?: boolean;
  /** Where refused /metrics requests are logged (rate-limited: anyone can send them). Default `logger`. */
  unauthenticatedLogger?: Logger;
  /** When set, the admin console is served under /admin (src/admin); else /admin is a 404 like any unknown path. */
  adminToken?: string;
}

const json = (status: number, body: unknown, extra?: Record<string, string>) =>
  new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json', ...extra },
  });

// The usual answer. Its headers are a plain object, not a shared Headers instance: Bun, Deno and undici copy a
// Headers they are given, but @hono/node-server's Response hands that very instance back, so what a caller added
// to one answer would reach every later one (the intake test checks this on every runtime).
const RECEIVED_JSON = JSON.stringify(RECEIVED);
const JSON_HEADERS = { 'content-type': 'application/json' };

/** Hono's executionCtx getter throws where the runtime has none (Bun, Deno, Node): ask, don't assume. */
function executionCtxOf<C>(c: { executionCtx: C }): C | undefined {
  try {
    return c.executionCtx;
  } catch {
    // No execution context on this runtime.
    return undefined;
  }
}

export function waitUntilOf(c: { executionCtx: unknown }): ((p: Promise<unknown>) => void) | null {
  const ctx = executionCtxOf(c) as { waitUntil?: (p: Promise<unknown>) => void } | undefined;
  if (ctx && typeof ctx.waitUntil === 'function') return (p) => ctx.waitUntil?.(p);
  return null;
}

async function storeCounts(store: Store, timeoutMs: number) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      Promise.resolve(store.counts()),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`store did not answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The answer while shutting down: the sender (or load balancer) goes elsewhere and comes back. */
export const shuttingDown = (): Response => json(503, { error: 'shutting down' }, { 'retry-after': '1' });

/**
 * The answer to an intake result: the ack latency of a 200 (`started` is a performance.now()), the worker told of a
 * new event, and the HTTP response. Shared by every way a delivery can reach intake.
 */
export function createDeliveryAnswer(deps: AppDeps) {
  const { metrics } = deps;
  return (r: IntakeResult, started: number, waitUntil: () => ((p: Promise<unknown>) => void) | null): Response => {
    if (r.status === 200) metrics.ackLatency(performance.now() - started);
    if (r.recorded) deps.onRecorded(waitUntil);
    return r.body === RECEIVED
      ? new Response(RECEIVED_JSON, { headers: JSON_HEADERS })
      : json(r.status, r.body, r.headers);
  };
}

/** The webhook route's handler, shared by the Hono route and the receiver's fast path (which skips routing). */
export function createDeliveryHandler(deps: AppDeps) {
  const answer = createDeliveryAnswer(deps);
  return async (request: Request, waitUntil: () => ((p: Promise<unknown>) => void) | null): Promise<Response> => {
    if (deps.isClosing()) return shuttingDown();
    // The receiver's fast path calls this without Hono, so it answers its own unexpected errors, as onError would;
    // left to the runtime, the answer could show the error (Bun's development error page does).
    try {
      const started = performance.now();
      return answer(await deps.intake(request), started, waitUntil);
    } catch (error) {
      return internalError(deps.logger, error);
    }
  };
}

/** The answer to an error nobody expected: the same generic 500 from every route, the error itself to the log. */
function internalError(logger: Logger, error: unknown): Response {
  logger.error('unhandled error in request', { error });
  return json(500, { error: 'internal error' });
}

/**
 * The GET /metrics answer: Prometheus text, behind the bearer token when one is set. Shared by the app's route and
 * the receiver's `metricsFetch` (a port of its own).
 */
export function createMetricsHandler(deps: AppDeps): (request: Request) => Promise<Response> {
  const { store, metrics, logger } = deps;
  const authorized = deps.metricsToken ? bearerCheck(deps.metricsToken) : null;
  const refusals = authorized
    ? metrics.counter(
        'lava_webhooks_metrics_unauthorized_total',
        'GET /metrics requests refused for a missing or wrong token.',
      )
    : null;
  const refusalLog = deps.unauthenticatedLogger ?? logger;
  return async (request) => {
    if (authorized) {
      const header = request.headers.get('authorization');
      if (!(await authorized(header))) {
        refusals?.inc({});
        refusalLog.warn('metrics request refused', {
          reason: header === null ? 'no Authorization header' : 'wrong token',
        });
        return json(401, { error: 'unauthorized' }, { 'www-authenticate': 'Bearer realm="metrics"' });
      }
    }
    let counts = null;
    try {
      counts = await storeCounts(store, 2000);
    } catch (error) {
      logger.warn('metrics: store counts unavailable', { error });
    }
    return new Response(metrics.render(counts), {
      headers: { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' },
    });
  };
}

/**
 * Registers the webhook route on the app in place of the default one. Only the benchmark's comparison point uses it
 * (src/http/delivery-chain.ts: the same steps as Hono middleware and zValidator; docs/architecture.md says why it
 * is not the default).
 */
export type DeliveryRoute = (app: Hono, deps: AppDeps) => void;

/**
 * The admin console under /admin, its modules loaded at its first request: they (and Hono's cookie, body-limit and
 * secure-headers middleware) took 10-12 ms of every start on one core, paid by deployments that never open it. The
 * token is checked now, so a bad one still stops the start.
 */
function mountAdmin(app: Hono, deps: AppDeps, token: string): void {
  checkAdminToken(token);
  let admin: Promise<Hono> | undefined;
  const load = () =>
    (admin ??= import('./admin/routes.ts').then(
      ({ adminRoutes }) =>
        new Hono()
          .route(
            '/admin',
            adminRoutes({ store: deps.store, token, metrics: deps.metrics, logger: deps.logger, now: deps.now }),
          )
          // What the console does not route (a method it has no page for) gets the app's own 404, as before.
          .notFound(() => json(404, { error: 'not found' })),
      (error: unknown) => {
        admin = undefined;
        throw error;
      },
    ));
  const forward = async (c: Context) => (await load()).fetch(c.req.raw, c.env, executionCtxOf(c));
  app.all('/admin', forward);
  app.all('/admin/*', forward);
}

export function createApp(deps: AppDeps, deliver = createDeliveryHandler(deps), route?: DeliveryRoute): Hono {
  const app = new Hono();
  const { path, store, logger } = deps;
  const serveMetrics = deps.metricsRoute !== false;

  if (route) route(app, deps);
  else app.post(path, (c) => deliver(c.req.raw, () => waitUntilOf(c)));

  app.get('/healthz', async () => {
    try {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.resolve(store.ping()),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error('store ping timed out')), 2000);
        }),
      ]).finally(() => clearTimeout(timer));
      if (deps.isClosing()) return json(503, { status: 'shutting down' });
      return json(200, { status: 'ok', store: store.name });
    } catch (error) {
      logger.warn('health check failed', { store: store.name, error });
      // The store answers, but its writes are failing or waiting (SQLite: a lock another process holds): deliveries
      // may get 503 or wait. Its reason names no path, so it can be shown here.
      if (error instanceof StoreUnavailableError && error.operation === 'write') {
        return json(503, { status: 'degraded', store: store.name, reason: error.message });
      }
      return json(503, { status: 'unavailable', store: store.name });
    }
  });

  if (serveMetrics) {
    const metricsHandler = createMetricsHandler(deps);
    app.get('/metrics', (c) => metricsHandler(c.req.raw));
  }

  if (deps.adminToken !== undefined) mountAdmin(app, deps, deps.adminToken);

  const allowed: Record<string, string> = { [path]: 'POST', '/healthz': 'GET, HEAD' };
  if (serveMetrics) allowed['/metrics'] = 'GET, HEAD';
  app.all('*', (c) => {
    const allow = allowed[c.req.path];
    if (allow) return json(405, { error: 'method not allowed' }, { allow });
    return json(404, { error: 'not found' });
  });

  app.onError((error) => internalError(logger, error));

  return app;
}
