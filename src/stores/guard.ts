// The closed guard and the error wrapping every store shares: one vocabulary, each error naming the store and the
// method, so a log line says which store failed at what without each store spelling its own messages.
import { StoreSchemaError, StoreUnavailableError, StoreUsageError } from '../errors.ts';

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Whether `err` is already one of the store errors (passed on as it is, never wrapped twice). */
export function isStoreError(err: unknown): boolean {
  return err instanceof StoreUnavailableError || err instanceof StoreSchemaError || err instanceof StoreUsageError;
}

/** One per store instance: knows its name, where it points (a path, for messages), and whether it was closed. */
export class StoreGuard {
  readonly store: string;
  /** How messages name the store: `sqlite store (/var/lib/lava/events.db)`. */
  readonly label: string;
  #closed = false;

  constructor(store: string, where?: string) {
    this.store = store;
    this.label = where === undefined ? `${store} store` : `${store} store (${where})`;
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    this.#closed = true;
  }

  /** Throws when the store was closed. Allocates nothing while it is open: it runs on the ack path. */
  check(operation: string): void {
    if (this.#closed) throw this.closedError(operation);
  }

  closedError(operation: string): StoreUnavailableError {
    return new StoreUnavailableError(`${this.label} is closed: ${operation}() refused`, {
      store: this.store,
      operation,
    });
  }

  /** A store error of this store's own making (full, lost a race), with an optional cause. */
  unavailable(operation: string, reason: string, cause?: unknown): StoreUnavailableError {
    return new StoreUnavailableError(`${this.label}: ${operation}() failed: ${reason}`, {
      store: this.store,
      operation,
      cause,
    });
  }

  /** `err` as the error to throw: store errors as they are, anything else as StoreUnavailableError with its cause. */
  fail(operation: string, err: unknown): Error {
    if (isStoreError(err)) return err as Error;
    return this.unavailable(operation, messageOf(err), err);
  }
}
