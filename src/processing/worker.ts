// The worker: claims recorded events with a lease, runs them (one at a time per customer, many customers at once),
// and records the outcome: done, a retry at a later time, or a dead letter. It never knows which store it has.
import type { Logger } from '../observability/log.ts';
import type { Metrics } from '../observability/metrics.ts';
import { within } from '../intake/deadlines.ts';
import { type EventRecord, type Store, StoreUnavailableError, afterThisTurn } from '../stores/store.ts';
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
  /**
   * Stop starting new work after this many ms; default 25 000. A drain() called while another runs joins that one,
   * and its deadline, and resolves with it.
   */
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
/** Waits before each new attempt to record a completion the store refused (then the lease decides). */
const COMPLETION_RETRY_MS = [50, 250, 1000, 3000];

function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`.slice(0, 2000);
  return String(error).slice(0, 2000);
}

/** A claimed event being run. Its AbortController is made only when someone asks for the signal or it is aborted. */
interface Run {
  record: EventRecord;
  started: number;
  /** When the handler times out (epoch ms, the worker's clock). */
  deadline: number;
  /** When its lease was last renewed (or claimed). */
  renewed: number;
  /** Until when the store last confirmed the lease. */
  leaseUntil: number;
  controller: AbortController | undefined;
  /** Set once the run was aborted (shutdown, timeout, lease lost): the reason, also given to the signal. */
  reason: unknown;
  /** Ends the race with the handler: the run settles as failed with this reason. */
  fail: (reason: unknown) => void;
  /** Whether its handler was started (a claimed run may wait for a free slot first). */
  began: boolean;
  /** Settles the race with the handler as done. */
  resolve: () => void;
  promise: Promise<void>;
}

/** A process function that can take its signal lazily (the built-in dispatcher): saves an AbortController per run. */
export interface LazySignalProcess {
  (record: EventRecord, signal: AbortSignal): Promise<void> | void;
  withSignal?: (record: EventRecord, signal: () => AbortSignal) => Promise<void> | void;
}

function signalOf(run: Run): AbortSignal {
  if (!run.controller) {
    run.controller = new AbortController();
    if (run.reason !== undefined) run.controller.abort(run.reason);
  }
  return run.controller.signal;
}

function abortRun(run: Run, reason: unknown) {
  if (run.reason !== undefined) return;
  run.reason = reason;
  run.controller?.abort(reason);
  run.fail(reason);
}

export function createWorker(options: WorkerOptions): Worker {
  const { store, logger, metrics } = options;
  const now = options.now ?? Date.now;
  const owner = options.owner ?? crypto.randomUUID();
  const inflight = new Map<string, Run>();
  let stopping = false;
  let timer: ReturnType<typeof setInterval> | undefined;
  let processed = 0;
  // Claims run one after another, so capacity is never over-committed.
  let chain: Promise<number> = Promise.resolve(0);
  let queued = false;
  let soon = false;
  // Runs started and not yet recorded as done, retried or dead (at most `concurrency`).
  let running = 0;
  // Claimed events waiting for a free handler slot (their leases are renewed like running ones). One claim takes up
  // to prefetch × concurrency events, so it pays one claim for many events rather than one per free slot, and a new
  // claim is made only once fewer runs wait than there are slots. A store that answers claims synchronously (memory,
  // SQLite: one local transaction each) takes PREFETCH. A networked one (Postgres, Deno KV) takes ASYNC_PREFETCH:
  // a Postgres claim costs about 2 ms however many events it takes, and claiming only for freed slots (a few events
  // each) capped a backlog at 2.3-2.9k events/s, against 3.6-4.4k with 2 and 5.2-5.5k with 4. It is kept lower
  // than PREFETCH because events leased here wait for this instance: other instances do not get them, and after a
  // crash they wait for their leases to run out.
  const ready: Run[] = [];
  const PREFETCH = 8;
  const ASYNC_PREFETCH = 4;
  let prefetch = 1;
  const held = () => running + ready.length;
  let storeDown = false;
  const claimTimeoutMs = options.claimTimeoutMs ?? Math.max(5_000, options.leaseMs);
  const processFn = options.process as LazySignalProcess;
  const lazy = processFn.withSignal;

  // One sweep for every running handler, instead of a renewal interval and a timeout timer per run: renews leases
  // a third of the way through and aborts handlers past their deadline. It stops itself when nothing runs.
  const renewAfter = Math.max(50, Math.floor(options.leaseMs / 3));
  const sweepEvery = Math.max(10, Math.min(Math.floor(options.leaseMs / 6), Math.floor(options.handlerTimeoutMs / 10)));
  let sweeper: ReturnType<typeof setInterval> | undefined;

  function renew(run: Run, at: number) {
    run.renewed = at;
    const { record } = run;
    const until = at + options.leaseMs;
    Promise.resolve()
      .then(() => store.renew(record.key, owner, until))
      .then((ok) => {
        if (ok) run.leaseUntil = Math.max(run.leaseUntil, until);
        if (!ok && inflight.get(record.key) === run) {
          logFor(record).warn('lease lost while the handler was running; another worker may run this event');
          abortRun(run, new Error('lease lost'));
        }
      })
      .catch((error) => logFor(record).warn('lease renewal failed', { error }));
  }

  function sweep() {
    if (inflight.size === 0) {
      clearInterval(sweeper);
      sweeper = undefined;
      return;
    }
    const t = now();
    for (const run of inflight.values()) {
      if (run.reason !== undefined) continue;
      if (t - run.renewed >= renewAfter) renew(run, t);
      if (t >= run.deadline) {
        const error = new Error(`handler timed out after ${options.handlerTimeoutMs} ms`);
        error.name = 'HandlerTimeoutError';
        abortRun(run, error);
      } else if (run.began && run.deadline !== Number.POSITIVE_INFINITY && t >= run.leaseUntil) {
        // The store could not renew the lease (it is unreachable) and it ran out: the event may now be claimed by
        // another instance, so this run stops, as it would have on a lease renewal answered "lost".
        logFor(run.record).warn('lease ran out while the handler was running (renewals failed); aborting this run');
        abortRun(run, new Error('lease expired: the store could not renew it'));
      }
    }
  }

  const logFor = (record: EventRecord) =>
    logger.child({ key: record.key, event: record.event, customer_id: record.customerId });

  /** A claim was answered: say so once if the store had been failing. */
  function reachable() {
    if (storeDown) logger.info('store reachable again; processing resumes', { store: store.name });
    storeDown = false;
  }

  async function fill(): Promise<number> {
    const capacity = options.concurrency * prefetch - held();
    if (capacity <= 0 || stopping) return 0;
    // A synchronous store is asked again only once fewer runs wait than there are slots: each claim is a transaction
    // of its own, so it should take a batch's worth of room, not one freed slot at a time.
    if (prefetch > 1 && ready.length >= options.concurrency) return 0;
    let batch: EventRecord[];
    // Inside a promise executor, so a synchronous store that throws (SQLite busy) rejects here instead of escaping
    // fill() as an unhandled rejection, which ends a Bun or Node process.
    let claim: EventRecord[] | Promise<EventRecord[]>;
    try {
      claim = store.claim({ owner, limit: capacity, leaseMs: options.leaseMs, now: now() });
    } catch (error) {
      claim = Promise.reject(error);
    }
    prefetch = claim instanceof Promise ? ASYNC_PREFETCH : PREFETCH;
    if (!(claim instanceof Promise)) {
      // A synchronous store answered at once: no timeout to race.
      reachable();
      for (const record of claim) launch(record);
      return claim.length;
    }
    const pending = claim;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      // A store that stops answering (a silent network partition) must not stall the worker for good: give up on
      // this pass; whatever the claim leased after all is still run when it arrives.
      batch = await Promise.race([
        pending,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            reject(new Error(`claim did not answer within ${claimTimeoutMs} ms`));
            pending.then((late) => late.forEach(launch)).catch(() => {});
          }, claimTimeoutMs);
        }),
      ]);
      reachable();
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

  /** A claim pass at the end of this turn of the event loop: everything that became ready meanwhile shares it. */
  function passSoon() {
    if (soon || stopping) return;
    soon = true;
    afterThisTurn(() => {
      soon = false;
      if (!stopping) void pass();
    });
  }

  function launch(record: EventRecord) {
    // Claimed again while this worker still has it (its lease ran out while a run was ending, and a pass took it):
    // the claim renewed this worker's own lease, so the run already here goes on; a second one would run it twice.
    const existing = inflight.get(record.key);
    if (existing) {
      if (record.leaseUntil !== null) existing.leaseUntil = Math.max(existing.leaseUntil, record.leaseUntil);
      return;
    }
    let fail!: (reason: unknown) => void;
    let resolve!: () => void;
    // Shutdown, a timeout or a lost lease ends the run here even if the handler ignores its signal.
    const handled = new Promise<void>((res, rej) => {
      resolve = res;
      fail = rej;
    });
    const t = now();
    const run: Run = {
      record,
      started: t,
      deadline: Number.POSITIVE_INFINITY,
      renewed: t,
      leaseUntil: record.leaseUntil ?? t + options.leaseMs,
      controller: undefined,
      reason: undefined,
      began: false,
      fail,
      resolve,
      promise: undefined as unknown as Promise<void>,
    };
    run.promise = settle(run, handled).finally(() => {
      inflight.delete(record.key);
      processed++;
      wake?.();
      if (inflight.size === 0 && sweeper) {
        // Nothing left to renew or time out: no timer keeps the process alive.
        clearInterval(sweeper);
        sweeper = undefined;
      }
    });
    inflight.set(record.key, run);
    sweeper ??= setInterval(sweep, sweepEvery);
    ready.push(run);
    startReady();
  }

  /** Starts waiting runs while handler slots are free. */
  function startReady() {
    while (running < options.concurrency && ready.length > 0 && !stopping) {
      const run = ready.shift() as Run;
      // Its lease ran out while it waited (the store could not renew it): another worker may hold it now, so it is
      // not run here; whoever claims it next runs it.
      if (run.leaseUntil <= now()) {
        run.reason = new Error('lease ran out before the run began');
        run.resolve();
        continue;
      }
      begin(run);
    }
  }

  function begin(run: Run) {
    const t = now();
    run.started = t;
    run.deadline = t + options.handlerTimeoutMs;
    run.began = true;
    running++;
    try {
      const r = lazy ? lazy(run.record, () => signalOf(run)) : processFn(run.record, signalOf(run));
      if (r && typeof (r as Promise<void>).then === 'function') (r as Promise<void>).then(run.resolve, run.fail);
      else run.resolve();
    } catch (error) {
      run.fail(error);
    }
  }

  /** A handler finished (or was abandoned): its slot goes to the next waiting run, and the store is asked for more. */
  function slotFreed() {
    running--;
    if (stopping) return;
    startReady();
    // The customer's next event may be due now; one claim at the end of this turn serves every slot freed in it.
    passSoon();
  }

  /** Runs claimed but never started (shutdown): handed back at once, so they need not wait for their leases to expire. */
  function releaseReady() {
    const t = now();
    for (const run of ready.splice(0)) {
      run.started = t;
      run.reason = new Error('not started before shutdown');
      Promise.resolve()
        .then(() => store.retry(run.record.key, owner, t, 'released at shutdown before it ran'))
        .catch(() => {
          // Its lease runs out and the event is claimed again: nothing is lost.
        })
        .finally(() => run.resolve());
    }
  }

  async function settle(run: Run, handled: Promise<void>): Promise<void> {
    const { record } = run;
    try {
      await handled;
    } catch (error) {
      if (!run.began) {
        ready.splice(ready.indexOf(run) >>> 0, 1);
        await settleFailure(record, error, run.started);
        return;
      }
      run.deadline = Number.POSITIVE_INFINITY;
      try {
        await settleFailure(record, error, run.started);
      } finally {
        slotFreed();
      }
      return;
    }
    // Released at shutdown, or its lease ran out before it began: nothing to record here.
    if (!run.began) return;
    // The handler is done: no timeout applies while its completion is recorded.
    run.deadline = Number.POSITIVE_INFINITY;
    // The slot stays taken until the outcome is recorded, so at most `concurrency` events are ever run but not yet
    // recorded (what a crash can make run twice).
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
      logFor(record).error('handled, but the completion could not be recorded; the event runs again once its lease expires', {
        outcome: 'ok_unrecorded',
        attempt: record.attempts,
        ms: now() - run.started,
        error,
      });
    } finally {
      slotFreed();
    }
  }

  /**
   * A store write's answer, or a rejection once it has not answered in `claimTimeoutMs`: a call that never settles (a
   * client that lost a query with its connection) must not hold a handler slot for good.
   */
  function answered<T>(work: T | Promise<T>, what: string): Promise<T> {
    if (!(work instanceof Promise)) return Promise.resolve(work);
    const error = () => new StoreUnavailableError(`${store.name} store: ${what} did not answer within ${claimTimeoutMs} ms`);
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

  let draining: Promise<{ processed: number }> | undefined;
  // Set when a caller joined the running drain: its event may have been recorded after the drain's last claim.
  let more = false;
  // Wakes a waiting drain when a run ends.
  let wake: (() => void) | undefined;

  async function drainAll(timeoutMs: number): Promise<{ processed: number }> {
    const deadline = now() + timeoutMs;
    const before = processed;
    for (;;) {
      more = false;
      const started = await pass();
      if (inflight.size === 0 && started === 0 && !more) break;
      if (now() >= deadline || stopping) break;
      const left = Math.max(1, deadline - now());
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, options.pollMs));
        wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      wake = undefined;
    }
    if (inflight.size > 0) await Promise.all([...inflight.values()].map((f) => f.promise));
    return { processed: processed - before };
  }

  async function settleFailure(record: EventRecord, error: unknown, started: number) {
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

  return {
    owner,
    get running() {
      return running;
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
        passSoon();
        return;
      }
      await this.drain();
    },
    drain({ timeoutMs = 25_000 }: DrainOptions = {}) {
      // One drain at a time: a caller arriving while one runs joins it (and makes it look again before it ends), so
      // a burst of deliveries on a serverless host costs one drain, not one per delivery polling the same work.
      if (draining) {
        more = true;
        return draining;
      }
      draining = drainAll(timeoutMs).finally(() => {
        draining = undefined;
      });
      return draining;
    },
    async stop(deadlineMs = 10_000) {
      stopping = true;
      if (timer) clearInterval(timer);
      timer = undefined;
      await chain.catch(() => {});
      releaseReady();
      const all = Promise.all([...inflight.values()].map((f) => f.promise));
      let waited: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([all, new Promise<void>((r) => (waited = setTimeout(r, deadlineMs)))]);
      clearTimeout(waited);
      const unfinished = inflight.size;
      if (unfinished > 0) {
        logger.warn('shutdown deadline reached; aborting running handlers (their leases expire and they run again)', {
          unfinished,
        });
        for (const run of inflight.values()) abortRun(run, new Error('shutting down'));
        // Give aborted handlers a moment to record their outcome.
        await Promise.race([all, sleep(200)]);
      }
      return { unfinished };
    },
  };
}
