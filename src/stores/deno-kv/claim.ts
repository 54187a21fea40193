// Claim: leases on the heads of ordering groups, found through their claim slots (`ready` now, `wait` once due).
import type { ClaimOptions, EventRecord } from '../store.ts';
import { withBodies } from './bodies.ts';
import { change } from './changes.ts';
import { MAX_TRIES } from './commits.ts';
import { type Ctx, getMetas, hold } from './context.ts';
import type { KvAtomic, KvEntry, KvEntryMaybe } from './kv.ts';
import { keyId, type Part, sameKey } from './keys.ts';
import { isOpen, type Meta } from './record.ts';

/** Checks per claim commit (a lease takes 2, plus one per record in its `behind`), inside the 100 a commit may have. */
const BATCH_CHECKS = 90;

interface Lease {
  kp: Part;
  slot: KvEntry<Part>;
  versionstamp: string;
  m: Meta;
  after: Meta;
  /** The records of `m.leasedBehind` as read: none may have taken a lease again by the time the lease commits. */
  behind: KvEntryMaybe<Meta>[];
}

/**
 * How long a claim keeps starting new rounds. A round looks further along the ready slots when the ones it read could
 * not be leased; under a steady stream of new customers each round finds fresh heads that arrived after `now` (not
 * due yet), and 100 rounds behind a busy database took longer than the worker waits for a claim (5 s), so the worker
 * gave the claim up and its leases ran late. What a claim leaves, the next one finds.
 */
const ROUNDS_MS = 250;

/** Leases in runs that fit one commit's checks. */
function byChecks(leases: Lease[]): Lease[][] {
  const out: Lease[][] = [];
  let checks = BATCH_CHECKS;
  for (const l of leases) {
    const n = 2 + l.behind.length;
    if (checks + n > BATCH_CHECKS) {
      out.push([]);
      checks = 0;
    }
    (out[out.length - 1] as Lease[]).push(l);
    checks += n;
  }
  return out;
}

/** Someone runs it right now: a lease that has not run out. */
const runs = (m: Meta | null, now: number) =>
  m !== null && isOpen(m.status) && m.leaseOwner !== null && m.leaseUntil !== null && m.leaseUntil > now;

export async function claim(c: Ctx, { owner, limit, leaseMs, now }: ClaimOptions): Promise<EventRecord[]> {
  const { kv, K } = c;
  const P = K.prefix;
  const won: Meta[] = [];
  const tried = new Set<string>();
  const id = (kp: Part) => keyId([kp]);
  const started = Date.now();
  for (let round = 0; round < MAX_TRIES && won.length < limit; round++) {
    if (round > 0 && Date.now() - started > ROUNDS_MS) break;
    const need = limit - won.length;
    const candidates: KvEntry<Part>[] = [];
    for await (const e of kv.list<Part>({ prefix: [...P, 'ready'] }, { batchSize: Math.min(500, need + 10) })) {
      if (tried.has(id(e.value))) continue;
      candidates.push(e);
      if (candidates.length >= need) break;
    }
    // Leased and retrying heads that came due: expired leases and retries whose time has come.
    for await (const e of kv.list<Part>({ start: [...P, 'wait'], end: [...P, 'wait', now, true] }, { limit: 1000 })) {
      if (!tried.has(id(e.value))) candidates.push(e);
    }
    if (candidates.length === 0) break;
    const seqOf = (e: KvEntry<Part>) => e.key[e.key.length - 1] as number;
    candidates.sort((a, b) => seqOf(a) - seqOf(b));
    const picked = candidates.slice(0, need);
    const metas = await getMetas(
      c,
      picked.map((e) => e.value),
    );
    const leases: Lease[] = [];
    for (const [i, slot] of picked.entries()) {
      const kp = slot.value;
      tried.add(id(kp));
      const cur = metas[i] as KvEntryMaybe<Meta>;
      const m = cur.value;
      if (!m || !cur.versionstamp || !m.head || !isOpen(m.status)) continue;
      if (m.nextAttemptAt > now || (m.leaseUntil !== null && m.leaseUntil > now)) continue;
      if (!sameKey(K.slot(m), slot.key)) continue;
      // An older event requeued in front of a running one waits until that run lets its lease go or the lease runs out.
      const behind = m.leasedBehind ? await getMetas(c, m.leasedBehind) : [];
      if (behind.some((e) => runs(e.value, now))) continue;
      const after: Meta = {
        ...m,
        leaseOwner: owner,
        leaseUntil: now + leaseMs,
        attempts: m.attempts + 1,
        // Its run begins: copies that arrive from now on get a run of their own (its waiting entry is now stale).
        waits: false,
      };
      leases.push({ kp, slot, versionstamp: cur.versionstamp, m, after, behind });
    }
    const lease = (op: KvAtomic, l: Lease) => {
      op.check({ key: K.meta(l.kp), versionstamp: l.versionstamp }).check({
        key: l.slot.key,
        versionstamp: l.slot.versionstamp,
      });
      for (const e of l.behind) op.check({ key: e.key, versionstamp: e.versionstamp });
      change(c, op, l.kp, l.m, l.after);
    };
    // All in one commit (each is the head of its own group, so they do not touch each other's keys); when
    // another claimer or a writer got to one of them first, each is tried on its own.
    for (const some of byChecks(leases)) {
      const leased = (l: Lease, versionstamp: string) => {
        hold(c, l.kp, l.after, versionstamp);
        won.push(l.after);
      };
      if (some.length > 1) {
        const op = kv.atomic();
        for (const l of some) lease(op, l);
        const r = await op.commit();
        if (r.ok) {
          for (const l of some) leased(l, r.versionstamp);
          continue;
        }
      }
      await Promise.all(
        some.map(async (l) => {
          const one = kv.atomic();
          lease(one, l);
          const r = await one.commit();
          if (r.ok) leased(l, r.versionstamp);
        }),
      );
    }
  }
  won.sort((a, b) => a.seq - b.seq);
  return withBodies(c, won);
}
