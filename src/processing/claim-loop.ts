// The claim loop: leases due events from the store in batches, keeps them in a ready queue, and starts each in a
// handler slot as one frees up. Its modes and how much it claims at once are described below, before the code.
import { within } from '../intake/deadlines.ts';
import { type EventRecord, type InsertLease, afterThisTurn } from '../stores/store.ts';
import type { Leases } from './leases.ts';
import { createOutcomes } from './outcomes.ts';
import { type Run, type Shared, signalOf } from './run.ts';
import type { LazySignalProcess } from './worker.ts';

/**
 * The claim loop is always in one of three modes:
 *
 * - `on-demand` (where it starts): no timer. A pass runs when the worker asks: a drain (serverless hosts, and
 *   `notify()` before `start()`) runs passes until nothing is due.
 * - `polling` (after `start()`): a pass every `pollMs`, which finds due retries and expired leases; and one more at
 *   the end of any turn of the event loop in which a handler slot freed or `notify()` was called, shared by
 *   everything that happened in that turn.
 * - `stopping` (after `stop()`, for good): no pass claims anything and no waiting run is started; a claim already
 *   under way is waited for, then every run still waiting is released back to the store.
 *
 * Passes run one after another, never two claims at once, so capacity is never over-committed; callers that arrive
 * while a pass is queued share it.
 *
 * ## How much a pass claims (prefetch)
 *
 * Handlers running at once (`running`) are at most `concurrency`. A slot frees as soon as its handler settles; the run
 * then waits for its outcome to be recorded (`recording`), and runs started but not yet recorded (running and
 * recording) are at most (1 + RECORDING_PER_SLOT) × `concurrency`: what a crash can make run twice. Claimed events
 * wait in `ready` for a slot,
 * their leases renewed like running ones. One claim takes up to prefetch × concurrency − (running + waiting) events,
 * so one claim pays for many events rather than one per freed slot. The first claim takes one slot's worth
 * (prefetch 1); how the store answers it sets prefetch from then on, and from then on a pass claims only once fewer
 * runs wait than there are slots, so that each claim (a transaction of its own) takes a batch's worth of room:
 *
 * - a store that answers synchronously (memory, SQLite without group commit: one local transaction each) takes
 *   PREFETCH;
 * - one that answers with a promise (Postgres, Deno KV, SQLite with group commit, whose claim rides in the turn's
 *   batch) starts at ASYNC_PREFETCH. A Postgres claim costs about 2 ms however many events it takes, and claiming
 *   only for freed slots (a few events each) capped a backlog at 2.3-2.9k events/s, against 3.6-4.4k with 2 and
 *   5.2-5.5k with 4. It is kept low while the store has little to give, because events leased here wait for this
 *   instance: other instances do not get them, and after a crash they wait for their leases to run out. A claim
 *   that comes back full says a backlog waits: prefetch doubles, up to MAX_ASYNC_PREFETCH, and the next claim is
 *   made once the waiting runs fall under half of it (not under one slot's worth each), so that the next batch
 *   arrives before the slots run dry; one that comes back less than half full halves it again. Under a load the
 *   store's round trips are the worker's limit (Postgres under 80 % of its ack capacity: 2.8k events/s run with
 *   prefetch 4, against 4.2k arriving).
 *
 * A claim that does not answer within `claimTimeoutMs` is given up for that pass; what it leased after all still
 * runs when it arrives.
 */
export type Mode = 'on-demand' | 'polling' | 'stopping';

/*
 * ## Leases taken by inserts
 *
 * On a store that can (`capabilities.leaseOnInsert`: SQLite with group commit, Postgres, Deno KV), the receiver asks
 * for a lease as it inserts a delivery (`offer`), and the store writes the event already leased to this worker when it
 * is its group's head, in the same atomic write as the insert: what a claim would have written a turn later, without
 * the claim's statements. The insert's answer hands the record over (`adopt`) and it joins `ready` as a claimed event
 * does. A lease is offered only while polling and while the runs here and those being inserted number fewer than the
 * largest room a claim may fill (`concurrency × MAX_ASYNC_PREFETCH`); claims count the leases offered and not yet
 * answered as taken. Offers are not held to the claims' own room (`concurrency × prefetch`): that room shrinks when
 * claims come back with little, which is what happens when the inserts took the leases, and arrivals refused a lease
 * for it had each to be claimed after all (38 % of the events on SQLite at saturation).
 *
 * Claims keep their turn: arrivals do not wait for their acks, so offers could keep the room full for good, and older
 * events (those inserted when there was no room, retries come due, a customer's next event) would wait behind every
 * new one. So a claim that the room puts off runs anyway once no claim has run for CLAIM_TURN_MS, taking a slot's
 * worth beyond the room (never more than the largest room and a slot's worth held in all); when even that is full,
 * and whenever an insert found no room for a lease, no lease is offered until a claim ran. Each claim takes the oldest
 * claimable events first, as always.
 */

const PREFETCH = 8;
const ASYNC_PREFETCH = 4;
const MAX_ASYNC_PREFETCH = 32;
/** How long a claim may be put off for lack of room while inserts take leases (see "Leases taken by inserts"). */
const CLAIM_TURN_MS = 50;
/**
 * Runs whose handler is done and whose outcome is being written, per handler slot, beyond the slot's own run. Slots
 * held through the write capped the worker at `concurrency` events per store round trip: on Postgres at 80 % of the
 * ack capacity, 1.6k events/s against 4.5k arriving, so the backlog grew without end. A commit takes the outcomes of
 * one turn together, so a few per slot are enough to keep every slot busy.
 */
const RECORDING_PER_SLOT = 4;

export interface ClaimLoop {
  readonly mode: Mode;
  /** Handlers running now (their outcomes being recorded not counted). */
  readonly running: number;
  /** Enters `polling`, unless it already polls or stops. */
  start(): void;
  /** One claim pass, serialized; resolves with how many events it claimed. */
  pass(): Promise<number>;
  /** A pass at the end of this turn of the event loop. */
  passSoon(): void;
  /** Enters `stopping`: waits for a claim under way, then releases the runs still waiting. */
  stop(): Promise<void>;
  /** A lease for an event being inserted now, when there is room for it (see "Leases taken by inserts"). */
  offer(): InsertLease | undefined;
  /** The insert given `offer()`'s lease settled: the record when it took the lease, to run here. */
  adopt(record: EventRecord | undefined): void;
}

/** `finished` is called once per run as it leaves the worker's books. */
export function createClaimLoop(shared: Shared, leases: Leases, finished: () => void): ClaimLoop {
  const { options, store, owner, now, logger, inflight, claimTimeoutMs } = shared;
  const outcomes = createOutcomes(shared, { unqueue, handled: slotFreed, recorded });
  const processFn = options.process as LazySignalProcess;
  const lazy = processFn.withSignal;
  let mode: Mode = 'on-demand';
  let poller: ReturnType<typeof setInterval> | undefined;
  let chain: Promise<number> = Promise.resolve(0);
  let queued = false;
  let soon = false;
  let running = 0;
  let recording = 0;
  const maxUnrecorded = options.concurrency * (1 + RECORDING_PER_SLOT);
  const ready: Run[] = [];
  let prefetch = 1;
  let storeDown = false;
  // Leases offered to inserts whose answer has not come yet (see "Leases taken by inserts").
  let adopting = 0;
  // Claims go first: set when an event may wait for one while offers fill the room (an insert found no room for a
  // lease, or a claim's turn came and found no room at all); cleared once a claim ran.
  let claimFirst = false;
  // When a claim last answered (performance.now(): a test's clock may stand still), and whether inserts take leases.
  let lastClaimAt = performance.now();
  const offers = store.capabilities.leaseOnInsert === true;
  // The most runs held here at once: the largest room a claim fills, which bounds offers too.
  const maxRoom = options.concurrency * MAX_ASYNC_PREFETCH;
  // Records inserts leased to this worker, launched together at the end of the turn.
  const adopted: EventRecord[] = [];
  let adoptSoon = false;

  /**
   * A claim was answered: claims no longer go first, their turn starts over, and say so once if the store had been
   * failing.
   */
  function answered() {
    claimFirst = false;
    lastClaimAt = performance.now();
    if (storeDown) logger.info('store reachable again; processing resumes', { store: store.name });
    storeDown = false;
  }

  async function fill(): Promise<number> {
    const room = options.concurrency * prefetch;
    const held = running + ready.length + adopting;
    let capacity = room - held;
    if (mode === 'stopping') return 0;
    // After the first claim, only once fewer runs wait than there are slots, or than half of a grown prefetch (see
    // "How much a pass claims"); where inserts take leases, also once no claim ran for CLAIM_TURN_MS, a slot's worth
    // beyond the room (see "Leases taken by inserts").
    if (capacity <= 0 || (prefetch > 1 && ready.length >= Math.max(options.concurrency, room >> 1))) {
      if (!offers || mode !== 'polling' || performance.now() - lastClaimAt < CLAIM_TURN_MS) return 0;
      capacity = Math.min(Math.max(capacity, options.concurrency), maxRoom + options.concurrency - held);
      if (capacity <= 0) {
        claimFirst = true;
        return 0;
      }
    }
    // A synchronous store that throws (SQLite busy) is turned into a rejection here instead of escaping fill() as an
    // unhandled rejection, which ends a Bun or Node process.
    let claim: EventRecord[] | Promise<EventRecord[]>;
    try {
      claim = store.claim({ owner, limit: capacity, leaseMs: options.leaseMs, now: now() });
    } catch (error) {
      claim = Promise.reject(error);
    }
    if (!(claim instanceof Promise)) {
      // A synchronous store answered at once: no timeout to race.
      prefetch = PREFETCH;
      answered();
      for (const record of claim) launch(record);
      return claim.length;
    }
    if (prefetch < ASYNC_PREFETCH) prefetch = ASYNC_PREFETCH;
    const pending = claim;
    let batch: EventRecord[];
    try {
      // A store that stops answering (a silent network partition) must not stall the worker for good: give up on
      // this pass; whatever the claim leased after all is still run when it arrives.
      batch = await within(
        pending,
        claimTimeoutMs,
        () => {
          pending.then((late) => late.forEach(launch)).catch(() => {});
          return new Error(`claim did not answer within ${claimTimeoutMs} ms`);
        },
        true,
      );
      answered();
    } catch (error) {
      if (!storeDown) logger.warn('claim failed; will retry on the next poll', { store: store.name, error });
      storeDown = true;
      prefetch = ASYNC_PREFETCH;
      return 0;
    }
    if (batch.length >= capacity) prefetch = Math.min(MAX_ASYNC_PREFETCH, prefetch * 2);
    else if (batch.length * 2 < capacity) prefetch = Math.max(ASYNC_PREFETCH, prefetch >> 1);
    for (const record of batch) launch(record);
    return batch.length;
  }

  function pass(): Promise<number> {
    if (queued) return chain;
    queued = true;
    chain = chain.then(() => {
      queued = false;
      return fill();
    });
    return chain;
  }

  function passSoon() {
    if (soon || mode === 'stopping') return;
    soon = true;
    afterThisTurn(() => {
      soon = false;
      if (mode !== 'stopping') void pass();
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
      phase: 'waiting',
      started: t,
      deadline: Number.POSITIVE_INFINITY,
      renewed: t,
      leaseUntil: record.leaseUntil ?? t + options.leaseMs,
      controller: undefined,
      reason: undefined,
      fail,
      resolve,
      promise: undefined as unknown as Promise<void>,
    };
    run.promise = outcomes.settle(run, handled).finally(() => finish(run));
    inflight.set(record.key, run);
    leases.watch();
    ready.push(run);
    startReady();
  }

  function finish(run: Run) {
    run.phase = 'finished';
    inflight.delete(run.record.key);
    finished();
    leases.release();
  }

  /** Starts waiting runs while handler slots are free. */
  function startReady() {
    while (
      running < options.concurrency &&
      running + recording < maxUnrecorded &&
      ready.length > 0 &&
      mode !== 'stopping'
    ) {
      const run = ready.shift() as Run;
      // Its lease ran out while it waited (the store could not renew it): another worker may hold it now, so it is
      // not run here; whoever claims it next runs it.
      if (run.leaseUntil <= now()) {
        run.phase = 'abandoned';
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
    run.phase = 'running';
    running++;
    try {
      const r = lazy ? lazy(run.record, () => signalOf(run)) : processFn(run.record, signalOf(run));
      if (r && typeof (r as Promise<void>).then === 'function') (r as Promise<void>).then(run.resolve, run.fail);
      else run.resolve();
    } catch (error) {
      run.fail(error);
    }
  }

  function unqueue(run: Run) {
    ready.splice(ready.indexOf(run) >>> 0, 1);
  }

  /** A handler settled: its slot goes to the next waiting run while its outcome is recorded. */
  function slotFreed() {
    running--;
    recording++;
    if (mode === 'stopping') return;
    startReady();
    passSoon();
  }

  /** A run's outcome is recorded: room for another, and the store is asked for more. */
  function recorded() {
    recording--;
    if (mode === 'stopping') return;
    startReady();
    // The customer's next event may be due now; one claim at the end of this turn serves every slot freed in it.
    passSoon();
  }

  /** Runs claimed but never started (shutdown): handed back at once, so they need not wait for their leases to expire. */
  function releaseReady() {
    const t = now();
    for (const run of ready.splice(0)) {
      run.phase = 'abandoned';
      run.started = t;
      run.reason = new Error('not started before shutdown');
      outcomes.release(run, t).finally(() => run.resolve());
    }
  }

  return {
    get mode() {
      return mode;
    },
    get running() {
      return running;
    },
    start() {
      if (mode !== 'on-demand') return;
      mode = 'polling';
      poller = setInterval(() => void pass(), options.pollMs);
      // Do not keep a process alive just for polling (Node/Bun/Deno all have unref on timers).
      (poller as { unref?: () => void }).unref?.();
      void pass();
    },
    pass,
    passSoon,
    async stop() {
      mode = 'stopping';
      if (poller) clearInterval(poller);
      poller = undefined;
      await chain.catch(() => {});
      releaseReady();
    },
    offer() {
      if (mode !== 'polling' || storeDown || claimFirst) return undefined;
      if (running + ready.length + adopting >= maxRoom) {
        // This event, inserted without a lease, waits for a claim: until one ran, new events do not pass it. More
        // arrive than the largest room holds: the claims' room grows as after a full claim.
        claimFirst = true;
        prefetch = Math.min(MAX_ASYNC_PREFETCH, Math.max(ASYNC_PREFETCH, prefetch * 2));
        return undefined;
      }
      adopting++;
      return { owner, leaseUntil: now() + options.leaseMs };
    },
    adopt(record) {
      if (record === undefined) {
        adopting--;
        return;
      }
      // Started once this turn's answers are out, as a claim's runs are: the insert settles just before its 200 is
      // written, and a handler's synchronous start must not come first.
      adopted.push(record);
      if (adoptSoon) return;
      adoptSoon = true;
      afterThisTurn(() => {
        adoptSoon = false;
        const records = adopted.splice(0);
        adopting -= records.length;
        for (const r of records) launch(r);
        // Stopped meanwhile: handed back at once, as the runs that waited.
        if (mode === 'stopping') releaseReady();
      });
    },
  };
}
