// A native signature verifier and hash, computed synchronously: Bun's CryptoHasher and crypto.timingSafeEqual where
// they exist (about a third faster than node:crypto there), else node:crypto's createHmac/createHash/timingSafeEqual
// (Deno, Node). Either costs about a twentieth of SubtleCrypto's async verify per call; server.ts injects them.
import type { Sha256Hex, VerifierFactory } from '../intake/signature.ts';

const enc = new TextEncoder();

interface BunCrypto {
  CryptoHasher: new (algorithm: 'sha256', key?: Uint8Array) => { update(data: Uint8Array): { digest(): Uint8Array } };
  SHA256: { hash(data: Uint8Array, encoding: 'hex'): string };
}
const bun = (globalThis as { Bun?: BunCrypto }).Bun;
// Bun's global crypto has a non-standard timingSafeEqual (a method: it needs crypto as its this).
const webCrypto = globalThis.crypto as { timingSafeEqual?: (a: Uint8Array, b: Uint8Array) => boolean } | undefined;
const bunEqual = typeof webCrypto?.timingSafeEqual === 'function' ? webCrypto.timingSafeEqual.bind(webCrypto) : null;
const onBun = typeof bun?.CryptoHasher === 'function' && typeof bun?.SHA256?.hash === 'function' && bunEqual !== null;

// On Bun everything comes from Bun's globals and node:crypto is never loaded: importing it took about 20 ms of a
// cold start (process spawn to first 200) of 200-250 ms on a slow 2-vCPU VM.
const nodeCrypto = onBun ? null : await import('node:crypto');

const hmac: (key: Uint8Array, body: Uint8Array) => Uint8Array = onBun
  ? (key, body) => new (bun as BunCrypto).CryptoHasher('sha256', key).update(body).digest()
  : (key, body) => (nodeCrypto as typeof import('node:crypto')).createHmac('sha256', key).update(body).digest();
const equal: (a: Uint8Array, b: Uint8Array) => boolean = onBun
  ? (bunEqual as (a: Uint8Array, b: Uint8Array) => boolean)
  : (a, b) => (nodeCrypto as typeof import('node:crypto')).timingSafeEqual(a, b);

/** Same verdicts as `subtleVerifier` (index of the matching secret, or -1), computed synchronously. */
export const nativeVerifier: VerifierFactory = (secrets) => {
  // Secrets are encoded once, as SubtleCrypto's importKey does (UTF-8), so both verifiers key the HMAC identically.
  const keys = secrets.map((s) => enc.encode(s));
  return {
    verify(body, signature) {
      // timingSafeEqual throws on a length mismatch; a signature of another length simply matches nothing.
      if (signature.byteLength !== 32) return -1;
      for (let i = 0; i < keys.length; i++) {
        if (equal(hmac(keys[i] as Uint8Array, body), signature)) return i;
      }
      return -1;
    },
  };
};

/** SHA-256 as lowercase hex, synchronously (body-hash idempotency keys); same output as `sha256Hex`. */
export const nativeSha256Hex: Sha256Hex = onBun
  ? (bytes) => (bun as BunCrypto).SHA256.hash(bytes, 'hex')
  : (bytes) => (nodeCrypto as typeof import('node:crypto')).createHash('sha256').update(bytes).digest('hex');
