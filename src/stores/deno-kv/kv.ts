// The slice of the Deno KV API the store uses, and a wrapper that waits while another handle has the file locked.
// Declared here so the store type-checks without Deno's global types (tsc runs with bun-types and @types/node).

type KvKeyPart = Uint8Array | string | number | bigint | boolean | symbol;
export type KvKey = readonly KvKeyPart[];
export interface KvEntryMaybe<T> {
  key: KvKey;
  value: T | null;
  versionstamp: string | null;
}
export interface KvEntry<T> {
  key: KvKey;
  value: T;
  versionstamp: string;
}
export type KvListSelector =
  | { prefix: KvKey }
  | { prefix: KvKey; start: KvKey }
  | { prefix: KvKey; end: KvKey }
  | {
      start: KvKey;
      end: KvKey;
    };
interface KvListOptions {
  limit?: number;
  batchSize?: number;
  reverse?: boolean;
}
export type KvCommitResult = { ok: true; versionstamp: string } | { ok: false };
export interface KvAtomic {
  check(...checks: { key: KvKey; versionstamp: string | null }[]): KvAtomic;
  set(key: KvKey, value: unknown): KvAtomic;
  delete(key: KvKey): KvAtomic;
  sum(key: KvKey, n: bigint): KvAtomic;
  commit(): Promise<KvCommitResult>;
}

/** The part of `Deno.Kv` this store needs; pass a real `Deno.Kv` (for example Deno Deploy's `await Deno.openKv()`). */
export interface DenoKvLike {
  get<T = unknown>(key: KvKey): Promise<KvEntryMaybe<T>>;
  getMany<T extends readonly unknown[]>(
    keys: readonly [...{ [K in keyof T]: KvKey }],
  ): Promise<{ [K in keyof T]: KvEntryMaybe<T[K]> }>;
  list<T = unknown>(selector: KvListSelector, options?: KvListOptions): AsyncIterableIterator<KvEntry<T>>;
  atomic(): KvAtomic;
  close(): void;
}

interface DenoLike {
  openKv?: (path?: string) => Promise<DenoKvLike>;
}

export function denoGlobal(): DenoLike | undefined {
  return (globalThis as unknown as { Deno?: DenoLike }).Deno;
}

const BUSY_TRIES = 200;

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export type Step = (op: KvAtomic) => void;
/** Applies recorded steps to a real atomic operation. */
export function replay(op: KvAtomic, steps: readonly Step[]): KvAtomic {
  for (const step of steps) step(op);
  return op;
}

/** SQLite-backed KV answers "database is locked" when another handle on the same file is writing: wait and retry. */
async function whenFree<T>(fn: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= BUSY_TRIES || !(err instanceof Error) || !/database is locked|busy/i.test(err.message)) throw err;
      await sleep(2 + Math.random() * Math.min(50, 2 * i));
    }
  }
}

/**
 * Wraps a KV so reads and commits retry while the file is locked. A failed commit applied nothing, so it is
 * rebuilt from the recorded mutations and sent again (its checks are evaluated afresh).
 */
export function patient(kv: DenoKvLike): DenoKvLike {
  return {
    get: ((key: KvKey) => whenFree(() => kv.get(key))) as DenoKvLike['get'],
    getMany: ((keys: readonly KvKey[]) => whenFree(() => kv.getMany(keys))) as DenoKvLike['getMany'],
    list: (selector, options) => kv.list(selector, options),
    close: () => kv.close(),
    atomic() {
      const steps: Step[] = [];
      const record = (step: Step): KvAtomic => {
        steps.push(step);
        return recorder;
      };
      const recorder: KvAtomic = {
        check: (...checks) => record((op) => op.check(...checks)),
        set: (key, value) => record((op) => op.set(key, value)),
        delete: (key) => record((op) => op.delete(key)),
        sum: (key, n) => record((op) => op.sum(key, n)),
        commit: () => whenFree(() => replay(kv.atomic(), steps).commit()),
      };
      return recorder;
    },
  };
}

/** Keys KV reads in one `getMany`. */
export const MAX_READ_KEYS = 10;

/** Reads any number of keys, MAX_READ_KEYS to a `getMany`, all at once; the entries come back in the keys' order. */
export async function getAll<T>(kv: DenoKvLike, keys: readonly KvKey[]): Promise<KvEntryMaybe<T>[]> {
  const parts: Promise<KvEntryMaybe<T>[]>[] = [];
  for (let i = 0; i < keys.length; i += MAX_READ_KEYS) {
    parts.push(kv.getMany<T[]>(keys.slice(i, i + MAX_READ_KEYS)) as Promise<KvEntryMaybe<T>[]>);
  }
  return (await Promise.all(parts)).flat();
}
/** Reads a batched KV has under way at once; the rest wait and then go out together. */
const READS_IN_FLIGHT = 2;

/**
 * Wraps a KV so reads made while others are under way share a `getMany`: a local KV file answers every operation on
 * one thread, where a read of one key cost about as much CPU as a `getMany` of three, and the worker finishing many
 * events at once made one read after another. A read that finds fewer than `READS_IN_FLIGHT` under way goes out at
 * once, so a quiet store adds no wait. Each `getMany` is one consistent snapshot, so the reads it answers are each
 * what a read of their own would have returned at some moment between the call and the answer.
 */
export function batchedReads(kv: DenoKvLike): DenoKvLike {
  type Read = { keys: readonly KvKey[]; done: (got: KvEntryMaybe<unknown>[]) => void; fail: (err: unknown) => void };
  const waiting: Read[] = [];
  let inFlight = 0;

  function send(): void {
    while (waiting.length > 0 && inFlight < READS_IN_FLIGHT) {
      const batch: Read[] = [];
      let n = 0;
      while (waiting.length > 0 && n + (waiting[0] as Read).keys.length <= MAX_READ_KEYS) {
        const r = waiting.shift() as Read;
        batch.push(r);
        n += r.keys.length;
      }
      // A read of more keys than one getMany takes goes out on its own, as it would have unwrapped.
      if (batch.length === 0) batch.push(waiting.shift() as Read);
      inFlight++;
      const keys = batch.length === 1 ? (batch[0] as Read).keys : batch.flatMap((r) => r.keys);
      kv.getMany<unknown[]>(keys)
        .then(
          (got) => {
            let at = 0;
            for (const r of batch) {
              r.done(got.slice(at, at + r.keys.length));
              at += r.keys.length;
            }
          },
          (err) => {
            for (const r of batch) r.fail(err);
          },
        )
        .finally(() => {
          inFlight--;
          send();
        });
    }
  }

  const read = (keys: readonly KvKey[]) =>
    new Promise<KvEntryMaybe<unknown>[]>((done, fail) => {
      waiting.push({ keys, done, fail });
      send();
    });

  return {
    get: ((key: KvKey) => read([key]).then((got) => got[0])) as DenoKvLike['get'],
    getMany: ((keys: readonly KvKey[]) =>
      keys.length === 0 ? Promise.resolve([]) : read(keys)) as DenoKvLike['getMany'],
    list: (selector, options) => kv.list(selector, options),
    atomic: () => kv.atomic(),
    close: () => kv.close(),
  };
}
