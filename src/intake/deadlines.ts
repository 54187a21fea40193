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
  /** The watched deadlines are a list linked through these (see `watched`). */
  prev: Deadline | null;
  next: Deadline | null;
  /** Whether it is in that list. */
  listed: boolean;
}

const TICK_MS = 50;
// The deadlines the watchdog watches, newest first, linked through the deadlines themselves: adding and removing one
// writes a few fields. A Set did the same with hashing, and its add and delete took about 2.6 % of the server's
// samples on the request path's profile (`npm run bench:profile -- e`), for two or three deadlines a delivery.
let watched: Deadline | null = null;
let watchdog: ReturnType<typeof setInterval> | undefined;

function fire(d: Deadline) {
  d.expired = true;
  d.expire();
}

function unlink(d: Deadline): void {
  if (!d.listed) return;
  d.listed = false;
  if (d.prev) d.prev.next = d.next;
  else watched = d.next;
  if (d.next) d.next.prev = d.prev;
  d.prev = null;
  d.next = null;
}

// Every TICK_MS while any deadline is watched: the due ones are collected first, then fired, so an expiry that clears
// or adds other deadlines cannot cut the walk short.
function tick(): void {
  const now = Date.now();
  const due: Deadline[] = [];
  for (let d = watched; d !== null; d = d.next) if (d.at <= now) due.push(d);
  for (const d of due) {
    // An earlier expiry may have cleared it.
    if (!d.listed) continue;
    unlink(d);
    fire(d);
  }
  if (watched === null) {
    clearInterval(watchdog);
    watchdog = undefined;
  }
}

/** Calls `expire` once `ms` have passed, unless `clear` came first. */
export function deadline(ms: number, expire: () => void, ownTimer = false): Deadline {
  const d: Deadline = {
    at: Date.now() + ms,
    expired: false,
    expire,
    timer: undefined,
    prev: null,
    next: null,
    listed: false,
  };
  if (ownTimer) {
    // The deadline rides along as the timer's argument, so no closure is made for it.
    d.timer = setTimeout(fire, ms, d);
    return d;
  }
  d.listed = true;
  d.next = watched;
  if (watched !== null) watched.prev = d;
  watched = d;
  if (!watchdog) {
    watchdog = setInterval(tick, TICK_MS);
    (watchdog as { unref?: () => void }).unref?.();
  }
  return d;
}

export function clear(d: Deadline): void {
  if (d.timer === undefined) unlink(d);
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
