// The server: environment → validated config → store → receiver → serve. One file for `bun run src/server.ts`
// and `deno serve -A src/server.ts` (which serves the default export's fetch).
import { loadConfig, relayUrls } from './config.ts';
import { Metrics } from './observability/metrics.ts';
import { redactUrl, relay } from './relay/relay.ts';
import type { HandlerMap, UnknownHandler } from './processing/dispatch.ts';
import { DEFAULT_KEEP_HEADERS, type LavaWebhooks, createLavaWebhooks } from './receiver.ts';
import { jsonLogger } from './observability/log.ts';
import { isBun, isDeno, openStore } from './runtime/open-store.ts';
import { DRAIN_CRON_NAME, DRAIN_CRON_SCHEDULE, scheduleDrainCron } from './runtime/deno-cron.ts';
import { nativeSha256Hex, nativeVerifier } from './runtime/verify-native.ts';

type Env = Record<string, string | undefined>;
const runtimeGlobals = globalThis as unknown as {
  Deno?: {
    env: { toObject(): Env };
    addSignalListener(signal: string, fn: () => void): void;
    exit(code: number): never;
    cwd(): string;
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
function loggingHandlers(): { handlers: HandlerMap; onUnknown: UnknownHandler } {
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
    handlers: { 'customer.created': log, 'customer.wallet.balance.updated': log, 'customer.deleted': log },
    onUnknown: log,
  };
}

/** A handlers module exports `handlers` (or a default handler map) and optionally `onUnknown`. */
async function loadHandlers(spec: string): Promise<{ handlers: HandlerMap; onUnknown?: UnknownHandler }> {
  const base = `file://${(runtimeGlobals.Deno?.cwd() ?? runtimeGlobals.process?.cwd() ?? '.').replace(/\/?$/, '/')}`;
  const url = spec.startsWith('file:') ? spec : new URL(spec, base).href;
  const mod = (await import(url)) as { handlers?: HandlerMap; default?: HandlerMap; onUnknown?: UnknownHandler };
  const handlers = mod.handlers ?? mod.default;
  if (!handlers || typeof handlers !== 'object') {
    throw new Error(`LAVA_WEBHOOK_HANDLERS=${spec}: the module exports no \`handlers\` object (or default export)`);
  }
  return { handlers, onUnknown: mod.onUnknown };
}

async function boot(): Promise<{ lava: LavaWebhooks; port: number; hostname: string; shutdownMs: number }> {
  const boot = jsonLogger({ level: 'info' });
  const env = readEnv();
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(env);
  } catch (error) {
    boot.error('refusing to start', { error: (error as Error).message });
    console.error(`\n${(error as Error).message}\n\nSet LAVA_WEBHOOK_SECRET (and see README.md, "Configuration").`);
    return exit(1);
  }
  const logger = jsonLogger({ level: config.LOG_LEVEL });
  let opened: Awaited<ReturnType<typeof openStore>>;
  let handlers: Awaited<ReturnType<typeof loadHandlers>>;
  try {
    opened = await openStore(config);
    handlers = config.LAVA_WEBHOOK_HANDLERS ? await loadHandlers(config.LAVA_WEBHOOK_HANDLERS) : loggingHandlers();
  } catch (error) {
    logger.error('refusing to start', { error: (error as Error).message });
    return exit(1);
  }
  const metrics = new Metrics();
  const urls = relayUrls(env);
  const relayOn = Boolean(config.LAVA_RELAY_URL || Object.keys(urls).length > 0);
  let relayProcess: ReturnType<typeof relay> | undefined;
  try {
    relayProcess = relayOn
      ? relay({
          url: config.LAVA_RELAY_URL,
          urls,
          secret: config.LAVA_RELAY_SECRET as string,
          timeoutMs: config.LAVA_RELAY_TIMEOUT,
          forwardSignature: config.LAVA_RELAY_FORWARD_SIGNATURE,
          logger,
          metrics,
        })
      : undefined;
  } catch (error) {
    logger.error('refusing to start', { error: (error as Error).message });
    return exit(1);
  }
  if (relayProcess && config.LAVA_WEBHOOK_HANDLERS) {
    logger.warn('relay mode is on: LAVA_WEBHOOK_HANDLERS is loaded but not used', {
      handlers: config.LAVA_WEBHOOK_HANDLERS,
    });
  }
  const lava = createLavaWebhooks({
    secrets: config.LAVA_WEBHOOK_SECRET,
    metrics,
    process: relayProcess,
    store: opened.store,
    // A synchronous native HMAC (Bun's CryptoHasher, else node:crypto) instead of SubtleCrypto's async verify.
    verifier: nativeVerifier,
    digest: nativeSha256Hex,
    handlers: handlers.handlers,
    onUnknown: handlers.onUnknown,
    path: config.LAVA_WEBHOOK_PATH,
    bodyLimit: config.LAVA_WEBHOOK_BODY_LIMIT,
    concurrency: config.LAVA_WEBHOOK_CONCURRENCY,
    retentionMs: config.LAVA_WEBHOOK_RETENTION,
    tombstoneRetentionMs: config.LAVA_WEBHOOK_TOMBSTONE_RETENTION,
    leaseMs: config.LAVA_WEBHOOK_LEASE,
    pollMs: config.LAVA_WEBHOOK_POLL,
    handlerTimeoutMs: config.LAVA_WEBHOOK_HANDLER_TIMEOUT,
    storeTimeoutMs: config.LAVA_WEBHOOK_STORE_TIMEOUT,
    trustWebhookIdHeader: config.LAVA_WEBHOOK_TRUST_WEBHOOK_ID,
    // The relay can only forward Lava's signature if the store kept it, which by default it does not.
    keepHeaders: relayProcess && config.LAVA_RELAY_FORWARD_SIGNATURE ? [...DEFAULT_KEEP_HEADERS, 'x-webhook-signature'] : undefined,
    retry: config.LAVA_WEBHOOK_RETRY_SCHEDULE ? { scheduleMs: config.LAVA_WEBHOOK_RETRY_SCHEDULE } : undefined,
    logger,
  });
  lava.start();
  logger.info('lava webhook receiver starting', {
    runtime: isBun ? 'bun' : isDeno ? 'deno' : 'node',
    store: opened.kind,
    where: opened.where,
    path: config.LAVA_WEBHOOK_PATH,
    secrets: config.LAVA_WEBHOOK_SECRET.length,
    handlers: relayOn
      ? `relay to ${[config.LAVA_RELAY_URL, ...Object.values(urls)].filter((u) => u !== undefined).map(redactUrl).join(', ')}`
      : (config.LAVA_WEBHOOK_HANDLERS ?? 'built-in logging handlers'),
  });
  return { lava, port: config.PORT, hostname: config.HOSTNAME, shutdownMs: config.LAVA_WEBHOOK_SHUTDOWN_TIMEOUT };
}

const booted = boot();
// Declared at top level before serving (Deno Deploy finds crons that way); a no-op where Deno.cron is absent.
const cronScheduled = scheduleDrainCron(async () => (await booted).lava);
const { lava, port, hostname, shutdownMs } = await booted;
if (cronScheduled) lava.logger.info('drain cron scheduled', { name: DRAIN_CRON_NAME, schedule: DRAIN_CRON_SCHEDULE });

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
    await Promise.race([stopListening(), new Promise((r) => setTimeout(r, Math.min(shutdownMs, 5000)))]);
    await lava.close(shutdownMs);
  } catch (error) {
    lava.logger.error('error during shutdown', { error });
    exit(1);
  }
  exit(0);
});

/** `deno serve` serves this; Bun is served above (exporting fetch on Bun would make Bun serve it a second time). */
export default isBun ? {} : { fetch: lava.fetch };
