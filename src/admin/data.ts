// What the console's pages read from the store, through the Store contract only (list, get, counts, requeue,
// requeueWhere), in bounded pieces: a page of a list is one store call, and anything that walks more records (the
// chart, counting or requeueing what a filter matches) reads a page at a time and lets the event loop run between
// pages, so a synchronous store (memory, SQLite) never holds up a delivery for long.
import {
  EVENT_STATUSES,
  type EventRecord,
  type EventStatus,
  type ListOptions,
  type Store,
  type StatusCounts,
} from '../stores/store.ts';

/** The events list's filters, as its form and links carry them. */
export interface Filters {
  status: EventStatus | null;
  event: string | null;
  customer: string | null;
  /** Epoch ms, inclusive. */
  from: number | null;
  /** Epoch ms, exclusive. */
  until: number | null;
}

export interface ParsedFilters {
  filters: Filters;
  /** What was wrong with the query, one line each (the filter is then left out). */
  problems: string[];
}

const MAX_TEXT = 500;

/** A `datetime-local` value (`2026-12-03T13:45`, seconds optional), read as UTC. */
export function parseUtc(value: string): number | null {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,3})?)?$/.test(value)) return null;
  const t = Date.parse(`${value}Z`);
  return Number.isFinite(t) ? t : null;
}

/** The value for a `datetime-local` input: UTC, to the minute (or second when it has one). */
export function formatUtcInput(ms: number): string {
  const iso = new Date(ms).toISOString();
  return iso.endsWith(':00.000Z') ? iso.slice(0, 16) : iso.slice(0, 19);
}

export function parseFilters(query: Record<string, string | undefined>): ParsedFilters {
  const problems: string[] = [];
  const text = (name: string) => {
    const v = query[name]?.trim();
    if (!v) return null;
    if (v.length > MAX_TEXT) {
      problems.push(`${name} is longer than ${MAX_TEXT} characters`);
      return null;
    }
    return v;
  };
  const time = (name: string) => {
    const v = query[name]?.trim();
    if (!v) return null;
    const t = parseUtc(v);
    if (t === null) problems.push(`${name} is not a date and time such as 2026-12-03T13:45`);
    return t;
  };
  let status: EventStatus | null = null;
  const s = query.status?.trim();
  if (s) {
    if ((EVENT_STATUSES as readonly string[]).includes(s)) status = s as EventStatus;
    else problems.push(`status must be one of ${EVENT_STATUSES.join(', ')}`);
  }
  const filters: Filters = {
    status,
    event: text('event'),
    customer: text('customer'),
    from: time('since'),
    until: time('until'),
  };
  if (filters.from !== null && filters.until !== null && filters.from >= filters.until) {
    problems.push('"since" must be before "until"');
  }
  return { filters, problems };
}

/** The filters as query parameters (for links that keep them). */
export function filterParams(f: Filters): URLSearchParams {
  const p = new URLSearchParams();
  if (f.status) p.set('status', f.status);
  if (f.event) p.set('event', f.event);
  if (f.customer) p.set('customer', f.customer);
  if (f.from !== null) p.set('since', formatUtcInput(f.from));
  if (f.until !== null) p.set('until', formatUtcInput(f.until));
  return p;
}

function listOptions(f: Filters): ListOptions {
  const o: ListOptions = {};
  if (f.status) o.status = f.status;
  if (f.event) o.event = f.event;
  if (f.customer) o.customerId = f.customer;
  if (f.from !== null) o.receivedAfter = f.from - 1;
  if (f.until !== null) o.receivedBefore = f.until;
  return o;
}

/** Lets the event loop handle I/O (deliveries) before the next page of a long walk. */
const breathe = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

export interface EventsPage {
  records: EventRecord[];
  /** The seq to page newer from (`after=`), when there are newer matches. */
  newer: number | null;
  /** The seq to page older from (`before=`), when there are older matches. */
  older: number | null;
}

/**
 * One page of the events list, newest first. `before` pages to older records, `after` to newer ones; one extra record
 * is read to know whether there is another page, and the other direction is probed with a single record.
 */
export async function eventsPage(
  store: Store,
  f: Filters,
  cursor: { before?: number; after?: number },
  limit: number,
): Promise<EventsPage> {
  const base = listOptions(f);
  let records: EventRecord[];
  let newer: number | null = null;
  let older: number | null = null;
  if (cursor.after !== undefined) {
    const got = await store.list({ ...base, order: 'asc', afterSeq: cursor.after, limit: limit + 1 });
    records = got.slice(0, limit).reverse();
    if (got.length > limit && records[0]) newer = records[0].seq;
    const last = records.at(-1);
    if (last && (await store.list({ ...base, order: 'desc', beforeSeq: last.seq, limit: 1 })).length > 0)
      older = last.seq;
  } else {
    const got = await store.list({
      ...base,
      order: 'desc',
      limit: limit + 1,
      ...(cursor.before ? { beforeSeq: cursor.before } : {}),
    });
    records = got.slice(0, limit);
    const last = records.at(-1);
    if (got.length > limit && last) older = last.seq;
    const first = records[0];
    if (
      cursor.before !== undefined &&
      first &&
      (await store.list({ ...base, afterSeq: first.seq, limit: 1 })).length > 0
    ) {
      newer = first.seq;
    }
  }
  return { records, newer, older };
}

/** The record with this seq (the console's short id, as in the CLI), found through `list` by seq. */
export async function recordBySeq(store: Store, seq: number): Promise<EventRecord | null> {
  const [r] = await store.list({ afterSeq: seq - 1, beforeSeq: seq + 1, limit: 1 });
  return r && r.seq === seq ? r : null;
}

export interface Activity {
  /** Epoch ms where the first one-minute bucket starts. */
  start: number;
  bucketMs: number;
  /** Deliveries received per bucket (a coalesced signal counts each delivery it stands for). */
  received: number[];
  /** Handler outcomes per bucket, by when the record finished. */
  done: number[];
  dead: number[];
  /** Records read to draw it. */
  scanned: number;
  /** True when the read stopped at its limit before the hour ended: the older buckets are incomplete. */
  truncated: boolean;
  /** Outcomes count records received since this epoch ms (a record that finished in the hour but arrived before it is
   * not seen, e.g. one whose last retry came an hour later). */
  seenSince: number;
}

export const ACTIVITY_BUCKETS = 60;
const BUCKET_MS = 60_000;
// seq order and receivedAt order differ a little (a slow upload, another instance's clock): read a bit past the hour.
const SLACK_MS = 15 * 60_000;
const PAGE = 500;

/**
 * Deliveries and handler outcomes per minute over the last hour, from the store's newest records. Drawn from the
 * store rather than counted in memory: it then shows every instance's deliveries, survives a restart, and works on
 * serverless runtimes where nothing lives between requests.
 */
export async function activity(store: Store, now: number, maxRecords: number): Promise<Activity> {
  const start = Math.floor(now / BUCKET_MS) * BUCKET_MS - (ACTIVITY_BUCKETS - 1) * BUCKET_MS;
  const received = new Array<number>(ACTIVITY_BUCKETS).fill(0);
  const done = new Array<number>(ACTIVITY_BUCKETS).fill(0);
  const dead = new Array<number>(ACTIVITY_BUCKETS).fill(0);
  const bucket = (t: number) => {
    const i = Math.floor((t - start) / BUCKET_MS);
    return i >= 0 && i < ACTIVITY_BUCKETS ? i : -1;
  };
  let scanned = 0;
  let truncated = false;
  let beforeSeq: number | undefined;
  for (;;) {
    const limit = Math.min(PAGE, maxRecords - scanned);
    if (limit <= 0) {
      truncated = true;
      break;
    }
    const page = await store.list({ order: 'desc', limit, ...(beforeSeq === undefined ? {} : { beforeSeq }) });
    let newest = Number.NEGATIVE_INFINITY;
    for (const r of page) {
      scanned++;
      newest = Math.max(newest, r.receivedAt);
      const i = bucket(r.receivedAt);
      if (i >= 0) received[i] = (received[i] as number) + r.deliveries;
      if (r.finishedAt !== null && (r.status === 'done' || r.status === 'dead')) {
        const j = bucket(r.finishedAt);
        const series = r.status === 'done' ? done : dead;
        if (j >= 0) series[j] = (series[j] as number) + 1;
      }
    }
    const last = page.at(-1);
    // A whole page from before the hour (and its slack): nothing older can fall in it.
    if (!last || page.length < limit || newest < start - SLACK_MS) break;
    beforeSeq = last.seq;
    await breathe();
  }
  return { start, bucketMs: BUCKET_MS, received, done, dead, scanned, truncated, seenSince: start - SLACK_MS };
}

export interface Overview {
  counts: StatusCounts;
  activity: Activity;
  /** The open record that has waited longest (by seq: the first pending or retrying one). */
  oldestOpen: EventRecord | null;
  /** The newest dead letters. */
  dead: EventRecord[];
}

export async function overview(store: Store, now: number, chartLimit: number): Promise<Overview> {
  const [counts, pending, retrying, dead] = await Promise.all([
    store.counts(),
    store.list({ status: 'pending', limit: 1 }),
    store.list({ status: 'retrying', limit: 1 }),
    store.list({ status: 'dead', order: 'desc', limit: 10 }),
  ]);
  const open = [...pending, ...retrying].sort((a, b) => a.seq - b.seq);
  return { counts, activity: await activity(store, now, chartLimit), oldestOpen: open[0] ?? null, dead };
}

/** Dead letters the filters match (their status filter is ignored: only dead letters are requeued). */
const deadFilter = (f: Filters): Filters => ({ ...f, status: 'dead' });

export interface Matching {
  count: number;
  /** True when counting stopped at its limit: at least `count` match. */
  capped: boolean;
  sample: EventRecord[];
}

/** Counts the dead letters a filter matches, reading at most `cap` of them. */
export async function matchingDeadLetters(store: Store, f: Filters, cap: number): Promise<Matching> {
  const base = listOptions(deadFilter(f));
  const sample: EventRecord[] = [];
  let count = 0;
  let afterSeq = 0;
  for (;;) {
    const limit = Math.min(PAGE, cap - count);
    if (limit <= 0) return { count, capped: true, sample };
    const page = await store.list({ ...base, afterSeq, limit });
    count += page.length;
    for (const r of page) if (sample.length < 10) sample.push(r);
    const last = page.at(-1);
    if (!last || page.length < limit) return { count, capped: false, sample };
    afterSeq = last.seq;
    await breathe();
  }
}

/**
 * Requeues the dead letters a filter matches; returns how many. With no filter but the event name it is one
 * `requeueWhere` (a single statement on SQL stores); the store cannot filter a requeue by customer or time, so then
 * the matching dead letters are listed a page at a time and requeued one by one.
 */
export async function requeueMatching(store: Store, f: Filters, now: number): Promise<number> {
  if (f.customer === null && f.from === null && f.until === null) {
    return await store.requeueWhere({ status: ['dead'], ...(f.event ? { event: f.event } : {}) }, now);
  }
  const base = listOptions(deadFilter(f));
  let n = 0;
  let afterSeq = 0;
  for (;;) {
    const page = await store.list({ ...base, afterSeq, limit: PAGE });
    for (const r of page) if (await store.requeue(r.key, now)) n++;
    const last = page.at(-1);
    if (!last || page.length < PAGE) return n;
    afterSeq = last.seq;
    await breathe();
  }
}
