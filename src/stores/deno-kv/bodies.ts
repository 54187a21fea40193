// Event bodies: inline in the record when small, else split into chunks (Deno KV caps a value at 64 KiB) that are
// written ahead of the record behind a staging marker, so a crash in between leaves nothing purge cannot sweep.
import type { Ctx } from './context.ts';
import type { KvKey } from './kv.ts';
import { type Meta, toRecord } from './record.ts';

/** Deno KV caps a value at 64 KiB; larger bodies are split into chunks of this size. */
const CHUNK_BYTES = 65_536;
/** Bodies up to this size live inside the record itself (saves a read for the usual small webhook). */
export const INLINE_BODY_BYTES = 16 * 1024;
/** Chunks per atomic commit: 8 × 64 KiB keeps well inside the 800 KiB mutation-size limit of one commit. */
export const CHUNKS_PER_COMMIT = 8;
/** Chunk deletes that ride along in a purge commit (a commit takes at most 1000 mutations). */
export const MAX_CHUNK_DELETES = 900;
/** Staged chunks of an insert that never committed (crash) are swept by `purge` after this long. */
const STAGING_STALE_MS = 60 * 60 * 1000;

export async function readBody(c: Ctx, m: Meta): Promise<Uint8Array> {
  if (m.body) return m.body;
  if (m.chunks === 0 || m.bodyId === null) return new Uint8Array(0);
  const out = new Uint8Array(m.size);
  let offset = 0;
  let n = 0;
  for await (const e of c.kv.list<Uint8Array>({ prefix: c.K.chunks(m.bodyId) })) {
    if (e.key[e.key.length - 1] !== n || offset + e.value.length > m.size) break;
    out.set(e.value, offset);
    offset += e.value.length;
    n++;
  }
  if (n !== m.chunks || offset !== m.size) {
    throw new Error(`the body of ${JSON.stringify(m.key)} is incomplete`);
  }
  return out;
}

export const withBodies = (c: Ctx, metas: Meta[]) =>
  Promise.all(metas.map(async (m) => toRecord(m, await readBody(c, m))));

export function splitBody(body: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < body.length; i += CHUNK_BYTES) out.push(body.slice(i, i + CHUNK_BYTES));
  return out;
}

/** Writes chunks ahead of the commit that references them, behind a staging marker that purge can sweep. */
export async function stageChunks(c: Ctx, chunks: Uint8Array[]): Promise<{ bodyId: string; marker: KvKey }> {
  const bodyId = crypto.randomUUID();
  const marker = c.K.staging(Date.now(), bodyId);
  const ok = await c.kv.atomic().set(marker, { bodyId, chunks: chunks.length }).commit();
  if (!ok.ok) throw new Error('could not stage a large body');
  for (let i = 0; i < chunks.length; i += CHUNKS_PER_COMMIT) {
    const op = c.kv.atomic();
    for (let j = i; j < Math.min(chunks.length, i + CHUNKS_PER_COMMIT); j++) op.set(c.K.chunk(bodyId, j), chunks[j]);
    const r = await op.commit();
    if (!r.ok) throw new Error('could not stage a large body');
  }
  return { bodyId, marker };
}

export async function deleteChunks(c: Ctx, bodyId: string, chunks: number, marker?: KvKey): Promise<void> {
  for (let i = 0; i < chunks; i += MAX_CHUNK_DELETES) {
    const op = c.kv.atomic();
    for (let j = i; j < Math.min(chunks, i + MAX_CHUNK_DELETES); j++) op.delete(c.K.chunk(bodyId, j));
    await op.commit();
  }
  if (marker) await c.kv.atomic().delete(marker).commit();
}

/** Deletes chunks staged by inserts that never committed (the process died in between). */
export async function sweepStaging(c: Ctx): Promise<void> {
  const P = c.K.prefix;
  const stale: { key: KvKey; value: { bodyId: string; chunks: number } }[] = [];
  for await (const e of c.kv.list<{ bodyId: string; chunks: number }>({
    start: [...P, 'staging'],
    end: [...P, 'staging', Date.now() - STAGING_STALE_MS],
  })) {
    stale.push(e);
  }
  for (const e of stale) await deleteChunks(c, e.value.bodyId, e.value.chunks, e.key);
}
