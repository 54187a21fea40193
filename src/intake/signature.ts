// Lava's signature: lowercase hex HMAC-SHA256 of the raw body, keyed with the webhook secret, in X-Webhook-Signature.
// The default verifier uses SubtleCrypto (it runs everywhere); runtime entries may inject a faster one.

/** Checks a signature against every configured secret (rotation). */
export interface Verifier {
  /** Index of the secret that produced `signature` over `body`, or -1 when none did. */
  verify(body: Uint8Array, signature: Uint8Array): Promise<number> | number;
}

/** Makes a verifier for a list of secrets; keys are prepared once, here, not per request. */
export type VerifierFactory = (secrets: readonly string[]) => Verifier;

const enc = new TextEncoder();

// Hex digit values by char code (-1: not a hex digit); parsing and validating in one pass, with no regex, no
// slicing and no parseInt, keeps this off the profile of the request path.
const HEX_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 10; i++) HEX_VALUE[48 + i] = i;
for (let i = 0; i < 6; i++) {
  HEX_VALUE[65 + i] = 10 + i;
  HEX_VALUE[97 + i] = 10 + i;
}
const HEX_DIGITS = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/**
 * Parses an `X-Webhook-Signature` value: 64 hex digits, any case, surrounding white space ignored.
 * Returns the 32 bytes, or null when the value is missing or malformed.
 */
export function parseSignatureHeader(value: string | null | undefined): Uint8Array | null {
  if (value == null) return null;
  // Only a value of another length can carry surrounding white space worth trimming (String.trim's full set).
  if (value.length !== 64) {
    value = value.trim();
    if (value.length !== 64) return null;
  }
  const out = new Uint8Array(32);
  for (let i = 0, j = 0; i < 64; i += 2, j++) {
    const hi = value.charCodeAt(i);
    const lo = value.charCodeAt(i + 1);
    const h = hi < 128 ? (HEX_VALUE[hi] as number) : -1;
    const l = lo < 128 ? (HEX_VALUE[lo] as number) : -1;
    if (h < 0 || l < 0) return null;
    out[j] = (h << 4) | l;
  }
  return out;
}

/** Decodes lowercase or uppercase hex (an even number of digits) into bytes; throws on anything else. */
export function hexToBytes(hex: string): Uint8Array {
  if (hex.length % 2 !== 0) throw new TypeError('hex string has an odd number of digits');
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) {
    const hi = hex.charCodeAt(i * 2);
    const lo = hex.charCodeAt(i * 2 + 1);
    const h = hi < 128 ? (HEX_VALUE[hi] as number) : -1;
    const l = lo < 128 ? (HEX_VALUE[lo] as number) : -1;
    if (h < 0 || l < 0) throw new TypeError('not a hex string');
    out[i] = (h << 4) | l;
  }
  return out;
}

export function bytesToHex(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += HEX_DIGITS[bytes[i] as number];
  return s;
}

function importKey(secret: string): Promise<CryptoKey> {
  return crypto.subtle.importKey('raw', enc.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, [
    'sign',
    'verify',
  ]);
}

/** The default verifier: `crypto.subtle.verify`, which compares in constant time. Keys are imported once. */
export const subtleVerifier: VerifierFactory = (secrets) => {
  const keys = secrets.map(importKey);
  return {
    async verify(body, signature) {
      for (let i = 0; i < keys.length; i++) {
        const key = await (keys[i] as Promise<CryptoKey>);
        if (
          await crypto.subtle.verify('HMAC', key, signature as Uint8Array<ArrayBuffer>, body as Uint8Array<ArrayBuffer>)
        ) {
          return i;
        }
      }
      return -1;
    },
  };
};

/** Signs `body` exactly as Lava does: lowercase hex HMAC-SHA256. For tests, the CLI and downstream tools. */
export async function sign(secret: string, body: string | Uint8Array): Promise<string> {
  const key = await importKey(secret);
  const bytes = typeof body === 'string' ? enc.encode(body) : body;
  const mac = await crypto.subtle.sign('HMAC', key, bytes as Uint8Array<ArrayBuffer>);
  return bytesToHex(new Uint8Array(mac));
}

/** Hashes bytes to lowercase hex SHA-256; runtime entries may inject a synchronous native one. */
export type Sha256Hex = (bytes: Uint8Array) => string | Promise<string>;

/** SHA-256 of `bytes` as lowercase hex (SubtleCrypto: runs everywhere). */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  return bytesToHex(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>)));
}
