// A claimed event's run, the phases it goes through, and what the worker's parts (claim loop, leases, outcomes)
// share: the store, the clock and the runs this worker holds.
import type { Logger } from '../observability/log.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { EventRecord, Store } from '../stores/store.ts';
import type { WorkerOptions } from './worker.ts';

/**
 * Where a run is. Every run starts `waiting` and ends `finished`:
 *
 *     waiting ──▶ running ──▶ recording ──▶ finished
 *        │                        ▲
 *        ├────────────────────────┘  (aborted while it waited: the lease was lost)
 *        └──▶ abandoned ──────────────────▶ finished
 *
 * - `waiting`: claimed, waiting for a free handler slot. Its lease is renewed; no handler timeout applies yet.
 * - `running`: its handler runs in a slot. The sweep renews its lease, and aborts it past its deadline or once its
 *   lease ran out.
 * - `recording`: the handler settled (or was aborted); its outcome is being written. The slot stays taken and the
 *   lease renewed, but no timeout applies.
 * - `abandoned`: never started here (released at shutdown, or its lease ran out while it waited); nothing is
 *   recorded, whoever claims it next runs it.
 * - `finished`: off the worker's books (out of `inflight`); whatever was to be written was.
 */
export type Phase = 'waiting' | 'running' | 'recording' | 'abandoned' | 'finished';

/** A claimed event being run. Its AbortController is made only when someone asks for the signal or it is aborted. */
export interface Run {
  record: EventRecord;
  phase: Phase;
  started: number;
  /** When the handler times out (epoch ms, the worker's clock); only looked at while `running`. */
  deadline: number;
  /** When its lease was last renewed (or claimed). */
  renewed: number;
  /** Until when the store last confirmed the lease. */
  leaseUntil: number;
  controller: AbortController | undefined;
  /** Set once the run was aborted (shutdown, timeout, lease lost) or abandoned: the reason, given to the signal too. */
  reason: unknown;
  /** Ends the race with the handler: the run settles as failed with this reason. */
  fail: (reason: unknown) => void;
  /** Settles the race with the handler as done. */
  resolve: () => void;
  /** Settles once the run is `finished`. */
  promise: Promise<void>;
}

/** What every part of one worker shares; made once by createWorker. */
export interface Shared {
  readonly options: WorkerOptions;
  readonly store: Store;
  readonly owner: string;
  readonly now: () => number;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Bound on a claim and on each store write: max(5 s, leaseMs) unless set. */
  readonly claimTimeoutMs: number;
  /** Runs not yet `finished`, by event key: at most one per event. */
  readonly inflight: Map<string, Run>;
  logFor(record: EventRecord): Logger;
}

export function signalOf(run: Run): AbortSignal {
  if (!run.controller) {
    run.controller = new AbortController();
    if (run.reason !== undefined) run.controller.abort(run.reason);
  }
  return run.controller.signal;
}

/** Shutdown, a timeout or a lost lease: the run settles as failed even if the handler ignores its signal. */
export function abortRun(run: Run, reason: unknown) {
  if (run.reason !== undefined) return;
  run.reason = reason;
  run.controller?.abort(reason);
  run.fail(reason);
}
