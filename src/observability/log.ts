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

export function jsonLogger(options: JsonLoggerOptions = {}, base: LogFields = {}): Logger {
  const min = RANK[options.level ?? 'info'];
  const write = options.write ?? ((line: string) => console.log(line));
  const emit = (level: Exclude<LogLevel, 'silent'>, msg: string, fields?: LogFields) => {
    if (RANK[level] < min) return;
    const line: LogFields = { time: new Date().toISOString(), level, msg };
    for (const source of [base, fields]) {
      if (!source) continue;
      for (const [k, v] of Object.entries(source)) {
        if (v === undefined || FORBIDDEN.test(k)) continue;
        line[k] = errorFields(v);
      }
    }
    write(JSON.stringify(line));
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => jsonLogger(options, { ...base, ...fields }),
  };
}

export const silentLogger: Logger = jsonLogger({ level: 'silent' });
