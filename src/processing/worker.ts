// The worker: claims recorded events with a lease, runs them (one at a time per customer, many customers at once),
// and records the outcome: done, a retry at a later time, or a dead letter. It never knows which store it has.
import type { Logger } from '../observability/log.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { EventRecord, Store } from '../stores/store.ts';
import { type RetryPolicy, isNonRetryable, nextAttemptDelay } from './retry.ts';

/** Runs one claimed event; resolves when handled, throws to retry (or a non-retryable error to dead-letter). */
export type ProcessFn = (record: EventRecord, signal: AbortSignal) => Promise<void> | void;

export interface WorkerOptions {
  store: Store;
  process: ProcessFn;
  /** Handlers running at once, across customers. */
  concurrency: number;
  /** Lease length; renewed while a handler runs, so it only runs out when this process dies. */
  leaseMs: number;
  /** How often the loop looks for due retries and expired leases. */
  pollMs: number;
  /** A handler running longer is aborted (its signal fires) and the event retried. */
  handlerTimeoutMs: number;
  retry: RetryPolicy;
  logger: Logger;
  metrics: Metrics;
  /** A claim slower than this is given up for the pass (its late result still runs). Default max(5 s, leaseMs). */
  claimTimeoutMs?: number;
  /** The clock; default Date.now. */
  now?: () => number;
  /** This worker's lease owner id; default a random UUID. */
  owner?: string;
}

export interface DrainOptions {
  /** Stop starting new work after this many ms; default 25 000. */
  timeoutMs?: number;
}

export interface Worker {
  readonly owner: string;
  /** Starts the polling loop (long-running servers). */
  start(): void;
  /** Something was recorded: look for work now (runs a one-off pass when the loop is not started). */
  notify(): Promise<void>;
  /** Runs everything that is due now, and what becomes due while it runs, then resolves. For serverless. */
  drain(options?: DrainOptions): Promise<{ processed: number }>;
  /** Stops claiming, waits up to `deadlineMs` for running handlers, then aborts the rest. */
  stop(deadlineMs?: number): Promise<{ unfinished: number }>;
  /** Handlers running now. */
  readonly running: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`.slice(0, 2000);
  return String(error).slice(0, 2000);
}

export function createWorker(options: WorkerOptions): Worker {
  const { store, logger, metrics } = options;
  const now = options.now ?? Date.now;
  const owner = options.owner ?? crypto.randomUUID();
  const inflight = new Map<string, { promise: Promise<void>; abort: AbortController }>();
  let stopping = false;
  let timer: ReturnType<typeof setInterval> | undefined;
  let processed = 0;
  // Claims run one after another, so capacity is never over-committed.
  let chain: Promise<number> = Promise.resolve(0);
  let queued = false;
  let storeDown = false;
  const claimTimeoutMs = options.claimTimeoutMs ?? Math.max(5_000, options.leaseMs);

  async function fill(): Promise<number> {
    const capacity = options.concurrency - inflight.size;
    if (capacity <= 0 || stopping) return 0;
    let batch: EventRecord[];
    // Inside a promise executor, so a synchronous store that throws (SQLite busy) rejects here instead of escaping
    // fill() as an unhandled rejection, which ends a Bun or Node process.
    const claim = new Promise<EventRecord[]>((resolve) =>
      resolve(store.claim({ owner, limit: capacity, leaseMs: options.leaseMs, now: now() })),
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      // A store that stops answering (a silent network partition) must not stall the worker for good: give up on
      // this pass; whatever the claim leased after all is still run when it arrives.
      batch = await Promise.race([
        claim,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            reject(new Error(`claim did not answer within ${claimTimeoutMs} ms`));
            claim.then((late) => late.forEach(launch)).catch(() => {});
          }, claimTimeoutMs);
        }),
      ]);
      if (storeDown) logger.info('store reachable again; processing resumes', { store: store.name });
      storeDown = false;
    } catch (error) {
      if (!storeDown) logger.warn('claim failed; will retry on the next poll', { store: store.name, error });
      storeDown = true;
      return 0;
    } finally {
      clearTimeout(timer);
    }
    for (const record of batch) launch(record);
    return batch.length;
  }

  /** One claim pass, serialized; concurrent callers share a queued pass. */
  function pass(): Promise<number> {
    if (queued) return chain;
    queued = true;
    chain = chain.then(() => {
      queued = false;
      return fill();
    });
    return chain;
  }

  function launch(record: EventRecord) {
    const abort = new AbortController();
    const promise = runOne(record, abort).finally(() => {
      inflight.delete(record.key);
      processed++;
      // The customer's next event may be due now.
      if (!stopping) void pass();
    });
    inflight.set(record.key, { promise, abort });
  }

  async function runOne(record: EventRecord, abort: AbortController): Promise<void> {
    const started = now();
    const log = logger.child({ key: record.key, event: record.event, customer_id: record.customerId });
    const renewEvery = Math.max(50, Math.floor(options.leaseMs / 3));
    const renewal = setInterval(() => {
      Promise.resolve(store.renew(record.key, owner, now() + options.leaseMs))
        .then((ok) => {
          if (!ok) {
            log.warn('lease lost while the handler was running; another worker may run this event');
            abort.abort(new Error('lease lost'));
          }
        })
        .catch((error) => log.warn('lease renewal failed', { error }));
    }, renewEvery);
    let timeout: ReturnType<typeof setTimeout> | undefined;
    try {
      const timedOut = new Promise<never>((_, reject) => {
        timeout = setTimeout(() => {
          const error = new Error(`handler timed out after ${options.handlerTimeoutMs} ms`);
          error.name = 'HandlerTimeoutError';
          abort.abort(error);
          reject(error);
        }, options.handlerTimeoutMs);
      });
      // Shutdown, a timeout or a lost lease ends the run here even if the handler ignores its signal.
      const aborted = new Promise<never>((_, reject) => {
        abort.signal.addEventListener('abort', () => reject(abort.signal.reason), { once: true });
      });
      await Promise.race([Promise.resolve().then(() => options.process(record, abort.signal)), timedOut, aborted]);
      clearInterval(renewal);
      const ok = await store.complete(record.key, owner, now());
      metrics.handlerRun(record.event, 'ok');
      log.info('handled', { outcome: ok ? 'ok' : 'ok_lease_lost', attempt: record.attempts, ms: now() - started });
    } catch (error) {
      clearInterval(renewal);
      await settleFailure(record, error, started, log);
    } finally {
      clearInterval(renewal);
      clearTimeout(timeout);
    }
  }

  async function settleFailure(record: EventRecord, error: unknown, started: number, log: Logger) {
    const reason = describe(error);
    const delay = isNonRetryable(error) ? null : nextAttemptDelay(options.retry, record.attempts, error);
    try {
      if (delay === null) {
        await store.deadLetter(record.key, owner, reason, now());
        metrics.handlerRun(record.event, 'dead');
        log.error('dead letter', { outcome: 'dead', attempt: record.attempts, error: reason, ms: now() - started });
      } else {
        await store.retry(record.key, owner, now() + delay, reason);
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

  return {
    owner,
    get running() {
      return inflight.size;
    },
    start() {
      if (timer || stopping) return;
      timer = setInterval(() => void pass(), options.pollMs);
      // Do not keep a process alive just for polling (Node/Bun/Deno all have unref on timers).
      (timer as { unref?: () => void }).unref?.();
      void pass();
    },
    async notify() {
      if (stopping) return;
      if (timer) {
        await pass();
        return;
      }
      await this.drain();
    },
    async drain({ timeoutMs = 25_000 }: DrainOptions = {}) {
      const deadline = now() + timeoutMs;
      const before = processed;
      for (;;) {
        const started = await pass();
        if (inflight.size === 0 && started === 0) break;
        if (now() >= deadline || stopping) break;
        const left = Math.max(1, deadline - now());
        await Promise.race([...[...inflight.values()].map((f) => f.promise), sleep(Math.min(left, options.pollMs))]);
      }
      if (inflight.size > 0) await Promise.all([...inflight.values()].map((f) => f.promise));
      return { processed: processed - before };
    },
    async stop(deadlineMs = 10_000) {
      stopping = true;
      if (timer) clearInterval(timer);
      timer = undefined;
      await chain.catch(() => {});
      const all = Promise.all([...inflight.values()].map((f) => f.promise));
      let waited: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([all, new Promise<void>((r) => (waited = setTimeout(r, deadlineMs)))]);
      clearTimeout(waited);
      const unfinished = inflight.size;
      if (unfinished > 0) {
        logger.warn('shutdown deadline reached; aborting running handlers (their leases expire and they run again)', {
          unfinished,
        });
        for (const f of inflight.values()) f.abort.abort(new Error('shutting down'));
        // Give aborted handlers a moment to record their outcome.
        await Promise.race([all, sleep(200)]);
      }
      return { unfinished };
    },
  };
}
