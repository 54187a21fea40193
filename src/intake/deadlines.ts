// Every timer that bounds a wait lives here, for the request path (body reads, store inserts) and the worker (claims,
// store writes, the pauses of a drain, a shutdown or a retried completion): one `deadline`, and promise forms of it.
//
// A deadline is coarse by default: one watchdog serves them all, instead of a timer and a Promise.race per call (both
// showed on the request path's profile). Deadlines are checked every TICK_MS, so one fires up to that much late; the
// interval runs only while a deadline is pending and never keeps a process alive. A deadline with `ownTimer` gets a
// timer of its own instead: on time, and keeping the process alive like any timer, for waits someone awaits (a drain
// polling every 20 ms must not wait 50, and Node must not exit in the middle of one).

export interface Deadline {
  /** Epoch ms after which `expire` is called (once). */
  at: number;
  /** Set when the deadline passed. */
  expired: boolean;
  expire: () => void;
  /** Its own timer (`ownTimer`); undefined when the watchdog watches it. */
  timer: ReturnType<typeof setTimeout> | undefined;
}

const TICK_MS = 50;
const pending = new Set<Deadline>();
let watchdog: ReturnType<typeof setInterval> | undefined;

function fire(d: Deadline) {
  d.expired = true;
  d.expire();
}

/** Calls `expire` once `ms` have passed, unless `clear` came first. */
export function deadline(ms: number, expire: () => void, ownTimer = false): Deadline {
  const d: Deadline = { at: Date.now() + ms, expired: false, expire, timer: undefined };
  if (ownTimer) {
    // The deadline rides along as the timer's argument, so no closure is made for it.
    d.timer = setTimeout(fire, ms, d);
    return d;
  }
  pending.add(d);
  if (!watchdog) {
    watchdog = setInterval(() => {
      const now = Date.now();
      for (const q of pending) {
        if (q.at <= now) {
          pending.delete(q);
          fire(q);
        }
      }
      if (pending.size === 0) {
        clearInterval(watchdog);
        watchdog = undefined;
      }
    }, TICK_MS);
    (watchdog as { unref?: () => void }).unref?.();
  }
  return d;
}

export function clear(d: Deadline): void {
  if (d.timer === undefined) pending.delete(d);
  else clearTimeout(d.timer);
}

/** Ends the wait at once, as if its time had come (`expire` still runs only once). */
export function expireNow(d: Deadline): void {
  if (d.expired) return;
  clear(d);
  fire(d);
}

/** `work`, or a rejection with `error()` once `ms` passed without an answer. */
export function within<T>(work: Promise<T>, ms: number, error: () => Error, ownTimer = false): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const d = deadline(ms, () => reject(error()), ownTimer);
    work.then(
      (value) => {
        clear(d);
        resolve(value);
      },
      (reason) => {
        clear(d);
        reject(reason);
      },
    );
  });
}

/** Settles as `work` does, or resolves once `ms` passed first: a wait with a limit, not a failure. Own timer. */
export function atMost(work: Promise<unknown>, ms: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const d = deadline(ms, resolve, true);
    work.then(
      () => {
        clear(d);
        resolve();
      },
      (reason) => {
        clear(d);
        reject(reason);
      },
    );
  });
}

/** Resolves after `ms`. Own timer. */
export function sleep(ms: number): Promise<void> {
  return new Promise<void>((resolve) => void deadline(ms, resolve, true));
}
