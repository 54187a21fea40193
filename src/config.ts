// The server's environment, read and validated with zod at start-up. Web-standard: takes a plain record.
import { z } from 'zod';
import { EVENT_NAMES, LEGACY_EVENTS } from './intake/events.ts';
import { DEFAULT_BODY_MEMORY_LIMIT } from './intake/budget.ts';
import { DEFAULT_REJECTION_LOG_RATE } from './observability/log.ts';
import { ConfigError } from './receiver.ts';
import { INSECURE_HTTP, insecureHttp } from './relay/relay.ts';

const UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  y: 365 * 86_400_000,
};

/** `500ms`, `10s`, `5m`, `12h`, `7d`, `3y` (365 days each), or a plain number of milliseconds. */
export function parseDuration(value: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|y)?\s*$/i.exec(value);
  if (!m) return null;
  return Math.round(Number(m[1]) * (UNITS[(m[2] ?? 'ms').toLowerCase()] as number));
}

/** `256kb`, `1mb`, or a plain number of bytes. */
export function parseBytes(value: string): number | null {
  const m = /^\s*(\d+)\s*(b|kb|kib|mb|mib)?\s*$/i.exec(value);
  if (!m) return null;
  const unit = (m[2] ?? 'b').toLowerCase();
  const mult = unit === 'b' ? 1 : unit.startsWith('k') ? 1024 : 1024 * 1024;
  return Number(m[1]) * mult;
}

const duration = (example: string) =>
  z.string().transform((v, ctx) => {
    const ms = parseDuration(v);
    if (ms === null || ms <= 0) {
      ctx.addIssue({ code: 'custom', message: `expected a duration such as ${example}` });
      return z.NEVER;
    }
    return ms;
  });

const integer = (min: number, max: number) =>
  z
    .string()
    .regex(/^\s*\d+\s*$/, `expected a whole number from ${min} to ${max}`)
    .transform(Number)
    .pipe(
      z
        .number()
        .int()
        .min(min, `expected a whole number from ${min} to ${max}`)
        .max(max, `expected a whole number from ${min} to ${max}`),
    );

const oneOf = <const T extends readonly [string, ...string[]]>(values: T) =>
  z.enum(values, { error: `expected ${values.slice(0, -1).join(', ')} or ${values.at(-1)}` });

const flag = () =>
  z
    .enum(['true', 'false', '1', '0'], { error: 'expected true or false' })
    .default('false')
    .transform((v) => v === 'true' || v === '1');

const size = (example: string, min: number, fallback: number) =>
  z
    .string()
    .transform((v, ctx) => {
      const n = parseBytes(v);
      if (n === null || n < min) {
        ctx.addIssue({ code: 'custom', message: `expected a size such as ${example} (at least ${min} bytes)` });
        return z.NEVER;
      }
      return n;
    })
    .default(fallback);

export const envSchema = z.object({
  LAVA_WEBHOOK_SECRET: z
    .string({ error: 'is required: the webhook_secret Lava showed when you created the endpoint' })
    .transform((v) =>
      v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    )
    .pipe(z.array(z.string()).min(1, 'must hold at least one secret (comma-separated for rotation)')),
  PORT: integer(0, 65535).default(3000),
  // Not HOSTNAME: Kubernetes, Fargate and Docker set that to the machine's own name, which is no address to bind.
  LAVA_WEBHOOK_HOST: z.string().default('0.0.0.0'),
  LAVA_WEBHOOK_PATH: z.string().startsWith('/', 'expected a path starting with /').default('/webhooks/lava'),
  LAVA_WEBHOOK_STORE: oneOf(['sqlite', 'memory', 'kv', 'postgres']).optional(),
  LAVA_WEBHOOK_DB: z.string().min(1).default('./data/lava-webhooks.sqlite'),
  // SQLite only. `full` (default): an acknowledged delivery is fsynced first, so it survives a power cut or an OS
  // crash (Lava never retries, so an ack a power cut takes back is a lost event); with group commit the fsync runs off
  // the event loop, one per batch. `normal`: it survives a crash of the process only, and saves that fsync.
  LAVA_WEBHOOK_DURABILITY: oneOf(['normal', 'full']).default('full'),
  LAVA_WEBHOOK_KV: z.string().min(1).optional(),
  DATABASE_URL: z.string().min(1).optional(),
  LAVA_WEBHOOK_PG_SCHEMA: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]{0,62}$/, 'expected a plain schema name (letters, digits and _, at most 63)')
    .default('lava_webhooks'),
  LAVA_WEBHOOK_BODY_LIMIT: size('256kb', 64, 256 * 1024),
  LAVA_WEBHOOK_BODY_MEMORY: size('64mb', 1024, DEFAULT_BODY_MEMORY_LIMIT),
  LAVA_WEBHOOK_REJECTION_LOG_RATE: integer(0, 100_000).default(DEFAULT_REJECTION_LOG_RATE),
  LAVA_WEBHOOK_METRICS_TOKEN: z
    .string()
    .min(16, 'must be at least 16 characters (a random token, e.g. openssl rand -hex 32)')
    .optional(),
  LAVA_WEBHOOK_ADMIN_TOKEN: z
    .string()
    .min(16, 'must be at least 16 characters (a random token, e.g. openssl rand -hex 32)')
    .optional(),
  LAVA_WEBHOOK_METRICS_PORT: integer(1, 65535).optional(),
  LAVA_WEBHOOK_METRICS_HOST: z.string().optional(),
  LAVA_WEBHOOK_CONCURRENCY: integer(1, 10_000).default(8),
  LAVA_WEBHOOK_RETENTION: duration('7d').default(7 * 86_400_000),
  LAVA_WEBHOOK_TOMBSTONE_RETENTION: duration('3y').default(3 * 365 * 86_400_000),
  LAVA_WEBHOOK_LEASE: duration('30s').default(30_000),
  LAVA_WEBHOOK_POLL: duration('1s').default(1_000),
  LAVA_WEBHOOK_HANDLER_TIMEOUT: duration('60s').default(60_000),
  LAVA_WEBHOOK_STORE_TIMEOUT: duration('5s').default(5_000),
  LAVA_WEBHOOK_SHUTDOWN_TIMEOUT: duration('10s').default(10_000),
  LAVA_WEBHOOK_RETRY_SCHEDULE: z
    .string()
    .transform((v, ctx) => {
      const parts = v.split(',').map((p) => parseDuration(p));
      if (parts.some((p) => p === null)) {
        ctx.addIssue({ code: 'custom', message: 'expected comma-separated durations such as 1s,5s,30s' });
        return z.NEVER;
      }
      return parts as number[];
    })
    .optional(),
  LAVA_WEBHOOK_HANDLERS: z.string().min(1).optional(),
  LAVA_WEBHOOK_TRUST_WEBHOOK_ID: flag(),
  LAVA_RELAY_URL: z.url({ protocol: /^https?$/, error: 'expected an http(s) URL' }).optional(),
  LAVA_RELAY_SECRET: z
    .string()
    .regex(/^whsec_[A-Za-z0-9+/]+={0,2}$/, 'expected a Standard Webhooks secret: whsec_ followed by base64')
    .optional(),
  LAVA_RELAY_TIMEOUT: duration('10s').default(10_000),
  // Off by default: the relay signs what it sends, and Lava's signature is only kept (and so forwarded) on request.
  LAVA_RELAY_FORWARD_SIGNATURE: flag(),
  // Off by default: a plain http:// endpoint off this machine would carry every event in clear text.
  LAVA_RELAY_ALLOW_HTTP: flag(),
  LOG_LEVEL: oneOf(['debug', 'info', 'warn', 'error', 'silent']).default('info'),
});

export type ServerConfig = z.output<typeof envSchema>;

// Values never repeated in an error: secrets, tokens, and URLs (which can carry a password or a token).
const UNQUOTABLE = /SECRET|TOKEN|PASSWORD|URL/;

/** One line per variable: its first problem and, unless it may hold a secret, the value it had. */
function problemLines(issues: readonly z.core.$ZodIssue[], env: Record<string, string>): string[] {
  const seen = new Set<string>();
  const lines: string[] = [];
  for (const issue of issues) {
    const name = String(issue.path[0] ?? '(environment)');
    // A value can fail several checks of one pipe (format, then range): the first says what is wrong.
    if (seen.has(name)) continue;
    seen.add(name);
    const value = env[name];
    const got = value === undefined || UNQUOTABLE.test(name) ? '' : `, got ${JSON.stringify(value.slice(0, 100))}`;
    lines.push(`${name}: ${issue.message}${got}`);
  }
  return lines;
}

/** A ConfigError listing one problem per line, each starting with the variable it is about. */
function configError(problems: readonly string[]): ConfigError {
  if (problems.length === 1) return new ConfigError(`invalid configuration: ${problems[0]}`);
  return new ConfigError(`invalid configuration:\n${problems.map((p) => `  ${p}`).join('\n')}`);
}

function parseEnv<S extends z.ZodType>(schema: S, env: Record<string, string | undefined>): z.output<S> {
  // An empty variable means "not set" (docker-compose and shells often pass empty strings).
  const cleaned: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && v !== '') cleaned[k] = v;
  // Parsed once per process: without `jitless`, zod would first generate code for the object's ~45 keys, which took
  // about 10 of the 15 ms this parse cost at start-up (measured on Bun) and never paid back.
  const parsed = schema.safeParse(cleaned, { jitless: true });
  if (!parsed.success) throw configError(problemLines(parsed.error.issues, cleaned));
  return parsed.data;
}

/** The environment variable of an event's own relay endpoint: customer.created → LAVA_RELAY_URL_CUSTOMER_CREATED. */
const relayUrlVar = (event: string) => `LAVA_RELAY_URL_${event.toUpperCase().replace(/\./g, '_')}`;

/** Per-event relay endpoints: LAVA_RELAY_URL_CUSTOMER_CREATED=… → { 'customer.created': … }. */
export function relayUrls(env: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    const m = /^LAVA_RELAY_URL_([A-Z0-9_]+)$/.exec(k);
    if (m && v) out[(m[1] as string).toLowerCase().replace(/_/g, '.')] = v;
  }
  return out;
}

/** Parses the environment or throws a ConfigError listing every problem, one per line. */
export function loadConfig(env: Record<string, string | undefined>): ServerConfig {
  const config = parseEnv(envSchema, env);
  const perEvent = relayUrls(env);
  const problems: string[] = [];
  for (const [event, url] of Object.entries(perEvent)) {
    const name = relayUrlVar(event);
    // A typo would otherwise send that event to the default URL without a word.
    if (Object.hasOwn(LEGACY_EVENTS, event)) {
      const current = relayUrlVar(LEGACY_EVENTS[event] as string);
      problems.push(`${name}: legacy events are relayed under their current name; use ${current}`);
    } else if (!(EVENT_NAMES as readonly string[]).includes(event)) {
      const known = EVENT_NAMES.map(relayUrlVar).join(', ');
      problems.push(`${name}: not a known event; expected one of ${known}`);
    } else if (!/^https?:\/\/[^\s]+$/i.test(url) || !URL.canParse(url)) {
      problems.push(`${name}: expected an http(s) URL`);
    } else if (!config.LAVA_RELAY_ALLOW_HTTP && insecureHttp(url)) {
      problems.push(`${name}: ${INSECURE_HTTP}`);
    }
  }
  if (config.LAVA_RELAY_URL && !config.LAVA_RELAY_ALLOW_HTTP && insecureHttp(config.LAVA_RELAY_URL)) {
    problems.push(`LAVA_RELAY_URL: ${INSECURE_HTTP}`);
  }
  if (config.LAVA_WEBHOOK_BODY_MEMORY < config.LAVA_WEBHOOK_BODY_LIMIT) {
    problems.push(
      `LAVA_WEBHOOK_BODY_MEMORY: must be at least LAVA_WEBHOOK_BODY_LIMIT (${config.LAVA_WEBHOOK_BODY_LIMIT} bytes), ` +
        'or no body of the largest accepted size could ever be read',
    );
  }
  if (config.LAVA_WEBHOOK_METRICS_PORT !== undefined && config.LAVA_WEBHOOK_METRICS_PORT === config.PORT) {
    problems.push('LAVA_WEBHOOK_METRICS_PORT: must differ from PORT (metrics get a port of their own)');
  }
  if (config.LAVA_WEBHOOK_TOMBSTONE_RETENTION < config.LAVA_WEBHOOK_RETENTION) {
    problems.push(
      'LAVA_WEBHOOK_TOMBSTONE_RETENTION: must be at least LAVA_WEBHOOK_RETENTION (a tombstone that went before its ' +
        'event would let a replay of it run again)',
    );
  }
  if ((config.LAVA_RELAY_URL || Object.keys(perEvent).length > 0) && !config.LAVA_RELAY_SECRET) {
    problems.push(
      'LAVA_RELAY_SECRET: is required when LAVA_RELAY_URL is set (the whsec_… secret your endpoint verifies with)',
    );
  }
  if (problems.length > 0) throw configError(problems);
  return config;
}

const storeEnvSchema = envSchema.pick({
  LAVA_WEBHOOK_STORE: true,
  LAVA_WEBHOOK_DB: true,
  LAVA_WEBHOOK_DURABILITY: true,
  LAVA_WEBHOOK_KV: true,
  DATABASE_URL: true,
  LAVA_WEBHOOK_PG_SCHEMA: true,
  LAVA_WEBHOOK_RETENTION: true,
});

export type StoreConfig = z.output<typeof storeEnvSchema>;

/** Only the variables that choose and open the store: for the CLI, which needs no secret to read the inbox. */
export function loadStoreConfig(env: Record<string, string | undefined>): StoreConfig {
  return parseEnv(storeEnvSchema, env);
}
