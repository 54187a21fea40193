// `events tail`: follows the inbox live, one line per event received and one per change of its status, by polling
// the store (the CLI shares nothing with the server but the store, so polling is the only way to watch it).
//
// Each poll: list the events after the last seq seen (a window of recent seqs is listed again, because on Postgres a
// lower seq can commit after a higher one), then re-read every event shown that had not finished, and print what
// changed. An event stops being followed once it is done or dead.
import process from 'node:process';
import { parseDuration } from '../config.ts';
import { EVENT_STATUSES, type EventRecord, type EventStatus, type Store } from '../stores/store.ts';
import { type StoreFlags, openCliStore } from './events.ts';
import { CliError, UsageError, err, isoTime, jsonTime, out } from './output.ts';

type Env = Record<string, string | undefined>;

const USAGE = 'events tail';
/** New events read per page; a poll reads at most NEW_PAGES pages, the rest waits for the next poll. */
const PAGE = 500;
const NEW_PAGES = 20;
/** Seqs below the newest seen that are listed again on each poll, for inserts that commit out of seq order. */
const LOOKBACK = 200;
/** Unfinished events followed at once; each costs one read per poll. Past this, new ones are shown but not followed. */
export const MAX_FOLLOWED = 1000;
/** Polls in a row that may fail (a locked or unreachable store) before tail gives up. */
const MAX_FAILURES = 10;

export interface TailFlags extends StoreFlags {
  event?: string;
  customer?: string;
  status?: string;
  after?: string;
  interval?: string;
  for?: string;
  once?: boolean;
}

function parseStatuses(value: string | undefined): Set<EventStatus> | null {
  if (value === undefined) return null;
  const wanted = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = wanted.filter((s) => !(EVENT_STATUSES as string[]).includes(s));
  if (wanted.length === 0 || bad.length > 0) {
    throw new UsageError(
      `--status takes one or more of ${EVENT_STATUSES.join(', ')} (comma-separated), got ${value}`,
      USAGE,
    );
  }
  return new Set(wanted as EventStatus[]);
}

function parseMs(flag: string, value: string | undefined, fallback: number | null): number | null {
  if (value === undefined) return fallback;
  const ms = /[a-z]\s*$/i.test(value) ? parseDuration(value) : null;
  if (ms === null || ms <= 0)
    throw new UsageError(`--${flag}: expected a duration such as 500ms, 2s or 5m, got ${value}`, USAGE);
  return ms;
}

/** Has the store any event with a seq above `seq`? One indexed read. */
async function anyAfter(store: Store, seq: number): Promise<boolean> {
  return (await store.list({ afterSeq: seq, limit: 1 })).length > 0;
}

/**
 * The highest seq in the store, or 0 when it is empty, without reading it all: the store has no "last" query, so
 * this doubles a bound until nothing lies beyond it, then halves the gap (about 2·log2(seq) one-row reads).
 */
export async function lastSeq(store: Store): Promise<number> {
  if (!(await anyAfter(store, 0))) return 0;
  let low = 0; // something lies after low
  let high = 1024;
  while (await anyAfter(store, high)) {
    low = high;
    high *= 2;
  }
  // Nothing lies after high: the last seq is in (low, high].
  while (high - low > 1) {
    const mid = Math.floor((low + high) / 2);
    if (await anyAfter(store, mid)) low = mid;
    else high = mid;
  }
  return high;
}

/** What is printed when it changes: a new failure of a retrying event prints again, with its new error. */
function stateOf(r: EventRecord): string {
  return r.status === 'retrying' ? `retrying:${r.attempts}` : r.status;
}

const open = (r: EventRecord) => r.status === 'pending' || r.status === 'retrying';

function receivedLine(r: EventRecord, json: boolean): string {
  if (json) {
    return JSON.stringify({
      type: 'received',
      at: jsonTime(r.receivedAt),
      seq: r.seq,
      key: r.key,
      event: r.event,
      customerId: r.customerId,
      status: r.status,
    });
  }
  return [isoTime(r.receivedAt).slice(11), `#${r.seq}`, 'received'.padEnd(8), r.event, r.customerId ?? '-', r.key].join(
    '  ',
  );
}

function statusLine(r: EventRecord, json: boolean, now: number): string {
  const at = r.finishedAt ?? now;
  if (json) {
    return JSON.stringify({
      type: 'status',
      at: jsonTime(at),
      seq: r.seq,
      key: r.key,
      event: r.event,
      customerId: r.customerId,
      status: r.status,
      attempts: r.attempts,
      error: r.lastError,
      nextAttemptAt: r.status === 'retrying' ? jsonTime(r.nextAttemptAt) : null,
    });
  }
  const tries = `after ${r.attempts} attempt${r.attempts === 1 ? '' : 's'}`;
  const detail =
    r.status === 'done'
      ? tries
      : r.status === 'retrying'
        ? `${tries}, next at ${isoTime(r.nextAttemptAt).slice(11)}: ${r.lastError ?? '-'}`
        : r.status === 'dead'
          ? `${tries}: ${r.lastError ?? '-'}`
          : 'requeued';
  return [isoTime(at).slice(11), `#${r.seq}`, r.status.padEnd(8), r.event, r.customerId ?? '-', detail].join('  ');
}

export async function tailCommand(flags: TailFlags, env: Env): Promise<number> {
  const statuses = parseStatuses(flags.status);
  const interval = parseMs('interval', flags.interval, 1000) as number;
  const forMs = parseMs('for', flags.for, null);
  const after = flags.after === undefined ? undefined : Number(flags.after);
  if (after !== undefined && (!/^\d+$/.test(flags.after as string) || !Number.isSafeInteger(after))) {
    throw new UsageError(`--after must be a seq number (0 for the start), got ${flags.after}`, USAGE);
  }
  const json = Boolean(flags.json);
  const { store, kind, where } = await openCliStore(flags, env);

  let stopping = false;
  let wake: (() => void) | null = null;
  const stop = () => {
    stopping = true;
    wake?.();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  const deadline = forMs === null ? Number.POSITIVE_INFINITY : Date.now() + forMs;

  const shown = (s: EventStatus) => statuses === null || statuses.has(s);
  const print = (line: string) => out(line);
  /** Unfinished events shown so far: key → the state last printed. */
  const followed = new Map<string, string>();
  /** Seqs shown that are still in the look-back window, so that listing it again prints nothing twice. */
  const seen = new Set<number>();
  let warnedFull = false;
  let received = 0;
  let failures = 0;

  try {
    // Events up to the starting point are never listed: the look-back window only reaches down to it.
    const start = after ?? (await lastSeq(store));
    let cursor = start;
    // On stderr in both modes: stdout stays one line per event (or JSON object) for the pipe.
    const filters = [
      flags.event && `event ${flags.event}`,
      flags.customer && `customer ${flags.customer}`,
      statuses && `status ${[...statuses].join(',')}`,
    ]
      .filter(Boolean)
      .join(', ');
    err(
      `following events after #${cursor} in ${kind} ${where}${filters ? ` (${filters})` : ''}${flags.once ? '' : '; Ctrl-C to stop'}`,
    );

    for (;;) {
      try {
        const now = Date.now();
        let from = Math.max(start, cursor - LOOKBACK);
        for (let page = 0; page < NEW_PAGES; page++) {
          const records = await store.list({
            afterSeq: from,
            event: flags.event,
            customerId: flags.customer,
            limit: PAGE,
          });
          for (const r of records) {
            if (seen.has(r.seq)) continue;
            seen.add(r.seq);
            received++;
            if (shown('pending')) print(receivedLine(r, json));
            if (r.status !== 'pending' && shown(r.status)) print(statusLine(r, json, now));
            if (open(r)) {
              if (followed.size < MAX_FOLLOWED) followed.set(r.key, stateOf(r));
              else if (!warnedFull) {
                warnedFull = true;
                err(
                  `lava-webhooks: following the outcome of ${MAX_FOLLOWED} unfinished events already; newer ones are shown as they arrive only`,
                );
              }
            }
          }
          const last = records.at(-1);
          if (last) {
            from = last.seq;
            cursor = Math.max(cursor, last.seq);
          }
          if (records.length < PAGE) break;
        }
        for (const s of seen) if (s <= cursor - LOOKBACK) seen.delete(s);

        for (const [key, state] of followed) {
          const r = await store.get(key);
          if (!r) {
            followed.delete(key); // purged (or gone with its store): nothing more will happen to it
            continue;
          }
          const next = stateOf(r);
          if (next === state) continue;
          if (shown(r.status)) print(statusLine(r, json, Date.now()));
          if (open(r)) followed.set(key, next);
          else followed.delete(key);
        }
        failures = 0;
      } catch (error) {
        // A busy or briefly unreachable store is worth waiting out; one that keeps failing is not.
        failures++;
        if (flags.once || failures >= MAX_FAILURES) {
          const times = failures > 1 ? ` ${failures} times in a row` : '';
          throw new CliError(`reading the store failed${times}: ${(error as Error).message}`);
        }
        err(`lava-webhooks: reading the store failed (${(error as Error).message}); trying again`);
      }

      if (flags.once || stopping) break;
      const left = deadline - Date.now();
      if (left <= 0) break;
      await new Promise<void>((res) => {
        const timer = setTimeout(res, Math.min(interval, left));
        wake = () => {
          clearTimeout(timer);
          res();
        };
      });
      wake = null;
      if (stopping) break;
    }
    err(`stopped${stopping ? ' (interrupted)' : ''}: ${received} new event${received === 1 ? '' : 's'}`);
    return 0;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    await store.close();
  }
}
