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
