// Deno KV store: the durable inbox on Deno's built-in key-value database (a local SQLite file, or Deno Deploy's KV).
// Every state change is atomic and guarded by versionstamp checks, so several isolates can share one database; changes
// made at the same moment in one process share a commit (KV has one writer, so a commit each queued them up).
import { StoreGuard } from '../guard.ts';
import { checkClaim, checkNow, listQuery, purgeQuery, requeueQuery } from '../options.ts';
import { emptyCounts, type StatusCounts, type Store } from '../store.ts';
import { readBody, withBodies } from './bodies.ts';
import { fenced, requeueOne } from './changes.ts';
import { claim } from './claim.ts';
import { sharedCommits, writeTurns } from './commits.ts';
import { type Ctx, getMeta, getMetas } from './context.ts';
import {
  batchedReads,
  type DenoKvLike,
  denoGlobal,
  type KvEntry,
  type KvKey,
  type KvListSelector,
  patient,
} from './kv.ts';
import { keyLayout, type Part, part } from './keys.ts';
import { inserts } from './inserts.ts';
import { checkSchema } from './migrate.ts';
import { purge } from './purge.ts';
import { capError, type Meta, toRecord } from './record.ts';

export const DRIVER_NAME = 'deno-kv';

export interface DenoKvStoreOptions {
  /** Database file to open with `Deno.openKv(path)` (`:memory:` for a throw-away one); none = the default database. */
  path?: string;
  /** An already open database (e.g. Deno Deploy's); used instead of `path`, and left open by `close()`. */
  kv?: DenoKvLike;
  /** Key prefix, so several apps can share one database. Default `['lava-webhooks']`. */
  prefix?: string[];
}

const NOT_ON_DENO = 'deno-kv store: Deno KV needs the Deno runtime (or pass an open KV as `kv`)';
const NO_OPEN_KV =
  'deno-kv store: Deno.openKv is not available — run with --unstable-kv or add "unstable": ["kv"] to deno.json';

/** Records an index lists in order (or in reverse), `limit` at most after filtering on the loaded records. */
async function collect(
  c: Ctx,
  selector: KvListSelector,
  keep: (m: Meta) => boolean,
  limit: number,
  reverse = false,
): Promise<Meta[]> {
  const out: Meta[] = [];
  let buffer: KvEntry<Part>[] = [];
  const flush = async () => {
    const metas = await getMetas(
      c,
      buffer.map((e) => e.value),
    );
    for (let i = 0; i < buffer.length && out.length < limit; i++) {
      const m = metas[i]?.value;
      const e = buffer[i] as KvEntry<Part>;
      // An index entry whose record is gone or was replaced (purged, reinserted) is skipped.
      if (m && m.seq === e.key[e.key.length - 1] && keep(m)) out.push(m);
    }
    buffer = [];
  };
  for await (const e of c.kv.list<Part>(selector, { batchSize: 100, reverse })) {
    buffer.push(e);
    if (buffer.length >= 50) await flush();
    if (out.length >= limit) break;
  }
  if (buffer.length > 0 && out.length < limit) await flush();
  return out;
}

/** The inbox on Deno KV; the database opens (and its schema is checked or migrated) on first use. */
export function denoKvStore(options: DenoKvStoreOptions = {}): Store {
  const K = keyLayout(options.prefix ?? ['lava-webhooks']);
  const P = K.prefix;
  if (!options.kv) {
    const deno = denoGlobal();
    if (!deno) throw new Error(NOT_ON_DENO);
    if (typeof deno.openKv !== 'function') throw new Error(NO_OPEN_KV);
  }
  // Group commits of inserts and shared commits of the worker's changes take turns (see writeTurns).
  const turns = writeTurns();
  const commitShared = sharedCommits(turns);
  const inserter = inserts(turns);

  const guard = new StoreGuard(DRIVER_NAME, options.kv ? undefined : options.path);
  let ctxPromise: Promise<Ctx> | null = null;
  let opened: DenoKvLike | null = null;

  async function open(): Promise<Ctx> {
    let kv: DenoKvLike;
    if (options.kv) kv = options.kv;
    else {
      const openKv = denoGlobal()?.openKv;
      if (!openKv) throw new Error(NO_OPEN_KV);
      kv = await openKv(options.path);
      opened = kv;
    }
    const c: Ctx = { kv: batchedReads(patient(kv)), K, held: new Map(), groups: new Map() };
    await checkSchema(c);
    return c;
  }

  /** The options of `what`, checked once the store is known to be open (a closed store says so first). */
  function usable<Q>(what: string, check: () => Q): Q {
    guard.check(what);
    return check();
  }

  /**
   * Runs `fn` with the open database; anything that is not already a store error becomes StoreUnavailableError naming
   * the store and `what`.
   */
  async function run<T>(what: string, fn: (c: Ctx) => Promise<T>): Promise<T> {
    guard.check(what);
    try {
      if (!ctxPromise) {
        ctxPromise = open();
        ctxPromise.catch(() => {
          ctxPromise = null;
          try {
            opened?.close();
          } catch {
            // Already unusable; the open error is the one worth reporting.
          }
          opened = null;
        });
      }
      return await fn(await ctxPromise);
    } catch (err) {
      throw guard.fail(what, err);
    }
  }

  const byOwner = (what: string, key: string, owner: string, next: (m: Meta) => Meta) =>
    run(what, (c) => fenced(c, commitShared, turns, what, key, owner, next));

  return {
    name: DRIVER_NAME,
    // Inserts that arrive while a commit is under way share the next one; complete/retry/deadLetter/renew share one too.
    capabilities: { sync: false, batching: true, leaseOnInsert: true },

    insert(event, lease) {
      const ticket = inserter.ticket();
      return run('insert', (c) => inserter.insert(c, event, ticket, lease ?? null));
    },

    async claim(o) {
      usable('claim', () => checkClaim(DRIVER_NAME, o));
      return run('claim', (c) => claim(c, o));
    },

    renew(key, owner, leaseUntil) {
      return byOwner('renew', key, owner, (m) => ({ ...m, leaseUntil }));
    },
    complete(key, owner, now) {
      return byOwner('complete', key, owner, (m) => ({
        ...m,
        status: 'done',
        finishedAt: now,
        leaseOwner: null,
        leaseUntil: null,
      }));
    },
    retry(key, owner, at, error) {
      return byOwner('retry', key, owner, (m) => ({
        ...m,
        status: 'retrying',
        nextAttemptAt: at,
        lastError: capError(error),
        leaseOwner: null,
        leaseUntil: null,
      }));
    },
    deadLetter(key, owner, error, now) {
      return byOwner('deadLetter', key, owner, (m) => ({
        ...m,
        status: 'dead',
        lastError: capError(error),
        finishedAt: now,
        leaseOwner: null,
        leaseUntil: null,
      }));
    },

    async requeue(key, now) {
      usable('requeue', () => checkNow(DRIVER_NAME, 'requeue', now));
      return run('requeue', async (c) => requeueOne(c, await part(key), now));
    },

    async requeueWhere(filter, now) {
      const q = usable('requeueWhere', () => {
        checkNow(DRIVER_NAME, 'requeueWhere', now);
        return requeueQuery(DRIVER_NAME, filter);
      });
      return run('requeueWhere', async (c) => {
        // Collect first: requeueing moves records between the status indexes being read.
        const kps: Part[] = [];
        for (const status of q.statuses) {
          const metas = await collect(
            c,
            { prefix: [...P, 'st', status] },
            (m) => m.status === status && !m.tombstone && (q.event === null || m.event === q.event),
            Number.POSITIVE_INFINITY,
          );
          for (const m of metas) kps.push(await part(m.key));
        }
        let n = 0;
        for (const kp of kps) if (await requeueOne(c, kp, now)) n++;
        return n;
      });
    },

    get(key) {
      return run('get', async (c) => {
        const cur = await getMeta(c, await part(key));
        return cur.value ? toRecord(cur.value, await readBody(c, cur.value)) : null;
      });
    },

    async list(o) {
      const q = usable('list', () => listQuery(DRIVER_NAME, o));
      return run('list', async (c) => {
        let prefix: KvKey;
        if (q.status !== null) prefix = [...P, 'st', q.status];
        else if (q.customerId !== null) prefix = [...P, 'cust', await part(q.customerId)];
        else prefix = [...P, 'seq'];
        // Seq parts are numbers, so [afterSeq, true] sorts just after afterSeq and beforeSeq bounds the other end.
        const metas = await collect(
          c,
          { start: [...prefix, q.afterSeq, true], end: [...prefix, q.beforeSeq] },
          (m) =>
            (q.status === null || m.status === q.status) &&
            (q.event === null || m.event === q.event) &&
            (q.customerId === null || m.customerId === q.customerId) &&
            (q.receivedAfter === null || m.receivedAt > q.receivedAfter) &&
            (q.receivedBefore === null || m.receivedAt < q.receivedBefore) &&
            m.seq > q.afterSeq &&
            m.seq < q.beforeSeq,
          q.limit,
          q.order === 'desc',
        );
        return withBodies(c, metas);
      });
    },

    async purge(o) {
      const q = usable('purge', () => purgeQuery(DRIVER_NAME, o));
      return run('purge', (c) => purge(c, q));
    },

    counts(): Promise<StatusCounts> {
      return run('counts', async (c) => {
        const statuses = ['pending', 'retrying', 'done', 'dead'] as const;
        const got = await c.kv.getMany<unknown[]>(statuses.map((s) => K.count(s)));
        const counts = emptyCounts();
        statuses.forEach((s, i) => {
          const v = (got[i]?.value as { value?: unknown } | null)?.value;
          // Counters are unsigned; a value past 2^63 can only be a decrement below zero.
          counts[s] = typeof v === 'bigint' && v < 1n << 63n ? Number(v) : 0;
        });
        return counts;
      });
    },

    ping() {
      return run('ping', async (c) => {
        await c.kv.get(K.schema);
      });
    },

    async close() {
      if (guard.closed) return;
      guard.close();
      const pending = ctxPromise;
      ctxPromise = null;
      if (!pending || options.kv) return;
      try {
        (await pending).kv.close();
      } catch {
        // Opening had failed: nothing to close.
      }
      opened = null;
    },
  };
}
