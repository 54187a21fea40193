// Purge: finished records go (a `once` one leaves a tombstone of its key), tombstones go after their own horizon,
// and chunks staged by inserts that never committed are swept.
import type { PurgeQuery } from '../options.ts';
import { deleteChunks, MAX_CHUNK_DELETES, sweepStaging } from './bodies.ts';
import { U64_MINUS_ONE } from './changes.ts';
import { type Ctx, getMetas } from './context.ts';
import type { KvEntry, KvEntryMaybe } from './kv.ts';
import { type Part, part } from './keys.ts';
import type { Meta } from './record.ts';

export async function purge(c: Ctx, q: PurgeQuery): Promise<number> {
  const P = c.K.prefix;
  let n = 0;
  // Finished records under `fin` up to `before`; tombstones, under `tomb`, only up to their own horizon, and first,
  // so a tombstone this purge makes waits for the next one.
  const passes: ['done' | 'dead', 'fin' | 'tomb', number][] = [];
  for (const st of q.statuses) {
    if (q.tombstonesBefore !== null) passes.push([st, 'tomb', q.tombstonesBefore]);
    passes.push([st, 'fin', q.before]);
  }
  for (const [st, index, cutoff] of passes) {
    const entries: KvEntry<Part>[] = [];
    for await (const e of c.kv.list<Part>({ start: [...P, index, st], end: [...P, index, st, cutoff] })) {
      entries.push(e);
    }
    for (let i = 0; i < entries.length; i += 20) {
      const batch = entries.slice(i, i + 20);
      const metas = await getMetas(
        c,
        batch.map((e) => e.value),
      );
      const removed = await Promise.all(
        batch.map((e, j) => purgeOne(c, e, metas[j] as KvEntryMaybe<Meta>, st, index === 'tomb')),
      );
      n += removed.reduce<number>((a, b) => a + b, 0);
    }
  }
  await sweepStaging(c);
  return n;
}

/** Purges the record a `fin`/`tomb` entry points to; 1 when it went (or became a tombstone), else 0. */
async function purgeOne(
  c: Ctx,
  e: KvEntry<Part>,
  cur: KvEntryMaybe<Meta>,
  st: 'done' | 'dead',
  tomb: boolean,
): Promise<number> {
  const { kv, K } = c;
  const kp = e.value;
  const m = cur.value;
  const seq = e.key[e.key.length - 1];
  const stale = !m || !cur.versionstamp || m.seq !== seq || m.status !== st;
  if (stale || m.tombstone !== tomb) {
    // A stale index entry (its record was replaced, or expired under an older version): drop just the entry.
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
    };
    const op = kv
      .atomic()
      .check({ key: K.meta(kp), versionstamp: cur.versionstamp })
      .set(K.meta(kp), t)
      .delete(e.key)
      .set(K.finKey(t, m.finishedAt as number), kp);
    if (together) {
      for (let i = 0; i < m.chunks; i++) op.delete(K.chunk(m.bodyId as string, i));
    }
    if (!(await op.commit()).ok) return 0;
    if (m.bodyId !== null && !together) await deleteChunks(c, m.bodyId, m.chunks);
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
  if (together) {
    for (let i = 0; i < m.chunks; i++) op.delete(K.chunk(m.bodyId as string, i));
  }
  // A record changed since it was listed (requeued) is simply not purged this time.
  if (!(await op.commit()).ok) return 0;
  if (m.bodyId !== null && !together) await deleteChunks(c, m.bodyId, m.chunks);
  return 1;
}
