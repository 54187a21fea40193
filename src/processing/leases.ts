// The leases of the runs a worker holds: one sweep renews them, aborts handlers past their deadline, and stops a run
// whose lease was lost or ran out, since another instance may then run its event.
import { type Run, type Shared, abortRun } from './run.ts';

export interface Leases {
  /** A run was added to `inflight`: make sure the sweep runs. */
  watch(): void;
  /** A run left `inflight`: stop the sweep once nothing is held, so no timer keeps the process alive. */
  release(): void;
}

/**
 * One sweep for every held run, instead of a renewal interval and a timeout timer per run: renews leases a third of
 * the way through and aborts handlers past their deadline. It stops itself when nothing is held.
 */
export function createLeases(shared: Shared): Leases {
  const { options, store, owner, inflight, logFor } = shared;
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
        if (!ok && run.phase !== 'finished') {
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
    const t = shared.now();
    for (const run of inflight.values()) {
      if (run.reason !== undefined) continue;
      // Waiting and recording runs keep their leases too; only a running handler has a deadline.
      if (t - run.renewed >= renewAfter) renew(run, t);
      if (run.phase !== 'running') continue;
      if (t >= run.deadline) {
        const error = new Error(`handler timed out after ${options.handlerTimeoutMs} ms`);
        error.name = 'HandlerTimeoutError';
        abortRun(run, error);
      } else if (t >= run.leaseUntil) {
        // The store could not renew the lease (it is unreachable) and it ran out: the event may now be claimed by
        // another instance, so this run stops, as it would have on a lease renewal answered "lost".
        logFor(run.record).warn('lease ran out while the handler was running (renewals failed); aborting this run');
        abortRun(run, new Error('lease expired: the store could not renew it'));
      }
    }
  }

  return {
    watch() {
      sweeper ??= setInterval(sweep, sweepEvery);
    },
    release() {
      if (inflight.size === 0 && sweeper) {
        clearInterval(sweeper);
        sweeper = undefined;
      }
    },
  };
}
