// The error vocabulary: one class per kind of failure, mapped to a status code only at the HTTP edge.
// It imports nothing, so a store, the CLI or a user's code can tell failures apart without loading the receiver.

/** A configuration mistake, thrown at construction with a message that says how to fix it. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** What a store error says about where it came from, besides its message. */
export interface StoreErrorOptions extends ErrorOptions {
  /** The store's name (`sqlite`, `postgres`, …). */
  store?: string;
  /** The store method that failed (`insert`, `claim`, …). */
  operation?: string;
}

/**
 * A store could not read or write (closed, locked, disk full, database away). Maps to 503 at the edge: the
 * delivery was not recorded and Lava's sender tries again.
 */
export class StoreUnavailableError extends Error {
  override name = 'StoreUnavailableError';
  /** The store that could not answer, when a store threw it (intake and the worker also throw it on timeouts). */
  readonly store: string | undefined;
  /** The store method that failed. */
  readonly operation: string | undefined;
  constructor(message: string, options: StoreErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.store = options.store;
    this.operation = options.operation;
  }
}

/** Thrown at start-up when a store's data cannot be used safely (not a database, newer schema, …). */
export class StoreSchemaError extends Error {
  override name = 'StoreSchemaError';
}

/**
 * A store method was called with options it cannot use (a limit out of range, an unknown status): a mistake in the
 * calling code, not an outage, so it is never retried as one. A `TypeError`, as a wrong argument is elsewhere.
 */
export class StoreUsageError extends TypeError {
  override name = 'StoreUsageError';
}
