// The request path: bounded read, signature, content type, parse and validate, identity, durable insert.
// It ends when the event is committed; nothing a handler does can slow the ack or lose the event.
import { DEFAULT_REJECTION_LOG_RATE, type Logger, rateLimited } from '../observability/log.ts';
import type { DeliveryOutcome, Metrics } from '../observability/metrics.ts';
import { type InsertResult, type NewEvent, type Store, StoreUnavailableError } from '../stores/store.ts';
import { BodyMemoryError, BodyTimeoutError, PayloadTooLargeError, readBody } from './body.ts';
import type { BodyBudget } from './budget.ts';
import { within } from './deadlines.ts';
import { type ParsedEvent, validateEvent } from './events.ts';
import { type IdentityRules, identify, invalidKey } from './identity.ts';
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

/** `application/json` with any parameters, or no content type at all. */
export function isJsonContentType(value: string | null): boolean {
  if (value === 'application/json') return true;
  if (value === null || value.trim() === '') return true;
  const type = value.split(';', 1)[0]?.trim().toLowerCase();
  return type === 'application/json';
}

export function createIntake(config: IntakeConfig) {
  const { store, verifier, logger, metrics } = config;
  const digest = config.digest ?? sha256Hex;
  const budget = config.bodyBudget;
  // Lines that anyone on the network can cause, before the signature says who sent the request.
  const unauthenticated =
    config.unauthenticatedLogger ?? rateLimited(logger, { perSecond: DEFAULT_REJECTION_LOG_RATE });
  const readOptions = { limit: config.bodyLimit, timeoutMs: config.bodyTimeoutMs, budget };

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

  /** The store's answer, or null when it failed or timed out; synchronous stores answer without a promise. */
  function insert(event: NewEvent): InsertResult | null | Promise<InsertResult | null> {
    let work: ReturnType<Store['insert']>;
    try {
      work = store.insert(event);
    } catch (error) {
      return insertFailed(event, error);
    }
    if (!(work instanceof Promise)) return work;
    const ms = config.storeTimeoutMs;
    return within(work, ms, () => new StoreUnavailableError(`${store.name} store insert did not answer within ${ms} ms`)).catch(
      (error) => insertFailed(event, error),
    );
  }

  /** Records an authenticated delivery that cannot be processed, so it is never lost. */
  async function deadLetter(
    body: Uint8Array,
    headers: Headers,
    name: string,
    customerId: string | null,
    reason: string,
    received: number,
  ): Promise<boolean> {
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
    if (stored) logger.warn('delivery rejected and kept as a dead letter', { key, event: name, reason });
    return stored !== null;
  }

  return async function intake(request: Request): Promise<IntakeResult> {
    const received = config.now();
    const headers = request.headers;

    // 1. Bounded body read, within the memory all bodies in flight may hold together.
    let body: Uint8Array;
    try {
      body = await readBody(request, readOptions);
    } catch (error) {
      if (error instanceof PayloadTooLargeError) {
        unauthenticated.warn('body too large', { outcome: 'too_large', reason: error.message });
        return result('too_large', 413, { error: 'payload too large', limit_bytes: config.bodyLimit });
      }
      if (error instanceof BodyTimeoutError) {
        unauthenticated.warn('body timed out', { outcome: 'body_timeout', reason: error.message });
        return result('body_timeout', 408, { error: 'request body timed out' });
      }
      if (error instanceof BodyMemoryError) {
        unauthenticated.warn('body memory limit reached; answering 503', { outcome: 'overloaded', reason: error.message });
        const r = result('overloaded', 503, BUSY_503);
        r.headers = RETRY_SOON;
        return r;
      }
      unauthenticated.warn('body could not be read', { outcome: 'invalid_payload', error });
      return result('invalid_payload', 400, { error: 'body could not be read' });
    }
    // The body's bytes stay counted until the delivery is answered: until then the store may still be writing them.
    // A try/finally in this function rather than a helper: no second promise per delivery.
    try {
      // 2. Signature over the raw bytes.
      const rawSignature = headers.get('x-webhook-signature');
      const signature = parseSignatureHeader(rawSignature);
      if (!signature) {
        unauthenticated.warn('signature rejected', {
          outcome: 'invalid_signature',
          reason: rawSignature === null ? 'missing X-Webhook-Signature header' : 'malformed signature (not 64 hex digits)',
        });
        return result('invalid_signature', 401, GENERIC_401);
      }
      const verdict = verifier.verify(body, signature);
      const matched = typeof verdict === 'number' ? verdict : await verdict;
      if (matched < 0) {
        unauthenticated.warn('signature rejected', {
          outcome: 'invalid_signature',
          reason: 'signature does not match any configured secret',
          bytes: body.byteLength,
        });
        return result('invalid_signature', 401, GENERIC_401);
      }

      // 3. Content type (the sender is authenticated from here on: what it sent is kept).
      const contentType = headers.get('content-type');
      if (!isJsonContentType(contentType)) {
        const reason = `unsupported content type ${JSON.stringify(contentType?.slice(0, 100))}`;
        if (!(await deadLetter(body, headers, 'unknown', null, reason, received))) {
          return result('store_unavailable', 503, { error: 'store unavailable' });
        }
        return result('unsupported_media_type', 415, { error: 'unsupported media type', expected: 'application/json' });
      }

      // 4. Parse and validate.
      let json: unknown;
      let text: string;
      try {
        text = dec.decode(body);
        json = JSON.parse(text);
      } catch (error) {
        const reason = `body is not valid JSON: ${(error as Error).message}`.slice(0, 300);
        if (!(await deadLetter(body, headers, 'unknown', null, reason, received))) {
          return result('store_unavailable', 503, { error: 'store unavailable' });
        }
        return result('invalid_payload', 400, { error: 'invalid payload', issues: [{ message: 'body is not valid JSON' }] });
      }
      const parsed = validateEvent(json, text);
      if (!parsed.ok) {
        if (!(await deadLetter(body, headers, parsed.name, parsed.customerId, parsed.reason, received))) {
          return result('store_unavailable', 503, { error: 'store unavailable' });
        }
        const issues = (parsed.issues ?? []).slice(0, 20).map((i) => ({ path: i.path.map(String), message: i.message }));
        return result('invalid_payload', 400, { error: 'invalid payload', issues });
      }

      // 5. Identity, 6. durable insert-if-absent (or a count on the waiting copy of a signal).
      const identified = identify(
        { event: parsed.name, customerId: parsed.customerId, payload: parsed.payload, body, headers },
        { rules: config.identityRules, digest, trustIdHeader: config.trustIdHeader === true, receivedAt: received },
      );
      const { key, policy, coalesceKey } = identified instanceof Promise ? await identified : identified;
      const inserting = insert({
        key,
        policy,
        coalesceKey,
        event: parsed.name,
        customerId: parsed.customerId,
        body,
        headers: pickHeaders(headers),
        receivedAt: received,
        status: 'pending',
      });
      const stored = inserting instanceof Promise ? await inserting : inserting;
      const ms = config.now() - received;
      if (!stored) return result('store_unavailable', 503, { error: 'store unavailable' });
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
          if (info) logger.info('identical delivery coalesced into the copy still waiting', { ...fields(), key: into, outcome: 'coalesced' });
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
    } finally {
      budget?.give(body.byteLength);
    }
  };
}
