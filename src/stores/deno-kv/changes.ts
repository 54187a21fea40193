// The state changes of a stored record: the writes every change shares, the fenced changes of a lease holder
// (complete/retry/deadLetter/renew), and requeue, which puts a record back into its ordering group.
import type { Ctx } from './context.ts';
import { forgetGroup, getMeta, hold, knownGroup, rememberGroup, takeHeld } from './context.ts';
import {
  type CommitShared,
  CONFLICT,
  type Conflict,
  optimistic,
  type Recorded,
  recorded,
  type WriteTurns,
  commitRecorded,
} from './commits.ts';
import type { KvAtomic, KvCommitResult, KvEntryMaybe } from './kv.ts';
import { groupOf, keyId, type Part, part, sameKey } from './keys.ts';
import { type GroupValue, isFinished, isOpen, type Meta } from './record.ts';
import { register } from './signals.ts';

/** Adding this to a KvU64 counter subtracts one. */
export const U64_MINUS_ONE = (1n << 64n) - 1n;

/**
 * Adds the writes shared by every state change of one record: the record, its status/finish indexes, counters and
 * claim slot. Group membership and the neighbouring head are the caller's business.
 */
export function change(c: Ctx, op: KvAtomic, kp: Part, before: Meta, after: Meta): void {
  const { K } = c;
  op.set(K.meta(kp), after);
  if (before.status !== after.status) {
    op.delete(K.st(before.status, before.seq));
    op.set(K.st(after.status, after.seq), kp);
    op.sum(K.count(before.status), U64_MINUS_ONE);
    op.sum(K.count(after.status), 1n);
  }
  if (isFinished(before.status) && before.finishedAt !== null) op.delete(K.finKey(before, before.finishedAt));
  if (isFinished(after.status) && after.finishedAt !== null) op.set(K.finKey(after, after.finishedAt), kp);
  const oldSlot = before.head ? K.slot(before) : null;
  const newSlot = after.head ? K.slot(after) : null;
  if (oldSlot && !(newSlot && sameKey(oldSlot, newSlot))) op.delete(oldSlot);
  if (newSlot) op.set(newSlot, kp);
}

/** `list` without `kp`; undefined when nothing is left. */
function without(list: readonly Part[] | undefined, kp: Part): Part[] | undefined {
  const id = keyId([kp]);
  const rest = (list ?? []).filter((p) => keyId([p]) !== id);
  return rest.length > 0 ? rest : undefined;
}

/** `m` as a record that is no longer its group's head. */
function demoted(m: Meta): Meta {
  const { leasedBehind: _, ...rest } = m;
  return { ...rest, head: false };
}

/**
 * A demoted head that held a lease gave it up (finished, retried, requeued): the group's head, the first of its queue
 * other than `seq`, no longer waits for it. Returns false when the head changed under us.
 */
async function release(c: Ctx, op: KvAtomic, g: readonly Part[], seq: number, kp: Part): Promise<boolean> {
  const headKp = await nextInQueue(c, g, seq);
  if (headKp === null) return true;
  const h = await getMeta(c, headKp);
  if (!h.value || !h.versionstamp) return false;
  if (!h.value.head || !(h.value.leasedBehind ?? []).some((p) => keyId([p]) === keyId([kp]))) return true;
  op.check({ key: c.K.meta(headKp), versionstamp: h.versionstamp });
  const { leasedBehind: _, ...rest } = h.value;
  const left = without(h.value.leasedBehind, kp);
  change(c, op, headKp, h.value, left ? { ...rest, leasedBehind: left } : rest);
  return true;
}

/**
 * complete/retry/deadLetter/renew: a change allowed only while `owner` holds the lease. The first attempt goes out in
 * a shared commit; one that lost a race (a group commit of inserts rewrote its group's counter after it was read)
 * is read and committed again inside a turn of its own (`turns`), where no group commit of this store can come in
 * between: otherwise a worker finishing events of the very customers whose events keep arriving could lose to every
 * group commit in turn.
 */
export async function fenced(
  c: Ctx,
  commitShared: CommitShared,
  turns: WriteTurns,
  what: string,
  key: string,
  owner: string,
  next: (m: Meta) => Meta,
): Promise<boolean> {
  const kp = await part(key);
  // The record as this process's claim or renew wrote it, when it still remembers: no read on the first try.
  const held = takeHeld(c, key);
  let tries = 0;
  return optimistic(what, () =>
    tries++ === 0
      ? fencedOnce(c, kp, owner, next, (op) => commitShared(c.kv, op), held)
      : // Inside the turn the commit goes out directly: a shared commit would wait for a turn behind this one.
        turns.run(() => fencedOnce(c, kp, owner, next, (op) => commitRecorded(c.kv, [op]))),
  );
}

/** One read-check-commit of a fenced change, committed by `commit`; `held` stands in for the read when given. */
async function fencedOnce(
  c: Ctx,
  kp: Part,
  owner: string,
  next: (m: Meta) => Meta,
  commit: (op: Recorded) => Promise<KvCommitResult>,
  held?: KvEntryMaybe<Meta>,
): Promise<boolean | Conflict> {
  const { kv, K } = c;
  const cur = held ?? (await getMeta(c, kp));
  const m = cur.value;
  // A remembered record that says no is read again: only the stored one may refuse.
  if (held && (!m || !isOpen(m.status) || m.leaseOwner !== owner)) return CONFLICT;
  if (!m || !cur.versionstamp || !isOpen(m.status) || m.leaseOwner !== owner) return false;
  const after = next(m);
  const op = recorded();
  op.check({ key: K.meta(kp), versionstamp: cur.versionstamp });
  const g = await groupOf(m);
  if (isFinished(after.status)) {
    // Leaving the group: drop out of its queue and, when it was the head, promote the next open record, which
    // then waits for the same leases its predecessor waited for.
    // The queue is listed only when the group holds another open record: a list costs a local KV file about as much
    // as two reads, and a customer's events seldom wait behind one another. The counter is read only when this
    // process does not know it as its own last commit left it (see knownGroup).
    const gid = keyId(g);
    const gEntry = knownGroup(c, gid) ?? (await kv.get<GroupValue>(K.group(g)));
    const n = (gEntry.value?.n ?? 1) - 1;
    const nextHead = m.head && n > 0 ? await nextInQueue(c, g, m.seq) : null;
    op.check({ key: K.group(g), versionstamp: gEntry.versionstamp });
    const left = n > 0 ? { ...(gEntry.value as GroupValue), n } : null;
    if (left) op.set(K.group(g), left);
    else op.delete(K.group(g));
    op.onCommit.push((versionstamp) =>
      rememberGroup(c, gid, { value: left, versionstamp: left ? versionstamp : null }),
    );
    op.delete(K.queue(g, m.seq));
    if (nextHead) {
      const h = await getMeta(c, nextHead);
      if (!h.value || !h.versionstamp) return CONFLICT;
      op.check({ key: K.meta(nextHead), versionstamp: h.versionstamp });
      const promoted: Meta = { ...h.value, head: true };
      const waitsFor = without(m.leasedBehind, nextHead);
      if (waitsFor) promoted.leasedBehind = waitsFor;
      change(c, op, nextHead, h.value, promoted);
    }
    change(c, op, kp, m, demoted(after));
  } else {
    change(c, op, kp, m, after);
  }
  if (!m.head && after.leaseOwner === null && !(await release(c, op, g, m.seq, kp))) return CONFLICT;
  const r = await commit(op);
  if (!r.ok) {
    // What this process remembered of the group may be what went stale: the next try reads it.
    forgetGroup(c, keyId(g));
    return CONFLICT;
  }
  // A renewed lease is remembered as renewed; one given up is not remembered at all.
  if (after.leaseOwner === owner) hold(c, kp, after, r.versionstamp);
  return true;
}

/** The first open record of group `g` other than `seq` (the queue is in seq order). */
async function nextInQueue(c: Ctx, g: readonly Part[], seq: number): Promise<Part | null> {
  for await (const e of c.kv.list<Part>({ prefix: [...c.K.prefix, 'q', ...g] }, { limit: 2 })) {
    if (e.key[e.key.length - 1] !== seq) return e.value;
  }
  return null;
}

/**
 * Puts a record back to `pending`, due at `now`, its own lease cleared. A finished one rejoins its group at its
 * original `seq`: in front of the head when it arrived first, and then the old head, if it holds a lease, is one the
 * new head waits for (see `Meta.leasedBehind`), so no two events of a customer run at once.
 */
export async function requeueOne(c: Ctx, kp: Part, now: number): Promise<boolean> {
  const { kv, K } = c;
  return optimistic('requeue', async () => {
    const cur = await getMeta(c, kp);
    const m = cur.value;
    // A tombstone only remembers a key: there is nothing left to run.
    if (!m || !cur.versionstamp || m.tombstone) return false;
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
    if (after.coalesceKey !== null && !m.waits) await register(c, op, kp, after);
    const g = await groupOf(m);
    if (isOpen(m.status)) {
      change(c, op, kp, m, after);
      if (!m.head && m.leaseOwner !== null && !(await release(c, op, g, m.seq, kp))) return CONFLICT;
    } else {
      const [gEntry, headKp] = await Promise.all([kv.get<GroupValue>(K.group(g)), nextInQueue(c, g, -1)]);
      op.check({ key: K.group(g), versionstamp: gEntry.versionstamp });
      op.set(K.group(g), { n: (gEntry.value?.n ?? 0) + 1, last: Math.max(gEntry.value?.last ?? 0, m.seq) });
      op.set(K.queue(g, m.seq), kp);
      const joined = demoted(after);
      joined.head = true;
      if (headKp !== null) {
        const h = await getMeta(c, headKp);
        if (!h.value || !h.versionstamp) return CONFLICT;
        if (h.value.seq < m.seq) joined.head = false;
        else {
          // An older event comes back in front of the group's current head, which may be running.
          op.check({ key: K.meta(headKp), versionstamp: h.versionstamp });
          change(c, op, headKp, h.value, demoted(h.value));
          const waitsFor = [...(h.value.leasedBehind ?? []), ...(h.value.leaseOwner !== null ? [headKp] : [])];
          if (waitsFor.length > 0) joined.leasedBehind = waitsFor;
        }
      }
      change(c, op, kp, m, joined);
    }
    const ok = (await op.commit()).ok;
    // A requeue is rare: rather than remember the counter it wrote, the next writer of the group reads it.
    forgetGroup(c, keyId(g));
    return ok ? true : CONFLICT;
  });
}
