// What the parts of one open store share: the database, its key layout, and the reads of records everything uses.
import type { DenoKvLike, KvEntry, KvEntryMaybe } from './kv.ts';
import type { Keys, Part } from './keys.ts';
import { type Meta, normalize } from './record.ts';

export interface Ctx {
  kv: DenoKvLike;
  K: Keys;
  /** Records this process holds a lease on, by event key, as its last commit wrote them (see `held`). */
  held: Map<string, KvEntry<Meta>>;
}

/** Leases remembered at most; past this the oldest are forgotten (their change reads the record, as before). */
const MAX_HELD = 10_000;

/**
 * Remembers a record this process just leased (or renewed) as written by a commit with `versionstamp`, so the change
 * that ends the lease need not read it back: that change still checks the versionstamp, and when anyone else wrote
 * the record in between, it fails the check and is retried from a fresh read.
 */
export function hold(c: Ctx, kp: Part, m: Meta, versionstamp: string): void {
  c.held.delete(m.key);
  if (c.held.size >= MAX_HELD) c.held.delete(c.held.keys().next().value as string);
  // The body is copied: the caller's record shares its bytes with the handler, which could change them.
  c.held.set(m.key, { key: c.K.meta(kp), value: { ...m, body: m.body?.slice() ?? null }, versionstamp });
}

/** The record remembered for `key` while this process holds its lease, taken out of the cache. */
export function takeHeld(c: Ctx, key: string): KvEntry<Meta> | undefined {
  const e = c.held.get(key);
  c.held.delete(key);
  return e;
}

export async function getMetas(c: Ctx, kps: Part[]): Promise<KvEntryMaybe<Meta>[]> {
  const batches: Promise<KvEntryMaybe<Meta>[]>[] = [];
  for (let i = 0; i < kps.length; i += 10) {
    batches.push(c.kv.getMany<Meta[]>(kps.slice(i, i + 10).map((kp) => c.K.meta(kp))));
  }
  return (await Promise.all(batches)).flat().map((e) => (e.value ? { ...e, value: normalize(e.value) } : e));
}

export async function getMeta(c: Ctx, kp: Part): Promise<KvEntryMaybe<Meta>> {
  const e = await c.kv.get<Meta>(c.K.meta(kp));
  return e.value ? { ...e, value: normalize(e.value) } : e;
}
