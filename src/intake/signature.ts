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
const HEX = /^[0-9a-f]{64}$/;

/**
 * Parses an `X-Webhook-Signature` value: 64 hex digits, any case, surrounding white space ignored.
 * Returns the 32 bytes, or null when the value is missing or malformed.
 */
export function parseSignatureHeader(value: string | null | undefined): Uint8Array | null {
  if (value == null) return null;
  const hex = value.trim().toLowerCase();
  if (!HEX.test(hex)) return null;
  return hexToBytes(hex);
}

export function hexToBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

export function bytesToHex(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += (bytes[i] as number).toString(16).padStart(2, '0');
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
        if (await crypto.subtle.verify('HMAC', key, signature as Uint8Array<ArrayBuffer>, body as Uint8Array<ArrayBuffer>)) {
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

/** SHA-256 of `bytes` as lowercase hex. */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  return bytesToHex(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>)));
}
