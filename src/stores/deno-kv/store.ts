// Deno KV store: the durable inbox on Deno's built-in key-value database (a local SQLite file, or Deno Deploy's KV).
// Every state change is atomic and guarded by versionstamp checks, so several isolates can share one database; changes
// made at the same moment in one process share a commit (KV has one writer, so a commit each queued them up).
import {
  type ClaimOptions,
  emptyCounts,
  type EventRecord,
  type EventStatus,
  type IdentityPolicy,
  type InsertResult,
  type ListOptions,
  type NewEvent,
  type PurgeOptions,
  type RequeueFilter,
  type StatusCounts,
  type Store,
  StoreSchemaError,
  StoreUnavailableError,
} from './store.ts';

export const DRIVER_NAME = 'deno-kv';

// The slice of the Deno KV API this store uses, declared here so the file type-checks without Deno's global types
// (tsc runs with bun-types and @types/node). A real `Deno.Kv` satisfies it.
type KvKeyPart = Uint8Array | string | number | bigint | boolean | symbol;
type KvKey = readonly KvKeyPart[];
interface KvEntryMaybe<T> {
  key: KvKey;
  value: T | null;
  versionstamp: string | null;
}
interface KvEntry<T> {
  key: KvKey;
  value: T;
  versionstamp: string;
}
type KvListSelector = { prefix: KvKey } | { prefix: KvKey; start: KvKey } | { prefix: KvKey; end: KvKey } | {
  start: KvKey;
  end: KvKey;
};
interface KvListOptions {
  limit?: number;
  batchSize?: number;
}
type KvCommitResult = { ok: true; versionstamp: string } | { ok: false };
interface KvAtomic {
  check(...checks: { key: KvKey; versionstamp: string | null }[]): KvAtomic;
  set(key: KvKey, value: unknown, options?: { expireIn?: number }): KvAtomic;
  delete(key: KvKey): KvAtomic;
  sum(key: KvKey, n: bigint): KvAtomic;
  commit(): Promise<KvCommitResult>;
}

/** The part of `Deno.Kv` this store needs; pass a real `Deno.Kv` (for example Deno Deploy's `await Deno.openKv()`). */
export interface DenoKvLike {
  get<T = unknown>(key: KvKey): Promise<KvEntryMaybe<T>>;
  getMany<T extends readonly unknown[]>(keys: readonly [...{ [K in keyof T]: KvKey }]): Promise<
    { [K in keyof T]: KvEntryMaybe<T[K]> }
  >;
  list<T = unknown>(selector: KvListSelector, options?: KvListOptions): AsyncIterableIterator<KvEntry<T>>;
  atomic(): KvAtomic;
  close(): void;
}

interface DenoLike {
  openKv?: (path?: string) => Promise<DenoKvLike>;
}

export interface DenoKvStoreOptions {
  /** Database file to open with `Deno.openKv(path)` (`:memory:` for a throw-away one); none = the default database. */
  path?: string;
  /** An already open database (e.g. Deno Deploy's); used instead of `path`, and left open by `close()`. */
  kv?: DenoKvLike;
  /** Key prefix, so several apps can share one database. Default `['lava-webhooks']`. */
  prefix?: string[];
  /**
   * Backstop expiry (ms) set with `expireIn` on done records, for when nobody runs `purge`. Keep it longer than your
   * retention: `purge` remains the way records are removed (expiry is a minimum, not a deadline, and the `done`
   * count does not drop for records that expire). Default 30 days; 0 turns it off. `once` records never get it.
   */
  expireDoneAfterMs?: number;
}

/** Version 2: records carry policy/coalesceKey/deliveries/tombstone, and no stored header holds a signature. */
const SCHEMA_VERSION = 2;
/** A delivery's signature: never kept at rest, since it would let anyone who reads the database replay it. */
const SIGNATURE_HEADER = 'x-webhook-signature';
/** Deno KV caps a value at 64 KiB; larger bodies are split into chunks of this size. */
const CHUNK_BYTES = 65_536;
/** Bodies up to this size live inside the record itself (saves a read for the usual small webhook). */
const INLINE_BODY_BYTES = 16 * 1024;
/** Chunks per atomic commit: 8 × 64 KiB keeps well inside the 800 KiB mutation-size limit of one commit. */
const CHUNKS_PER_COMMIT = 8;
/** Error texts are capped so a record always fits in one 64 KiB value. */
const MAX_ERROR_CHARS = 8192;
/** Staged chunks of an insert that never committed (crash) are swept by `purge` after this long. */
const STAGING_STALE_MS = 60 * 60 * 1000;
/** Chunk deletes that ride along in a purge commit (a commit takes at most 1000 mutations). */
const MAX_CHUNK_DELETES = 900;
/** Inserts per group commit: 3 checks each stays inside the 100 checks one commit may have. */
const BATCH_INSERTS = 30;
/** Checks per group commit: a plain insert takes 3, a signal up to 4 (its waiting entry, or what it coalesces into). */
const BATCH_CHECKS = 90;
/** Body bytes per group commit, well inside the 800 KiB a commit may write. */
const BATCH_BYTES = 256 * 1024;
/** Key bytes per group commit (checks and mutations), inside the 80 KiB a commit may name. */
const BATCH_KEY_BYTES = 48 * 1024;
/** Changes per shared commit (complete/retry/deadLetter/renew). */
const BATCH_SHARED = 30;
/** Leases per claim commit: 2 checks each. */
const BATCH_LEASES = 40;
const MAX_TRIES = 100;
const BUSY_TRIES = 200;
const DAY_MS = 24 * 60 * 60 * 1000;
const U64_MINUS_ONE = (1n << 64n) - 1n;

const NOT_ON_DENO = 'deno-kv store: Deno KV needs the Deno runtime (or pass an open KV as `kv`)';
const NO_OPEN_KV =
  'deno-kv store: Deno.openKv is not available — run with --unstable-kv or add "unstable": ["kv"] to deno.json';

/** What is stored under the record key. The body is inline when small, else in chunks under `bodyId`. */
interface Meta extends Omit<EventRecord, 'body'> {
  /** The lowest-seq open record of its ordering group: the only one with a claim slot. */
  head: boolean;
  size: number;
  body: Uint8Array | null;
  bodyId: string | null;
  chunks: number;
  /** The chunks were rewritten with the done-record expiry and must be rewritten before the record reopens. */
  bodyExpires: boolean;
  /**
   * The `sig,coalesceKey` entry points here: the record takes coalesced copies. Only a waiting record (pending, never
   * claimed) has it, and at most one per coalesceKey, so claim can drop the entry without reading it first.
   */
  waits: boolean;
}

type Part = string | Uint8Array;
/** An insert on its way: the event and its key parts (`g` = its ordering group, `ckp` = its coalesceKey). */
interface InsertItem {
  event: NewEvent;
  kp: Part;
  cp: Part | null;
  g: Part[];
  ckp: Part | null;
}
/** An insert waiting for the next group commit; `id`/`gid`/`ckid` tell keys, groups and signals apart in a batch. */
interface Queued extends InsertItem {
  ticket: number;
  id: string;
  gid: string;
  ckid: string;
  done: (r: InsertResult) => void;
  fail: (err: unknown) => void;
}
/** A coalesceKey within one group commit (see `commitBatch`). */
interface Signal {
  entry: KvEntryMaybe<Part>;
  into: KvEntryMaybe<Meta> | null;
  copies: number;
  m: Meta | null;
  item?: InsertItem;
}
/** Under `g,…g`: how many open records the group has, and the highest seq ever queued in it while open. */
type GroupValue = { n: number; last?: number };
const CONFLICT = Symbol('conflict');
type Conflict = typeof CONFLICT;

const isOpen = (s: EventStatus) => s === 'pending' || s === 'retrying';
/** A record copies of its signal may be counted into: never claimed since it was (re)queued. */
const isWaiting = (m: Meta) =>
  m.status === 'pending' && m.attempts === 0 && m.leaseOwner === null && !m.tombstone && m.coalesceKey !== null;
const isFinished = (s: EventStatus): s is 'done' | 'dead' => s === 'done' || s === 'dead';
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const capError = (e: string | null | undefined) =>
  e == null ? null : e.length > MAX_ERROR_CHARS ? `${e.slice(0, MAX_ERROR_CHARS)}…` : e;

const encoder = new TextEncoder();
/** Keys longer than this go into KV keys as their SHA-256 (KV keys are capped at 2 KiB). */
const MAX_PART_CHARS = 256;
async function part(s: string): Promise<Part> {
  if (s.length <= MAX_PART_CHARS) return s;
  // A Uint8Array part sorts apart from strings, so a digest never collides with a short key.
  return new Uint8Array(await crypto.subtle.digest('SHA-256', encoder.encode(s)));
}

/** A string naming a key (or any list of key parts), to tell keys apart in a Set. */
const keyId = (key: KvKey) =>
  key.map((p) => (p instanceof Uint8Array ? `b${p.join(',')}` : `${typeof p}:${String(p)}`)).join('\u0000');
const keySize = (key: KvKey) =>
  key.reduce<number>((n, p) => n + 9 + (typeof p === 'string' ? 3 * p.length : p instanceof Uint8Array ? p.length : 0), 0);

type Step = (op: KvAtomic) => void;
/** Applies recorded steps to a real atomic operation. */
function replay(op: KvAtomic, steps: readonly Step[]): KvAtomic {
  for (const step of steps) step(op);
  return op;
}

/** An atomic change written down rather than sent, so several can go out in one commit. */
interface Recorded extends KvAtomic {
  steps: Step[];
  /** Keys it checks, sets or deletes. */
  keys: Set<string>;
  checks: number;
  keyBytes: number;
  /** A rough upper bound of the bytes it writes. */
  valueBytes: number;
}

function recorded(): Recorded {
  const r: Recorded = {
    steps: [],
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
    set(key, value, options) {
      r.keys.add(keyId(key));
      r.keyBytes += keySize(key);
      const m = value as Partial<Meta> | null;
      r.valueBytes += 2048 + (m?.body?.length ?? 0) + 3 * (m?.lastError?.length ?? 0);
      r.steps.push((op) => op.set(key, value, options));
      return r;
    },
    delete(key) {
      r.keys.add(keyId(key));
      r.keyBytes += keySize(key);
      r.steps.push((op) => op.delete(key));
      return r;
    },
    sum(key, n) {
      r.keyBytes += keySize(key);
      r.steps.push((op) => op.sum(key, n));
      return r;
    },
    commit() {
      throw new Error('deno-kv store: a recorded change is committed through commitShared');
    },
  };
  return r;
}

function sameKey(a: KvKey, b: KvKey): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    const y = b[i];
    if (x instanceof Uint8Array && y instanceof Uint8Array) {
      if (x.length !== y.length || x.some((v, j) => v !== y[j])) return false;
    } else if (x !== y) return false;
  }
  return true;
}

/** SQLite-backed KV answers "database is locked" when another handle on the same file is writing: wait and retry. */
async function whenFree<T>(fn: () => Promise<T>): Promise<T> {
  for (let i = 0;; i++) {
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
function patient(kv: DenoKvLike): DenoKvLike {
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
        set: (key, value, options) => record((op) => op.set(key, value, options)),
        delete: (key) => record((op) => op.delete(key)),
        sum: (key, n) => record((op) => op.sum(key, n)),
        commit: () => whenFree(() => replay(kv.atomic(), steps).commit()),
      };
      return recorder;
    },
  };
}

/** The policy of a record written before policies were stored: a customer's created/deleted event ran once. */
function inferPolicy(key: string): IdentityPolicy {
  return /^customer\.(created|deleted):/.test(key) && !key.includes(':sha256:') ? 'once' : 'dedupe';
}

/** A record as stored by any version: one written by schema version 1 has no policy fields yet. */
function normalize(m: Meta): Meta {
  if ((m as Partial<Meta>).policy !== undefined) return m;
  return { ...m, policy: inferPolicy(m.key), coalesceKey: null, deliveries: 1, tombstone: false, waits: false };
}

const hasSignature = (headers: Record<string, string>) =>
  Object.keys(headers).some((h) => h.toLowerCase() === SIGNATURE_HEADER);

function toRecord(m: Meta, body: Uint8Array): EventRecord {
  return {
    key: m.key,
    policy: m.policy,
    coalesceKey: m.coalesceKey,
    deliveries: m.deliveries,
    tombstone: m.tombstone,
    event: m.event,
    customerId: m.customerId,
    body,
    headers: { ...m.headers },
    receivedAt: m.receivedAt,
    status: m.status,
    seq: m.seq,
    attempts: m.attempts,
    nextAttemptAt: m.nextAttemptAt,
    leaseOwner: m.leaseOwner,
    leaseUntil: m.leaseUntil,
    lastError: m.lastError,
    finishedAt: m.finishedAt,
  };
}

function denoGlobal(): DenoLike | undefined {
  return (globalThis as unknown as { Deno?: DenoLike }).Deno;
}

/**
 * Layout under `prefix` (`kp` = the event key as a key part, `g` = ordering group parts, `seq` = arrival order):
 * - `ev,kp` record · `body,bodyId,i` body chunks · `staging,at,bodyId` chunks written ahead of a large insert
 * - `seq,seq` / `st,status,seq` / `cust,customer,seq` / `fin,status,finishedAt,seq` → kp: list, purge and requeue;
 *   a tombstone is under `tomb,status,finishedAt,seq` instead of `fin`, so purge does not scan it again each time
 * - `sig,coalesceKey` → kp: the waiting record identical copies of a signal are counted into (see `Meta.waits`)
 * - `g,…g` {n: open records, last: highest seq queued} and `q,…g,seq` → kp: each group's open records; the head is
 *   the first
 * - `ready,seq` (head, unleased, pending) and `wait,availableAt,seq` (head, leased or retrying) → kp: claim slots
 * - `n,status` counters (KvU64, `sum`) · `schema` {version}
 *
 * `seq` is made in the process from the clock (see `nextSeq`), not read from a shared counter: a counter key that
 * every insert rewrites makes all concurrent inserts conflict and retry (224 req/s, p99 1.8 s under 64 connections).
 * It must still be known inside the commit, so the indexes that order by it are written atomically with the record
 * (a versionstamp is only known after the commit). Two isolates that make the same seq are kept apart by a check
 * that the `seq,seq` entry is absent: the loser retries with the next number. Within a group, a new seq is also
 * above the group's `last`, so a customer's events stay in arrival (commit) order even when isolates' clocks differ;
 * across customers, seq follows receive time (ties within a millisecond between isolates go to whoever commits
 * first). An older database's small counter-made seqs sort before every clock-made one.
 */
export function denoKvStore(options: DenoKvStoreOptions = {}): Store {
  const P: readonly string[] = options.prefix ?? ['lava-webhooks'];
  const ttl = options.expireDoneAfterMs ?? 30 * DAY_MS;
  const doneTtl = ttl > 0 ? { expireIn: ttl } : undefined;
  if (!options.kv) {
    const deno = denoGlobal();
    if (!deno) throw new Error(NOT_ON_DENO);
    if (typeof deno.openKv !== 'function') throw new Error(NO_OPEN_KV);
  }

  const K = {
    schema: [...P, 'schema'],
    meta: (kp: Part) => [...P, 'ev', kp],
    chunk: (bodyId: string, i: number) => [...P, 'body', bodyId, i],
    chunks: (bodyId: string) => [...P, 'body', bodyId],
    staging: (at: number, bodyId: string) => [...P, 'staging', at, bodyId],
    seq: (seq: number) => [...P, 'seq', seq],
    st: (status: EventStatus, seq: number) => [...P, 'st', status, seq],
    cust: (cp: Part, seq: number) => [...P, 'cust', cp, seq],
    fin: (status: EventStatus, at: number, seq: number) => [...P, 'fin', status, at, seq],
    tomb: (status: EventStatus, at: number, seq: number) => [...P, 'tomb', status, at, seq],
    waiting: (ckp: Part) => [...P, 'sig', ckp],
    group: (g: readonly Part[]) => [...P, 'g', ...g],
    queue: (g: readonly Part[], seq: number) => [...P, 'q', ...g, seq],
    count: (status: EventStatus) => [...P, 'n', status],
  };
  const finKey = (m: Meta, at: number): KvKey => (m.tombstone ? K.tomb : K.fin)(m.status, at, m.seq);
  // A `once` record never gets the done-record expiry: its key must keep answering duplicate (as the record, then as
  // its tombstone) until purge's tombstone horizon, which may be far longer than the backstop, or never.
  const expires = (m: Meta) => m.status === 'done' && m.policy !== 'once' && doneTtl !== undefined;
  const slotKey = (m: Meta): KvKey => {
    if (m.leaseUntil !== null) return [...P, 'wait', Math.max(m.leaseUntil, m.nextAttemptAt), m.seq];
    if (m.status === 'retrying') return [...P, 'wait', m.nextAttemptAt, m.seq];
    return [...P, 'ready', m.seq];
  };
  const groupOf = async (m: { key: string; customerId: string | null }): Promise<Part[]> =>
    m.customerId === null ? ['k', await part(m.key)] : ['c', await part(m.customerId)];

  // Epoch ms × 1000 plus a sub-counter: 1000 inserts per ms before it runs ahead of the clock, and below 2^53 until
  // the year 2255. Strictly increasing within the process, even if the clock steps back.
  let lastSeq = 0;
  const nextSeq = (above: number): number => {
    lastSeq = Math.max(lastSeq + 1, Date.now() * 1000, above + 1);
    return lastSeq;
  };

  let kvPromise: Promise<DenoKvLike> | null = null;
  let opened: DenoKvLike | null = null;
  let closed = false;

  async function open(): Promise<DenoKvLike> {
    let kv: DenoKvLike;
    if (options.kv) kv = options.kv;
    else {
      const openKv = denoGlobal()?.openKv;
      if (!openKv) throw new Error(NO_OPEN_KV);
      kv = await openKv(options.path);
      opened = kv;
    }
    const db = patient(kv);
    const got = await db.get<{ version?: unknown }>(K.schema);
    if (got.value === null) {
      await db.atomic().check({ key: K.schema, versionstamp: null }).set(K.schema, { version: SCHEMA_VERSION })
        .commit();
    } else if (typeof got.value === 'object' && got.value.version === 1) {
      await migrate(db);
      // When another isolate finished the same migration first, the version it wrote is already the one wanted.
      await db.atomic().check({ key: K.schema, versionstamp: got.versionstamp }).set(K.schema, {
        version: SCHEMA_VERSION,
      }).commit();
    } else if (typeof got.value !== 'object' || got.value.version !== SCHEMA_VERSION) {
      throw new StoreSchemaError(
        `deno-kv store: data under prefix ${JSON.stringify(P)} has schema ${
          JSON.stringify(got.value)
        }, expected version ${SCHEMA_VERSION}`,
      );
    }
    return db;
  }

  /** Runs `fn` with the open database; anything that is not already a store error becomes StoreUnavailableError. */
  async function run<T>(what: string, fn: (kv: DenoKvLike) => Promise<T>): Promise<T> {
    if (closed) throw new StoreUnavailableError('deno-kv store is closed');
    try {
      if (!kvPromise) {
        kvPromise = open();
        kvPromise.catch(() => {
          kvPromise = null;
          try {
            opened?.close();
          } catch {
            // Already unusable; the open error is the one worth reporting.
          }
          opened = null;
        });
      }
      return await fn(await kvPromise);
    } catch (err) {
      if (err instanceof StoreUnavailableError || err instanceof StoreSchemaError) throw err;
      const message = err instanceof Error ? err.message : String(err);
      throw new StoreUnavailableError(`deno-kv store: ${what} failed: ${message}`, { cause: err });
    }
  }

  /** Repeats an optimistic read-check-commit until it goes through without a concurrent writer in between. */
  async function optimistic<T>(what: string, attempt: () => Promise<T | Conflict>): Promise<T> {
    for (let i = 0; i < MAX_TRIES; i++) {
      const result = await attempt();
      if (result !== CONFLICT) return result;
      // Jitter spreads the retries of writers that collided on the same key.
      if (i > 0) await sleep(Math.random() * Math.min(25, 2 * i));
    }
    throw new StoreUnavailableError(`deno-kv store: ${what} kept conflicting with concurrent writers`);
  }

  /**
   * Schema 1 → 2: stored headers lose the signature (version 1 kept whatever intake passed it), and a done record is
   * rewritten with the expiry it has now (none for a `once` one), its indexes and body chunks with it. Other records
   * are read as they are (see `normalize`). Safe to run in two isolates at once: each rewrite checks the versionstamp.
   */
  async function migrate(kv: DenoKvLike): Promise<void> {
    let page: KvEntry<Meta>[] = [];
    const rewritePage = async () => {
      await Promise.all(page.map((e) => migrateOne(kv, e)));
      page = [];
    };
    for await (const e of kv.list<Meta>({ prefix: [...P, 'ev'] }, { batchSize: 100 })) {
      page.push(e);
      if (page.length >= 50) await rewritePage();
    }
    await rewritePage();
  }

  async function migrateOne(kv: DenoKvLike, listed: KvEntry<Meta>): Promise<void> {
    const kp = listed.key[listed.key.length - 1] as Part;
    let cur: KvEntryMaybe<Meta> | null = listed;
    await optimistic('migrate', async () => {
      cur ??= await kv.get<Meta>(K.meta(kp));
      const v = cur.value;
      if (!v || !cur.versionstamp) return false;
      const old = (v as Partial<Meta>).policy === undefined;
      const m = normalize(v);
      const done = old && m.status === 'done';
      if (!hasSignature(m.headers) && !done) return false;
      const kept = Object.entries(m.headers).filter(([h]) => h.toLowerCase() !== SIGNATURE_HEADER);
      const after: Meta = { ...m, headers: Object.fromEntries(kept) };
      const expire = expires(after) ? doneTtl : undefined;
      if (done && m.bodyExpires && m.bodyId !== null) {
        // The chunks carry version 1's done-record expiry: they get the record's, so the body outlives it no less.
        const body = await readBody(kv, m).catch(() => null);
        if (body) {
          const chunks = splitBody(body);
          for (let i = 0; i < chunks.length; i += CHUNKS_PER_COMMIT) {
            const op = kv.atomic().check({ key: K.meta(kp), versionstamp: cur.versionstamp });
            for (let j = i; j < Math.min(chunks.length, i + CHUNKS_PER_COMMIT); j++) {
              op.set(K.chunk(m.bodyId, j), chunks[j], expire);
            }
            if (!(await op.commit()).ok) {
              cur = null;
              return CONFLICT;
            }
          }
          after.bodyExpires = expire !== undefined;
        }
      }
      const op = kv.atomic().check({ key: K.meta(kp), versionstamp: cur.versionstamp }).set(K.meta(kp), after, expire);
      if (done) {
        // Version 1 gave a done record's indexes the done-record expiry: they follow the record's.
        op.set(K.seq(m.seq), kp, expire).set(K.st(m.status, m.seq), kp, expire);
        if (m.finishedAt !== null) op.set(K.fin(m.status, m.finishedAt, m.seq), kp, expire);
        if (m.customerId !== null) op.set(K.cust(await part(m.customerId), m.seq), kp, expire);
      }
      if ((await op.commit()).ok) return true;
      cur = null;
      return CONFLICT;
    });
  }

  async function getMetas(kv: DenoKvLike, kps: Part[]): Promise<KvEntryMaybe<Meta>[]> {
    const batches: Promise<KvEntryMaybe<Meta>[]>[] = [];
    for (let i = 0; i < kps.length; i += 10) {
      batches.push(kv.getMany<Meta[]>(kps.slice(i, i + 10).map((kp) => K.meta(kp))));
    }
    return (await Promise.all(batches)).flat().map((e) => (e.value ? { ...e, value: normalize(e.value) } : e));
  }

  async function getMeta(kv: DenoKvLike, kp: Part): Promise<KvEntryMaybe<Meta>> {
    const e = await kv.get<Meta>(K.meta(kp));
    return e.value ? { ...e, value: normalize(e.value) } : e;
  }

  async function readBody(kv: DenoKvLike, m: Meta): Promise<Uint8Array> {
    if (m.body) return m.body;
    if (m.chunks === 0 || m.bodyId === null) return new Uint8Array(0);
    const out = new Uint8Array(m.size);
    let offset = 0;
    let n = 0;
    for await (const e of kv.list<Uint8Array>({ prefix: K.chunks(m.bodyId) })) {
      if (e.key[e.key.length - 1] !== n || offset + e.value.length > m.size) break;
      out.set(e.value, offset);
      offset += e.value.length;
      n++;
    }
    if (n !== m.chunks || offset !== m.size) {
      throw new StoreUnavailableError(`deno-kv store: body of ${JSON.stringify(m.key)} is incomplete`);
    }
    return out;
  }

  const withBodies = (kv: DenoKvLike, metas: Meta[]) =>
    Promise.all(metas.map(async (m) => toRecord(m, await readBody(kv, m))));

  function splitBody(body: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (let i = 0; i < body.length; i += CHUNK_BYTES) out.push(body.slice(i, i + CHUNK_BYTES));
    return out;
  }

  /** Writes chunks ahead of the commit that references them, behind a staging marker that purge can sweep. */
  async function stageChunks(kv: DenoKvLike, chunks: Uint8Array[]): Promise<{ bodyId: string; marker: KvKey }> {
    const bodyId = crypto.randomUUID();
    const marker = K.staging(Date.now(), bodyId);
    const ok = await kv.atomic().set(marker, { bodyId, chunks: chunks.length }).commit();
    if (!ok.ok) throw new StoreUnavailableError('deno-kv store: could not stage a large body');
    for (let i = 0; i < chunks.length; i += CHUNKS_PER_COMMIT) {
      const op = kv.atomic();
      for (let j = i; j < Math.min(chunks.length, i + CHUNKS_PER_COMMIT); j++) op.set(K.chunk(bodyId, j), chunks[j]);
      const r = await op.commit();
      if (!r.ok) throw new StoreUnavailableError('deno-kv store: could not stage a large body');
    }
    return { bodyId, marker };
  }

  async function deleteChunks(kv: DenoKvLike, bodyId: string, chunks: number, marker?: KvKey): Promise<void> {
    for (let i = 0; i < chunks; i += MAX_CHUNK_DELETES) {
      const op = kv.atomic();
      for (let j = i; j < Math.min(chunks, i + MAX_CHUNK_DELETES); j++) op.delete(K.chunk(bodyId, j));
      await op.commit();
    }
    if (marker) await kv.atomic().delete(marker).commit();
  }

  /**
   * Adds the writes shared by every state change of one record: the record, its status/finish indexes, counters and
   * claim slot. Group membership and the neighbouring head are the caller's business.
   */
  function change(op: KvAtomic, kp: Part, cp: Part | null, before: Meta, after: Meta): void {
    const expire = expires(after) ? doneTtl : undefined;
    const expiryChanged = expires(before) !== expires(after);
    op.set(K.meta(kp), after, expire);
    if (before.status !== after.status || expiryChanged) {
      op.delete(K.st(before.status, before.seq));
      op.set(K.st(after.status, after.seq), kp, expire);
    }
    if (before.status !== after.status) {
      op.sum(K.count(before.status), U64_MINUS_ONE);
      op.sum(K.count(after.status), 1n);
    }
    if (isFinished(before.status) && before.finishedAt !== null) op.delete(finKey(before, before.finishedAt));
    if (isFinished(after.status) && after.finishedAt !== null) op.set(finKey(after, after.finishedAt), kp, expire);
    if (expiryChanged) {
      op.set(K.seq(after.seq), kp, expire);
      if (cp !== null) op.set(K.cust(cp, after.seq), kp, expire);
    }
    const oldSlot = before.head ? slotKey(before) : null;
    const newSlot = after.head ? slotKey(after) : null;
    if (oldSlot && !(newSlot && sameKey(oldSlot, newSlot))) op.delete(oldSlot);
    if (newSlot) op.set(newSlot, kp);
  }

  const custPart = (m: Meta) => (m.customerId === null ? Promise.resolve(null) : part(m.customerId));

  /** After a done record commits, its body chunks get the same expiry (best effort: purge still deletes them). */
  async function expireChunks(kv: DenoKvLike, kp: Part, m: Meta, versionstamp: string): Promise<void> {
    if (!doneTtl || !expires(m) || m.chunks === 0 || m.bodyId === null) return;
    try {
      // Mark first, so a requeue that slips in between knows the chunks may expire and rewrites them.
      const marked = { ...m, bodyExpires: true };
      const r = await kv
        .atomic()
        .check({ key: K.meta(kp), versionstamp })
        .set(K.meta(kp), marked, doneTtl)
        .commit();
      if (!r.ok) return;
      const body = await readBody(kv, m);
      const chunks = splitBody(body);
      for (let i = 0; i < chunks.length; i += CHUNKS_PER_COMMIT) {
        const op = kv.atomic().check({ key: K.meta(kp), versionstamp: r.versionstamp });
        for (let j = i; j < Math.min(chunks.length, i + CHUNKS_PER_COMMIT); j++) {
          op.set(K.chunk(m.bodyId, j), chunks[j], doneTtl);
        }
        if (!(await op.commit()).ok) return;
      }
    } catch {
      // A backstop only: the record is done either way and purge removes the chunks.
    }
  }

  // Shared commits for complete/retry/deadLetter/renew: the worker finishes many events at once, and each used to be
  // its own commit behind KV's one writer. Changes that name no key in common (a `sum` commutes, so it does not
  // count) go into one commit; a change that shares a key with one ahead of it waits, so their order holds. When the
  // shared commit fails a check, each change is committed alone and gets its own answer.
  const sharedQueue: { op: Recorded; done: (r: KvCommitResult) => void; fail: (err: unknown) => void }[] = [];
  let sharing = false;

  function commitShared(kv: DenoKvLike, op: Recorded): Promise<KvCommitResult> {
    return new Promise((done, fail) => {
      sharedQueue.push({ op, done, fail });
      if (!sharing) void shareLoop(kv);
    });
  }

  async function shareLoop(kv: DenoKvLike): Promise<void> {
    sharing = true;
    try {
      while (sharedQueue.length > 0) {
        const batch: typeof sharedQueue = [];
        const rest: typeof sharedQueue = [];
        const used = new Set<string>();
        const blocked = new Set<string>();
        let checks = 0;
        let keyBytes = 0;
        let valueBytes = 0;
        for (const q of sharedQueue) {
          const o = q.op;
          const fits = batch.length === 0 ||
            (batch.length < BATCH_SHARED && checks + o.checks <= 90 && keyBytes + o.keyBytes <= BATCH_KEY_BYTES &&
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
        sharedQueue.splice(0, sharedQueue.length, ...rest);
        const alone = (q: (typeof sharedQueue)[number]) => replay(kv.atomic(), q.op.steps).commit().then(q.done, q.fail);
        if (batch.length === 1) {
          await alone(batch[0] as (typeof sharedQueue)[number]);
          continue;
        }
        const op = kv.atomic();
        for (const q of batch) replay(op, q.op.steps);
        const r = await op.commit().catch(() => ({ ok: false }) as const);
        if (r.ok) for (const q of batch) q.done(r);
        else await Promise.all(batch.map(alone));
      }
    } finally {
      sharing = false;
    }
  }

  /** complete/retry/deadLetter/renew: a change allowed only while `owner` holds the lease. */
  async function fenced(
    what: string,
    key: string,
    owner: string,
    next: (m: Meta) => Meta,
  ): Promise<boolean> {
    return run(what, async (kv) => {
      const kp = await part(key);
      let done: { m: Meta; versionstamp: string } | null = null;
      const ok = await optimistic(what, async () => {
        const cur = await getMeta(kv, kp);
        const m = cur.value;
        if (!m || !cur.versionstamp || !isOpen(m.status) || m.leaseOwner !== owner) return false;
        const after = next(m);
        const cp = await custPart(m);
        const op = recorded();
        op.check({ key: K.meta(kp), versionstamp: cur.versionstamp });
        if (isFinished(after.status)) {
          // Leaving the group: drop out of its queue and, when it was the head, promote the next open record.
          const g = await groupOf(m);
          const [gEntry, nextHead] = await Promise.all([
            kv.get<GroupValue>(K.group(g)),
            m.head ? nextInQueue(kv, g, m.seq) : Promise.resolve(null),
          ]);
          op.check({ key: K.group(g), versionstamp: gEntry.versionstamp });
          const n = (gEntry.value?.n ?? 1) - 1;
          if (n > 0) op.set(K.group(g), { ...gEntry.value, n });
          else op.delete(K.group(g));
          op.delete(K.queue(g, m.seq));
          if (nextHead) {
            const h = await getMeta(kv, nextHead);
            if (!h.value || !h.versionstamp) return CONFLICT;
            op.check({ key: K.meta(nextHead), versionstamp: h.versionstamp });
            const promoted = { ...h.value, head: true };
            change(op, nextHead, await custPart(h.value), h.value, promoted);
          }
          change(op, kp, cp, m, { ...after, head: false });
        } else {
          change(op, kp, cp, m, after);
        }
        const r = await commitShared(kv, op);
        if (!r.ok) return CONFLICT;
        done = { m: { ...after, head: isFinished(after.status) ? false : after.head }, versionstamp: r.versionstamp };
        return true;
      });
      const finished = done as { m: Meta; versionstamp: string } | null;
      if (ok && finished) await expireChunks(kv, kp, finished.m, finished.versionstamp);
      return ok;
    });
  }

  /** The first open record of group `g` other than `seq` (the queue is in seq order). */
  async function nextInQueue(kv: DenoKvLike, g: readonly Part[], seq: number): Promise<Part | null> {
    for await (const e of kv.list<Part>({ prefix: [...P, 'q', ...g] }, { limit: 2 })) {
      if (e.key[e.key.length - 1] !== seq) return e.value;
    }
    return null;
  }

  /** Makes a requeued signal the record its copies are counted into, unless another copy of it already waits. */
  async function register(kv: DenoKvLike, op: KvAtomic, kp: Part, after: Meta): Promise<void> {
    const key = K.waiting(await part(after.coalesceKey as string));
    const w = await kv.get<Part>(key);
    if (w.value !== null && keyId([w.value]) !== keyId([kp])) {
      const other = await getMeta(kv, w.value);
      if (other.value && isWaiting(other.value)) return;
    }
    op.check({ key, versionstamp: w.versionstamp }).set(key, kp);
    after.waits = true;
  }

  async function requeueOne(kv: DenoKvLike, kp: Part, now: number): Promise<boolean> {
    type Staged = { bodyId: string; marker: KvKey; old: Meta };
    let staged: Staged | null = null;
    try {
      return await optimistic('requeue', async () => {
        const cur = await getMeta(kv, kp);
        const m = cur.value;
        // A tombstone only remembers a key: there is nothing left to run.
        if (!m || !cur.versionstamp || m.tombstone) return false;
        const cp = await custPart(m);
        const after: Meta = {
          ...m,
          status: 'pending',
          attempts: 0,
          nextAttemptAt: now,
          leaseOwner: null,
          leaseUntil: null,
          lastError: null,
          finishedAt: null,
        };
        const op = kv.atomic().check({ key: K.meta(kp), versionstamp: cur.versionstamp });
        if (after.coalesceKey !== null && !m.waits) await register(kv, op, kp, after);
        let used: Staged | null = null;
        if (isOpen(m.status)) {
          change(op, kp, cp, m, after);
        } else {
          if (m.bodyExpires && m.bodyId !== null) {
            // The chunks may carry the done-record expiry: copy them to fresh keys that do not expire.
            let s = staged as Staged | null;
            if (!s || s.old.bodyId !== m.bodyId) {
              if (s) await deleteChunks(kv, s.bodyId, s.old.chunks, s.marker);
              staged = null;
              s = { ...(await stageChunks(kv, splitBody(await readBody(kv, m)))), old: m };
              staged = s;
            }
            used = s;
            after.bodyId = s.bodyId;
            after.bodyExpires = false;
            op.delete(s.marker);
          }
          const g = await groupOf(m);
          const [gEntry, headKp] = await Promise.all([kv.get<GroupValue>(K.group(g)), nextInQueue(kv, g, -1)]);
          op.check({ key: K.group(g), versionstamp: gEntry.versionstamp });
          op.set(K.group(g), { n: (gEntry.value?.n ?? 0) + 1, last: Math.max(gEntry.value?.last ?? 0, m.seq) });
          op.set(K.queue(g, m.seq), kp);
          after.head = true;
          if (headKp !== null) {
            const h = await getMeta(kv, headKp);
            if (!h.value || !h.versionstamp) return CONFLICT;
            if (h.value.seq < m.seq) after.head = false;
            else {
              // An older event comes back in front of the group's current head.
              op.check({ key: K.meta(headKp), versionstamp: h.versionstamp });
              change(op, headKp, await custPart(h.value), h.value, { ...h.value, head: false });
            }
          }
          change(op, kp, cp, m, after);
        }
        const r = await op.commit();
        if (!r.ok) return CONFLICT;
        const u = used as Staged | null;
        if (u && u.old.bodyId !== null) {
          staged = null;
          await deleteChunks(kv, u.old.bodyId, u.old.chunks);
        }
        return true;
      });
    } finally {
      const s = staged as Staged | null;
      if (s) await deleteChunks(kv, s.bodyId, s.old.chunks, s.marker).catch(() => {});
    }
  }

  /** The record a new event is stored as; the caller adds the body fields. */
  function newMeta(event: NewEvent, seq: number, head: boolean): Meta {
    return {
      key: event.key,
      policy: event.policy ?? 'dedupe',
      coalesceKey: event.coalesceKey ?? null,
      deliveries: 1,
      tombstone: false,
      event: event.event,
      customerId: event.customerId,
      headers: { ...event.headers },
      receivedAt: event.receivedAt,
      status: event.status,
      seq,
      attempts: 0,
      nextAttemptAt: event.receivedAt,
      leaseOwner: null,
      leaseUntil: null,
      lastError: capError(event.lastError),
      finishedAt: event.status === 'dead' ? event.receivedAt : null,
      head,
      size: event.body.length,
      body: null,
      bodyId: null,
      chunks: 0,
      bodyExpires: false,
      waits: false,
    };
  }

  /**
   * The writes of a new record and its indexes; its group's counter is the caller's (one check per group), and so is
   * the check of its signal's waiting entry when it takes that entry over.
   */
  function writeNew(op: KvAtomic, item: InsertItem, m: Meta): void {
    const { kp, cp, g } = item;
    if (m.waits && item.ckp !== null) op.set(K.waiting(item.ckp), kp);
    op.check({ key: K.meta(kp), versionstamp: null })
      .check({ key: K.seq(m.seq), versionstamp: null })
      .set(K.meta(kp), m)
      .set(K.seq(m.seq), kp)
      .set(K.st(m.status, m.seq), kp)
      .sum(K.count(m.status), 1n);
    if (cp !== null) op.set(K.cust(cp, m.seq), kp);
    if (isOpen(m.status)) {
      op.set(K.queue(g, m.seq), kp);
      if (m.head) op.set(slotKey(m), kp);
    } else if (m.finishedAt !== null) {
      op.set(K.fin(m.status, m.finishedAt, m.seq), kp);
    }
  }

  /** One insert in its own commit(s): used for large bodies, and when a group commit lost a race. */
  async function insertOne(kv: DenoKvLike, item: InsertItem): Promise<InsertResult> {
    const { event, kp, g, ckp } = item;
    const open = event.status === 'pending';
    const body = event.body;
    const inline = body.length <= INLINE_BODY_BYTES;
    const chunks = inline ? [] : splitBody(body);
    let staged: { bodyId: string; marker: KvKey } | null = null;
    try {
      return await optimistic('insert', async () => {
        const reads: KvKey[] = open ? [K.meta(kp), K.group(g)] : [K.meta(kp)];
        if (ckp !== null) reads.push(K.waiting(ckp));
        const got = await kv.getMany<unknown[]>(reads);
        const [existing, group] = open ? got : [got[0], undefined];
        if (existing?.versionstamp) return { inserted: false };
        const w = ckp === null ? null : (got[got.length - 1] as KvEntryMaybe<Part>);
        if (w !== null && w.value !== null) {
          const into = await getMeta(kv, w.value);
          const r = into.value;
          if (r && into.versionstamp && isWaiting(r) && r.coalesceKey === event.coalesceKey) {
            // Counted in only while the entry still points there and the record was not claimed in between.
            const committed = await kv
              .atomic()
              .check(
                { key: K.meta(kp), versionstamp: null },
                { key: w.key, versionstamp: w.versionstamp },
                { key: K.meta(w.value), versionstamp: into.versionstamp },
              )
              .set(K.meta(w.value), { ...r, deliveries: r.deliveries + 1 })
              .commit();
            return committed.ok ? { inserted: false, coalescedInto: r.key } : CONFLICT;
          }
        }
        if (chunks.length > CHUNKS_PER_COMMIT && !staged) staged = await stageChunks(kv, chunks);
        const gv = group?.value as GroupValue | null | undefined;
        const groupN = gv?.n ?? 0;
        const seq = nextSeq(groupN > 0 ? (gv?.last ?? 0) : 0);
        const bodyId = inline ? null : (staged?.bodyId ?? crypto.randomUUID());
        const m = newMeta(event, seq, open && groupN === 0);
        m.body = inline ? body.slice() : null;
        m.bodyId = bodyId;
        m.chunks = chunks.length;
        m.waits = w !== null && open;
        const op = kv.atomic();
        writeNew(op, item, m);
        if (w !== null && m.waits) op.check({ key: w.key, versionstamp: w.versionstamp });
        if (open) {
          op.check({ key: K.group(g), versionstamp: group?.versionstamp ?? null });
          op.set(K.group(g), { n: groupN + 1, last: seq });
        }
        const s = staged as { bodyId: string; marker: KvKey } | null;
        if (s) op.delete(s.marker);
        else if (bodyId !== null) for (let i = 0; i < chunks.length; i++) op.set(K.chunk(bodyId, i), chunks[i]);
        const r = await op.commit();
        if (!r.ok) return CONFLICT;
        staged = null;
        return { inserted: true };
      });
    } finally {
      const s = staged as { bodyId: string; marker: KvKey } | null;
      if (s) await deleteChunks(kv, s.bodyId, chunks.length, s.marker).catch(() => {});
    }
  }

  // Group commit: inserts with small bodies that arrive while a commit is under way wait for the next one, which
  // writes them all (a local KV file does one commit at a time, so 64 concurrent inserts became 64 queued commits).
  // Each caller's promise settles only once the commit holding its record is done, so an ack stays durable.
  const queued: Queued[] = [];
  let flushing = false;
  let tickets = 0;

  async function flush(kv: DenoKvLike): Promise<void> {
    flushing = true;
    try {
      while (queued.length > 0) {
        const batch = takeBatch();
        try {
          // A batch commit that throws (a limit of KV's that the estimate below missed) is retried one by one too.
          const results = batch.length > 1 ? await commitBatch(kv, batch).catch(() => null) : null;
          if (results) for (let i = 0; i < batch.length; i++) batch[i]?.done(results[i] as InsertResult);
          // A lone insert, or a batch that lost a race with another writer: each one on its own, retried as usual.
          else await Promise.all(batch.map((q) => insertOne(kv, q).then(q.done, q.fail)));
        } catch (err) {
          for (const q of batch) q.fail(err);
        }
      }
    } finally {
      flushing = false;
    }
  }

  /** The longest run of queued inserts that fits one commit; a key already in it ends the run (it may be a dup). */
  function takeBatch(): Queued[] {
    const ids = new Set<string>();
    let bytes = 0;
    let keyBytes = 0;
    let checks = 0;
    let n = 0;
    for (const q of queued) {
      // An insert names its event key and customer (or the key again, as its group) in up to 5 keys; UTF-8 takes
      // up to 3 bytes a char. A signal also names its waiting entry and the record it may be counted into, twice.
      let keyCost = 3 * 5 * (q.event.key.length + (q.event.customerId?.length ?? 0)) + 400;
      if (q.ckp !== null) keyCost += 3 * 4 * MAX_PART_CHARS + 200;
      const checkCost = q.ckp === null ? 3 : 4;
      if (n >= BATCH_INSERTS || checks + checkCost > BATCH_CHECKS || ids.has(q.id)) break;
      if (bytes + q.event.body.length > BATCH_BYTES || keyBytes + keyCost > BATCH_KEY_BYTES) break;
      ids.add(q.id);
      bytes += q.event.body.length;
      keyBytes += keyCost;
      checks += checkCost;
      n++;
    }
    return queued.splice(0, Math.max(1, n));
  }

  /** Writes a batch in one commit, or returns null when a check failed (nothing was written). */
  async function commitBatch(kv: DenoKvLike, batch: Queued[]): Promise<InsertResult[] | null> {
    const groups = new Map<string, { key: KvKey; value: GroupValue | null; versionstamp: string | null }>();
    for (const q of batch) {
      if (q.event.status === 'pending' && !groups.has(q.gid)) {
        groups.set(q.gid, { key: K.group(q.g), value: null, versionstamp: null });
      }
    }
    // Signals only: each coalesceKey's waiting entry, the record it points to while that still waits, and the copies
    // counted into it (or into the record of this batch that takes the entry over).
    const signals = new Map<string, Signal>();
    for (const q of batch) {
      if (q.ckp !== null && !signals.has(q.ckid)) {
        const entry = { key: K.waiting(q.ckp), value: null, versionstamp: null };
        signals.set(q.ckid, { entry, into: null, copies: 0, m: null });
      }
    }
    const reads: KvKey[] = [
      ...batch.map((q) => K.meta(q.kp)),
      ...[...groups.values()].map((e) => e.key),
      ...[...signals.values()].map((s) => s.entry.key),
    ];
    const got: KvEntryMaybe<unknown>[] = [];
    const parts: Promise<KvEntryMaybe<unknown>[]>[] = [];
    for (let i = 0; i < reads.length; i += 10) parts.push(kv.getMany<unknown[]>(reads.slice(i, i + 10)));
    for (const p of await Promise.all(parts)) got.push(...p);
    [...groups.values()].forEach((e, i) => {
      const entry = got[batch.length + i] as KvEntryMaybe<GroupValue>;
      e.value = entry.value;
      e.versionstamp = entry.versionstamp;
    });
    if (signals.size > 0) await readSignals(kv, [...signals.values()], got.slice(batch.length + groups.size));
    const op = kv.atomic();
    const results: InsertResult[] = [];
    const touched = new Map<string, GroupValue>();
    batch.forEach((q, i) => {
      if (got[i]?.versionstamp) {
        results.push({ inserted: false });
        return;
      }
      const sig = q.ckp === null ? undefined : signals.get(q.ckid);
      const into = sig?.into?.value ?? sig?.m;
      if (sig && into) {
        op.check({ key: K.meta(q.kp), versionstamp: null });
        if (sig.m) sig.m.deliveries++;
        else sig.copies++;
        results.push({ inserted: false, coalescedInto: into.key });
        return;
      }
      const open = q.event.status === 'pending';
      const gv = open ? (touched.get(q.gid) ?? groups.get(q.gid)?.value ?? { n: 0 }) : null;
      const n = gv?.n ?? 0;
      const m = newMeta(q.event, nextSeq(n > 0 ? (gv?.last ?? 0) : 0), open && n === 0);
      m.body = q.event.body.slice();
      if (sig && open) {
        // Written once the copies behind it in this batch are counted in.
        m.waits = true;
        sig.m = m;
        sig.item = q;
      } else writeNew(op, q, m);
      if (open) touched.set(q.gid, { n: n + 1, last: m.seq });
      results.push({ inserted: true });
    });
    for (const sig of signals.values()) {
      const { entry, into } = sig;
      if (sig.m && sig.item) {
        op.check({ key: entry.key, versionstamp: entry.versionstamp });
        writeNew(op, sig.item, sig.m);
      } else if (into?.value && sig.copies > 0) {
        // Counted in only while the entry still points there and the record was not claimed in between.
        const kp = entry.value as Part;
        op.check({ key: entry.key, versionstamp: entry.versionstamp })
          .check({ key: K.meta(kp), versionstamp: into.versionstamp })
          .set(K.meta(kp), { ...into.value, deliveries: into.value.deliveries + sig.copies });
      }
    }
    if (results.every((r) => !r.inserted && r.coalescedInto === undefined)) return results;
    for (const [gid, value] of touched) {
      const e = groups.get(gid) as { key: KvKey; versionstamp: string | null };
      op.check({ key: e.key, versionstamp: e.versionstamp }).set(e.key, value);
    }
    return (await op.commit()).ok ? results : null;
  }

  /** Fills in, for each signal of a batch, the record its waiting entry points to, when that record still waits. */
  async function readSignals(kv: DenoKvLike, signals: Signal[], entries: KvEntryMaybe<unknown>[]): Promise<void> {
    signals.forEach((s, i) => {
      s.entry = entries[i] as KvEntryMaybe<Part>;
    });
    const pointed = signals.filter((s) => s.entry.value !== null);
    const metas = await getMetas(
      kv,
      pointed.map((s) => s.entry.value as Part),
    );
    pointed.forEach((s, i) => {
      const cur = metas[i] as KvEntryMaybe<Meta>;
      if (cur.value && cur.versionstamp && isWaiting(cur.value)) s.into = cur;
    });
  }

  /** Keys of index entries in order, `limit` records at most after filtering on the loaded records. */
  async function collect(
    kv: DenoKvLike,
    selector: KvListSelector,
    keep: (m: Meta) => boolean,
    limit: number,
  ): Promise<Meta[]> {
    const out: Meta[] = [];
    let buffer: KvEntry<Part>[] = [];
    const flush = async () => {
      const metas = await getMetas(
        kv,
        buffer.map((e) => e.value),
      );
      for (let i = 0; i < buffer.length && out.length < limit; i++) {
        const m = metas[i]?.value;
        const e = buffer[i] as KvEntry<Part>;
        // An index entry whose record is gone or was replaced (purged, expired, reinserted) is skipped.
        if (m && m.seq === e.key[e.key.length - 1] && keep(m)) out.push(m);
      }
      buffer = [];
    };
    for await (const e of kv.list<Part>(selector, { batchSize: 100 })) {
      buffer.push(e);
      if (buffer.length >= 50) await flush();
      if (out.length >= limit) break;
    }
    if (buffer.length > 0 && out.length < limit) await flush();
    return out;
  }

  return {
    name: DRIVER_NAME,

    insert(event: NewEvent): Promise<InsertResult> {
      // Taken before any await, so concurrent inserts keep the order they were called in.
      const ticket = ++tickets;
      return run('insert', async (kv) => {
        const kp = await part(event.key);
        const cp = event.customerId === null ? null : await part(event.customerId);
        const g = await groupOf(event);
        const ck = event.coalesceKey ?? null;
        const ckp = ck === null ? null : await part(ck);
        const item = { event, kp, cp, g, ckp };
        if (event.body.length > INLINE_BODY_BYTES) return insertOne(kv, item);
        return new Promise<InsertResult>((done, fail) => {
          let at = queued.length;
          while (at > 0 && (queued[at - 1] as Queued).ticket > ticket) at--;
          const ckid = ck === null ? '' : keyId([ck]);
          queued.splice(at, 0, { ...item, ticket, id: keyId([event.key]), gid: keyId(g), ckid, done, fail });
          if (!flushing) void flush(kv);
        });
      });
    },

    claim({ owner, limit, leaseMs, now }: ClaimOptions): Promise<EventRecord[]> {
      return run('claim', async (kv) => {
        const won: Meta[] = [];
        const tried = new Set<string>();
        const id = (kp: Part) => keyId([kp]);
        for (let round = 0; round < MAX_TRIES && won.length < limit; round++) {
          const need = limit - won.length;
          const candidates: KvEntry<Part>[] = [];
          for await (const e of kv.list<Part>({ prefix: [...P, 'ready'] }, { batchSize: Math.min(500, need + 10) })) {
            if (tried.has(id(e.value))) continue;
            candidates.push(e);
            if (candidates.length >= need) break;
          }
          // Leased and retrying heads that came due: expired leases and retries whose time has come.
          for await (
            const e of kv.list<Part>(
              { start: [...P, 'wait'], end: [...P, 'wait', now, true] },
              { limit: 1000 },
            )
          ) {
            if (!tried.has(id(e.value))) candidates.push(e);
          }
          if (candidates.length === 0) break;
          const seqOf = (e: KvEntry<Part>) => e.key[e.key.length - 1] as number;
          candidates.sort((a, b) => seqOf(a) - seqOf(b));
          const picked = candidates.slice(0, need);
          const metas = await getMetas(
            kv,
            picked.map((e) => e.value),
          );
          const leases: {
            kp: Part;
            slot: KvEntry<Part>;
            versionstamp: string;
            m: Meta;
            after: Meta;
            waiting: KvKey | null;
          }[] = [];
          for (const [i, slot] of picked.entries()) {
            const kp = slot.value;
            tried.add(id(kp));
            const cur = metas[i] as KvEntryMaybe<Meta>;
            const m = cur.value;
            if (!m || !cur.versionstamp || !m.head || !isOpen(m.status)) continue;
            if (m.nextAttemptAt > now || (m.leaseUntil !== null && m.leaseUntil > now)) continue;
            if (!sameKey(slotKey(m), slot.key)) continue;
            const after: Meta = {
              ...m,
              leaseOwner: owner,
              leaseUntil: now + leaseMs,
              attempts: m.attempts + 1,
              waits: false,
            };
            const waiting = m.waits && m.coalesceKey !== null ? K.waiting(await part(m.coalesceKey)) : null;
            leases.push({ kp, slot, versionstamp: cur.versionstamp, m, after, waiting });
          }
          const lease = (op: KvAtomic, l: (typeof leases)[number]) => {
            op.check({ key: K.meta(l.kp), versionstamp: l.versionstamp }).check({
              key: l.slot.key,
              versionstamp: l.slot.versionstamp,
            });
            // Its run begins: copies that arrive from now on get a run of their own.
            if (l.waiting) op.delete(l.waiting);
            change(op, l.kp, null, l.m, l.after);
          };
          // All in one commit (each is the head of its own group, so they do not touch each other's keys); when
          // another claimer or a writer got to one of them first, each is tried on its own.
          for (let i = 0; i < leases.length; i += BATCH_LEASES) {
            const some = leases.slice(i, i + BATCH_LEASES);
            if (some.length > 1) {
              const op = kv.atomic();
              for (const l of some) lease(op, l);
              if ((await op.commit()).ok) {
                for (const l of some) won.push(l.after);
                continue;
              }
            }
            await Promise.all(
              some.map(async (l) => {
                const one = kv.atomic();
                lease(one, l);
                if ((await one.commit()).ok) won.push(l.after);
              }),
            );
          }
        }
        won.sort((a, b) => a.seq - b.seq);
        return withBodies(kv, won);
      });
    },

    renew(key, owner, leaseUntil) {
      return fenced('renew', key, owner, (m) => ({ ...m, leaseUntil }));
    },
    complete(key, owner, now) {
      return fenced('complete', key, owner, (m) => ({
        ...m,
        status: 'done',
        finishedAt: now,
        leaseOwner: null,
        leaseUntil: null,
      }));
    },
    retry(key, owner, at, error) {
      return fenced('retry', key, owner, (m) => ({
        ...m,
        status: 'retrying',
        nextAttemptAt: at,
        lastError: capError(error),
        leaseOwner: null,
        leaseUntil: null,
      }));
    },
    deadLetter(key, owner, error, now) {
      return fenced('deadLetter', key, owner, (m) => ({
        ...m,
        status: 'dead',
        lastError: capError(error),
        finishedAt: now,
        leaseOwner: null,
        leaseUntil: null,
      }));
    },

    requeue(key, now) {
      return run('requeue', async (kv) => requeueOne(kv, await part(key), now));
    },

    requeueWhere(filter: RequeueFilter, now) {
      return run('requeueWhere', async (kv) => {
        // Collect first: requeueing moves records between the status indexes being read.
        const kps: Part[] = [];
        for (const status of filter.status ?? ['dead']) {
          const metas = await collect(
            kv,
            { prefix: [...P, 'st', status] },
            (m) => m.status === status && !m.tombstone && (filter.event === undefined || m.event === filter.event),
            Number.POSITIVE_INFINITY,
          );
          for (const m of metas) kps.push(await part(m.key));
        }
        let n = 0;
        for (const kp of kps) if (await requeueOne(kv, kp, now)) n++;
        return n;
      });
    },

    get(key) {
      return run('get', async (kv) => {
        const cur = await getMeta(kv, await part(key));
        return cur.value ? toRecord(cur.value, await readBody(kv, cur.value)) : null;
      });
    },

    list(options: ListOptions = {}) {
      return run('list', async (kv) => {
        const limit = options.limit ?? 100;
        if (limit <= 0) return [];
        let prefix: KvKey;
        if (options.status !== undefined) prefix = [...P, 'st', options.status];
        else if (options.customerId !== undefined) prefix = [...P, 'cust', await part(options.customerId)];
        else prefix = [...P, 'seq'];
        const selector: KvListSelector = options.afterSeq !== undefined
          ? { prefix, start: [...prefix, options.afterSeq, true] }
          : { prefix };
        const metas = await collect(
          kv,
          selector,
          (m) =>
            (options.status === undefined || m.status === options.status) &&
            (options.event === undefined || m.event === options.event) &&
            (options.customerId === undefined || m.customerId === options.customerId) &&
            (options.afterSeq === undefined || m.seq > options.afterSeq),
          limit,
        );
        return withBodies(kv, metas);
      });
    },

    purge({ before, status, tombstonesBefore }: PurgeOptions) {
      return run('purge', async (kv) => {
        let n = 0;
        // Finished records under `fin` up to `before`; tombstones, under `tomb`, only up to their own horizon.
        const passes: ['done' | 'dead', 'fin' | 'tomb', number][] = [];
        for (const st of status ?? ['done']) {
          passes.push([st, 'fin', before]);
          if (tombstonesBefore !== undefined) passes.push([st, 'tomb', tombstonesBefore]);
        }
        for (const [st, index, cutoff] of passes) {
          const entries: KvEntry<Part>[] = [];
          for await (const e of kv.list<Part>({ start: [...P, index, st], end: [...P, index, st, cutoff] })) {
            entries.push(e);
          }
          for (let i = 0; i < entries.length; i += 20) {
            const batch = entries.slice(i, i + 20);
            const metas = await getMetas(
              kv,
              batch.map((e) => e.value),
            );
            const removed = await Promise.all(
              batch.map(async (e, j) => {
                const kp = e.value;
                const cur = metas[j] as KvEntryMaybe<Meta>;
                const m = cur.value;
                const seq = e.key[e.key.length - 1];
                const stale = !m || !cur.versionstamp || m.seq !== seq || m.status !== st;
                if (stale || m.tombstone !== (index === 'tomb')) {
                  // A stale index entry (its record expired or was replaced): drop just the entry.
                  await kv.atomic().check({ key: e.key, versionstamp: e.versionstamp }).delete(e.key).commit();
                  return 0;
                }
                const together = m.bodyId !== null && m.chunks <= MAX_CHUNK_DELETES;
                if (!m.tombstone && m.policy === 'once') {
                  // The key outlives the event: it keeps answering duplicate until the tombstone horizon.
                  const t: Meta = {
                    ...m,
                    tombstone: true,
                    headers: {},
                    lastError: null,
                    size: 0,
                    body: null,
                    bodyId: null,
                    chunks: 0,
                    bodyExpires: false,
                  };
                  const op = kv
                    .atomic()
                    .check({ key: K.meta(kp), versionstamp: cur.versionstamp })
                    .set(K.meta(kp), t)
                    .delete(e.key)
                    .set(finKey(t, m.finishedAt as number), kp);
                  if (together) { for (let c = 0; c < m.chunks; c++) op.delete(K.chunk(m.bodyId as string, c)); }
                  if (!(await op.commit()).ok) return 0;
                  if (m.bodyId !== null && !together) await deleteChunks(kv, m.bodyId, m.chunks);
                  return 1;
                }
                const op = kv
                  .atomic()
                  .check({ key: K.meta(kp), versionstamp: cur.versionstamp })
                  .delete(K.meta(kp))
                  .delete(K.seq(m.seq))
                  .delete(K.st(m.status, m.seq))
                  .delete(e.key)
                  .sum(K.count(m.status), U64_MINUS_ONE);
                if (m.customerId !== null) op.delete(K.cust(await part(m.customerId), m.seq));
                if (together) { for (let c = 0; c < m.chunks; c++) op.delete(K.chunk(m.bodyId as string, c)); }
                // A record changed since it was listed (requeued) is simply not purged this time.
                if (!(await op.commit()).ok) return 0;
                if (m.bodyId !== null && !together) await deleteChunks(kv, m.bodyId, m.chunks);
                return 1;
              }),
            );
            n += removed.reduce<number>((a, b) => a + b, 0);
          }
        }
        // Chunks staged by inserts that never committed (the process died in between).
        const stale: KvEntry<{ bodyId: string; chunks: number }>[] = [];
        for await (
          const e of kv.list<{ bodyId: string; chunks: number }>({
            start: [...P, 'staging'],
            end: [...P, 'staging', Date.now() - STAGING_STALE_MS],
          })
        ) {
          stale.push(e);
        }
        for (const e of stale) await deleteChunks(kv, e.value.bodyId, e.value.chunks, e.key);
        return n;
      });
    },

    counts(): Promise<StatusCounts> {
      return run('counts', async (kv) => {
        const statuses = ['pending', 'retrying', 'done', 'dead'] as const;
        const got = await kv.getMany<unknown[]>(statuses.map((s) => K.count(s)));
        const c = emptyCounts();
        statuses.forEach((s, i) => {
          const v = (got[i]?.value as { value?: unknown } | null)?.value;
          // Counters are unsigned; a value past 2^63 can only be a decrement below zero.
          c[s] = typeof v === 'bigint' && v < 1n << 63n ? Number(v) : 0;
        });
        return c;
      });
    },

    ping() {
      return run('ping', async (kv) => {
        await kv.get(K.schema);
      });
    },

    async close() {
      if (closed) return;
      closed = true;
      const pending = kvPromise;
      kvPromise = null;
      if (!pending || options.kv) return;
      try {
        (await pending).close();
      } catch {
        // Opening had failed: nothing to close.
      }
      opened = null;
    },
  };
}
