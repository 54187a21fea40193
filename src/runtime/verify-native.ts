// A native signature verifier and hash, computed synchronously: Bun's CryptoHasher where it exists (about a third
// faster than node:crypto there), else node:crypto's createHmac/createHash, which Bun, Deno and Node all have. Either
// costs about a twentieth of SubtleCrypto's async verify per call; server.ts injects them.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { Sha256Hex, VerifierFactory } from '../intake/signature.ts';

const enc = new TextEncoder();

interface BunCrypto {
  CryptoHasher: new (algorithm: 'sha256', key?: Uint8Array) => { update(data: Uint8Array): { digest(): Uint8Array } };
  SHA256: { hash(data: Uint8Array, encoding: 'hex'): string };
}
const bun = (globalThis as { Bun?: BunCrypto }).Bun;
const hasBunHasher = typeof bun?.CryptoHasher === 'function' && typeof bun?.SHA256?.hash === 'function';

const hmac: (key: Uint8Array, body: Uint8Array) => Uint8Array = hasBunHasher
  ? (key, body) => new (bun as BunCrypto).CryptoHasher('sha256', key).update(body).digest()
  : (key, body) => createHmac('sha256', key).update(body).digest();

/** Same verdicts as `subtleVerifier` (index of the matching secret, or -1), computed synchronously. */
export const nativeVerifier: VerifierFactory = (secrets) => {
  // Secrets are encoded once, as SubtleCrypto's importKey does (UTF-8), so both verifiers key the HMAC identically.
  const keys = secrets.map((s) => enc.encode(s));
  return {
    verify(body, signature) {
      // timingSafeEqual throws on a length mismatch; a signature of another length simply matches nothing.
      if (signature.byteLength !== 32) return -1;
      for (let i = 0; i < keys.length; i++) {
        if (timingSafeEqual(hmac(keys[i] as Uint8Array, body), signature)) return i;
      }
      return -1;
    },
  };
};

/** SHA-256 as lowercase hex, synchronously (body-hash idempotency keys); same output as `sha256Hex`. */
export const nativeSha256Hex: Sha256Hex = hasBunHasher
  ? (bytes) => (bun as BunCrypto).SHA256.hash(bytes, 'hex')
  : (bytes) => createHash('sha256').update(bytes).digest('hex');
