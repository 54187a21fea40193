// The defaults and checks of the store methods' options, shared by every store so that a bad option fails the same
// way on each (StoreUsageError naming the option) instead of one store returning everything and another nothing.
import { StoreUsageError } from '../errors.ts';
import {
  type ClaimOptions,
  EVENT_STATUSES,
  type EventStatus,
  type ListOptions,
  type PurgeOptions,
  type RequeueFilter,
} from './store.ts';

/** The largest page `list` returns: a bigger one would hold a million records in memory at once. */
export const MAX_LIST_LIMIT = 10_000;
export const DEFAULT_LIST_LIMIT = 100;

/** `list`'s options with their defaults; null means "any". */
export interface ListQuery {
  status: EventStatus | null;
  event: string | null;
  customerId: string | null;
  limit: number;
  /** 0 when not given: every store numbers records from 1. */
  afterSeq: number;
  /** `Number.MAX_SAFE_INTEGER` when not given, so a store can always bound the scan by seq on both sides. */
  beforeSeq: number;
  receivedAfter: number | null;
  receivedBefore: number | null;
  order: 'asc' | 'desc';
}

export interface RequeueQuery {
  statuses: EventStatus[];
  event: string | null;
}

export interface PurgeQuery {
  before: number;
  statuses: Array<'done' | 'dead'>;
  /** Null: no tombstone is deleted. */
  tombstonesBefore: number | null;
}

const FINISHED: readonly EventStatus[] = ['done', 'dead'];

function usage(store: string, method: string, what: string, value: unknown): StoreUsageError {
  return new StoreUsageError(`${store} store: ${method}() ${what}, got ${show(value)}`);
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(show).join(', ')}]`;
  return String(value);
}

function finite(store: string, method: string, name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw usage(store, method, `${name} must be a finite number (epoch ms)`, value);
  }
  return value;
}

function optionalString(store: string, method: string, name: string, value: unknown): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string') throw usage(store, method, `${name} must be a string`, value);
  return value;
}

function statuses<S extends EventStatus>(
  store: string,
  method: string,
  value: unknown,
  allowed: readonly S[],
  fallback: S[],
): S[] {
  if (value === undefined) return fallback;
  if (!Array.isArray(value)) throw usage(store, method, `status must be an array of ${allowed.join(', ')}`, value);
  for (const s of value) {
    if (!(allowed as readonly unknown[]).includes(s)) {
      throw usage(store, method, `status must name only ${allowed.join(', ')}`, value);
    }
  }
  return value as S[];
}

export function listQuery(store: string, options: ListOptions | undefined): ListQuery {
  const o = options ?? {};
  const limit = o.limit ?? DEFAULT_LIST_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT) {
    throw usage(store, 'list', `limit must be a whole number from 1 to ${MAX_LIST_LIMIT}`, limit);
  }
  if (o.status !== undefined && !EVENT_STATUSES.includes(o.status)) {
    throw usage(store, 'list', `status must be one of ${EVENT_STATUSES.join(', ')}`, o.status);
  }
  if (o.order !== undefined && o.order !== 'asc' && o.order !== 'desc') {
    throw usage(store, 'list', 'order must be asc or desc', o.order);
  }
  const optionalTime = (name: string, value: number | undefined) =>
    value === undefined ? null : finite(store, 'list', name, value);
  return {
    status: o.status ?? null,
    event: optionalString(store, 'list', 'event', o.event),
    customerId: optionalString(store, 'list', 'customerId', o.customerId),
    limit,
    afterSeq: o.afterSeq === undefined ? 0 : finite(store, 'list', 'afterSeq', o.afterSeq),
    beforeSeq: o.beforeSeq === undefined ? Number.MAX_SAFE_INTEGER : finite(store, 'list', 'beforeSeq', o.beforeSeq),
    receivedAfter: optionalTime('receivedAfter', o.receivedAfter),
    receivedBefore: optionalTime('receivedBefore', o.receivedBefore),
    order: o.order ?? 'asc',
  };
}

export function requeueQuery(store: string, filter: RequeueFilter | undefined): RequeueQuery {
  const f = filter ?? {};
  return {
    statuses: statuses(store, 'requeueWhere', f.status, EVENT_STATUSES, ['dead']),
    event: optionalString(store, 'requeueWhere', 'event', f.event),
  };
}

export function purgeQuery(store: string, options: PurgeOptions): PurgeQuery {
  const o = options ?? ({} as PurgeOptions);
  return {
    before: finite(store, 'purge', 'before', o.before),
    statuses: statuses(store, 'purge', o.status, FINISHED as Array<'done' | 'dead'>, ['done']),
    tombstonesBefore:
      o.tombstonesBefore === undefined ? null : finite(store, 'purge', 'tombstonesBefore', o.tombstonesBefore),
  };
}

/**
 * Checks a claim's options in place (no copy: the worker claims often). `limit` has no upper bound here: the worker
 * sizes it from its concurrency.
 */
export function checkClaim(store: string, options: ClaimOptions): void {
  const { owner, limit, leaseMs, now } = options;
  if (typeof owner !== 'string' || owner === '') throw usage(store, 'claim', 'owner must be a non-empty string', owner);
  if (!Number.isInteger(limit) || limit < 1) throw usage(store, 'claim', 'limit must be a whole number from 1', limit);
  if (typeof leaseMs !== 'number' || !(leaseMs > 0) || !Number.isFinite(leaseMs)) {
    throw usage(store, 'claim', 'leaseMs must be a number of ms above 0', leaseMs);
  }
  finite(store, 'claim', 'now', now);
}

/** Checks the clock given to `requeue`/`requeueWhere` (it becomes the event's due time). */
export function checkNow(store: string, method: string, now: number): void {
  finite(store, method, 'now', now);
}
