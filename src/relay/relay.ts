// Relay mode: delivers each recorded event to the user's own endpoint, signed with the Standard Webhooks scheme,
// with the core's retries, backoff and dead letters. Web-standard only (fetch, SubtleCrypto).
import type { Logger } from '../observability/log.ts';
import type { Metrics } from '../observability/metrics.ts';
import { NonRetryableError } from '../processing/retry.ts';
import type { ProcessFn } from '../processing/worker.ts';
import { ConfigError } from '../receiver.ts';
import type { EventRecord } from '../stores/store.ts';
import { type StandardWebhooksSigner, standardWebhooksSigner } from './standard-webhooks.ts';

export interface RelayOptions {
  /** Where every event goes, unless `urls` names another endpoint for its event. */
  url?: string;
  /** Per-event endpoints, e.g. `{ 'customer.deleted': 'https://app.example/hooks/deleted' }`. */
  urls?: Record<string, string>;
  /** The downstream's Standard Webhooks secret: `whsec_` followed by base64. */
  secret: string;
  /** Per-attempt timeout in ms. Default 10 000. */
  timeoutMs?: number;
  /**
   * Accept a plain `http://` endpoint that is not on this machine. Default false: the bodies (customers' contact
   * details) would cross the network in clear text. Loopback addresses (`localhost`, `127.0.0.1`, `[::1]`) are
   * always accepted.
   */
  allowInsecureHttp?: boolean;
  /**
   * Also send Lava's original `X-Webhook-Signature`, for a downstream that verifies Lava's own HMAC. Default false:
   * every request is signed with `secret` anyway, and Lava's signature is a replayable credential for the original
   * endpoint. It is sent only when the store kept it: add `x-webhook-signature` to the receiver's `keepHeaders`.
   */
  forwardSignature?: boolean;
  /** The fetch to use (tests, proxies). Default the global fetch. */
  fetch?: (request: Request) => Promise<Response>;
  logger?: Logger;
  /** Where `lava_webhooks_relay_*` metrics go; pass the receiver's (createLavaWebhooks({ metrics })). */
  metrics?: Metrics;
  /** The clock, for `webhook-timestamp`. Default Date.now. */
  now?: () => number;
}

/** A downstream answer or failure that should be tried again later (429, 5xx, timeout, connection error). */
export class RelayRetryableError extends Error {
  override name = 'RelayRetryableError';
  /** Set from Retry-After: the core waits at least this long. */
  retryAfterMs?: number;
  constructor(message: string, retryAfterMs?: number, options?: ErrorOptions) {
    super(message, options);
    if (retryAfterMs !== undefined) this.retryAfterMs = retryAfterMs;
  }
}

/** A downstream answer that retrying will not fix (4xx other than 429): the event becomes a dead letter. */
export class RelayRejectedError extends NonRetryableError {
  override name = 'RelayRejectedError';
  readonly status: number;
  constructor(message: string, status: number) {
    super(message);
    this.status = status;
  }
}

/** The longest wait a downstream's Retry-After can ask for. */
export const MAX_RETRY_AFTER_MS = 3_600_000;

export type RelayOutcome = 'ok' | 'retry' | 'dead';

/** Parses Retry-After: delay-seconds or an HTTP date. Null when absent or unreadable. */
export function parseRetryAfter(value: string | null, now: number): number | null {
  if (!value) return null;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return null;
  return Math.max(0, at - now);
}

/** Whether `host` (a URL's hostname) is this machine: localhost, 127.0.0.0/8 or ::1. */
function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, '');
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (h === '[::1]' || h === '::1') return true;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** What is wrong with a plain http:// endpoint off this machine (shared with the server's configuration check). */
export const INSECURE_HTTP =
  "plain http:// to another machine would carry every event (customers' contact details) unencrypted; use https://, " +
  'or set LAVA_RELAY_ALLOW_HTTP=true (allowInsecureHttp: true) for a network you trust';

/** Whether `url` is plain http:// to an address other than loopback. */
export function insecureHttp(url: string): boolean {
  try {
    const u = new URL(url);
    return u.protocol === 'http:' && !isLoopback(u.hostname);
  } catch {
    return false;
  }
}

function validUrl(name: string, value: string, allowHttp: boolean): string {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new ConfigError(`relay: ${name} is not a valid URL: ${JSON.stringify(redactable(value))}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new ConfigError(`relay: ${name} must be an http(s) URL, got ${JSON.stringify(redactUrl(value))}`);
  }
  if (!allowHttp && insecureHttp(value)) throw new ConfigError(`relay: ${name} ${redactUrl(value)}: ${INSECURE_HTTP}`);
  return u.toString();
}

/** A value that is not a URL at all, shortened: it may still be a pasted token. */
const redactable = (value: string) => (value.length > 12 ? `${value.slice(0, 12)}…` : value);

const dec = new TextDecoder();
const enc = new TextEncoder();

/** Where a URL points, without its query or credentials: endpoint URLs often carry a token, and this text reaches
 * logs and dead letters. */
export function redactUrl(url: string): string {
  const u = new URL(url);
  return `${u.origin}${u.pathname}${u.search ? '?…' : ''}`;
}

/**
 * The idempotency key as a header value. Keys can hold any text (a payload `id`, a custom key function), but a
 * header cannot carry newlines or characters above U+00FF, and the downstream must sign exactly the bytes it got:
 * a key of visible ASCII is sent as is, any other is percent-encoded (as UTF-8) behind `enc:`.
 */
export function webhookId(key: string): string {
  if (/^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/.test(key)) return key;
  let out = 'enc:';
  for (const byte of enc.encode(key)) {
    const c = String.fromCharCode(byte);
    out += byte > 0x20 && byte < 0x7f && c !== '%' ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** What to tell the operator about a redirect answer. */
function redirectHint(response: Response, target: string): string {
  try {
    const location = response.headers.get('location');
    if (location)
      return ` (redirects are not followed; set the URL it points to: ${redactUrl(new URL(location, target).href)})`;
  } catch {
    // An unreadable Location: the status alone says enough.
  }
  return ' (redirects are not followed; set the final URL)';
}

/** Upper bounds (ms) of the relay latency histogram's buckets. */
const LATENCY_BUCKETS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000];

/** First bytes of an answer body, for the dead letter's reason. */
async function snippet(response: Response, max = 200): Promise<string> {
  try {
    const reader = response.body?.getReader();
    if (!reader) return '';
    const { value } = await reader.read();
    reader.cancel().catch(() => {});
    return value ? dec.decode(value.subarray(0, max)).replace(/\s+/g, ' ').trim() : '';
  } catch {
    return '';
  }
}

/**
 * Makes a ProcessFn that POSTs each event's original body to the downstream:
 * `createLavaWebhooks({ secret, store, process: relay({ url, secret: 'whsec_…' }) })`.
 */
export function relay(options: RelayOptions): ProcessFn & { signer: StandardWebhooksSigner } {
  // The secret first: its mistake is the one a caller is most likely to have made.
  const signer = standardWebhooksSigner(options.secret);
  const allowHttp = options.allowInsecureHttp === true;
  const urls: Record<string, string> = {};
  for (const [event, u] of Object.entries(options.urls ?? {})) urls[event] = validUrl(`urls[${event}]`, u, allowHttp);
  const fallback = options.url ? validUrl('url', options.url, allowHttp) : undefined;
  if (!fallback && Object.keys(urls).length === 0) {
    throw new ConfigError(
      'relay: no endpoint — pass `url` (or `urls` per event), e.g. https://your-app.example/webhooks/lava',
    );
  }
  const timeoutMs = options.timeoutMs ?? 10_000;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0)
    throw new ConfigError(`relay: timeoutMs must be positive, got ${timeoutMs}`);
  const doFetch = options.fetch ?? ((r: Request) => fetch(r));
  const forwardSignature = options.forwardSignature === true;
  const now = options.now ?? Date.now;
  const attempts = options.metrics?.counter(
    'lava_webhooks_relay_attempts_total',
    'Relay attempts to the downstream endpoint, by outcome.',
  );
  const latency = options.metrics?.histogram(
    'lava_webhooks_relay_latency_ms',
    'Time from sending a relay attempt to its outcome (answer, timeout or connection error), in milliseconds.',
    LATENCY_BUCKETS_MS,
  );

  const count = (outcome: RelayOutcome, ms: number) => {
    attempts?.inc({ outcome });
    latency?.observe(ms);
  };

  async function deliver(record: EventRecord, signal: AbortSignal): Promise<void> {
    const target = urls[record.event] ?? fallback;
    if (!target) throw new RelayRejectedError(`relay: no endpoint configured for ${record.event}`, 0);
    const where = redactUrl(target);
    const id = webhookId(record.key);
    const timestamp = Math.floor(now() / 1000);
    const headers = new Headers({
      'content-type': record.headers['content-type'] ?? 'application/json',
      'user-agent': 'lava-webhooks-relay',
      'webhook-id': id,
      'webhook-timestamp': String(timestamp),
      'webhook-signature': await signer.sign(id, timestamp, record.body),
      'x-lava-event': record.event,
    });
    if (forwardSignature) {
      const original = record.headers['x-webhook-signature'];
      if (original) headers.set('x-webhook-signature', original);
    }

    // One deadline for the whole attempt, the answer's first bytes included: a downstream that sends its headers
    // and then stalls must not hold the event until the handler timeout.
    const attempt = new AbortController();
    const timer = setTimeout(() => attempt.abort(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
    const onAbort = () => attempt.abort(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    const started = performance.now();
    try {
      let response: Response;
      try {
        response = await doFetch(
          new Request(target, {
            method: 'POST',
            headers,
            body: record.body as Uint8Array<ArrayBuffer>,
            signal: attempt.signal,
            // A 301/302 would turn the POST into a GET without a body: report it instead of following it.
            redirect: 'manual',
          }),
        );
      } catch (error) {
        count('retry', performance.now() - started);
        const reason = attempt.signal.aborted
          ? String((attempt.signal.reason as Error)?.message ?? 'aborted')
          : (error as Error)?.message;
        throw new RelayRetryableError(`relay: ${where} did not answer: ${reason}`, undefined, { cause: error });
      }
      const ms = performance.now() - started;
      const status = response.status;
      if (status >= 200 && status < 300) {
        await response.body?.cancel().catch(() => {});
        count('ok', ms);
        options.logger?.debug('relayed', { key: record.key, event: record.event, status, ms: Math.round(ms) });
        return;
      }
      if (status === 429 || status >= 500) {
        // Held to an hour: a huge Retry-After would otherwise hold back this customer's queue for as long.
        const asked = parseRetryAfter(response.headers.get('retry-after'), now());
        const retryAfter = asked === null ? undefined : Math.min(asked, MAX_RETRY_AFTER_MS);
        const text = await snippet(response);
        count('retry', ms);
        throw new RelayRetryableError(`relay: ${where} answered ${status}${text ? `: ${text}` : ''}`, retryAfter);
      }
      const text = await snippet(response);
      count('dead', ms);
      if (status === 410) {
        options.logger?.warn('relay endpoint is gone (410): events for it become dead letters until it is fixed', {
          key: record.key,
          event: record.event,
          url: where,
        });
      }
      const hint = status >= 300 && status < 400 ? redirectHint(response, target) : '';
      throw new RelayRejectedError(`relay: ${where} answered ${status}${hint}${text ? `: ${text}` : ''}`, status);
    } finally {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    }
  }

  return Object.assign(deliver, { signer });
}
