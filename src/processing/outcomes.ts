// Outcome recording: once a run's handler settles, its completion, retry or dead letter is written to the store, each
// write bounded in time; a completion the store refused is tried again while the lease holds.
import { sleep, within } from '../intake/deadlines.ts';
import { type EventRecord, StoreUnavailableError } from '../stores/store.ts';
import { isNonRetryable, nextAttemptDelay } from './retry.ts';
import type { Run, Shared } from './run.ts';

/** Waits before each new attempt to record a completion the store refused (then the lease decides). */
const COMPLETION_RETRY_MS = [50, 250, 1000, 3000];

/** What outcome recording needs from the claim loop, which owns the ready queue and the handler slots. */
export interface Slots {
  /** Takes a run that was aborted while it waited out of the ready queue. */
  unqueue(run: Run): void;
  /** A running handler settled: its slot goes to the next waiting run while its outcome is recorded. */
  handled(): void;
  /** The outcome of a run that held a slot is recorded (or could not be). */
  recorded(): void;
}

export interface Outcomes {
  /** Frees the slot of `run` once `handled` settles, then records its outcome; never rejects. */
  settle(run: Run, handled: Promise<void>): Promise<void>;
  /** Hands a run that never started back to the store (shutdown), so it need not wait for its lease to expire. */
  release(run: Run, at: number): Promise<unknown>;
}

function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`.slice(0, 2000);
  return String(error).slice(0, 2000);
}

export function createOutcomes(shared: Shared, slots: Slots): Outcomes {
  const { options, store, owner, now, logger, metrics, logFor, claimTimeoutMs } = shared;

  async function settle(run: Run, handled: Promise<void>): Promise<void> {
    const { record } = run;
    try {
      await handled;
    } catch (error) {
      if (run.phase !== 'running') {
        // Aborted while it waited for a slot (its lease was lost): it holds no slot, and leaves the queue.
        slots.unqueue(run);
        run.phase = 'recording';
        await recordFailure(record, error, run.started);
        return;
      }
      // No timeout applies while the failure is recorded.
      run.phase = 'recording';
      slots.handled();
      try {
        await recordFailure(record, error, run.started);
      } finally {
        slots.recorded();
      }
      return;
    }
    // Abandoned (released at shutdown, or its lease ran out before it began): nothing to record here.
    if (run.phase !== 'running') return;
    // The handler is done: no timeout applies while its completion is recorded. Its slot goes to the next run now:
    // a slot held through the store's round trip (a Postgres or Deno KV commit, a SQLite group commit) capped the
    // worker at `concurrency` events per round trip. The claim loop bounds the runs whose outcome is still being
    // written (see RECORDING_PER_SLOT), which bounds what a crash can make run twice.
    run.phase = 'recording';
    slots.handled();
    try {
      const ok = await recordCompletion(run);
      metrics.handlerRun(record.event, 'ok');
      if (!ok || logger.enabled?.('info') !== false) {
        const line = { outcome: ok ? 'ok' : 'ok_lease_lost', attempt: record.attempts, ms: now() - run.started };
        // A lost lease means another worker may run the event again: worth a warning whatever the level.
        if (ok) logFor(record).info('handled', line);
        else logFor(record).warn('handled, but the lease was lost meanwhile; another worker may run it again', line);
      }
    } catch (error) {
      // The handler succeeded; only recording that failed, every time it was tried. It is not a handler failure, so
      // no retry is scheduled (that write would most likely fail too): the lease runs out and the event runs again.
      metrics.handlerRun(record.event, 'unrecorded');
      logFor(record).error(
        'handled, but the completion could not be recorded; the event runs again once its lease expires',
        {
          outcome: 'ok_unrecorded',
          attempt: record.attempts,
          ms: now() - run.started,
          error,
        },
      );
    } finally {
      slots.recorded();
    }
  }

  /**
   * A store write's answer, or a rejection once it has not answered in `claimTimeoutMs`: a call that never settles (a
   * client that lost a query with its connection) must not hold a handler slot for good.
   */
  function answered<T>(work: T | Promise<T>, what: string): Promise<T> {
    if (!(work instanceof Promise)) return Promise.resolve(work);
    const error = () =>
      new StoreUnavailableError(`${store.name} store: ${what} did not answer within ${claimTimeoutMs} ms`);
    return within(work, claimTimeoutMs, error);
  }

  /**
   * Records a successful run as done. A store error is tried again a few times, while the lease still holds: a
   * store that blinks for a moment (a dropped connection, a busy or momentarily full disk) must not make a handler
   * that already succeeded run a second time.
   */
  async function recordCompletion(run: Run): Promise<boolean> {
    const { record } = run;
    for (let i = 0; ; i++) {
      try {
        const ok = await answered(store.complete(record.key, owner, now()), 'completion');
        if (ok || i === 0) return ok;
        // Tried again, the event is no longer held: the refused attempt may have been committed after all, with
        // only its answer lost (a connection dropped after COMMIT). It was, if nobody has claimed the event since.
        const current = await answered(store.get(record.key), 'read');
        return current?.status === 'done' && current.attempts === record.attempts;
      } catch (error) {
        const wait = COMPLETION_RETRY_MS[i];
        if (wait === undefined || now() + wait >= run.leaseUntil) throw error;
        logFor(record).warn('could not record the completion; trying again', { error, retry_in_ms: wait });
        await sleep(wait);
      }
    }
  }

  /** A failed run: a retry at a later time, or a dead letter once retries are exhausted (or it cannot succeed). */
  async function recordFailure(record: EventRecord, error: unknown, started: number) {
    const log = logFor(record);
    const reason = describe(error);
    const delay = isNonRetryable(error) ? null : nextAttemptDelay(options.retry, record.attempts, error);
    try {
      if (delay === null) {
        await answered(store.deadLetter(record.key, owner, reason, now()), 'dead letter');
        metrics.handlerRun(record.event, 'dead');
        log.error('dead letter', { outcome: 'dead', attempt: record.attempts, error: reason, ms: now() - started });
      } else {
        await answered(store.retry(record.key, owner, now() + delay, reason), 'retry');
        metrics.handlerRun(record.event, 'retry');
        log.warn('handler failed; will retry', {
          outcome: 'retry',
          attempt: record.attempts,
          retry_in_ms: delay,
          error: reason,
          ms: now() - started,
        });
      }
    } catch (storeError) {
      // The lease runs out and the event is claimed again: nothing is lost, the attempt is counted.
      log.error('could not record the handler failure; the event will be retried when its lease expires', {
        error: storeError,
      });
    }
  }

  function release(run: Run, at: number): Promise<unknown> {
    return Promise.resolve()
      .then(() => store.retry(run.record.key, owner, at, 'released at shutdown before it ran'))
      .catch(() => {
        // Its lease runs out and the event is claimed again: nothing is lost.
      });
  }

  return { settle, release };
}
