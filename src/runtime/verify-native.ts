// A native signature verifier and hash: node:crypto's synchronous createHmac + timingSafeEqual, which Bun, Deno and Node all
// have. It costs about a twentieth of SubtleCrypto's async verify per call; server.ts injects it.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { Sha256Hex, VerifierFactory } from '../intake/signature.ts';

const enc = new TextEncoder();

/** Same verdicts as `subtleVerifier` (index of the matching secret, or -1), computed synchronously. */
export const nativeVerifier: VerifierFactory = (secrets) => {
  // Secrets are encoded once, as SubtleCrypto's importKey does (UTF-8), so both verifiers key the HMAC identically.
  const keys = secrets.map((s) => enc.encode(s));
  return {
    verify(body, signature) {
      // timingSafeEqual throws on a length mismatch; a signature of another length simply matches nothing.
      if (signature.byteLength !== 32) return -1;
      for (let i = 0; i < keys.length; i++) {
        const mac = createHmac('sha256', keys[i] as Uint8Array).update(body).digest();
        if (timingSafeEqual(mac, signature)) return i;
      }
      return -1;
    },
  };
};

/** SHA-256 as lowercase hex, synchronously (body-hash idempotency keys); same output as `sha256Hex`. */
export const nativeSha256Hex: Sha256Hex = (bytes) => createHash('sha256').update(bytes).digest('hex');
