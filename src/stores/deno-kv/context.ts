// What the parts of one open store share: the database, its key layout, and the reads of records everything uses.
import type { DenoKvLike, KvEntryMaybe } from './kv.ts';
import type { Keys, Part } from './keys.ts';
import { type Meta, normalize } from './record.ts';

export interface Ctx {
  kv: DenoKvLike;
  K: Keys;
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
