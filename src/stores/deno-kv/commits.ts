// Commits: optimistic read-check-commit with retries, and shared commits that let many changes of one process go
// out together (a local KV file has one writer, so a commit each queued them up behind one another).
import { type DenoKvLike, type KvAtomic, type KvCommitResult, type KvKey, replay, type Step, sleep } from './kv.ts';
import { keyId, keySize } from './keys.ts';
import type { Meta } from './record.ts';

/** Rounds an optimistic change (or a claim) is tried before giving up on concurrent writers. */
export const MAX_TRIES = 100;
/** Body bytes per group commit, well inside the 800 KiB a commit may write. */
export const BATCH_BYTES = 256 * 1024;
/** Key bytes per group commit (checks and mutations), inside the 80 KiB a commit may name. */
export const BATCH_KEY_BYTES = 48 * 1024;
/** Changes per shared commit (complete/retry/deadLetter/renew). */
const BATCH_SHARED = 30;
/** Checks per shared commit, inside the 100 checks one commit may have. */
const SHARED_CHECKS = 90;

export const CONFLICT = Symbol('conflict');
export type Conflict = typeof CONFLICT;

/** Repeats an optimistic read-check-commit until it goes through without a concurrent writer in between. */
export async function optimistic<T>(what: string, attempt: () => Promise<T | Conflict>): Promise<T> {
  for (let i = 0; i < MAX_TRIES; i++) {
    const result = await attempt();
    if (result !== CONFLICT) return result;
    // Jitter spreads the retries of writers that collided on the same key.
    if (i > 0) await sleep(Math.random() * Math.min(25, 2 * i));
  }
  throw new Error(`${what} kept conflicting with concurrent writers`);
}

/** An atomic change written down rather than sent, so several can go out in one commit. */
export interface Recorded extends KvAtomic {
  steps: Step[];
  /** Its `sum`s by key, added up: written after the steps, merged with those of the changes it shares a commit with. */
  sums: Map<string, { key: KvKey; n: bigint }>;
  /**
   * Called with the commit's versionstamp once the commit holding it went through, before any other write of the
   * store's takes its turn (what it remembers of the keys it wrote is then true when the next writer looks).
   */
  onCommit: ((versionstamp: string) => void)[];
  /** Keys it checks, sets or deletes. */
  keys: Set<string>;
  checks: number;
  keyBytes: number;
  /** A rough upper bound of the bytes it writes. */
  valueBytes: number;
}

export function recorded(): Recorded {
  const r: Recorded = {
    steps: [],
    sums: new Map(),
    onCommit: [],
    keys: new Set(),
    checks: 0,
    keyBytes: 0,
    valueBytes: 0,
    check(...checks) {
      for (const c of checks) {
        r.keys.add(keyId(c.key));
        r.keyBytes += keySize(c.key);
      }
      r.checks += checks.length;
      r.steps.push((op) => op.check(...checks));
      return r;
    },
    set(key, value) {
      r.keys.add(keyId(key));
      r.keyBytes += keySize(key);
      const m = value as Partial<Meta> | null;
      r.valueBytes += 2048 + (m?.body?.length ?? 0) + 3 * (m?.lastError?.length ?? 0);
      r.steps.push((op) => op.set(key, value));
      return r;
    },
    delete(key) {
      r.keys.add(keyId(key));
      r.keyBytes += keySize(key);
      r.steps.push((op) => op.delete(key));
      return r;
    },
    sum(key, n) {
      if (addSum(r.sums, keyId(key), key, n)) r.keyBytes += keySize(key);
      return r;
    },
    commit() {
      throw new Error('a recorded change is committed through commitShared');
    },
  };
  return r;
}

/** KV's counters are unsigned 64-bit and wrap: sums add up modulo this. */
const U64 = 1n << 64n;

/** Adds `n` to the sum kept for counter `id` in `sums`; true when the counter had none yet. */
function addSum(sums: Map<string, { key: KvKey; n: bigint }>, id: string, key: KvKey, n: bigint): boolean {
  const had = sums.get(id);
  if (had) had.n = (had.n + n) % U64;
  else sums.set(id, { key, n });
  return !had;
}

/**
 * Writes recorded changes into one atomic operation: their steps in order, then one `sum` per counter for all of
 * them. The worker's completions each move one count down and one up, and the 30 changes of a shared commit made
 * 60 sums on the same four counters, each a read and a write of the counter's row.
 */
export function writeRecorded(op: KvAtomic, changes: readonly Recorded[]): KvAtomic {
  const sums = new Map<string, { key: KvKey; n: bigint }>();
  for (const r of changes) {
    replay(op, r.steps);
    for (const [id, s] of r.sums) addSum(sums, id, s.key, s.n);
  }
  for (const { key, n } of sums.values()) if (n !== 0n) op.sum(key, n);
  return op;
}

/** Commits changes together in one atomic operation, then tells each of them (`onCommit`) when it went through. */
export async function commitRecorded(kv: DenoKvLike, changes: readonly Recorded[]): Promise<KvCommitResult> {
  const r = await writeRecorded(kv.atomic(), changes).commit();
  if (r.ok) for (const op of changes) for (const fn of op.onCommit) fn(r.versionstamp);
  return r;
}

export type CommitShared = (kv: DenoKvLike, op: Recorded) => Promise<KvCommitResult>;

/**
 * Turns at writing, first come first served, for the writers of one store that would otherwise race on the same keys:
 * a group commit holds its turn from its reads to its commit, and a shared commit takes one to commit. The worker
 * finishes events of the customers whose new events are being inserted (a completion rewrites its group's counter),
 * and a completion that landed between a group commit's reads and its commit failed that commit's check: under load
 * most group commits lost such a race, each costing a batch's worth of commits. Now a completion commits before or
 * after, never inside, and when it read a counter the group commit then changed, it is the one retried (one change
 * of the worker's, off the ack path). Nothing holds a turn while it waits for another, so turns cannot deadlock.
 */
export interface WriteTurns {
  run<T>(fn: () => Promise<T>): Promise<T>;
}

export function writeTurns(): WriteTurns {
  let tail: Promise<unknown> = Promise.resolve();
  return {
    run(fn) {
      const mine = tail.then(fn);
      tail = mine.catch(() => {});
      return mine;
    },
  };
}

/**
 * Shared commits for complete/retry/deadLetter/renew: the worker finishes many events at once, and each used to be
 * its own commit behind KV's one writer. Changes that name no key in common (a `sum` commutes, so it does not
 * count) go into one commit; a change that shares a key with one ahead of it waits, so their order holds. When the
 * shared commit fails a check, each change is committed alone and gets its own answer.
 */
export function sharedCommits(turns: WriteTurns = writeTurns()): CommitShared {
  type Waiting = { op: Recorded; done: (r: KvCommitResult) => void; fail: (err: unknown) => void };
  const queue: Waiting[] = [];
  let sharing = false;

  async function shareLoop(kv: DenoKvLike): Promise<void> {
    sharing = true;
    try {
      while (queue.length > 0) {
        const batch = takeShared(queue);
        const alone = (q: Waiting) => turns.run(() => commitRecorded(kv, [q.op])).then(q.done, q.fail);
        if (batch.length === 1) {
          await alone(batch[0] as Waiting);
          continue;
        }
        const r = await turns
          .run(() =>
            commitRecorded(
              kv,
              batch.map((q) => q.op),
            ),
          )
          .catch(() => ({ ok: false }) as const);
        if (r.ok) for (const q of batch) q.done(r);
        else await Promise.all(batch.map(alone));
      }
    } finally {
      sharing = false;
    }
  }

  return (kv, op) =>
    new Promise((done, fail) => {
      queue.push({ op, done, fail });
      if (!sharing) void shareLoop(kv);
    });
}

/** Takes from `queue` the changes that fit one commit together; the rest stay, in order. */
function takeShared<T extends { op: Recorded }>(queue: T[]): T[] {
  const batch: T[] = [];
  const rest: T[] = [];
  const used = new Set<string>();
  const blocked = new Set<string>();
  let checks = 0;
  let keyBytes = 0;
  let valueBytes = 0;
  for (const q of queue) {
    const o = q.op;
    const fits =
      batch.length === 0 ||
      (batch.length < BATCH_SHARED &&
        checks + o.checks <= SHARED_CHECKS &&
        keyBytes + o.keyBytes <= BATCH_KEY_BYTES &&
        valueBytes + o.valueBytes <= BATCH_BYTES * 2);
    if (fits && ![...o.keys].some((k) => used.has(k) || blocked.has(k))) {
      batch.push(q);
      for (const k of o.keys) used.add(k);
      checks += o.checks;
      keyBytes += o.keyBytes;
      valueBytes += o.valueBytes;
    } else {
      rest.push(q);
      for (const k of o.keys) blocked.add(k);
    }
  }
  queue.splice(0, queue.length, ...rest);
  return batch;
}
