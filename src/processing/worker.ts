// The worker: claims recorded events with a lease, runs them (one at a time per customer, many customers at once),
// and records the outcome: done, a retry at a later time, or a dead letter. It never knows which store it has.
// This file is its public face and its drain and shutdown; the parts live in claim-loop.ts (claims, the ready queue,
// handler slots), leases.ts (renewal, deadlines, lease loss), outcomes.ts (store writes) and run.ts (a run's phases).
import { type Deadline, atMost, deadline, expireNow } from '../intake/deadlines.ts';
import type { Logger } from '../observability/log.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { EventRecord, InsertLease, Store } from '../stores/store.ts';
import { createClaimLoop } from './claim-loop.ts';
import { createLeases } from './leases.ts';
import type { RetryPolicy } from './retry.ts';
import { type Shared, abortRun } from './run.ts';

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
  /**
   * A lease for an event about to be inserted (`store.insert(event, lease)`), when the loop polls and has room to
   * run it; undefined otherwise. Each lease given must be answered with `adopt` once that insert settled.
   */
  leaseForInsert(): InsertLease | undefined;
  /** The insert given `leaseForInsert()`'s lease settled: its `leased` record, which then runs here, or undefined. */
  adopt(record: EventRecord | undefined): void;
}

/** A process function that can take its signal lazily (the built-in dispatcher): saves an AbortController per run. */
export interface LazySignalProcess {
  (record: EventRecord, signal: AbortSignal): Promise<void> | void;
  withSignal?: (record: EventRecord, signal: () => AbortSignal) => Promise<void> | void;
}

/**
 * This worker's lease owner: 64 random bits in base 36 (at most 13 characters). Every claim writes it into the
 * event's row: against a 36-character UUID, SQLite's table pages take about 0.2 fewer frames per event while a
 * backlog waits (bench/sqlite-frames.ts). Two live instances' ids collide with odds below 1 in 10^15.
 */
function workerId(): string {
  const [a = 0, b = 0] = crypto.getRandomValues(new Uint32Array(2));
  return `w${((BigInt(a) << 32n) | BigInt(b)).toString(36)}`;
}

export function createWorker(options: WorkerOptions): Worker {
  const { logger } = options;
  const now = options.now ?? Date.now;
  const shared: Shared = {
    options,
    store: options.store,
    owner: options.owner ?? workerId(),
    now,
    logger,
    metrics: options.metrics,
    claimTimeoutMs: options.claimTimeoutMs ?? Math.max(5_000, options.leaseMs),
    inflight: new Map(),
    logFor: (record: EventRecord) =>
      logger.child({ key: record.key, event: record.event, customer_id: record.customerId }),
  };
  const { inflight } = shared;
  let processed = 0;
  let draining: Promise<{ processed: number }> | undefined;
  // Set when a caller joined the running drain: its event may have been recorded after the drain's last claim.
  let more = false;
  // A drain's pause between passes; a run that ends cuts it short.
  let nap: Deadline | undefined;
  const loop = createClaimLoop(shared, createLeases(shared), () => {
    processed++;
    if (nap) expireNow(nap);
  });

  async function drainAll(timeoutMs: number): Promise<{ processed: number }> {
    const until = now() + timeoutMs;
    const before = processed;
    for (;;) {
      more = false;
      const started = await loop.pass();
      if (inflight.size === 0 && started === 0 && !more) break;
      if (now() >= until || loop.mode === 'stopping') break;
      const wait = Math.min(Math.max(1, until - now()), options.pollMs);
      await new Promise<void>((resolve) => {
        nap = deadline(wait, resolve, true);
      });
      nap = undefined;
    }
    if (inflight.size > 0) await Promise.all([...inflight.values()].map((f) => f.promise));
    return { processed: processed - before };
  }

  return {
    owner: shared.owner,
    get running() {
      return loop.running;
    },
    start() {
      loop.start();
    },
    leaseForInsert: () => loop.offer(),
    adopt: (record) => loop.adopt(record),
    async notify() {
      if (loop.mode === 'stopping') return;
      if (loop.mode === 'polling') {
        loop.passSoon();
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
      await loop.stop();
      const all = Promise.all([...inflight.values()].map((f) => f.promise));
      await atMost(all, deadlineMs);
      const unfinished = inflight.size;
      if (unfinished > 0) {
        logger.warn('shutdown deadline reached; aborting running handlers (their leases expire and they run again)', {
          unfinished,
        });
        for (const run of inflight.values()) abortRun(run, new Error('shutting down'));
        // Give aborted handlers a moment to record their outcome.
        await atMost(all, 200);
      }
      return { unfinished };
    },
  };
}
