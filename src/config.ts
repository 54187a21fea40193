// The server's environment, read and validated at start-up. Web-standard: takes a plain record.
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

/** What a variable's reader throws for a value it refuses: the message that follows the variable's name. */
class Refused {
  readonly message: string;
  constructor(message: string) {
    this.message = message;
  }
}
const refuse = (message: string): never => {
  throw new Refused(message);
};

/** A variable's reader: its value as set (never empty: see readEnv), or undefined when it is not. */
type Reader<T> = (value: string | undefined) => T;
/** A reader of a set value. */
type Parse<T> = (value: string) => T;

const optional =
  <T>(parse: Parse<T>): Reader<T | undefined> =>
  (value) =>
    value === undefined ? undefined : parse(value);
const orDefault =
  <T>(parse: Parse<T>, fallback: T): Reader<T> =>
  (value) =>
    value === undefined ? fallback : parse(value);

const text: Parse<string> = (value) => value;

const checked =
  (ok: (value: string) => boolean, message: string): Parse<string> =>
  (value) =>
    ok(value) ? value : refuse(message);

const duration =
  (example: string): Parse<number> =>
  (value) => {
    const ms = parseDuration(value);
    return ms === null || ms <= 0 ? refuse(`expected a duration such as ${example}`) : ms;
  };

const integer =
  (min: number, max: number): Parse<number> =>
  (value) => {
    const n = /^\s*\d+\s*$/.test(value) ? Number(value) : Number.NaN;
    return Number.isSafeInteger(n) && n >= min && n <= max
      ? n
      : refuse(`expected a whole number from ${min} to ${max}`);
  };

const oneOf = <const T extends readonly [string, ...string[]]>(values: T): Parse<T[number]> => {
  const message = `expected ${values.slice(0, -1).join(', ')} or ${values.at(-1)}`;
  return (value) => ((values as readonly string[]).includes(value) ? (value as T[number]) : refuse(message));
};

const flag = orDefault(
  (value) =>
    ['true', '1'].includes(value) ? true : ['false', '0'].includes(value) ? false : refuse('expected true or false'),
  false,
);

const size =
  (example: string, min: number): Parse<number> =>
  (value) => {
    const n = parseBytes(value);
    return n === null || n < min ? refuse(`expected a size such as ${example} (at least ${min} bytes)`) : n;
  };

const TOKEN_MESSAGE = 'must be at least 16 characters (a random token, e.g. openssl rand -hex 32)';
const token = checked((v) => v.length >= 16, TOKEN_MESSAGE);

const secrets: Reader<string[]> = (value) => {
  if (value === undefined) return refuse('is required: the webhook_secret Lava showed when you created the endpoint');
  const list = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return list.length > 0 ? list : refuse('must hold at least one secret (comma-separated for rotation)');
};

/** An http(s) URL, trimmed, without the tabs and line breaks a URL parser would silently drop. */
const httpUrl: Parse<string> = (value) => {
  const trimmed = value.trim();
  return /^https?:\/\//i.test(trimmed) && URL.canParse(trimmed)
    ? trimmed.replace(/[\t\n\r]/g, '')
    : refuse('expected an http(s) URL');
};

/**
 * Every variable the server reads, in the order problems are listed, each with its reader. Plain functions rather
 * than a zod schema: the environment is read once, at start-up, where building and first running some 150 zod
 * schema objects took 15-20 ms of every cold start (measured on Bun pinned to one core).
 */
export const ENV_VARIABLES = {
  LAVA_WEBHOOK_SECRET: secrets,
  PORT: orDefault(integer(0, 65535), 3000),
  // Not HOSTNAME: Kubernetes, Fargate and Docker set that to the machine's own name, which is no address to bind.
  LAVA_WEBHOOK_HOST: orDefault(text, '0.0.0.0'),
  LAVA_WEBHOOK_PATH: orDefault(
    checked((v) => v.startsWith('/'), 'expected a path starting with /'),
    '/webhooks/lava',
  ),
  LAVA_WEBHOOK_STORE: optional(oneOf(['sqlite', 'memory', 'kv', 'postgres'])),
  LAVA_WEBHOOK_DB: orDefault(text, './data/lava-webhooks.sqlite'),
  // SQLite only. `full` (default): an acknowledged delivery is fsynced first, so it survives a power cut or an OS
  // crash (Lava never retries, so an ack a power cut takes back is a lost event); with group commit the fsync runs off
  // the event loop, one per batch. `normal`: it survives a crash of the process only, and saves that fsync.
  LAVA_WEBHOOK_DURABILITY: orDefault(oneOf(['normal', 'full']), 'full'),
  LAVA_WEBHOOK_KV: optional(text),
  DATABASE_URL: optional(text),
  LAVA_WEBHOOK_PG_SCHEMA: orDefault(
    checked(
      (v) => /^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(v),
      'expected a plain schema name (letters, digits and _, at most 63)',
    ),
    'lava_webhooks',
  ),
  LAVA_WEBHOOK_BODY_LIMIT: orDefault(size('256kb', 64), 256 * 1024),
  LAVA_WEBHOOK_BODY_MEMORY: orDefault(size('64mb', 1024), DEFAULT_BODY_MEMORY_LIMIT),
  LAVA_WEBHOOK_REJECTION_LOG_RATE: orDefault(integer(0, 100_000), DEFAULT_REJECTION_LOG_RATE),
  LAVA_WEBHOOK_METRICS_TOKEN: optional(token),
  LAVA_WEBHOOK_ADMIN_TOKEN: optional(token),
  LAVA_WEBHOOK_METRICS_PORT: optional(integer(1, 65535)),
  LAVA_WEBHOOK_METRICS_HOST: optional(text),
  LAVA_WEBHOOK_CONCURRENCY: orDefault(integer(1, 10_000), 8),
  LAVA_WEBHOOK_RETENTION: orDefault(duration('7d'), 7 * 86_400_000),
  LAVA_WEBHOOK_TOMBSTONE_RETENTION: orDefault(duration('3y'), 3 * 365 * 86_400_000),
  LAVA_WEBHOOK_LEASE: orDefault(duration('30s'), 30_000),
  LAVA_WEBHOOK_POLL: orDefault(duration('1s'), 1_000),
  LAVA_WEBHOOK_HANDLER_TIMEOUT: orDefault(duration('60s'), 60_000),
  LAVA_WEBHOOK_STORE_TIMEOUT: orDefault(duration('5s'), 5_000),
  LAVA_WEBHOOK_SHUTDOWN_TIMEOUT: orDefault(duration('10s'), 10_000),
  LAVA_WEBHOOK_RETRY_SCHEDULE: optional((value) => {
    const parts = value.split(',').map((p) => parseDuration(p));
    return parts.some((p) => p === null)
      ? refuse('expected comma-separated durations such as 1s,5s,30s')
      : (parts as number[]);
  }),
  LAVA_WEBHOOK_HANDLERS: optional(text),
  LAVA_WEBHOOK_TRUST_WEBHOOK_ID: flag,
  LAVA_RELAY_URL: optional(httpUrl),
  LAVA_RELAY_SECRET: optional(
    checked(
      (v) => /^whsec_[A-Za-z0-9+/]+={0,2}$/.test(v),
      'expected a Standard Webhooks secret: whsec_ followed by base64',
    ),
  ),
  LAVA_RELAY_TIMEOUT: orDefault(duration('10s'), 10_000),
  // Off by default: the relay signs what it sends, and Lava's signature is only kept (and so forwarded) on request.
  LAVA_RELAY_FORWARD_SIGNATURE: flag,
  // Off by default: a plain http:// endpoint off this machine would carry every event in clear text.
  LAVA_RELAY_ALLOW_HTTP: flag,
  LOG_LEVEL: orDefault(oneOf(['debug', 'info', 'warn', 'error', 'silent']), 'info'),
} satisfies Record<string, Reader<unknown>>;

type Variables = typeof ENV_VARIABLES;
type ConfigOf<K extends keyof Variables> = { [P in K]: ReturnType<Variables[P]> };
export type ServerConfig = ConfigOf<keyof Variables>;

// Values never repeated in an error: secrets, tokens, and URLs (which can carry a password or a token).
const UNQUOTABLE = /SECRET|TOKEN|PASSWORD|URL/;

/** A ConfigError listing one problem per line, each starting with the variable it is about. */
function configError(problems: readonly string[]): ConfigError {
  if (problems.length === 1) return new ConfigError(`invalid configuration: ${problems[0]}`);
  return new ConfigError(`invalid configuration:\n${problems.map((p) => `  ${p}`).join('\n')}`);
}

/**
 * Reads variables `names` of `env`; throws a ConfigError with one line per refused variable: what is wrong and,
 * unless it may hold a secret, the value it had.
 */
function readEnv<K extends keyof Variables>(names: readonly K[], env: Record<string, string | undefined>): ConfigOf<K> {
  const config = {} as Record<K, unknown>;
  const problems: string[] = [];
  for (const name of names) {
    // An empty variable means "not set" (docker-compose and shells often pass empty strings).
    const raw = env[name];
    const value = raw === '' ? undefined : raw;
    try {
      config[name] = (ENV_VARIABLES[name] as Reader<unknown>)(value);
    } catch (error) {
      if (!(error instanceof Refused)) throw error;
      const got = value === undefined || UNQUOTABLE.test(name) ? '' : `, got ${JSON.stringify(value.slice(0, 100))}`;
      problems.push(`${name}: ${error.message}${got}`);
    }
  }
  if (problems.length > 0) throw configError(problems);
  return config as ConfigOf<K>;
}

const ALL_VARIABLES = Object.keys(ENV_VARIABLES) as (keyof Variables)[];

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
  const config = readEnv(ALL_VARIABLES, env);
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

const STORE_VARIABLES = [
  'LAVA_WEBHOOK_STORE',
  'LAVA_WEBHOOK_DB',
  'LAVA_WEBHOOK_DURABILITY',
  'LAVA_WEBHOOK_KV',
  'DATABASE_URL',
  'LAVA_WEBHOOK_PG_SCHEMA',
  'LAVA_WEBHOOK_RETENTION',
] as const;

export type StoreConfig = ConfigOf<(typeof STORE_VARIABLES)[number]>;

/** Only the variables that choose and open the store: for the CLI, which needs no secret to read the inbox. */
export function loadStoreConfig(env: Record<string, string | undefined>): StoreConfig {
  return readEnv(STORE_VARIABLES, env);
}
