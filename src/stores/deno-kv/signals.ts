// Signals' waiting lists: under `sig,coalesceKey`, the records identical copies may be counted into, lowest seq first.
// A copy goes into the first that still waits. Claim does not touch the list (a claimed record just stops waiting);
// whoever reads the list next drops the entries whose record no longer waits.
import { type Ctx, getMetas } from './context.ts';
import type { KvAtomic, KvEntryMaybe, KvKey } from './kv.ts';
import { keyId, type Part, part } from './keys.ts';
import { isWaiting, type Meta } from './record.ts';

/**
 * Waiting records a list keeps, lowest seq first, so it stays inside KV's 64 KiB value even with the longest keys (more
 * wait only when many identical copies were requeued at once). A copy that finds none of the kept ones waiting gets a
 * record of its own: one more run, never a lost delivery.
 */
const MAX_WAITERS = 64;

/** One waiting record of a coalesceKey. */
export type Waiter = { seq: number; kp: Part };
export type WaitList = Waiter[];

export interface LiveWaiters {
  /** The entries whose record still waits, in seq order. */
  live: WaitList;
  /** Their records, as read. */
  metas: KvEntryMaybe<Meta>[];
  /** Whether entries were dropped: the list should be written back as `live`. */
  pruned: boolean;
}

/** The entries of `list` whose records still wait to take copies of `ck`. */
export async function liveWaiters(c: Ctx, list: WaitList | null, ck: string): Promise<LiveWaiters> {
  const entries = list ?? [];
  const read = await getMetas(
    c,
    entries.map((e) => e.kp),
  );
  const live: WaitList = [];
  const metas: KvEntryMaybe<Meta>[] = [];
  entries.forEach((e, i) => {
    const cur = read[i] as KvEntryMaybe<Meta>;
    if (
      cur.value &&
      cur.versionstamp &&
      cur.value.seq === e.seq &&
      isWaiting(cur.value) &&
      cur.value.coalesceKey === ck
    ) {
      live.push(e);
      metas.push(cur);
    }
  });
  return { live, metas, pruned: live.length !== entries.length };
}

/** `list` with `w` in its seq place (and no other entry for the same record). */
export function withWaiter(list: WaitList, w: Waiter): WaitList {
  const id = keyId([w.kp]);
  const out = list.filter((e) => keyId([e.kp]) !== id);
  let i = out.length;
  while (i > 0 && (out[i - 1] as Waiter).seq > w.seq) i--;
  out.splice(i, 0, w);
  return out.slice(0, MAX_WAITERS);
}

/** Writes a waiting list, or deletes it when nothing waits. */
export function writeWaiters(op: KvAtomic, key: KvKey, list: WaitList): void {
  if (list.length > 0) op.set(key, list);
  else op.delete(key);
}

/** Makes a requeued signal wait again: copies go into it while it is the lowest-seq record of its list that waits. */
export async function register(c: Ctx, op: KvAtomic, kp: Part, after: Meta): Promise<void> {
  const ck = after.coalesceKey as string;
  const key = c.K.waiting(await part(ck));
  const w = await c.kv.get<WaitList>(key);
  const { live } = await liveWaiters(c, w.value, ck);
  const list = withWaiter(live, { seq: after.seq, kp });
  op.check({ key, versionstamp: w.versionstamp });
  writeWaiters(op, key, list);
  after.waits = list.some((e) => e.seq === after.seq);
}
