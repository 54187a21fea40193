// Turns a stored event back into a typed payload and calls the user's handler for it.
import { type EventName, type EventPayload, type UnknownEventPayload, validateEvent } from '../intake/events.ts';
import type { Logger } from '../observability/log.ts';
import type { EventRecord } from '../stores/store.ts';
import { NonRetryableError } from './retry.ts';

/** What a handler gets besides the payload. */
export interface HandlerContext {
  /** The idempotency key: stable across retries, so a handler can make its own side effects idempotent. */
  key: string;
  /** 1 on the first run, 2 on the first retry, … */
  attempt: number;
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

export type Handler<N extends EventName> = (event: EventPayload<N>, ctx: HandlerContext) => unknown;
export type UnknownHandler = (event: UnknownEventPayload, ctx: HandlerContext) => unknown;
/** One optional handler per known event, typed from the schemas. */
export type HandlerMap = { [N in EventName]?: Handler<N> };

const dec = new TextDecoder('utf-8', { fatal: true });

export function createDispatcher(handlers: HandlerMap, onUnknown: UnknownHandler | undefined, logger: Logger) {
  return async (record: EventRecord, signal: AbortSignal): Promise<void> => {
    let json: unknown;
    try {
      json = JSON.parse(dec.decode(record.body));
    } catch (error) {
      throw new NonRetryableError('stored body is not valid JSON', { cause: error });
    }
    const parsed = validateEvent(json);
    if (!parsed.ok) throw new NonRetryableError(parsed.reason);
    const log = logger.child({ key: record.key, event: parsed.name, customer_id: parsed.customerId });
    const ctx: HandlerContext = {
      key: record.key,
      attempt: record.attempts,
      receivedAt: new Date(record.receivedAt),
      deliveredAs: parsed.deliveredAs,
      headers: record.headers,
      body: record.body,
      logger: log,
      signal,
    };
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
    log.warn(parsed.known ? 'no handler for this event; recorded as done' : 'unknown event with no onUnknown handler; recorded as done');
  };
}
