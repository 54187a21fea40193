// Short ids for events: every command that takes a key also takes the event's seq (`42`, `#42`) or the start of its
// key, because a balance update's key (`customer.wallet.balance.updated@<time>.<tag><n>`) is not something anyone
// types.
import type { EventRecord, Store } from '../stores/store.ts';
import { CliError, EXIT_USAGE } from './output.ts';

/** Records read per page while looking for a key prefix. */
const PAGE = 500;
/**
 * A prefix search reads the store page by page; past this many records it stops rather than read a store of
 * millions for one lookup, and says so (the seq or the full key always work).
 */
export const PREFIX_SCAN_LIMIT = 100_000;
/** Candidates printed for an ambiguous prefix; the search stops once it has this many. */
const SHOWN_CANDIDATES = 10;

const SEQ = /^#?(\d{1,15})$/;

/** `42  customer.created:cus_1`: the seq first, so it can be pasted back. */
function candidateLine(r: EventRecord): string {
  return `  ${String(r.seq).padStart(6)}  ${r.key}`;
}

/** The record with this seq, read with one bounded list call (seq is unique and increasing). */
async function bySeq(store: Store, seq: number): Promise<EventRecord | null> {
  const [first] = await store.list({ afterSeq: seq - 1, limit: 1 });
  return first?.seq === seq ? first : null;
}

/**
 * Finds one event by what the user typed, in this order: the full key; a seq (`42` or `#42`); a key prefix that
 * only one event has. Not found exits 1; an ambiguous prefix lists the candidates and exits 2.
 */
export async function findEvent(store: Store, id: string, scanLimit = PREFIX_SCAN_LIMIT): Promise<EventRecord> {
  const exact = await store.get(id);
  if (exact) return exact;
  const seq = SEQ.exec(id);
  if (seq) {
    const found = await bySeq(store, Number(seq[1]));
    if (found) return found;
    // `#42` can only mean a seq; a bare number may still start a key, so fall through to the prefix search.
    if (id.startsWith('#'))
      throw new CliError(`no event with seq ${seq[1]} (list events with: lava-webhooks events list)`);
  }
  const matches: EventRecord[] = [];
  let scanned = 0;
  let complete = false;
  let afterSeq: number | undefined;
  while (scanned < scanLimit) {
    const limit = Math.min(PAGE, scanLimit - scanned);
    const page = await store.list({ limit, afterSeq });
    scanned += page.length;
    for (const r of page) if (r.key.startsWith(id)) matches.push(r);
    if (matches.length >= SHOWN_CANDIDATES) break;
    const last = page.at(-1);
    if (page.length < limit || !last) {
      complete = true;
      break;
    }
    afterSeq = last.seq;
  }
  // Stopped at the limit: one more record tells whether there was anything left to search.
  if (!complete && matches.length < SHOWN_CANDIDATES)
    complete = (await store.list({ limit: 1, afterSeq })).length === 0;
  const what = seq ? `key, key prefix or seq ${id}` : `key ${id}, or a key that starts with it`;
  if (matches.length === 1 && complete) return matches[0] as EventRecord;
  if (matches.length > 1) {
    const many = matches.length >= SHOWN_CANDIDATES ? `at least ${matches.length}` : String(matches.length);
    throw new CliError(
      `${id} is the start of ${many} keys: pass the seq or more of the key\n${matches.slice(0, SHOWN_CANDIDATES).map(candidateLine).join('\n')}`,
      EXIT_USAGE,
    );
  }
  if (!complete) {
    // The search stopped early: an only match is not known to be the only one, and no match is not proof.
    const found = matches[0];
    throw new CliError(
      found
        ? `${id} matched ${found.key} (seq ${found.seq}) among the first ${scanned} events, but the store holds more ` +
            `and only those were searched: pass the seq ${found.seq} or the full key`
        : `no event with ${what} among the first ${scanned} events (a prefix search stops there): pass the seq or the full key`,
      found ? EXIT_USAGE : 1,
    );
  }
  throw new CliError(`no event with ${what} (list events with: lava-webhooks events list)`);
}
