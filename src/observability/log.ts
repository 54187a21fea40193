// JSON-lines logger. Secrets and signatures never reach a log: fields with those names are dropped here too.
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
const FORBIDDEN = /secret|signature|authorization|password/i;

export interface JsonLoggerOptions {
  /** Lowest level written. Default `info`. */
  level?: LogLevel;
  /** Where a finished line goes. Default: console.log (stdout). */
  write?: (line: string) => void;
}

function errorFields(value: unknown): unknown {
  if (value instanceof Error) return { name: value.name, message: value.message };
  return value;
}

/** Copies `fields` into `line`, leaving out undefined values and anything named like a secret. */
function merge(line: LogFields, fields: LogFields): void {
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined || FORBIDDEN.test(k)) continue;
    line[k] = errorFields(v);
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
