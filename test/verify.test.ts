// The native verifier (node:crypto) and the default SubtleCrypto verifier give the same verdict on the same inputs.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { parseSignatureHeader, sha256Hex, subtleVerifier } from '../src/intake/signature.ts';
import { nativeSha256Hex, nativeVerifier } from '../src/runtime/verify-native.ts';
import { lavaSign } from './helpers/lava.ts';

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== 'undefined';
// Bun runs these fastest; the other runtimes get fewer cases so the suite stays quick everywhere.
const RUNS = isBun ? 300 : 120;

const secretArb = fc.string({ minLength: 1, maxLength: 40, unit: 'grapheme' });
const bodyArb = fc.uint8Array({ maxLength: 2048 });

describe('nativeVerifier', () => {
  test('nativeVerifier() and subtleVerifier() agree on random bodies, secrets and signatures', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(secretArb, { minLength: 1, maxLength: 3 }),
        bodyArb,
        fc.oneof(
          // A correct signature by one of the configured secrets, by another secret, or random bytes of any length.
          fc.record({ kind: fc.constant('secret' as const), index: fc.nat(), other: secretArb }),
          fc.record({ kind: fc.constant('other' as const), index: fc.nat(), other: secretArb }),
          fc.record({ kind: fc.constant('random' as const), bytes: fc.uint8Array({ maxLength: 40 }) }),
        ),
        async (secrets, body, choice) => {
          let signature: Uint8Array;
          if (choice.kind === 'random') signature = choice.bytes;
          else {
            const secret = choice.kind === 'secret' ? (secrets[choice.index % secrets.length] as string) : choice.other;
            signature = parseSignatureHeader(lavaSign(secret, body)) as Uint8Array;
          }
          const a = await subtleVerifier(secrets).verify(body, signature);
          const b = await nativeVerifier(secrets).verify(body, signature);
          assert.equal(b, a);
          if (choice.kind === 'secret')
            assert.equal(a, secrets.indexOf(secrets[choice.index % secrets.length] as string));
        },
      ),
      { numRuns: RUNS },
    );
  });

  test('nativeSha256Hex() and the SubtleCrypto sha256Hex() give the same hex on random bodies', async () => {
    await fc.assert(
      fc.asyncProperty(bodyArb, async (body) => {
        assert.equal(nativeSha256Hex(body) as string, await sha256Hex(body));
      }),
      { numRuns: RUNS },
    );
    assert.equal(
      nativeSha256Hex(new Uint8Array(0)),
      'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
      'the SHA-256 of nothing',
    );
  });

  test('nativeVerifier() returns the index of the first matching secret during a rotation', async () => {
    const body = new TextEncoder().encode('{"event":"customer.created"}');
    const v = nativeVerifier(['new', 'old']);
    assert.equal(v.verify(body, parseSignatureHeader(lavaSign('new', body)) as Uint8Array), 0);
    assert.equal(v.verify(body, parseSignatureHeader(lavaSign('old', body)) as Uint8Array), 1);
    assert.equal(v.verify(body, parseSignatureHeader(lavaSign('neither', body)) as Uint8Array), -1);
  });

  test('nativeVerifier() answers -1 (never throws) for signatures of the wrong length, as subtleVerifier() does', async () => {
    const body = new TextEncoder().encode('x');
    for (const len of [0, 1, 31, 33, 64]) {
      const sig = new Uint8Array(len);
      assert.equal(nativeVerifier(['s']).verify(body, sig), -1);
      assert.equal(await subtleVerifier(['s']).verify(body, sig), -1);
    }
  });

  test('nativeVerifier() reads a body that is a view into a larger buffer by its own offset and length', async () => {
    const whole = new TextEncoder().encode('PREFIX{"event":"customer.created"}SUFFIX');
    const view = whole.subarray(6, whole.length - 6);
    const sig = parseSignatureHeader(lavaSign('s', '{"event":"customer.created"}')) as Uint8Array;
    assert.equal(nativeVerifier(['s']).verify(view, sig), 0);
    assert.equal(await subtleVerifier(['s']).verify(view, sig), 0);
  });
});
