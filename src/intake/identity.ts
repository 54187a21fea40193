// The idempotency key policy: which deliveries count as the same event.
import { type Sha256Hex, sha256Hex } from './signature.ts';

/** What a key function sees. */
export interface KeyInput {
  /** Event name after legacy mapping. */
  event: string;
  customerId: string | null;
  payload: Record<string, unknown>;
  body: Uint8Array;
  headers: Headers;
}

/** Returns the key, or null/undefined to fall back to the default policy. */
export type KeyFunction = (input: KeyInput) => string | null | undefined | Promise<string | null | undefined>;

/** Events Lava advises deduplicating by customer id: there is one creation and one deletion per customer. */
const BY_CUSTOMER = new Set(['customer.created', 'customer.deleted']);

/**
 * The default policy, in order: a `webhook-id` header, only when `trustIdHeader` is set; a top-level `id` field;
 * `event:customer_id` for customer.created and customer.deleted; otherwise `event:sha256:<hex of the raw body>`.
 * A per-event override in `overrides` comes first when it returns a key.
 *
 * The header is not trusted by default: Lava sends none, and its signature covers the body only, so anyone holding
 * one captured delivery could send it again under new `webhook-id`s and have each copy run as a new event. Every
 * other source of the key is inside the signed body.
 */
export function idempotencyKey(
  input: KeyInput,
  overrides?: Record<string, KeyFunction>,
  digest: Sha256Hex = sha256Hex,
  trustIdHeader = false,
): string | Promise<string> {
  const custom = overrides?.[input.event];
  if (custom) {
    return Promise.resolve(custom(input)).then((key) =>
      key ? `custom:${key}` : defaultKey(input, digest, trustIdHeader),
    );
  }
  return defaultKey(input, digest, trustIdHeader);
}

// Synchronous when the digest is (the native one): no promise on the request path for the common case.
function defaultKey(input: KeyInput, digest: Sha256Hex, trustIdHeader: boolean): string | Promise<string> {
  if (trustIdHeader) {
    const header = input.headers.get('webhook-id')?.trim();
    if (header) return `id:${header}`;
  }
  const id = input.payload.id;
  if ((typeof id === 'string' && id.length > 0) || (typeof id === 'number' && Number.isFinite(id))) return `id:${id}`;
  if (BY_CUSTOMER.has(input.event) && input.customerId) return `${input.event}:${input.customerId}`;
  const hex = digest(input.body);
  const prefix = `${input.event}:sha256:`;
  return typeof hex === 'string' ? prefix + hex : hex.then((h) => prefix + h);
}

/** Key for a delivery that failed validation: the same bad bytes are one dead letter, not many. */
export async function invalidKey(body: Uint8Array, digest: Sha256Hex = sha256Hex): Promise<string> {
  return `invalid:sha256:${await digest(body)}`;
}
