// The Hono app: routes and the mapping of intake results to HTTP. Nothing runtime-specific lives here.
import { Hono } from 'hono';
import { bearerCheck } from './observability/bearer.ts';
import type { Logger } from './observability/log.ts';
import type { Metrics } from './observability/metrics.ts';
import { type IntakeResult, RECEIVED } from './intake/intake.ts';
import type { Store } from './stores/store.ts';

export interface AppDeps {
  path: string;
  intake: (request: Request) => Promise<IntakeResult>;
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
function waitUntilOf(c: { executionCtx: unknown }): ((p: Promise<unknown>) => void) | null {
  try {
    const ctx = c.executionCtx as { waitUntil?: (p: Promise<unknown>) => void } | undefined;
    if (ctx && typeof ctx.waitUntil === 'function') return (p) => ctx.waitUntil?.(p);
  } catch {
    // No execution context on this runtime.
  }
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

/** The webhook route's handler, shared by the Hono route and the receiver's fast path (which skips routing). */
export function createDeliveryHandler(deps: AppDeps) {
  const { metrics } = deps;
  return async (request: Request, waitUntil: () => ((p: Promise<unknown>) => void) | null): Promise<Response> => {
    if (deps.isClosing()) return json(503, { error: 'shutting down' }, { 'retry-after': '1' });
    // The receiver's fast path calls this without Hono, so it answers its own unexpected errors, as onError would;
    // left to the runtime, the answer could show the error (Bun's development error page does).
    try {
      const started = performance.now();
      const r = await deps.intake(request);
      if (r.status === 200) metrics.ackLatency(performance.now() - started);
      if (r.recorded) deps.onRecorded(waitUntil);
      return r.body === RECEIVED ? new Response(RECEIVED_JSON, { headers: JSON_HEADERS }) : json(r.status, r.body, r.headers);
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
    ? metrics.counter('lava_webhooks_metrics_unauthorized_total', 'GET /metrics requests refused for a missing or wrong token.')
    : null;
  const refusalLog = deps.unauthenticatedLogger ?? logger;
  return async (request) => {
    if (authorized) {
      const header = request.headers.get('authorization');
      if (!(await authorized(header))) {
        refusals?.inc({});
        refusalLog.warn('metrics request refused', { reason: header === null ? 'no Authorization header' : 'wrong token' });
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

export function createApp(deps: AppDeps, deliver = createDeliveryHandler(deps)): Hono {
  const app = new Hono();
  const { path, store, logger } = deps;
  const serveMetrics = deps.metricsRoute !== false;

  app.post(path, (c) => deliver(c.req.raw, () => waitUntilOf(c)));

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
      return json(503, { status: 'unavailable', store: store.name });
    }
  });

  if (serveMetrics) {
    const metricsHandler = createMetricsHandler(deps);
    app.get('/metrics', (c) => metricsHandler(c.req.raw));
  }

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
