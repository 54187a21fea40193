// The server: environment → validated config → store → receiver → serve. One file for `bun run src/server.ts`
// and `deno serve -A src/server.ts` (which serves the default export's fetch).
import { type ServerConfig, loadConfig, relayUrls } from './config.ts';
import { Metrics } from './observability/metrics.ts';
import { redactUrl, relay } from './relay/relay.ts';
import type { HandlerMap, UnknownHandler } from './processing/dispatch.ts';
import { handlerProblems, unhandledEvents } from './processing/handler-names.ts';
import { DEFAULT_KEEP_HEADERS, type LavaWebhooks, type LavaWebhooksOptions, createLavaWebhooks } from './receiver.ts';
import { jsonLogger } from './observability/log.ts';
import { type HandlersModule, loadHandlersModule } from './runtime/handlers-module.ts';
import { isBun, isDeno, openStore } from './runtime/open-store.ts';
import { DRAIN_CRON_NAME, DRAIN_CRON_SCHEDULE, scheduleDrainCron } from './runtime/deno-cron.ts';
import { nativeSha256Hex, nativeVerifier } from './runtime/verify-native.ts';

type Env = Record<string, string | undefined>;
type Fetch = (request: Request) => Response | Promise<Response>;
const runtimeGlobals = globalThis as unknown as {
  Deno?: {
    env: { toObject(): Env };
    addSignalListener(signal: string, fn: () => void): void;
    exit(code: number): never;
    cwd(): string;
    serve(
      options: { port: number; hostname: string; onListen?: (addr: { port: number }) => void },
      handler: Fetch,
    ): { shutdown(): Promise<void> };
  };
  Bun?: { serve(options: Record<string, unknown>): { port: number; stop(force?: boolean): Promise<void> | void } };
  process?: { env: Env; on(signal: string, fn: () => void): void; exit(code: number): never; cwd(): string };
};

function readEnv(): Env {
  if (runtimeGlobals.Deno) return runtimeGlobals.Deno.env.toObject();
  return runtimeGlobals.process?.env ?? {};
}

function exit(code: number): never {
  if (runtimeGlobals.Deno) runtimeGlobals.Deno.exit(code);
  return runtimeGlobals.process?.exit(code) as never;
}

function onSignals(fn: (signal: string) => void) {
  for (const signal of ['SIGTERM', 'SIGINT']) {
    try {
      if (runtimeGlobals.Deno) runtimeGlobals.Deno.addSignalListener(signal, () => fn(signal));
      else runtimeGlobals.process?.on(signal, () => fn(signal));
    } catch {
      // A platform without signals (a Deno Deploy isolate): leases and the drain cron cover an abrupt stop.
    }
  }
}

/**
 * The handlers used when LAVA_WEBHOOK_HANDLERS names no module: each event is logged as one JSON line. Only what
 * identifies the event is logged, never `data`: it holds the customer's contact details (and, in legacy
 * `connection.*` events, the connection secret), and logs are kept and shipped far more widely than the store.
 */
function loggingHandlers(): HandlersModule {
  const log: UnknownHandler = (event, ctx) => {
    ctx.logger.info('event', {
      event: event.event,
      key: ctx.key,
      customer_id: event.data.customer_id ?? null,
      attempt: ctx.attempt,
      delivered_as: ctx.deliveredAs,
      outcome: 'logged',
    });
  };
  return {
    handlers: {
      'customer.created': log,
      'customer.wallet.balance.updated': log,
      'customer.deleted': log,
    } satisfies HandlerMap,
    onUnknown: log,
    ignore: [],
  };
}

/**
 * Prints why the server will not start, once, as plain text on stderr (a person reads it, often in a terminal or a
 * crash-looping container's log), and exits 1.
 */
function refuse(message: string): never {
  console.error(`lava-webhooks: refusing to start: ${message}`);
  return exit(1);
}

/** The handlers module, checked as createLavaWebhooks would, and every known event handled or ignored. */
async function handlersFrom(config: ServerConfig, relayOn: boolean): Promise<HandlersModule> {
  const spec = config.LAVA_WEBHOOK_HANDLERS;
  if (!spec) return loggingHandlers();
  const cwd = runtimeGlobals.Deno?.cwd() ?? runtimeGlobals.process?.cwd() ?? '.';
  const where = `LAVA_WEBHOOK_HANDLERS=${spec}`;
  let mod: HandlersModule;
  try {
    mod = await loadHandlersModule(spec, cwd);
  } catch (error) {
    return refuse(`${where}: ${(error as Error).message}`);
  }
  // In relay mode the module is not used (a warning says so), so what it handles does not matter.
  if (relayOn) return mod;
  const problems = handlerProblems(mod.handlers as Record<string, unknown>, mod.ignore);
  if (problems.length > 0) return refuse(`${where}:\n${problems.map((p) => `  ${p}`).join('\n')}`);
  // A server is deployed with one module, so an event it forgot is refused here rather than dead-lettered later.
  const unhandled = unhandledEvents(mod.handlers as Record<string, unknown>, mod.ignore);
  if (unhandled.length > 0) {
    const list = unhandled.map((e) => `'${e}'`).join(', ');
    return refuse(
      `${where}: no handler for ${unhandled.join(', ')}: add one, or list ${unhandled.length > 1 ? 'them' : 'it'} in ` +
        `the module's ignore export (export const ignore = [${list}]) to record ${unhandled.length > 1 ? 'them' : 'it'} ` +
        'as done without running anything',
    );
  }
  return mod;
}

interface Booted {
  lava: LavaWebhooks;
  port: number;
  hostname: string;
  shutdownMs: number;
  metricsPort: number | undefined;
  metricsHostname: string;
}

async function boot(): Promise<Booted> {
  const env = readEnv();
  let config: ServerConfig;
  try {
    config = loadConfig(env);
  } catch (error) {
    return refuse((error as Error).message);
  }
  const logger = jsonLogger({ level: config.LOG_LEVEL });
  const metrics = new Metrics();
  const urls = relayUrls(env);
  const relayOn = Boolean(config.LAVA_RELAY_URL || Object.keys(urls).length > 0);
  // The handlers and the relay are checked before the store opens: their mistakes need no database to show.
  const handlers = await handlersFrom(config, relayOn);
  let relayProcess: ReturnType<typeof relay> | undefined;
  try {
    relayProcess = relayOn
      ? relay({
          url: config.LAVA_RELAY_URL,
          urls,
          secret: config.LAVA_RELAY_SECRET as string,
          timeoutMs: config.LAVA_RELAY_TIMEOUT,
          forwardSignature: config.LAVA_RELAY_FORWARD_SIGNATURE,
          allowInsecureHttp: config.LAVA_RELAY_ALLOW_HTTP,
          logger,
          metrics,
        })
      : undefined;
  } catch (error) {
    return refuse((error as Error).message);
  }
  let opened: Awaited<ReturnType<typeof openStore>>;
  try {
    opened = await openStore(config);
  } catch (error) {
    return refuse((error as Error).message);
  }
  if (relayProcess && config.LAVA_WEBHOOK_HANDLERS) {
    logger.warn('relay mode is on: LAVA_WEBHOOK_HANDLERS is loaded but not used', {
      handlers: config.LAVA_WEBHOOK_HANDLERS,
    });
  }
  let lava: LavaWebhooks;
  try {
    lava = createLavaWebhooks({
      secrets: config.LAVA_WEBHOOK_SECRET,
      metrics,
      process: relayProcess,
      store: opened.store,
      // A synchronous native HMAC (Bun's CryptoHasher, else node:crypto) instead of SubtleCrypto's async verify.
      verifier: nativeVerifier,
      digest: nativeSha256Hex,
      handlers: handlers.handlers,
      onUnknown: handlers.onUnknown,
      ignore: handlers.ignore as LavaWebhooksOptions['ignore'],
      path: config.LAVA_WEBHOOK_PATH,
      bodyLimit: config.LAVA_WEBHOOK_BODY_LIMIT,
      bodyMemoryLimit: config.LAVA_WEBHOOK_BODY_MEMORY,
      rejectionLogRate: config.LAVA_WEBHOOK_REJECTION_LOG_RATE,
      metricsToken: config.LAVA_WEBHOOK_METRICS_TOKEN,
      adminToken: config.LAVA_WEBHOOK_ADMIN_TOKEN,
      // With a port of its own, /metrics is served there only.
      metricsRoute: config.LAVA_WEBHOOK_METRICS_PORT === undefined,
      concurrency: config.LAVA_WEBHOOK_CONCURRENCY,
      retentionMs: config.LAVA_WEBHOOK_RETENTION,
      tombstoneRetentionMs: config.LAVA_WEBHOOK_TOMBSTONE_RETENTION,
      leaseMs: config.LAVA_WEBHOOK_LEASE,
      pollMs: config.LAVA_WEBHOOK_POLL,
      handlerTimeoutMs: config.LAVA_WEBHOOK_HANDLER_TIMEOUT,
      storeTimeoutMs: config.LAVA_WEBHOOK_STORE_TIMEOUT,
      trustWebhookIdHeader: config.LAVA_WEBHOOK_TRUST_WEBHOOK_ID,
      // The relay can only forward Lava's signature if the store kept it, which by default it does not.
      keepHeaders:
        relayProcess && config.LAVA_RELAY_FORWARD_SIGNATURE
          ? [...DEFAULT_KEEP_HEADERS, 'x-webhook-signature']
          : undefined,
      retry: config.LAVA_WEBHOOK_RETRY_SCHEDULE ? { scheduleMs: config.LAVA_WEBHOOK_RETRY_SCHEDULE } : undefined,
      logger,
    });
  } catch (error) {
    await Promise.resolve(opened.store.close()).catch(() => {});
    return refuse((error as Error).message);
  }
  lava.start();
  logger.info('lava webhook receiver starting', {
    runtime: isBun ? 'bun' : isDeno ? 'deno' : 'node',
    store: opened.kind,
    where: opened.where,
    path: config.LAVA_WEBHOOK_PATH,
    secrets: config.LAVA_WEBHOOK_SECRET.length,
    handlers: relayOn
      ? `relay to ${[config.LAVA_RELAY_URL, ...Object.values(urls)]
          .filter((u) => u !== undefined)
          .map(redactUrl)
          .join(', ')}`
      : (config.LAVA_WEBHOOK_HANDLERS ?? 'built-in logging handlers'),
  });
  return {
    lava,
    port: config.PORT,
    hostname: config.LAVA_WEBHOOK_HOST,
    shutdownMs: config.LAVA_WEBHOOK_SHUTDOWN_TIMEOUT,
    metricsPort: config.LAVA_WEBHOOK_METRICS_PORT,
    metricsHostname: config.LAVA_WEBHOOK_METRICS_HOST ?? config.LAVA_WEBHOOK_HOST,
  };
}

const booted = boot();
// Declared at top level before serving (Deno Deploy finds crons that way); a no-op where Deno.cron is absent.
const cronScheduled = scheduleDrainCron(async () => (await booted).lava);
const { lava, port, hostname, shutdownMs, metricsPort, metricsHostname } = await booted;
if (cronScheduled) lava.logger.info('drain cron scheduled', { name: DRAIN_CRON_NAME, schedule: DRAIN_CRON_SCHEDULE });

/** Serves /metrics alone on its own port (Bun or Deno), so the public port need not expose it. */
function serveMetrics(): () => Promise<void> | void {
  if (metricsPort === undefined) return () => {};
  const url = `http://${metricsHostname}:${metricsPort}/metrics`;
  try {
    if (isBun && runtimeGlobals.Bun) {
      const server = runtimeGlobals.Bun.serve({
        port: metricsPort,
        hostname: metricsHostname,
        fetch: lava.metricsFetch,
        development: false,
      });
      lava.logger.info('metrics listening', { url });
      return () => server.stop();
    }
    if (runtimeGlobals.Deno) {
      const server = runtimeGlobals.Deno.serve(
        { port: metricsPort, hostname: metricsHostname, onListen: () => {} },
        lava.metricsFetch,
      );
      lava.logger.info('metrics listening', { url });
      return () => server.shutdown();
    }
  } catch (error) {
    return refuse(
      `LAVA_WEBHOOK_METRICS_PORT=${metricsPort}: cannot listen on ${metricsHostname}:${metricsPort} (${(error as Error).message})`,
    );
  }
  lava.logger.warn(
    'LAVA_WEBHOOK_METRICS_PORT is set but this runtime cannot open a second port; /metrics is not served',
    {},
  );
  return () => {};
}
const stopMetrics = serveMetrics();

let stopListening: () => Promise<void> | void = () => {};
if (isBun && runtimeGlobals.Bun) {
  const server = runtimeGlobals.Bun.serve({
    port,
    hostname,
    fetch: lava.fetch,
    // Bun closes a connection idle for 10 s by default; a slow sender gets the body timeout instead.
    idleTimeout: 60,
    // Bun's default follows NODE_ENV, and its development mode answers an uncaught error with an HTML page that
    // shows the error; this is a production server whatever NODE_ENV says.
    development: false,
  });
  stopListening = () => server.stop();
  lava.logger.info('listening', { url: `http://${hostname}:${server.port}` });
}

let shuttingDown = false;
onSignals(async (signal) => {
  if (shuttingDown) return;
  shuttingDown = true;
  lava.logger.info('shutting down', { signal, deadline_ms: shutdownMs });
  try {
    // Stop taking connections first (in-flight requests finish), then let handlers finish, then close the store.
    await Promise.race([
      Promise.all([stopListening(), stopMetrics()]),
      new Promise((r) => setTimeout(r, Math.min(shutdownMs, 5000))),
    ]);
    await lava.close(shutdownMs);
  } catch (error) {
    lava.logger.error('error during shutdown', { error });
    exit(1);
  }
  exit(0);
});

/** `deno serve` serves this; Bun is served above (exporting fetch on Bun would make Bun serve it a second time). */
export default isBun ? {} : { fetch: lava.fetch };
