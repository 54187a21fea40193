// One watchdog for every deadline on the request path (body reads, store inserts) and for the worker's store writes,
// instead of a timer and a Promise.race per call: both showed on the request path's profile. Deadlines are checked
// every TICK_MS, so one fires up to that much late; the interval runs only while a deadline is pending and never
// keeps a process alive.

export interface Deadline {
  /** Epoch ms after which `expire` is called (once). */
  at: number;
  /** Set when the deadline passed. */
  expired: boolean;
  expire: () => void;
}

const TICK_MS = 50;
const pending = new Set<Deadline>();
let watchdog: ReturnType<typeof setInterval> | undefined;

/** Calls `expire` once `ms` have passed, unless `clear` came first. */
export function deadline(ms: number, expire: () => void): Deadline {
  const d: Deadline = { at: Date.now() + ms, expired: false, expire };
  pending.add(d);
  if (!watchdog) {
    watchdog = setInterval(() => {
      const now = Date.now();
      for (const q of pending) {
        if (q.at <= now) {
          q.expired = true;
          pending.delete(q);
          q.expire();
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
  pending.delete(d);
}

/** `work`, or a rejection with `error()` once `ms` passed without an answer. */
export function within<T>(work: Promise<T>, ms: number, error: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const d = deadline(ms, () => reject(error()));
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
