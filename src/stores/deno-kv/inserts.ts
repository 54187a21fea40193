// Inserts: a new record and its indexes in one atomic commit, and group commits, which write the small inserts that
// arrive while a commit is under way all in the next one (a local KV file does one commit at a time, so 64
// concurrent inserts became 64 queued commits). Each caller's promise settles only once the commit holding its
// record is done, so an ack stays durable.
import type { EventStatus, InsertLease, InsertResult, NewEvent } from '../store.ts';
import { CHUNKS_PER_COMMIT, deleteChunks, INLINE_BODY_BYTES, splitBody, stageChunks } from './bodies.ts';
import { BATCH_BYTES, CONFLICT, optimistic, type WriteTurns, writeTurns } from './commits.ts';
import { type Ctx, forgetGroup, hold, knownGroup, rememberGroup } from './context.ts';
import { getAll, type KvAtomic, type KvEntryMaybe, type KvKey } from './kv.ts';
import { groupOf, keyId, keySize, MAX_PART_CHARS, type Part, part } from './keys.ts';
import { leaseAtInsert } from '../records.ts';
import { type GroupValue, isOpen, type Meta, newMeta, toRecord } from './record.ts';
import { type LiveWaiters, liveWaiters, type WaitList, withWaiter, writeWaiters } from './signals.ts';

/**
 * Checks one commit may have (KV refuses a 101st). A group commit takes at most 2 an insert (its record absent, its
 * seq free), 1 a group (its counter as read) and 1 a coalesceKey (its waiting list as read): the record it counts
 * copies into is checked instead of a new record's two, so the bound holds for every shape of batch.
 */
const MAX_CHECKS = 100;
/**
 * Bytes of mutation keys a group commit may write: KV refuses more than 80 KiB of them (checks do not count). What
 * takeBatch reckons is an upper bound (3 bytes a char, every index an insert may write, the record a copy may be
 * counted into), so this keeps a margin below the limit without one more estimate's slack.
 */
const INSERT_KEY_BYTES = 72 * 1024;
/** Group commits retried whole when a check failed (the worker finished an event of a group in between). */
const BATCH_TRIES = 3;

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
  /** The lease it was given (see `Store.insert`): taken when it is inserted as its group's head. */
  lease: InsertLease | null;
  id: string;
  gid: string;
  ckid: string;
  done: (r: InsertResult) => void;
  fail: (err: unknown) => void;
}
/** A coalesceKey within one group commit (see `commitBatch`). */
interface Signal {
  ck: string;
  /** Its waiting list as read, and the part of it that still waits. */
  entry: KvEntryMaybe<WaitList>;
  waiters: LiveWaiters;
  /** The record copies are counted into: the first that waits, or (`m`) a new one of this batch. */
  into: KvEntryMaybe<Meta> | null;
  copies: number;
  m: Meta | null;
  item?: InsertItem;
}

/** Makes the seq of a new record, above `above` (its group's last). */
type NextSeq = (above: number) => number;

/**
 * `seq` is made in the process from the clock, not read from a shared counter: a counter key that every insert
 * rewrites makes all concurrent inserts conflict and retry (224 req/s, p99 1.8 s under 64 connections). It must
 * still be known inside the commit, so the indexes that order by it are written atomically with the record (a
 * versionstamp is only known after the commit). Two isolates that make the same seq are kept apart by a check that
 * the `seq,seq` entry is absent: the loser retries with the next number. Within a group, a new seq is also above
 * the group's `last`, so a customer's events stay in arrival (commit) order even when isolates' clocks differ;
 * across customers, seq follows receive time (ties within a millisecond between isolates go to whoever commits
 * first). An older database's small counter-made seqs sort before every clock-made one.
 *
 * Epoch ms × 1000 plus a sub-counter: 1000 inserts per ms before it runs ahead of the clock, and below 2^53 until
 * the year 2255. Strictly increasing within the process, even if the clock steps back.
 */
function seqMaker(): NextSeq {
  let lastSeq = 0;
  return (above) => {
    lastSeq = Math.max(lastSeq + 1, Date.now() * 1000, above + 1);
    return lastSeq;
  };
}

/**
 * The writes of a new record and its indexes; its group's counter is the caller's (one check per group), and so is
 * its signal's waiting list.
 */
function writeNew(c: Ctx, op: KvAtomic, item: InsertItem, m: Meta, counts?: Map<EventStatus, bigint>): void {
  const { K } = c;
  const { kp, cp, g } = item;
  op.check({ key: K.meta(kp), versionstamp: null })
    .check({ key: K.seq(m.seq), versionstamp: null })
    .set(K.meta(kp), m)
    .set(K.seq(m.seq), kp)
    .set(K.st(m.status, m.seq), kp);
  // A group commit adds its counts up once a status (`counts`), rather than one `sum` mutation a record.
  if (counts) counts.set(m.status, (counts.get(m.status) ?? 0n) + 1n);
  else op.sum(K.count(m.status), 1n);
  if (cp !== null) op.set(K.cust(cp, m.seq), kp);
  if (isOpen(m.status)) {
    op.set(K.queue(g, m.seq), kp);
    if (m.head) op.set(K.slot(m), kp);
  } else if (m.finishedAt !== null) {
    op.set(K.fin(m.status, m.finishedAt, m.seq), kp);
  }
}

/**
 * One insert in its own commit(s): used for large bodies, a lone insert, and when a group commit lost a race. Given a
 * lease, it writes its group's head leased, as commitBatch does.
 */
async function insertOne(
  c: Ctx,
  nextSeq: NextSeq,
  item: InsertItem,
  lease: InsertLease | null = null,
): Promise<InsertResult> {
  const { kv, K } = c;
  const { event, kp, g, ckp } = item;
  const open = event.status === 'pending';
  const body = event.body;
  const inline = body.length <= INLINE_BODY_BYTES;
  const chunks = inline ? [] : splitBody(body);
  let staged: { bodyId: string; marker: KvKey } | null = null;
  try {
    return await optimistic('insert', async () => {
      // The group counter as this process last committed it, when it knows (see knownGroup); else read.
      const gid = keyId(g);
      const known = open ? knownGroup(c, gid) : undefined;
      const readGroup = open && !known;
      const reads: KvKey[] = readGroup ? [K.meta(kp), K.group(g)] : [K.meta(kp)];
      if (ckp !== null) reads.push(K.waiting(ckp));
      const got = await kv.getMany<unknown[]>(reads);
      const existing = got[0];
      const group = known ?? (readGroup ? got[1] : undefined);
      if (existing?.versionstamp) return { inserted: false };
      const w = ckp === null ? null : (got[got.length - 1] as KvEntryMaybe<WaitList>);
      const waiters = w === null ? null : await liveWaiters(c, w.value, event.coalesceKey as string);
      const into = waiters?.metas[0];
      if (w !== null && waiters !== null && into?.value && into.versionstamp) {
        const r = into.value;
        // Counted in only while its list is as read and the record was not claimed in between.
        const op = kv
          .atomic()
          .check(
            { key: K.meta(kp), versionstamp: null },
            { key: w.key, versionstamp: w.versionstamp },
            { key: into.key, versionstamp: into.versionstamp },
          )
          .set(into.key, { ...r, deliveries: r.deliveries + 1 });
        if (waiters.pruned) writeWaiters(op, w.key, waiters.live);
        return (await op.commit()).ok ? { inserted: false, coalescedInto: r.key } : CONFLICT;
      }
      if (chunks.length > CHUNKS_PER_COMMIT && !staged) staged = await stageChunks(c, chunks);
      const gv = group?.value as GroupValue | null | undefined;
      const groupN = gv?.n ?? 0;
      const seq = nextSeq(groupN > 0 ? (gv?.last ?? 0) : 0);
      const bodyId = inline ? null : (staged?.bodyId ?? crypto.randomUUID());
      const m = newMeta(event, seq, open && groupN === 0);
      m.body = inline ? body.slice() : null;
      m.bodyId = bodyId;
      m.chunks = chunks.length;
      const leased = m.head && lease !== null;
      // Leased as a claim would lease it; a signal's run begins, so it goes on no waiting list (see commitBatch).
      if (leased) leaseAtInsert(m, lease);
      m.waits = w !== null && !leased;
      const op = kv.atomic();
      writeNew(c, op, item, m);
      if (w !== null && waiters !== null && !leased) {
        op.check({ key: w.key, versionstamp: w.versionstamp });
        writeWaiters(op, w.key, withWaiter(waiters.live, { seq, kp }));
      }
      if (open) {
        op.check({ key: K.group(g), versionstamp: group?.versionstamp ?? null });
        op.set(K.group(g), { n: groupN + 1, last: seq });
      }
      const s = staged as { bodyId: string; marker: KvKey } | null;
      if (s) op.delete(s.marker);
      else if (bodyId !== null) for (let i = 0; i < chunks.length; i++) op.set(K.chunk(bodyId, i), chunks[i]);
      const r = await op.commit();
      if (!r.ok) {
        forgetGroup(c, gid);
        return CONFLICT;
      }
      if (open) rememberGroup(c, gid, { value: { n: groupN + 1, last: seq }, versionstamp: r.versionstamp });
      staged = null;
      if (!leased) return { inserted: true };
      hold(c, kp, m, r.versionstamp);
      return { inserted: true, leased: toRecord(m, body) };
    });
  } finally {
    const s = staged as { bodyId: string; marker: KvKey } | null;
    if (s) await deleteChunks(c, s.bodyId, chunks.length, s.marker).catch(() => {});
  }
}

/**
 * The longest run of queued inserts that fits one commit; a key already in it ends the run (it may be a dup). Limits
 * are reckoned from the keys each insert writes (KV counts the bytes of mutation keys against an 80 KiB
 * ceiling), checks as `MAX_CHECKS` says, and value bytes from the body, headers and keys a record holds.
 */
function takeBatch(c: Ctx, queued: Queued[]): Queued[] {
  const { K } = c;
  const ids = new Set<string>();
  const gids = new Set<string>();
  const ckids = new Set<string>();
  // The keys every insert writes whatever its parts: seq, status and finish indexes, claim slot, counter.
  const fixedKeys =
    keySize(K.seq(0)) + keySize(K.st('pending', 0)) + keySize(K.fin('pending', 0, 0)) + keySize(K.slot(SLOT_PROBE));
  const countKey = keySize(K.count('pending'));
  // The record a copy may be counted into: its key part is at most MAX_PART_CHARS chars (or a 32-byte digest).
  const intoKey = keySize(K.meta('x'.repeat(MAX_PART_CHARS)));
  let bytes = 0;
  let keyBytes = 0;
  let checks = 0;
  let n = 0;
  for (const q of queued) {
    if (ids.has(q.id)) break;
    const newGroup = q.event.status === 'pending' && !gids.has(q.gid);
    const newSignal = q.ckp !== null && !ckids.has(q.ckid);
    let keyCost = keySize(K.meta(q.kp)) + fixedKeys + countKey + keySize(K.queue(q.g, 0));
    if (q.cp !== null) keyCost += keySize(K.cust(q.cp, 0));
    if (newGroup) keyCost += keySize(K.group(q.g));
    if (newSignal) keyCost += keySize(K.waiting(q.ckp as Part)) + intoKey;
    const checkCost = 2 + (newGroup ? 1 : 0) + (newSignal ? 1 : 0);
    const valueCost = recordBytes(q.event);
    if (n > 0 && checks + checkCost > MAX_CHECKS) break;
    if (n > 0 && (bytes + valueCost > BATCH_BYTES || keyBytes + keyCost > INSERT_KEY_BYTES)) break;
    ids.add(q.id);
    if (newGroup) gids.add(q.gid);
    if (newSignal) ckids.add(q.ckid);
    bytes += valueCost;
    keyBytes += keyCost;
    checks += checkCost;
    n++;
  }
  return queued.splice(0, Math.max(1, n));
}

/** A record's slot key at its longest (`wait,availableAt,seq`), for reckoning key bytes. */
const SLOT_PROBE = { leaseUntil: 0, nextAttemptAt: 0, seq: 0, status: 'pending' } as Meta;

/** An upper bound of the bytes a new record takes as a value (UTF-8 takes up to 3 bytes a char), plus its indexes. */
function recordBytes(e: NewEvent): number {
  let chars = e.key.length + (e.customerId?.length ?? 0) + (e.coalesceKey?.length ?? 0) + (e.lastError?.length ?? 0);
  for (const [name, value] of Object.entries(e.headers)) chars += name.length + value.length;
  return e.body.length + 3 * chars + 1024;
}

/**
 * Writes a batch in one commit, or returns null when a check failed (nothing was written). `assumeNew`: the records
 * are taken to be absent without reading them (the commit still checks it, and a batch that held a duplicate fails
 * and is tried again with reads): Lava delivers each event once, so nearly every insert is new.
 */
async function commitBatch(
  c: Ctx,
  nextSeq: NextSeq,
  batch: Queued[],
  assumeNew: boolean,
): Promise<InsertResult[] | null> {
  const { kv, K } = c;
  // Counters this process committed last are taken as it left them (see knownGroup); the others are read.
  const groups = new Map<
    string,
    { key: KvKey; value: GroupValue | null; versionstamp: string | null; read: boolean }
  >();
  for (const q of batch) {
    if (q.event.status === 'pending' && !groups.has(q.gid)) {
      const known = knownGroup(c, q.gid);
      groups.set(q.gid, { key: K.group(q.g), value: null, versionstamp: null, ...known, read: !known });
    }
  }
  const unread = [...groups.values()].filter((e) => e.read);
  // Signals only: each coalesceKey's waiting entry, the record it points to while that still waits, and the copies
  // counted into it (or into the record of this batch that takes the entry over).
  const signals = new Map<string, Signal>();
  for (const q of batch) {
    if (q.ckp !== null && !signals.has(q.ckid)) {
      const entry = { key: K.waiting(q.ckp), value: null, versionstamp: null };
      const waiters = { live: [], metas: [], pruned: false };
      signals.set(q.ckid, { ck: q.event.coalesceKey as string, entry, waiters, into: null, copies: 0, m: null });
    }
  }
  const metas = assumeNew ? 0 : batch.length;
  const reads: KvKey[] = [
    ...(assumeNew ? [] : batch.map((q) => K.meta(q.kp))),
    ...unread.map((e) => e.key),
    ...[...signals.values()].map((s) => s.entry.key),
  ];
  const got = await getAll<unknown>(kv, reads);
  unread.forEach((e, i) => {
    const entry = got[metas + i] as KvEntryMaybe<GroupValue>;
    e.value = entry.value;
    e.versionstamp = entry.versionstamp;
  });
  if (signals.size > 0) await readSignals(c, [...signals.values()], got.slice(metas + unread.length));
  const op = kv.atomic();
  const counts = new Map<EventStatus, bigint>();
  const results: InsertResult[] = [];
  const touched = new Map<string, GroupValue>();
  // The records this commit writes leased, with their key parts, by batch index.
  const leased = new Map<number, { kp: Part; m: Meta }>();
  batch.forEach((q, i) => {
    if (!assumeNew && got[i]?.versionstamp) {
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
    if (m.head && q.lease !== null) {
      // Its group's head, written leased as a claim would lease it: its slot is `wait` until the lease's end. A
      // signal's run begins with it, so it goes on no waiting list and takes no copies (a copy later in this batch
      // gets a record of its own).
      leaseAtInsert(m, q.lease);
      leased.set(i, { kp: q.kp, m });
      writeNew(c, op, q, m, counts);
    } else if (sig && open) {
      // Written once the copies behind it in this batch are counted in.
      m.waits = true;
      sig.m = m;
      sig.item = q;
    } else writeNew(c, op, q, m, counts);
    if (open) touched.set(q.gid, { n: n + 1, last: m.seq });
    results.push({ inserted: true });
  });
  for (const sig of signals.values()) {
    const { entry, into, waiters } = sig;
    if (sig.m && sig.item) {
      op.check({ key: entry.key, versionstamp: entry.versionstamp });
      writeNew(c, op, sig.item, sig.m, counts);
      writeWaiters(op, entry.key, withWaiter(waiters.live, { seq: sig.m.seq, kp: sig.item.kp }));
    } else if (into?.value && sig.copies > 0) {
      // Counted in only while its list is as read and the record was not claimed in between.
      op.check({ key: entry.key, versionstamp: entry.versionstamp })
        .check({ key: into.key, versionstamp: into.versionstamp })
        .set(into.key, { ...into.value, deliveries: into.value.deliveries + sig.copies });
      if (waiters.pruned) writeWaiters(op, entry.key, waiters.live);
    }
  }
  if (results.every((r) => !r.inserted && r.coalescedInto === undefined)) return results;
  for (const [status, n] of counts) op.sum(K.count(status), n);
  for (const [gid, value] of touched) {
    const e = groups.get(gid) as { key: KvKey; versionstamp: string | null };
    op.check({ key: e.key, versionstamp: e.versionstamp }).set(e.key, value);
  }
  const r = await op.commit();
  if (!r.ok) {
    // One of them may be stale: the next try reads them all.
    for (const gid of groups.keys()) forgetGroup(c, gid);
    return null;
  }
  for (const [gid, value] of touched) rememberGroup(c, gid, { value, versionstamp: r.versionstamp });
  for (const [i, { kp, m }] of leased) {
    // The commit wrote it as `m`: a completion of it need not read it back (see hold).
    hold(c, kp, m, r.versionstamp);
    results[i] = { inserted: true, leased: toRecord(m, batch[i]?.event.body as Uint8Array) };
  }
  return results;
}

/** Fills in, for each signal of a batch, its waiting list and the first record on it that still waits. */
async function readSignals(c: Ctx, signals: Signal[], entries: KvEntryMaybe<unknown>[]): Promise<void> {
  await Promise.all(
    signals.map(async (s, i) => {
      s.entry = entries[i] as KvEntryMaybe<WaitList>;
      s.waiters = await liveWaiters(c, s.entry.value, s.ck);
      s.into = s.waiters.metas[0] ?? null;
    }),
  );
}

export interface Inserts {
  /** Taken before any await, so concurrent inserts keep the order they were called in. */
  ticket(): number;
  /** With `lease`, a pending event inserted as its group's head is written leased (see `Store.insert`). */
  insert(c: Ctx, event: NewEvent, ticket: number, lease?: InsertLease | null): Promise<InsertResult>;
}

/** The insert path of one store: its seq maker and its group-commit queue. */
export function inserts(turns: WriteTurns = writeTurns()): Inserts {
  const nextSeq = seqMaker();
  const queued: Queued[] = [];
  let flushing = false;
  let tickets = 0;

  async function flush(c: Ctx): Promise<void> {
    flushing = true;
    try {
      while (queued.length > 0) {
        const batch = takeBatch(c, queued);
        try {
          // A batch that lost a race (the worker finished an event of one of its customers between the read and
          // the commit) is read and committed again whole: falling back to one commit an insert at the first
          // conflict made every lost race cost a batch's worth of commits, and under load most batches lost one.
          let results: InsertResult[] | null = null;
          for (let i = 0; batch.length > 1 && i < BATCH_TRIES && !results; i++) {
            // In a turn of its own, so no completion of the worker's lands between its reads and its commit.
            // The first try takes the records to be new; a try after a failed check reads them.
            const r = await turns
              .run(() => commitBatch(c, nextSeq, batch, i === 0))
              .then(
                (got) => got ?? CONFLICT,
                () => null,
              );
            // A batch commit that throws (a limit of KV's that the reckoning missed) goes one by one at once.
            if (r === null) break;
            if (r !== CONFLICT) results = r;
          }
          if (results) for (let i = 0; i < batch.length; i++) batch[i]?.done(results[i] as InsertResult);
          // A lone insert, or a batch that kept losing races: each one on its own, retried as usual.
          else await Promise.all(batch.map((q) => insertOne(c, nextSeq, q, q.lease).then(q.done, q.fail)));
        } catch (err) {
          for (const q of batch) q.fail(err);
        }
      }
    } finally {
      flushing = false;
    }
  }

  return {
    ticket: () => ++tickets,
    async insert(c, event, ticket, lease = null) {
      const kp = await part(event.key);
      const cp = event.customerId === null ? null : await part(event.customerId);
      const g = await groupOf(event);
      // A delivery inserted dead is recorded as it is: it neither coalesces nor takes copies.
      const ck = event.status === 'pending' ? (event.coalesceKey ?? null) : null;
      const ckp = ck === null ? null : await part(ck);
      const item = { event, kp, cp, g, ckp };
      if (event.body.length > INLINE_BODY_BYTES) return insertOne(c, nextSeq, item, lease);
      return new Promise<InsertResult>((done, fail) => {
        let at = queued.length;
        while (at > 0 && (queued[at - 1] as Queued).ticket > ticket) at--;
        const ckid = ck === null ? '' : keyId([ck]);
        queued.splice(at, 0, { ...item, ticket, lease, id: keyId([event.key]), gid: keyId(g), ckid, done, fail });
        if (!flushing) void flush(c);
      });
    },
  };
}
