// The schema version under `schema`, checked when the store opens, and the migration of older versions' data.
import { StoreSchemaError } from '../store.ts';
import { CHUNKS_PER_COMMIT, readBody, splitBody } from './bodies.ts';
import { CONFLICT, optimistic } from './commits.ts';
import { type Ctx, getMeta } from './context.ts';
import type { KvEntry, KvEntryMaybe } from './kv.ts';
import { custPart, type Part } from './keys.ts';
import { hasSignature, isWaiting, type Meta, normalize, SIGNATURE_HEADER } from './record.ts';

/**
 * Version 3: nothing is written with an expiry, and a signal's `sig` entry lists every record that waits. Version 2
 * added policy/coalesceKey/deliveries/tombstone to records and kept no signature among stored headers; versions 1
 * and 2 gave done records a backstop `expireIn`, and version 2's `sig` entry named one waiting record.
 */
const SCHEMA_VERSION = 3;

/** A record as versions 1 and 2 stored it: `bodyExpires` marked chunks rewritten with the done-record expiry. */
type StoredMeta = Meta & { bodyExpires?: boolean };

/** Writes the schema of a new database, migrates an older one, and refuses one this version cannot read. */
export async function checkSchema(c: Ctx): Promise<void> {
  const { kv, K } = c;
  const got = await kv.get<{ version?: unknown }>(K.schema);
  const version = got.value !== null && typeof got.value === 'object' ? got.value.version : undefined;
  if (got.value === null) {
    await kv.atomic().check({ key: K.schema, versionstamp: null }).set(K.schema, { version: SCHEMA_VERSION }).commit();
  } else if (version === 1 || version === 2) {
    await migrate(c);
    // When another isolate finished the same migration first, the version it wrote is already the one wanted.
    await kv
      .atomic()
      .check({ key: K.schema, versionstamp: got.versionstamp })
      .set(K.schema, {
        version: SCHEMA_VERSION,
      })
      .commit();
  } else if (version !== SCHEMA_VERSION) {
    throw new StoreSchemaError(
      `deno-kv store: data under prefix ${JSON.stringify(K.prefix)} has schema ${JSON.stringify(
        got.value,
      )}, expected version ${SCHEMA_VERSION}`,
    );
  }
}

/**
 * Versions 1 and 2 → 3: stored headers lose the signature (version 1 kept whatever intake passed it), a done record
 * is written again without the expiry those versions gave it, its indexes and body chunks with it, so no record
 * disappears behind the `done` count's back, and each `sig` entry becomes a list. Other records are read as they
 * are (see `normalize`). Safe to run in two isolates at once: each rewrite checks the versionstamp of what it read.
 */
async function migrate(c: Ctx): Promise<void> {
  let page: KvEntry<StoredMeta>[] = [];
  const rewritePage = async () => {
    await Promise.all(page.map((e) => migrateOne(c, e)));
    page = [];
  };
  for await (const e of c.kv.list<StoredMeta>({ prefix: [...c.K.prefix, 'ev'] }, { batchSize: 100 })) {
    page.push(e);
    if (page.length >= 50) await rewritePage();
  }
  await rewritePage();
  const pointers: KvEntry<unknown>[] = [];
  for await (const e of c.kv.list({ prefix: [...c.K.prefix, 'sig'] })) if (!Array.isArray(e.value)) pointers.push(e);
  await Promise.all(pointers.map((e) => listWaiter(c, e as KvEntry<Part>)));
}

/** A signal's waiting entry as version 2 kept it (the one record copies went into) becomes a waiting list. */
async function listWaiter(c: Ctx, e: KvEntry<Part>): Promise<void> {
  const cur = await getMeta(c, e.value);
  const m = cur.value;
  const op = c.kv.atomic().check({ key: e.key, versionstamp: e.versionstamp });
  if (m && isWaiting(m) && m.waits) op.set(e.key, [{ seq: m.seq, kp: e.value }]);
  else op.delete(e.key);
  // Another isolate migrating at the same time wrote the same list.
  await op.commit();
}

async function migrateOne(c: Ctx, listed: KvEntry<StoredMeta>): Promise<void> {
  const { kv, K } = c;
  const kp = listed.key[listed.key.length - 1] as Part;
  let cur: KvEntryMaybe<StoredMeta> | null = listed;
  await optimistic('migrate', async () => {
    cur ??= await kv.get<StoredMeta>(K.meta(kp));
    const v = cur.value;
    if (!v || !cur.versionstamp) return false;
    const m: StoredMeta = normalize(v);
    const done = m.status === 'done';
    if (!hasSignature(m.headers) && !done) return false;
    const kept = Object.entries(m.headers).filter(([h]) => h.toLowerCase() !== SIGNATURE_HEADER);
    const { bodyExpires, ...rest } = m;
    const after: Meta = { ...rest, headers: Object.fromEntries(kept) };
    if (done && bodyExpires && m.bodyId !== null) {
      // The chunks were given the done-record expiry too: written again without it, the body outlives nothing.
      const body = await readBody(c, m).catch(() => null);
      const chunks = body ? splitBody(body) : [];
      for (let i = 0; i < chunks.length; i += CHUNKS_PER_COMMIT) {
        const op = kv.atomic().check({ key: K.meta(kp), versionstamp: cur.versionstamp });
        for (let j = i; j < Math.min(chunks.length, i + CHUNKS_PER_COMMIT); j++)
          op.set(K.chunk(m.bodyId, j), chunks[j]);
        if (!(await op.commit()).ok) {
          cur = null;
          return CONFLICT;
        }
      }
    }
    const op = kv
      .atomic()
      .check({ key: K.meta(kp), versionstamp: cur.versionstamp })
      .set(K.meta(kp), after);
    if (done) {
      // A set without `expireIn` replaces the entry and its expiry.
      op.set(K.seq(m.seq), kp).set(K.st(m.status, m.seq), kp);
      if (m.finishedAt !== null) op.set(K.finKey(m, m.finishedAt), kp);
      const cp = await custPart(m);
      if (cp !== null) op.set(K.cust(cp, m.seq), kp);
    }
    if ((await op.commit()).ok) return true;
    cur = null;
    return CONFLICT;
  });
}
