// Turns a stored event back into a typed payload and calls the user's handler for it.
import {
  type EventName,
  type EventPayload,
  type ParsedEvent,
  type UnknownEventPayload,
  validateEvent,
} from '../intake/events.ts';
import type { Logger } from '../observability/log.ts';
import type { EventRecord, IdentityPolicy } from '../stores/store.ts';
import { NonRetryableError } from './retry.ts';

/** What a handler gets besides the payload. */
export interface HandlerContext {
  /**
   * The event's key: stable across retries and across a run that a crash cut off and that runs again after its
   * lease (delivery to handlers is at least once), so a handler can make its own side effects idempotent with it.
   */
  key: string;
  /** 1 on the first run, 2 on the first retry, … */
  attempt: number;
  /**
   * How the event's identity was kept: `once` (customer.created/deleted: one run per customer, ever), `signal`
   * (balance updates: identical copies coalesce while one waits), or `dedupe` (by an event id).
   */
  policy: IdentityPolicy;
  /**
   * Deliveries this run stands for: more than 1 when identical copies of a signal arrived while it waited. A
   * balance update carries no balance: read the current balance from Lava's API, whatever this number is.
   */
  deliveries: number;
  receivedAt: Date;
  /** The event name as Lava delivered it (differs from `event.event` for a legacy `connection.*` name). */
  deliveredAs: string;
  /** The request headers kept with the event (lower-case names). */
  headers: Record<string, string>;
  /** The raw body as received. */
  body: Uint8Array;
  /** A logger whose lines carry the key, event and customer id. */
  logger: Logger;
  /** Fires when the handler should stop: shutdown, timeout, or lease lost. */
  signal: AbortSignal;
}

/**
 * A handler for one event. It may run more than once for one event (a crash mid-run, a retry): use `ctx.key` to
 * make side effects idempotent. A `customer.wallet.balance.updated` payload is the customer object, not the new
 * balance: read the balance from Lava's API.
 */
export type Handler<N extends EventName> = (event: EventPayload<N>, ctx: HandlerContext) => unknown;
export type UnknownHandler = (event: UnknownEventPayload, ctx: HandlerContext) => unknown;
/** One optional handler per known event, typed from the schemas. */
export type HandlerMap = { [N in EventName]?: Handler<N> };

const dec = new TextDecoder('utf-8', { fatal: true });

type Valid = Extract<ParsedEvent, { ok: true }>;

/**
 * Events this process validated at intake, so their first run skips JSON.parse and zod. Bounded: an entry goes
 * when its event runs, and the oldest go when it is full (events claimed by another instance never run here).
 * A miss (a restart, a retry, another instance's event) parses the stored body as before. An entry is only used for
 * the very record it was made for: same key, same receivedAt, same body length.
 */
export class ParsedCache {
  readonly #entries = new Map<string, { receivedAt: number; bytes: number; parsed: Valid; n: number }>();
  // The keys in insertion order, as a ring: the entry made max sets ago is the one to drop, found without iterating.
  readonly #ring: (string | undefined)[];
  #n = 0;
  constructor(max = 4096) {
    this.#ring = new Array<string | undefined>(max).fill(undefined);
  }
  set(key: string, receivedAt: number, bytes: number, parsed: Valid): void {
    const n = this.#n++;
    const slot = n % this.#ring.length;
    const old = this.#ring[slot];
    if (old !== undefined && this.#entries.get(old)?.n === n - this.#ring.length) this.#entries.delete(old);
    this.#ring[slot] = key;
    this.#entries.set(key, { receivedAt, bytes, parsed, n });
  }
  /** The parsed event for this record, once; undefined when this process did not validate it. */
  take(record: EventRecord): Valid | undefined {
    const e = this.#entries.get(record.key);
    if (e === undefined) return undefined;
    this.#entries.delete(record.key);
    if (e.receivedAt !== record.receivedAt || e.bytes !== record.body.byteLength || record.attempts !== 1)
      return undefined;
    return e.parsed;
  }
  get size(): number {
    return this.#entries.size;
  }
}

function parse(record: EventRecord): Valid {
  let json: unknown;
  let text: string;
  try {
    text = dec.decode(record.body);
    json = JSON.parse(text);
  } catch (error) {
    throw new NonRetryableError('stored body is not valid JSON', { cause: error });
  }
  const parsed = validateEvent(json, text);
  if (!parsed.ok) throw new NonRetryableError(parsed.reason);
  return parsed;
}

/** Why an event with no handler is not marked done: nobody decided what it should do. */
export function noHandlerReason(event: string): string {
  return `no handler for ${event}: add one to handlers, or list it in ignore, then requeue this event`;
}

export function createDispatcher(
  handlers: HandlerMap,
  onUnknown: UnknownHandler | undefined,
  logger: Logger,
  cache?: ParsedCache,
  ignore: readonly string[] = [],
) {
  const ignored = new Set(ignore);
  const run = async (record: EventRecord, signal: () => AbortSignal): Promise<void> => {
    const parsed = cache?.take(record) ?? parse(record);
    let log: Logger | undefined;
    const logFor = () =>
      (log ??= logger.child({ key: record.key, event: parsed.name, customer_id: parsed.customerId }));
    // The logger, the signal and the Date are made when a handler asks for them: most handlers never do.
    const ctx = {
      key: record.key,
      attempt: record.attempts,
      policy: record.policy,
      deliveries: record.deliveries,
      get receivedAt() {
        return new Date(record.receivedAt);
      },
      deliveredAs: parsed.deliveredAs,
      headers: record.headers,
      body: record.body,
      get logger() {
        return logFor();
      },
      get signal() {
        return signal();
      },
    } as HandlerContext;
    const handler = parsed.known
      ? (handlers as Record<string, ((e: unknown, c: HandlerContext) => unknown) | undefined>)[parsed.name]
      : undefined;
    if (handler) {
      await handler(parsed.payload, ctx);
      return;
    }
    if (!parsed.known && onUnknown) {
      await onUnknown(parsed.payload as UnknownEventPayload, ctx);
      return;
    }
    if (parsed.known) {
      if (ignored.has(parsed.name)) {
        logFor().debug('event ignored as configured; recorded as done');
        return;
      }
      // A known event with no handler is most often a misspelt or forgotten one: a dead letter keeps it to replay.
      throw new NonRetryableError(noHandlerReason(parsed.name));
    }
    logFor().warn('unknown event with no onUnknown handler; recorded as done');
  };
  const dispatch = (record: EventRecord, signal: AbortSignal) => run(record, () => signal);
  // The worker passes the signal lazily, so a run whose handler never looks at it costs no AbortController.
  dispatch.withSignal = run;
  return dispatch;
}
