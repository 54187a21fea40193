// The request path: bounded read, signature, content type, parse and validate, identity, durable insert.
// It ends when the event is committed; nothing a handler does can slow the ack or lose the event.
import { DEFAULT_REJECTION_LOG_RATE, type Logger, rateLimited } from '../observability/log.ts';
import type { DeliveryOutcome, Metrics } from '../observability/metrics.ts';
import {
  type EventRecord,
  type InsertLease,
  type InsertResult,
  type NewEvent,
  type Store,
  StoreUnavailableError,
} from '../stores/store.ts';
import { BodyMemoryError, BodyTimeoutError, PayloadTooLargeError, type ReadBodyOptions, readBody } from './body.ts';
import type { BodyBudget } from './budget.ts';
import { within } from './deadlines.ts';
import { type ParsedEvent, validateEvent } from './events.ts';
import { type Identity, type IdentityRules, identify, invalidKey } from './identity.ts';
import { type Sha256Hex, type Verifier, parseSignatureHeader, sha256Hex } from './signature.ts';

export interface IntakeConfig {
  store: Store;
  verifier: Verifier;
  /** SHA-256 hex for body-hash keys. Default SubtleCrypto. */
  digest?: Sha256Hex;
  bodyLimit: number;
  bodyTimeoutMs: number;
  /** Memory shared by all bodies being read; past it, a delivery answers 503 with Retry-After. */
  bodyBudget?: BodyBudget;
  /**
   * Where rejections anyone can cause before being authenticated (401, 413, 408, 503 for memory) are logged: a
   * rate-limited logger (see `rateLimited`). Default `logger` limited to 10 lines a second.
   */
  unauthenticatedLogger?: Logger;
  /** An insert that takes longer answers 503 (the store is hanging). */
  storeTimeoutMs: number;
  /** Lower-case names of the request headers stored with each event. */
  keepHeaders: readonly string[];
  /** Per-event identity overrides (policy and key function). */
  identityRules?: IdentityRules;
  /** Use a `webhook-id` request header as the key (it is not covered by the signature). Default false. */
  trustIdHeader?: boolean;
  logger: Logger;
  metrics: Metrics;
  now: () => number;
  /** Called when a new valid event was recorded, with what intake parsed (the worker can skip parsing it again). */
  onAccepted?: (key: string, receivedAt: number, bytes: number, parsed: Extract<ParsedEvent, { ok: true }>) => void;
  /**
   * The worker's side of leases taken by inserts (a store with `capabilities.leaseOnInsert`): a lease for the insert
   * of a valid delivery, when the worker has room, and where its answer goes once the insert settled.
   */
  leases?: { offer(): InsertLease | undefined; adopt(record: EventRecord | undefined): void };
}

export interface IntakeResult {
  status: number;
  body: Record<string, unknown>;
  outcome: DeliveryOutcome;
  /** Set when a new pending event was recorded (the worker has work). */
  recorded?: boolean;
  /** Response headers beyond the content type (Retry-After on a 503 for memory). */
  headers?: Record<string, string>;
}

const GENERIC_401 = { error: 'invalid signature' };
const BUSY_503 = { error: 'too many deliveries in flight' };
const RETRY_SOON = { 'retry-after': '1' };
/** The body of a 200 for a newly recorded event (one shared object, so the app can answer it from a constant). */
export const RECEIVED: Readonly<Record<string, unknown>> = Object.freeze({ received: true });
/** A repeat of an event already recorded (same `once` customer, same event id): nothing new was written. */
const DUPLICATE = Object.freeze({ received: true, duplicate: true });
/** A copy of a state signal counted into the identical copy still waiting: one run will stand for both. */
const COALESCED = Object.freeze({ received: true, coalesced: true });
const dec = new TextDecoder('utf-8', { fatal: true });

/** The body as text, or a TypeError when it is not UTF-8 (a lone replacement character must not pass validation). */
export const decodeUtf8 = (body: Uint8Array): string => dec.decode(body);

/** `application/json` with any parameters, or no content type at all. */
export function isJsonContentType(value: string | null): boolean {
  if (value === 'application/json') return true;
  if (value === null || value.trim() === '') return true;
  const type = value.split(';', 1)[0]?.trim().toLowerCase();
  return type === 'application/json';
}

type Valid = Extract<ParsedEvent, { ok: true }>;
type Invalid = Extract<ParsedEvent, { ok: false }>;

/**
 * The request path's steps, each answering its own failures (status, log line, metrics outcome, dead letter). The
 * receiver's fast path (`createIntake`) runs them in one function; the Hono-chain variant kept as the benchmark's
 * comparison point (src/http/delivery-chain.ts) runs the same steps as middleware, so the two differ only in plumbing.
 */
export interface IntakeSteps {
  /** What `readBody` is given: the limit, the deadline and the memory budget shared by all bodies in flight. */
  readOptions: ReadBodyOptions;
  verifier: Verifier;
  now: () => number;
  /** 1. The answer to a body that could not be read: 413, 408, 503 with Retry-After (memory), else 400. */
  unreadable(error: unknown): IntakeResult;
  /** 2. The one generic 401 (why is only logged, rate-limited). `bytes` is the body's length when it was read. */
  unauthenticated(header: string | null, bytes: number | null): IntakeResult;
  /** 3. The 415 for a content type other than JSON, once the body is kept as a dead letter (503 if it cannot be). */
  unsupported(body: Uint8Array, headers: Headers, contentType: string | null, received: number): Promise<IntakeResult>;
  /** 4. The 400 for a body that is not JSON (or not UTF-8), once it is kept as a dead letter. */
  notJson(body: Uint8Array, headers: Headers, error: unknown, received: number): Promise<IntakeResult>;
  /** 4. The 400 for JSON that is not a valid delivery, with zod's issues, once it is kept as a dead letter. */
  invalid(body: Uint8Array, headers: Headers, parsed: Invalid, received: number): Promise<IntakeResult>;
  /** 5, 6. Identity and the durable insert-if-absent of a valid delivery: 200 (new, duplicate, coalesced) or 503. */
  record(
    parsed: Valid,
    body: Uint8Array,
    headers: Headers,
    received: number,
    matched: number,
  ): IntakeResult | Promise<IntakeResult>;
  /** Gives back a read body's bytes to the memory budget, once its delivery is answered. */
  release(body: Uint8Array): void;
}

export function createIntakeSteps(config: IntakeConfig): IntakeSteps {
  const { store, logger, metrics } = config;
  const digest = config.digest ?? sha256Hex;
  const budget = config.bodyBudget;
  // Lines that anyone on the network can cause, before the signature says who sent the request.
  const unauthenticated =
    config.unauthenticatedLogger ?? rateLimited(logger, { perSecond: DEFAULT_REJECTION_LOG_RATE });
  const rules = config.identityRules;
  const trustIdHeader = config.trustIdHeader === true;

  function pickHeaders(headers: Headers): Record<string, string> {
    const out: Record<string, string> = {};
    for (const name of config.keepHeaders) {
      const v = headers.get(name);
      if (v !== null) out[name] = v.slice(0, 1024);
    }
    return out;
  }

  function result(outcome: DeliveryOutcome, status: number, body: Record<string, unknown>): IntakeResult {
    metrics.delivery(outcome);
    return { status, body, outcome };
  }

  function insertFailed(event: NewEvent, error: unknown): null {
    logger.error('store could not record the delivery; answering 503', {
      outcome: 'store_unavailable',
      key: event.key,
      event: event.event,
      error,
    });
    return null;
  }

  const leases = store.capabilities.leaseOnInsert ? config.leases : undefined;
  const adopt = leases ? (r: InsertResult) => leases.adopt(r.leased) : undefined;
  const adoptNone = leases ? () => leases.adopt(undefined) : undefined;

  /**
   * The store's answer, or null when it failed or timed out; synchronous stores answer without a promise. With a
   * lease, the worker hears how the insert settled (the store's own answer, whenever it comes, not the timeout's).
   */
  function insert(event: NewEvent, lease?: InsertLease): InsertResult | null | Promise<InsertResult | null> {
    let work: ReturnType<Store['insert']>;
    try {
      work = store.insert(event, lease);
    } catch (error) {
      if (lease) adoptNone?.();
      return insertFailed(event, error);
    }
    if (!(work instanceof Promise)) {
      if (lease) adopt?.(work);
      return work;
    }
    if (lease) work.then(adopt, adoptNone);
    const ms = config.storeTimeoutMs;
    return within(
      work,
      ms,
      () => new StoreUnavailableError(`${store.name} store insert did not answer within ${ms} ms`),
    ).catch((error) => insertFailed(event, error));
  }

  /**
   * Records an authenticated delivery that cannot be processed, so it is never lost; answers `answer` once it is
   * stored, 503 when it could not be.
   */
  async function deadLetter(
    body: Uint8Array,
    headers: Headers,
    name: string,
    customerId: string | null,
    reason: string,
    received: number,
    answer: () => IntakeResult,
  ): Promise<IntakeResult> {
    const key = await invalidKey(body, digest);
    const stored = await insert({
      key,
      event: name,
      customerId,
      body,
      headers: pickHeaders(headers),
      receivedAt: received,
      status: 'dead',
      lastError: reason,
    });
    if (!stored) return result('store_unavailable', 503, { error: 'store unavailable' });
    logger.warn('delivery rejected and kept as a dead letter', { key, event: name, reason });
    return answer();
  }

  /** The answer once the store answered the insert of a valid delivery. */
  function answer(
    stored: InsertResult | null,
    parsed: Valid,
    identity: Identity,
    body: Uint8Array,
    received: number,
    matched: number,
  ): IntakeResult {
    const ms = config.now() - received;
    if (!stored) return result('store_unavailable', 503, { error: 'store unavailable' });
    const { key, policy } = identity;
    // The info lines' fields are built only when info is written (most servers log at info, benchmarks at warn).
    const info = logger.enabled?.('info') !== false;
    const fields = () => ({
      key,
      event: parsed.name,
      customer_id: parsed.customerId,
      policy,
      ms,
      key_slot: matched || undefined,
    });
    if (!stored.inserted) {
      if (stored.coalescedInto !== undefined) {
        const into = stored.coalescedInto;
        if (info)
          logger.info('identical delivery coalesced into the copy still waiting', {
            ...fields(),
            key: into,
            outcome: 'coalesced',
          });
        return result('coalesced', 200, COALESCED as Record<string, unknown>);
      }
      if (info) logger.info('duplicate delivery ignored', { ...fields(), outcome: 'duplicate' });
      return result('duplicate', 200, DUPLICATE as Record<string, unknown>);
    }
    config.onAccepted?.(key, received, body.byteLength, parsed);
    if (info) logger.info(parsed.known ? 'accepted' : 'unknown event recorded', { ...fields(), outcome: 'accepted' });
    const r = result('accepted', 200, RECEIVED as Record<string, unknown>);
    r.recorded = true;
    return r;
  }

  function insertIdentified(
    identity: Identity,
    parsed: Valid,
    body: Uint8Array,
    headers: Headers,
    received: number,
    matched: number,
  ): IntakeResult | Promise<IntakeResult> {
    const inserting = insert(
      {
        key: identity.key,
        policy: identity.policy,
        coalesceKey: identity.coalesceKey,
        event: parsed.name,
        customerId: parsed.customerId,
        body,
        headers: pickHeaders(headers),
        receivedAt: received,
        status: 'pending',
      },
      leases?.offer(),
    );
    return inserting instanceof Promise
      ? inserting.then((stored) => answer(stored, parsed, identity, body, received, matched))
      : answer(inserting, parsed, identity, body, received, matched);
  }

  return {
    readOptions: { limit: config.bodyLimit, timeoutMs: config.bodyTimeoutMs, budget },
    verifier: config.verifier,
    now: config.now,

    unreadable(error) {
      if (error instanceof PayloadTooLargeError) {
        unauthenticated.warn('body too large', { outcome: 'too_large', reason: error.message });
        return result('too_large', 413, { error: 'payload too large', limit_bytes: config.bodyLimit });
      }
      if (error instanceof BodyTimeoutError) {
        unauthenticated.warn('body timed out', { outcome: 'body_timeout', reason: error.message });
        return result('body_timeout', 408, { error: 'request body timed out' });
      }
      if (error instanceof BodyMemoryError) {
        unauthenticated.warn('body memory limit reached; answering 503', {
          outcome: 'overloaded',
          reason: error.message,
        });
        const r = result('overloaded', 503, BUSY_503);
        r.headers = RETRY_SOON;
        return r;
      }
      unauthenticated.warn('body could not be read', { outcome: 'invalid_payload', error });
      return result('invalid_payload', 400, { error: 'body could not be read' });
    },

    unauthenticated(header, bytes) {
      unauthenticated.warn(
        'signature rejected',
        bytes === null
          ? {
              outcome: 'invalid_signature',
              reason:
                header === null ? 'missing X-Webhook-Signature header' : 'malformed signature (not 64 hex digits)',
            }
          : { outcome: 'invalid_signature', reason: 'signature does not match any configured secret', bytes },
      );
      return result('invalid_signature', 401, GENERIC_401);
    },

    unsupported(body, headers, contentType, received) {
      const reason = `unsupported content type ${JSON.stringify(contentType?.slice(0, 100))}`;
      return deadLetter(body, headers, 'unknown', null, reason, received, () =>
        result('unsupported_media_type', 415, { error: 'unsupported media type', expected: 'application/json' }),
      );
    },

    notJson(body, headers, error, received) {
      const reason = `body is not valid JSON: ${(error as Error).message}`.slice(0, 300);
      return deadLetter(body, headers, 'unknown', null, reason, received, () =>
        result('invalid_payload', 400, { error: 'invalid payload', issues: [{ message: 'body is not valid JSON' }] }),
      );
    },

    invalid(body, headers, parsed, received) {
      return deadLetter(body, headers, parsed.name, parsed.customerId, parsed.reason, received, () => {
        const issues = (parsed.issues ?? [])
          .slice(0, 20)
          .map((i) => ({ path: i.path.map(String), message: i.message }));
        return result('invalid_payload', 400, { error: 'invalid payload', issues });
      });
    },

    record(parsed, body, headers, received, matched) {
      const identified = identify(
        { event: parsed.name, customerId: parsed.customerId, payload: parsed.payload, body, headers },
        { rules, digest, trustIdHeader, receivedAt: received },
      );
      return identified instanceof Promise
        ? identified.then((identity) => insertIdentified(identity, parsed, body, headers, received, matched))
        : insertIdentified(identified, parsed, body, headers, received, matched);
    },

    release(body) {
      budget?.give(body.byteLength);
    },
  };
}

/** The request path in one function: the steps in order, with no framework between them (the receiver's fast path). */
export function createIntake(steps: IntakeSteps): (request: Request) => Promise<IntakeResult> {
  const { readOptions, verifier, now } = steps;

  return async function intake(request: Request): Promise<IntakeResult> {
    const received = now();
    const headers = request.headers;

    // 1. Bounded body read, within the memory all bodies in flight may hold together.
    let body: Uint8Array;
    try {
      body = await readBody(request, readOptions);
    } catch (error) {
      return steps.unreadable(error);
    }
    // The body's bytes stay counted until the delivery is answered: until then the store may still be writing them.
    // A try/finally in this function rather than a helper: no second promise per delivery.
    try {
      // 2. Signature over the raw bytes.
      const rawSignature = headers.get('x-webhook-signature');
      const signature = parseSignatureHeader(rawSignature);
      if (!signature) return steps.unauthenticated(rawSignature, null);
      const verdict = verifier.verify(body, signature);
      const matched = typeof verdict === 'number' ? verdict : await verdict;
      if (matched < 0) return steps.unauthenticated(rawSignature, body.byteLength);

      // 3. Content type (the sender is authenticated from here on: what it sent is kept).
      const contentType = headers.get('content-type');
      if (!isJsonContentType(contentType)) return await steps.unsupported(body, headers, contentType, received);

      // 4. Parse and validate.
      let json: unknown;
      let text: string;
      try {
        text = dec.decode(body);
        json = JSON.parse(text);
      } catch (error) {
        return await steps.notJson(body, headers, error, received);
      }
      const parsed = validateEvent(json, text);
      if (!parsed.ok) return await steps.invalid(body, headers, parsed, received);

      // 5. Identity, 6. durable insert-if-absent (or a count on the waiting copy of a signal).
      const recorded = steps.record(parsed, body, headers, received, matched);
      return recorded instanceof Promise ? await recorded : recorded;
    } finally {
      steps.release(body);
    }
  };
}
