// Retry policy: exponential-ish backoff with jitter, and the error a handler throws to give up at once.

/** Throw this (or an error with `retryable: false`) from a handler to dead-letter the event without retrying. */
export class NonRetryableError extends Error {
  override name = 'NonRetryableError';
  readonly retryable = false;
}

/** Default waits after the 1st, 2nd, … failed run: about 1 s, 5 s, 30 s, 2 min, 10 min, 1 h. */
export const DEFAULT_RETRY_SCHEDULE_MS: readonly number[] = [1_000, 5_000, 30_000, 120_000, 600_000, 3_600_000];

export interface RetryPolicy {
  /** Waits after each failed run; after the last, the event becomes a dead letter. */
  scheduleMs: readonly number[];
  /** Fraction of each wait added or taken away at random, so failures do not retry in lockstep. Default 0.2. */
  jitter: number;
}

export function isNonRetryable(error: unknown): boolean {
  return (
    error instanceof NonRetryableError ||
    (typeof error === 'object' && error !== null && (error as { retryable?: unknown }).retryable === false)
  );
}

/**
 * When to run again after run number `attempt` (1-based) failed, or null when retries are exhausted.
 * An error may ask for a later time with `retryAfterMs` (e.g. a downstream's Retry-After); the later of both wins.
 */
export function nextAttemptDelay(
  policy: RetryPolicy,
  attempt: number,
  error?: unknown,
  random: () => number = Math.random,
): number | null {
  const base = policy.scheduleMs[attempt - 1];
  if (base === undefined) return null;
  const spread = base * policy.jitter;
  let delay = Math.round(base - spread + random() * 2 * spread);
  const asked = (error as { retryAfterMs?: unknown } | undefined)?.retryAfterMs;
  if (typeof asked === 'number' && Number.isFinite(asked) && asked > delay) delay = asked;
  return Math.max(0, delay);
}
