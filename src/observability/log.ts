// JSON-lines logger. Secrets, signatures and customers' personal data never reach a log: fields named like them are
// masked here, at any depth, so a handler that logs a whole payload still leaks nothing.
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line. */
  child(fields: LogFields): Logger;
  /** Whether a line at `level` would be written; hot paths ask before building its fields. Absent means yes. */
  enabled?(level: Exclude<LogLevel, 'silent'>): boolean;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

/** What a masked value is replaced with. */
export const REDACTED = '[redacted]';

// Substrings rather than exact names: a provider's payload or a custom header can call a secret anything from
// `connection_secret` to `x-api-key`, and hiding a harmless field costs less than printing a secret. `key` alone is
// our idempotency key and stays visible (only `_key`/`-key` suffixes match).
const SECRET_NAME = /secret|token|passw(?:or)?d|authorization|cookie|api[_-]?key|signature|private[_-]?key|[_-]key$/i;
// Exact names: Lava's contact fields. `customer_id` and `reference_id` are what an operator searches logs by.
const PERSONAL_NAME = /^(?:email|phone|first_?name|last_?name)$/i;
// The logger masks both kinds, so one test per field on its path.
const MASKED_NAME = new RegExp(`${SECRET_NAME.source}|${PERSONAL_NAME.source}`, 'i');

/** Whether a field or header of this name holds a secret (token, password, signature, API key, …). */
export function isSecretName(name: string): boolean {
  return SECRET_NAME.test(name);
}

/** Whether a field of this name holds a customer's personal data (email, phone, first or last name). */
export function isPersonalName(name: string): boolean {
  return PERSONAL_NAME.test(name);
}

export interface RedactOptions {
  /** Mask personal data (email, phone, names) as well as secrets. Default true. */
  personal?: boolean;
  /** Objects nested deeper than this are replaced by `"[too deep]"`. Default 8. */
  maxDepth?: number;
  /** Objects and arrays visited at most; the rest are replaced by `"[truncated]"`. Default 1000. */
  maxNodes?: number;
}

interface Walk {
  masked: RegExp;
  maxDepth: number;
  budget: number;
  /** The objects on the path from the root: one seen again is a cycle, which JSON.stringify would throw on. */
  path: Set<object>;
}

// A null or absent value reveals nothing, and keeping it tells the reader the field was empty.
const maskedValue = (value: unknown) => (value == null ? value : REDACTED);

function setField(target: Record<string, unknown>, name: string, value: unknown): void {
  // A parsed payload can own a `__proto__` field; plain assignment would set the copy's prototype instead.
  if (name === '__proto__')
    Object.defineProperty(target, name, { value, enumerable: true, writable: true, configurable: true });
  else target[name] = value;
}

/** The value with masked fields replaced; the very same value when nothing needed changing (no copy). */
function walk(input: unknown, depth: number, w: Walk): unknown {
  if (typeof input !== 'object' || input === null) return input;
  // An Error's message and name are own non-enumerable properties: JSON.stringify would print `{}`.
  if (input instanceof Error) return { name: input.name, message: input.message };
  if (ArrayBuffer.isView(input) || input instanceof ArrayBuffer) return input;
  let value: unknown = input;
  // What JSON.stringify would print: a Date becomes its string, anything else with toJSON is walked as it returns.
  const toJSON = (input as { toJSON?: unknown }).toJSON;
  if (typeof toJSON === 'function') {
    value = toJSON.call(input);
    if (typeof value !== 'object' || value === null) return value;
  }
  const node = value as object;
  if (w.path.has(node)) return '[circular]';
  if (depth > w.maxDepth) return '[too deep]';
  if (--w.budget < 0) return '[truncated]';
  w.path.add(node);
  try {
    if (Array.isArray(node)) {
      let copy: unknown[] | null = null;
      for (let i = 0; i < node.length; i++) {
        const item: unknown = node[i];
        const next = walk(item, depth + 1, w);
        if (copy === null && next !== item) copy = node.slice(0, i);
        if (copy !== null) copy.push(next);
      }
      return copy ?? value;
    }
    const record = node as Record<string, unknown>;
    const names = Object.keys(record);
    let copy: Record<string, unknown> | null = null;
    for (let i = 0; i < names.length; i++) {
      const name = names[i] as string;
      const item = record[name];
      const next = w.masked.test(name) ? maskedValue(item) : walk(item, depth + 1, w);
      if (copy === null && next !== item) {
        copy = {};
        for (let j = 0; j < i; j++) setField(copy, names[j] as string, record[names[j] as string]);
      }
      if (copy !== null) setField(copy, name, next);
    }
    return copy ?? value;
  } finally {
    w.path.delete(node);
  }
}

/**
 * A copy of `value` with every field named like a secret (and, unless `personal: false`, like personal data)
 * replaced by `"[redacted]"`, at any depth of objects and arrays; cycles print as `"[circular]"`. The logger and the
 * CLI share it, so what counts as a secret is decided here only. Returns `value` itself when nothing was masked.
 */
export function redact(value: unknown, options: RedactOptions = {}): unknown {
  return walk(value, 0, {
    masked: options.personal === false ? SECRET_NAME : MASKED_NAME,
    maxDepth: options.maxDepth ?? 8,
    budget: options.maxNodes ?? 1000,
    path: new Set(),
  });
}

export interface JsonLoggerOptions {
  /** Lowest level written. Default `info`. */
  level?: LogLevel;
  /** Where a finished line goes. Default: console.log (stdout). */
  write?: (line: string) => void;
}

/**
 * Copies `fields` into `line`, leaving out undefined values and masking secrets and personal data. A primitive
 * value costs one test of its name: only objects and arrays are walked, so the usual flat line stays cheap.
 */
function merge(line: LogFields, fields: LogFields): void {
  let w: Walk | undefined;
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    if (MASKED_NAME.test(k)) line[k] = maskedValue(v);
    else if (typeof v === 'object' && v !== null) {
      w ??= { masked: MASKED_NAME, maxDepth: 8, budget: 1000, path: new Set() };
      line[k] = walk(v, 1, w);
    } else line[k] = v;
  }
}

interface Sink {
  min: number;
  write: (line: string) => void;
}

// A class, so a child logger (one per handler run) is one small object; its fields are merged only when a line is
// actually written, which at the usual levels is rarely.
class JsonLogger implements Logger {
  readonly #sink: Sink;
  readonly #parent: JsonLogger | null;
  readonly #fields: LogFields;
  constructor(sink: Sink, parent: JsonLogger | null, fields: LogFields) {
    this.#sink = sink;
    this.#parent = parent;
    this.#fields = fields;
  }
  #collect(line: LogFields) {
    if (this.#parent) this.#parent.#collect(line);
    merge(line, this.#fields);
  }
  #emit(level: Exclude<LogLevel, 'silent'>, msg: string, fields?: LogFields) {
    if (RANK[level] < this.#sink.min) return;
    const line: LogFields = { time: new Date().toISOString(), level, msg };
    this.#collect(line);
    if (fields) merge(line, fields);
    this.#sink.write(JSON.stringify(line));
  }
  debug(msg: string, fields?: LogFields) {
    this.#emit('debug', msg, fields);
  }
  info(msg: string, fields?: LogFields) {
    this.#emit('info', msg, fields);
  }
  warn(msg: string, fields?: LogFields) {
    this.#emit('warn', msg, fields);
  }
  error(msg: string, fields?: LogFields) {
    this.#emit('error', msg, fields);
  }
  child(fields: LogFields): Logger {
    return new JsonLogger(this.#sink, this, fields);
  }
  enabled(level: Exclude<LogLevel, 'silent'>): boolean {
    return RANK[level] >= this.#sink.min;
  }
}

export function jsonLogger(options: JsonLoggerOptions = {}, base: LogFields = {}): Logger {
  const sink: Sink = {
    min: RANK[options.level ?? 'info'],
    write: options.write ?? ((line: string) => console.log(line)),
  };
  return new JsonLogger(sink, null, base);
}

export const silentLogger: Logger = jsonLogger({ level: 'silent' });

/** Default for lines any sender can cause (rejected signatures, oversized or slow bodies): at most this many a second. */
export const DEFAULT_REJECTION_LOG_RATE = 10;

export interface RateLimitOptions {
  /** Lines written per second on average; up to this many may come at once. 0 writes none (metrics still count). */
  perSecond: number;
  /** How long after the first dropped line the summary is written if no line gets through before. Default 1 000. */
  summaryAfterMs?: number;
  /** The clock (tests). Default Date.now. */
  now?: () => number;
}

interface Bucket {
  perSecond: number;
  tokens: number;
  at: number;
  dropped: number;
  /** Dropped lines by message: messages come from this code, not from senders, so the map stays small. */
  byMsg: Map<string, number>;
  timer: ReturnType<typeof setTimeout> | undefined;
}

// A token bucket shared by a logger and its children: a flood of unauthenticated requests costs a few lines a second
// and one summary, not one line each (an attacker would otherwise fill the disk, or the log bill, for free).
class RateLimitedLogger implements Logger {
  readonly #inner: Logger;
  readonly #root: Logger;
  readonly #bucket: Bucket;
  readonly #now: () => number;
  readonly #summaryAfterMs: number;
  constructor(inner: Logger, root: Logger, bucket: Bucket, now: () => number, summaryAfterMs: number) {
    this.#inner = inner;
    this.#root = root;
    this.#bucket = bucket;
    this.#now = now;
    this.#summaryAfterMs = summaryAfterMs;
  }
  #allow(): boolean {
    const b = this.#bucket;
    const t = this.#now();
    b.tokens = Math.min(b.perSecond, b.tokens + ((t - b.at) * b.perSecond) / 1000);
    b.at = t;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
  #summarize(): void {
    const b = this.#bucket;
    if (b.timer !== undefined) clearTimeout(b.timer);
    b.timer = undefined;
    if (b.dropped === 0) return;
    // A list, not an object keyed by message: a key such as "signature rejected" would be masked as a secret's name.
    const lines = [...b.byMsg].map(([msg, count]) => ({ msg, count }));
    const dropped = b.dropped;
    b.dropped = 0;
    b.byMsg.clear();
    this.#root.warn(`suppressed ${dropped} similar lines`, { suppressed: dropped, lines });
  }
  #emit(level: Exclude<LogLevel, 'silent'>, msg: string, fields?: LogFields): void {
    if (this.#inner.enabled?.(level) === false) return;
    const b = this.#bucket;
    if (b.perSecond <= 0) return;
    if (!this.#allow()) {
      b.dropped++;
      b.byMsg.set(msg, (b.byMsg.get(msg) ?? 0) + 1);
      if (b.timer === undefined) {
        b.timer = setTimeout(() => this.#summarize(), this.#summaryAfterMs);
        (b.timer as { unref?: () => void }).unref?.();
      }
      return;
    }
    if (b.dropped > 0) this.#summarize();
    this.#inner[level](msg, fields);
  }
  debug(msg: string, fields?: LogFields) {
    this.#emit('debug', msg, fields);
  }
  info(msg: string, fields?: LogFields) {
    this.#emit('info', msg, fields);
  }
  warn(msg: string, fields?: LogFields) {
    this.#emit('warn', msg, fields);
  }
  error(msg: string, fields?: LogFields) {
    this.#emit('error', msg, fields);
  }
  child(fields: LogFields): Logger {
    return new RateLimitedLogger(this.#inner.child(fields), this.#root, this.#bucket, this.#now, this.#summaryAfterMs);
  }
  enabled(level: Exclude<LogLevel, 'silent'>): boolean {
    return this.#bucket.perSecond > 0 && this.#inner.enabled?.(level) !== false;
  }
}

/**
 * A logger that writes at most `perSecond` lines a second through `logger` and drops the rest, then writes one line,
 * `suppressed K similar lines`, with the count of each dropped message. For lines anyone on the network can cause.
 */
export function rateLimited(logger: Logger, options: RateLimitOptions): Logger {
  const now = options.now ?? Date.now;
  const perSecond = Math.max(0, options.perSecond);
  const bucket: Bucket = { perSecond, tokens: perSecond, at: now(), dropped: 0, byMsg: new Map(), timer: undefined };
  return new RateLimitedLogger(logger, logger, bucket, now, options.summaryAfterMs ?? 1000);
}
