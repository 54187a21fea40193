// What the parts of one open store share: the database, its key layout, and the reads of records everything uses.
import { type DenoKvLike, getAll, type KvEntry, type KvEntryMaybe } from './kv.ts';
import type { Keys, Part } from './keys.ts';
import { type GroupValue, type Meta, normalize } from './record.ts';

export interface Ctx {
  kv: DenoKvLike;
  K: Keys;
  /** Records this process holds a lease on, by event key, as its last commit wrote them (see `held`). */
  held: Map<string, KvEntry<Meta>>;
  /** Ordering groups' counters as this process's last commit of each left them, by group id (see `knownGroup`). */
  groups: Map<string, KnownGroup>;
}

/** A group counter as a commit of this process wrote it: its value (null: deleted) and that commit's versionstamp. */
export interface KnownGroup {
  value: GroupValue | null;
  versionstamp: string | null;
}

/** Group counters remembered at most; past this the oldest are forgotten (and read again when next needed). */
const MAX_GROUPS = 10_000;

/**
 * A group counter as this process last committed it, so an insert or a completion of the group need not read it: every
 * write of a counter checks the versionstamp it was read at, so when another isolate (or a path that forgets to
 * tell) changed it since, the commit fails its check and the change is retried from a fresh read.
 */
export const knownGroup = (c: Ctx, gid: string): KnownGroup | undefined => c.groups.get(gid);

/** Sets `key` as the newest entry of `map`, forgetting the oldest once it holds `max`. */
function remember<V>(map: Map<string, V>, key: string, value: V, max: number): void {
  map.delete(key);
  if (map.size >= max) map.delete(map.keys().next().value as string);
  map.set(key, value);
}

export function rememberGroup(c: Ctx, gid: string, g: KnownGroup): void {
  remember(c.groups, gid, g, MAX_GROUPS);
}

export function forgetGroup(c: Ctx, gid: string): void {
  c.groups.delete(gid);
}

/** Leases remembered at most; past this the oldest are forgotten (their change reads the record, as before). */
const MAX_HELD = 10_000;

/**
 * Remembers a record this process just leased (or renewed) as written by a commit with `versionstamp`, so the change
 * that ends the lease need not read it back: that change still checks the versionstamp, and when anyone else wrote
 * the record in between, it fails the check and is retried from a fresh read.
 */
export function hold(c: Ctx, kp: Part, m: Meta, versionstamp: string): void {
  // The body is copied: the caller's record shares its bytes with the handler, which could change them.
  remember(
    c.held,
    m.key,
    { key: c.K.meta(kp), value: { ...m, body: m.body?.slice() ?? null }, versionstamp },
    MAX_HELD,
  );
}

/** The record remembered for `key` while this process holds its lease, taken out of the cache. */
export function takeHeld(c: Ctx, key: string): KvEntry<Meta> | undefined {
  const e = c.held.get(key);
  c.held.delete(key);
  return e;
}

export async function getMetas(c: Ctx, kps: Part[]): Promise<KvEntryMaybe<Meta>[]> {
  const got = await getAll<Meta>(
    c.kv,
    kps.map((kp) => c.K.meta(kp)),
  );
  return got.map((e) => (e.value ? { ...e, value: normalize(e.value) } : e));
}

export async function getMeta(c: Ctx, kp: Part): Promise<KvEntryMaybe<Meta>> {
  const e = await c.kv.get<Meta>(c.K.meta(kp));
  return e.value ? { ...e, value: normalize(e.value) } : e;
}
