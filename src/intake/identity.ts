// Event identity: which deliveries are the same event, and what a repeat of one means. The policy of each known
// event is declared beside its schema (`identityPolicies` in events.ts); this file turns a delivery into a key.
import type { EventRecord, IdentityPolicy, MaybePromise, Store } from '../stores/store.ts';
import { type EventName, type EventPayload, identityPolicies } from './events.ts';
import { type Sha256Hex, sha256Hex } from './signature.ts';

/** What a key function sees. */
export interface KeyInput<P = Record<string, unknown>> {
  /** Event name after legacy mapping. */
  event: string;
  customerId: string | null;
  payload: P;
  body: Uint8Array;
  headers: Headers;
}

/** Returns the key, or null/undefined to fall back to the event's own policy. */
export type KeyFunction<P = Record<string, unknown>> = (
  input: KeyInput<P>,
) => string | null | undefined | Promise<string | null | undefined>;

/**
 * A per-event override. `policy` replaces the event's declared policy; `key` names its identity (prefixed
 * `custom:`): under `once` and `dedupe` it is the record's key, under `signal` what identical copies share.
 * A key function that returns nothing falls back to the event's own key.
 */
export interface IdentityRule<P = Record<string, unknown>> {
  policy?: IdentityPolicy;
  key?: KeyFunction<P>;
}

/** Overrides by event name: known events get their typed payload, any other name a plain object. */
export type IdentityRules = { [N in EventName]?: IdentityRule<EventPayload<N>> } & {
  [event: string]: IdentityRule<never> | undefined;
};

/** What intake stores a delivery under. */
export interface Identity {
  /** The record's key. */
  key: string;
  policy: IdentityPolicy;
  /** For `signal`: what identical copies share. */
  coalesceKey: string | null;
}

/** The declared policy of an event (after legacy mapping): events without a declaration are state signals. */
export function policyOf(event: string): IdentityPolicy {
  return Object.hasOwn(identityPolicies, event) ? identityPolicies[event as EventName] : 'signal';
}

/** The key of a `once` event: one per event name and customer, ever (until the tombstone horizon). */
export const onceKey = (event: string, customerId: string): string => `${event}:${customerId}`;

// Signal records need a key of their own each: the arrival time, this process's random tag and a counter make it
// unique across instances without asking the store for a number. The tag is made at first use: Cloudflare Workers
// refuse random values at a module's top level.
// The key is `<event>@<suffix>`, the arrival time first after the event name, so each store's unique index of keys
// grows at its end, as a log does. The body hash (what copies share) is the record's coalesce key, not part of its key:
// a key that began with it put each insert on a random page of an index that holds every kept event, one page written
// an event (`npx bun bench/sqlite-frames.ts`: 1.35 frames of the key index an event, 2.77 of all; time first, about
// 0.5 and 1.9 of them, the rest from customer.created keys there).
let tag = '';
let counter = 0;
// The last arrival time and its base-36 form: deliveries of the same millisecond reuse it (a number's conversion to
// base 36 showed on the request path's profile).
let lastAt = Number.NaN;
let lastAt36 = '';
function uniqueSuffix(receivedAt: number): string {
  if (tag === '') {
    tag = Array.from(crypto.getRandomValues(new Uint8Array(4)), (b) => b.toString(16).padStart(2, '0')).join('');
  }
  if (receivedAt !== lastAt) {
    lastAt = receivedAt;
    lastAt36 = receivedAt.toString(36);
  }
  return `${lastAt36}.${tag}${(counter++).toString(36)}`;
}

export interface IdentifyOptions {
  rules?: IdentityRules;
  digest?: Sha256Hex;
  /** Use a `webhook-id` request header as the event's identity (it is not covered by the signature). */
  trustIdHeader?: boolean;
  receivedAt: number;
}

/**
 * The identity of a valid delivery, in order:
 * 1. a rule's key function, when it returns a key (under the rule's policy, else the event's);
 * 2. `once` events (customer.created/deleted): `event:customer_id`;
 * 3. an identity from the sender: the `webhook-id` header, only when `trustIdHeader` is set, then a top-level `id`
 *    field (`dedupe`);
 * 4. otherwise the hash of the raw body: a `signal` coalesces copies that wait, a `dedupe` event is deduplicated.
 *
 * The header is not trusted by default: Lava sends none, and its signature covers the body only, so anyone holding
 * one captured delivery could send it again under new `webhook-id`s and have each copy run as a new event.
 * Synchronous when the digest is and no key function is async: no promise on the request path for the common case.
 */
export function identify(input: KeyInput, options: IdentifyOptions): Identity | Promise<Identity> {
  const rule = options.rules?.[input.event] as IdentityRule | undefined;
  const policy = rule?.policy ?? policyOf(input.event);
  if (rule?.key) {
    return Promise.resolve(rule.key(input)).then((custom) =>
      custom ? ofKey(`custom:${custom}`, policy, input.event, options.receivedAt) : fallback(input, policy, options),
    );
  }
  return fallback(input, policy, options);
}

/** `key` is the identity: of the record itself, or for a signal, what its copies share (see uniqueSuffix). */
function ofKey(key: string, policy: IdentityPolicy, event: string, receivedAt: number): Identity {
  if (policy === 'signal') return { key: `${event}@${uniqueSuffix(receivedAt)}`, policy, coalesceKey: key };
  return { key, policy, coalesceKey: null };
}

function fallback(input: KeyInput, policy: IdentityPolicy, options: IdentifyOptions): Identity | Promise<Identity> {
  if (policy === 'once' && input.customerId)
    return { key: onceKey(input.event, input.customerId), policy, coalesceKey: null };
  if (options.trustIdHeader) {
    const header = input.headers.get('webhook-id')?.trim();
    if (header) return { key: `id:${header}`, policy: 'dedupe', coalesceKey: null };
  }
  const id = input.payload.id;
  if ((typeof id === 'string' && id.length > 0) || (typeof id === 'number' && Number.isFinite(id))) {
    return { key: `id:${id}`, policy: 'dedupe', coalesceKey: null };
  }
  // A once event without a customer has nothing to be once per: its copies are deduplicated by their bytes.
  const hashed = policy === 'signal' ? 'signal' : 'dedupe';
  const hex = (options.digest ?? sha256Hex)(input.body);
  const prefix = `${input.event}:sha256:`;
  return typeof hex === 'string'
    ? ofKey(prefix + hex, hashed, input.event, options.receivedAt)
    : hex.then((h) => ofKey(prefix + h, hashed, input.event, options.receivedAt));
}

/** Key for a delivery that failed validation: the same bad bytes are one dead letter, not many. */
export async function invalidKey(body: Uint8Array, digest: Sha256Hex = sha256Hex): Promise<string> {
  return `invalid:sha256:${await digest(body)}`;
}

/**
 * Why a claimed record must not run, or null. A `customer.created` is not run once its customer's
 * `customer.deleted` is recorded before it, or has run: that is a replay (or a requeue) that would give a deleted
 * customer access again.
 */
export function refusal(record: EventRecord, store: Pick<Store, 'get'>): MaybePromise<string | null> {
  if (record.event !== 'customer.created' || record.policy !== 'once' || record.customerId === null) return null;
  const customerId = record.customerId;
  const check = (deleted: EventRecord | null): string | null => {
    if (!deleted || (deleted.seq > record.seq && deleted.status !== 'done')) return null;
    return (
      `customer ${customerId} was deleted (customer.deleted received ${new Date(deleted.receivedAt).toISOString()}); ` +
      'a customer.created after it is not run, since it would give a deleted customer access again'
    );
  };
  const found = store.get(onceKey('customer.deleted', customerId));
  return found instanceof Promise ? found.then(check) : check(found);
}
