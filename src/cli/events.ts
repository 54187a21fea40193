// The store commands: events list/show/requeue/purge and stats, against the store the server would open.
import { existsSync } from 'node:fs';
import process from 'node:process';
import { resolve } from 'node:path';
import { loadStoreConfig } from '../config.ts';
import { type OpenedStore, chooseStore, openStore } from '../runtime/open-store.ts';
import { parseDuration } from '../config.ts';
import { EVENT_STATUSES, type EventRecord, type EventStatus, type Store } from '../stores/store.ts';
import { findEvent } from './find.ts';
import { confirm } from './input.ts';
import {
  CliError,
  EXIT_USAGE,
  UsageError,
  isoTime,
  jsonTime,
  maskHeaders,
  maskPayload,
  out,
  printJson,
  progressBar,
  relative,
  table,
  truncate,
} from './output.ts';

type Env = Record<string, string | undefined>;

export interface StoreFlags {
  db?: string;
  store?: string;
  kv?: string;
  'database-url'?: string;
  json?: boolean;
}

/** The server's environment, with the CLI's flags on top; a location flag alone also picks its store. */
export function storeEnv(flags: StoreFlags, env: Env): Env {
  const e: Env = { ...env };
  if (flags.store) e.LAVA_WEBHOOK_STORE = flags.store;
  if (flags.db) {
    e.LAVA_WEBHOOK_DB = flags.db;
    if (!flags.store) e.LAVA_WEBHOOK_STORE = 'sqlite';
  }
  if (flags.kv) {
    e.LAVA_WEBHOOK_KV = flags.kv;
    if (!flags.store) e.LAVA_WEBHOOK_STORE = 'kv';
  }
  if (flags['database-url']) {
    e.DATABASE_URL = flags['database-url'];
    if (!flags.store) e.LAVA_WEBHOOK_STORE = 'postgres';
  }
  return e;
}

function isLocalPath(p: string): boolean {
  return p !== ':memory:' && !p.startsWith('file:') && !/^https?:/.test(p);
}

function shownPath(p: string): string {
  const abs = resolve(p);
  return abs === p ? p : `${p} (${abs})`;
}

/** Opens the store, refusing to create an empty database where the user expected theirs. */
export async function openCliStore(flags: StoreFlags, env: Env): Promise<OpenedStore> {
  let config: ReturnType<typeof loadStoreConfig>;
  try {
    config = loadStoreConfig(storeEnv(flags, env));
  } catch (error) {
    throw new CliError((error as Error).message, EXIT_USAGE);
  }
  const kind = chooseStore(config);
  if (kind === 'memory') {
    throw new CliError(
      'the memory store lives inside the server process, the CLI cannot see it: use --db, --kv or --database-url',
      EXIT_USAGE,
    );
  }
  if (kind === 'sqlite' && isLocalPath(config.LAVA_WEBHOOK_DB) && !existsSync(config.LAVA_WEBHOOK_DB)) {
    throw new CliError(`no database at ${shownPath(config.LAVA_WEBHOOK_DB)} — set LAVA_WEBHOOK_DB or --db`);
  }
  if (
    kind === 'kv' &&
    config.LAVA_WEBHOOK_KV &&
    isLocalPath(config.LAVA_WEBHOOK_KV) &&
    !existsSync(config.LAVA_WEBHOOK_KV)
  ) {
    throw new CliError(`no Deno KV database at ${shownPath(config.LAVA_WEBHOOK_KV)} — set LAVA_WEBHOOK_KV or --kv`);
  }
  try {
    return await openStore(config);
  } catch (error) {
    throw new CliError(`could not open the ${kind} store: ${(error as Error).message}`);
  }
}

function parseStatus(value: string | undefined): EventStatus | undefined {
  if (value === undefined) return undefined;
  if (!(EVENT_STATUSES as string[]).includes(value)) {
    throw new UsageError(`--status must be one of ${EVENT_STATUSES.join(', ')}, got ${value}`, 'events list');
  }
  return value as EventStatus;
}

function parseLimit(value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value) || Number(value) < 1)
    throw new UsageError(`--limit must be a whole number from 1, got ${value}`, 'events list');
  return Number(value);
}

/** `2026-11-01`, any ISO date-time, or a duration back from now: `7d`, `12h`, `30m`. A bare number is ambiguous. */
export function parseBefore(value: string | undefined, now = Date.now()): number {
  const usage = 'events purge';
  if (!value)
    throw new UsageError('purge needs --before <date|duration>, e.g. --before 2026-11-01 or --before 7d', usage);
  if (/^\d{4}-\d{2}-\d{2}/.test(value)) {
    const at = Date.parse(value);
    if (Number.isNaN(at)) throw new UsageError(`--before: not a date: ${value}`, usage);
    return at;
  }
  const ms = /[a-z]\s*$/i.test(value) ? parseDuration(value) : null;
  if (ms === null)
    throw new UsageError(`--before: expected a date such as 2026-11-01 or a duration such as 7d, got ${value}`, usage);
  return now - ms;
}

function decodeBody(body: Uint8Array): { json: unknown } | { text: string } {
  const text = new TextDecoder().decode(body);
  try {
    return { json: JSON.parse(text) };
  } catch {
    return { text };
  }
}

function isLeased(r: EventRecord, now: number): boolean {
  return (r.status === 'pending' || r.status === 'retrying') && r.leaseUntil !== null && r.leaseUntil > now;
}

/**
 * The record for scripts: EventRecord's names, times as ISO strings, body decoded only when asked for (secrets and
 * personal data in it masked unless `reveal`).
 */
function recordJson(r: EventRecord, withBody: boolean, reveal = false): Record<string, unknown> {
  const base: Record<string, unknown> = {
    key: r.key,
    seq: r.seq,
    event: r.event,
    customerId: r.customerId,
    status: r.status,
    policy: r.policy,
    deliveries: r.deliveries,
    tombstone: r.tombstone,
    attempts: r.attempts,
    receivedAt: jsonTime(r.receivedAt),
    nextAttemptAt: r.status === 'pending' || r.status === 'retrying' ? jsonTime(r.nextAttemptAt) : null,
    leaseOwner: r.leaseOwner,
    leaseUntil: jsonTime(r.leaseUntil),
    lastError: r.lastError,
    finishedAt: jsonTime(r.finishedAt),
  };
  if (!withBody) return base;
  const body = decodeBody(r.body);
  return {
    ...base,
    headers: maskHeaders(r.headers),
    ...('json' in body ? { body: maskPayload(body.json, reveal) } : { bodyText: body.text }),
  };
}

export interface ListFlags extends StoreFlags {
  status?: string;
  event?: string;
  customer?: string;
  limit?: string;
  after?: string;
}

export async function listCommand(flags: ListFlags, env: Env): Promise<number> {
  const status = parseStatus(flags.status);
  const limit = parseLimit(flags.limit, 50);
  const afterSeq = flags.after === undefined ? undefined : Number(flags.after);
  if (afterSeq !== undefined && !Number.isInteger(afterSeq))
    throw new UsageError(`--after must be a seq number, got ${flags.after}`, 'events list');
  const { store } = await openCliStore(flags, env);
  try {
    const records = await store.list({ status, event: flags.event, customerId: flags.customer, limit, afterSeq });
    const last = records.at(-1);
    const nextAfter = records.length === limit && last ? last.seq : null;
    if (flags.json) {
      printJson({ events: records.map((r) => recordJson(r, false)), nextAfter });
      return 0;
    }
    if (records.length === 0) {
      out('no events match');
      return 0;
    }
    const now = Date.now();
    out(
      table(
        ['SEQ', 'STATUS', 'TRIES', 'RECEIVED (UTC)', 'EVENT', 'CUSTOMER', 'LAST ERROR', 'KEY'],
        records.map((r) => [
          String(r.seq),
          isLeased(r, now) ? `${r.status}*` : r.status,
          String(r.attempts),
          isoTime(r.receivedAt),
          r.event,
          r.customerId ?? '-',
          r.lastError ? truncate(r.lastError, 40) : '-',
          r.key,
        ]),
      ),
    );
    if (records.some((r) => isLeased(r, now))) out('* running now (leased by a worker)');
    if (nextAfter !== null) out(`more: add --after ${nextAfter}`);
    return 0;
  } finally {
    await store.close();
  }
}

export interface ShowFlags extends StoreFlags {
  /** Print the body's secrets and personal data as stored (headers named like a signature stay masked). */
  reveal?: boolean;
}

export async function showCommand(key: string | undefined, flags: ShowFlags, env: Env): Promise<number> {
  if (!key)
    throw new UsageError(
      'show: which event? pass its seq, key or the start of its key (see events list)',
      'events show',
    );
  const { store } = await openCliStore(flags, env);
  try {
    const r = await findEvent(store, key);
    if (flags.json) {
      printJson(recordJson(r, true, flags.reveal));
      return 0;
    }
    const now = Date.now();
    const rows: Array<[string, string]> = [
      ['key', r.key],
      ['event', r.event],
      ['customer', r.customerId ?? '-'],
      [
        'status',
        `${r.status}${isLeased(r, now) ? ` (running: leased by ${r.leaseOwner} until ${isoTime(r.leaseUntil)})` : ''}`,
      ],
      [
        'identity',
        `${r.policy}${r.tombstone ? ' (tombstone: only the key is kept, so a replay stays a duplicate)' : ''}`,
      ],
      ['deliveries', String(r.deliveries)],
      ['attempts', String(r.attempts)],
      ['seq', String(r.seq)],
      ['received', `${isoTime(r.receivedAt)} UTC (${relative(r.receivedAt, now)})`],
    ];
    if (r.status === 'pending' || r.status === 'retrying') {
      rows.push([
        'next attempt',
        `${isoTime(r.nextAttemptAt)} UTC (${r.nextAttemptAt <= now ? 'due' : relative(r.nextAttemptAt, now)})`,
      ]);
    }
    if (r.finishedAt !== null) rows.push(['finished', `${isoTime(r.finishedAt)} UTC (${relative(r.finishedAt, now)})`]);
    rows.push(['last error', r.lastError ?? '-']);
    for (const [name, value] of rows) out(`${name.padEnd(13)}${value}`);
    out('\nheaders');
    const headers = maskHeaders(r.headers);
    if (Object.keys(headers).length === 0) out('  (none kept)');
    for (const [name, value] of Object.entries(headers)) out(`  ${name}: ${value}`);
    out('\nbody');
    const body = decodeBody(r.body);
    const text = 'json' in body ? JSON.stringify(maskPayload(body.json, flags.reveal), null, 2) : body.text;
    out(text.replace(/^/gm, '  '));
    if (r.status === 'dead' && !r.tombstone) out(`\nreplay it with: lava-webhooks events requeue '${r.key}'`);
    return 0;
  } finally {
    await store.close();
  }
}

export interface RequeueFlags extends StoreFlags {
  'all-dead'?: boolean;
  event?: string;
  force?: boolean;
}

export async function requeueCommand(id: string | undefined, flags: RequeueFlags, env: Env): Promise<number> {
  const usage = 'events requeue';
  if (id && flags['all-dead']) throw new UsageError('requeue: pass a key or --all-dead, not both', usage);
  if (!id && !flags['all-dead'])
    throw new UsageError('requeue: pass the seq or key of one event, or --all-dead', usage);
  if (id && flags.event)
    throw new UsageError('requeue: --event filters --all-dead; with a key it means nothing', usage);
  const { store } = await openCliStore(flags, env);
  try {
    if (id) {
      const now = Date.now();
      const before = await findEvent(store, id);
      const key = before.key;
      if (before.tombstone) {
        throw new CliError(
          `${key} is a tombstone: purge kept only its key, not its body, so there is nothing to run again`,
        );
      }
      if (isLeased(before, now) && !flags.force) {
        throw new CliError(
          `${key} is running right now (leased by ${before.leaseOwner} until ${isoTime(before.leaseUntil)} UTC): ` +
            'wait for it to finish, or pass --force to run it again anyway',
        );
      }
      // Only the store is written: a running receiver finds the event on its next poll.
      if (!(await store.requeue(key, now))) throw new CliError(`no event with key ${key}`);
      if (flags.json) printJson({ requeued: 1, keys: [key], previousStatus: before.status });
      else
        out(
          `requeued ${key} (was ${before.status} after ${before.attempts} attempt${before.attempts === 1 ? '' : 's'}): a running receiver picks it up on its next poll`,
        );
      return 0;
    }
    // One by one, so the bar moves and an interrupted run leaves each event either requeued or still dead.
    const keys: string[] = [];
    for (let afterSeq: number | undefined; ; ) {
      const page = await store.list({ status: 'dead', event: flags.event, limit: 500, afterSeq });
      for (const r of page) if (!r.tombstone) keys.push(r.key);
      const last = page.at(-1);
      if (page.length < 500 || !last) break;
      afterSeq = last.seq;
    }
    const bar = flags.json ? null : progressBar(keys.length, 'requeueing');
    let requeued = 0;
    const done: string[] = [];
    for (const k of keys) {
      if (await store.requeue(k, Date.now())) {
        requeued++;
        done.push(k);
      }
      bar?.tick();
    }
    bar?.done();
    const what = `dead letter${requeued === 1 ? '' : 's'}${flags.event ? ` of ${flags.event}` : ''}`;
    if (flags.json) printJson({ requeued, keys: done });
    else if (requeued === 0) out(`no ${what} to requeue`);
    else
      out(
        `requeued ${requeued} ${what}: a running receiver picks ${requeued === 1 ? 'it' : 'them'} up on its next poll`,
      );
    return 0;
  } finally {
    await store.close();
  }
}

/** Records read per page when counting what a purge would remove. */
const COUNT_PAGE = 500;
/** Counting stops after reading this many records: the count is then a lower bound, and says so. */
export const PURGE_COUNT_LIMIT = 200_000;

export interface PurgeCount {
  /** Records the purge would delete or turn into tombstones (its own rule: finished before, not a tombstone yet). */
  count: number;
  /** False when counting stopped at PURGE_COUNT_LIMIT: there are at least `count`. */
  exact: boolean;
}

/**
 * What `store.purge({ before, status })` would remove, counted with list() because purge has no dry run. Reads each
 * status in seq order, which is not finishing order, so every record of those statuses is read, up to the limit.
 */
export async function countPurgeable(
  store: Store,
  before: number,
  statuses: Array<'done' | 'dead'>,
  limit = PURGE_COUNT_LIMIT,
): Promise<PurgeCount> {
  let count = 0;
  let read = 0;
  for (const status of statuses) {
    for (let afterSeq: number | undefined; ; ) {
      const size = Math.min(COUNT_PAGE, limit - read);
      const page = await store.list({ status, limit: size, afterSeq });
      read += page.length;
      for (const r of page) if (!r.tombstone && r.finishedAt !== null && r.finishedAt < before) count++;
      const last = page.at(-1);
      if (!last || page.length < size) break;
      // A full page at the limit: whether anything is left is not known, so the count is only a lower bound.
      if (read >= limit) return { count, exact: false };
      afterSeq = last.seq;
    }
  }
  return { count, exact: true };
}

export interface PurgeFlags extends StoreFlags {
  before?: string;
  'include-dead'?: boolean;
  yes?: boolean;
  'dry-run'?: boolean;
}

export async function purgeCommand(flags: PurgeFlags, env: Env, isTTY = Boolean(process.stdin.isTTY)): Promise<number> {
  const before = parseBefore(flags.before);
  const status: Array<'done' | 'dead'> = flags['include-dead'] ? ['done', 'dead'] : ['done'];
  if (flags.yes && flags['dry-run']) throw new UsageError('pass --yes or --dry-run, not both', 'events purge');
  const { store } = await openCliStore(flags, env);
  try {
    const what = `${status.join(' and ')} event`;
    const when = `finished before ${isoTime(before)} UTC`;
    if (!flags.yes) {
      const { count, exact } = await countPurgeable(store, before, status);
      const n = exact ? String(count) : `at least ${count}`;
      const summary = `${n} ${what}${count === 1 && exact ? '' : 's'} ${when}`;
      if (flags['dry-run']) {
        if (flags.json) printJson({ dryRun: true, wouldPurge: count, exact, before: jsonTime(before), status });
        else out(`would purge ${summary} (dry run: nothing removed)`);
        return 0;
      }
      if (!isTTY) {
        throw new CliError(
          `would purge ${summary}; not asking without a terminal, and nothing was removed: add --yes to purge`,
          EXIT_USAGE,
        );
      }
      if (count === 0 && exact) {
        out(`nothing to purge: no ${what}s ${when}`);
        return 0;
      }
      if (!(await confirm(`purge ${summary}?`))) {
        throw new CliError('purge cancelled: nothing was removed');
      }
    }
    const purged = await store.purge({ before, status });
    if (flags.json) printJson({ purged, before: jsonTime(before), status });
    else {
      out(`purged ${purged} ${what}${purged === 1 ? '' : 's'} ${when}`);
      out('customer.created and customer.deleted keep a tombstone of their key, so a replay of them stays a duplicate');
      if (!flags['include-dead']) out('dead letters are kept; add --include-dead to purge them too');
    }
    return 0;
  } finally {
    await store.close();
  }
}

export async function statsCommand(flags: StoreFlags, env: Env): Promise<number> {
  const { store, kind, where } = await openCliStore(flags, env);
  try {
    const counts = await store.counts();
    const total = EVENT_STATUSES.reduce((n, s) => n + counts[s], 0);
    if (flags.json) {
      printJson({ ...counts, total, store: { kind, where } });
      return 0;
    }
    out(`store     ${kind} ${where}`);
    for (const s of ['pending', 'retrying', 'dead', 'done'] as const) out(`${s.padEnd(10)}${counts[s]}`);
    out(`${'total'.padEnd(10)}${total}`);
    if (counts.dead > 0)
      out(`\n${counts.dead} dead: see them with events list --status dead; replay with events requeue --all-dead`);
    return 0;
  } finally {
    await store.close();
  }
}
