// validateEvent runs zod's compiled validators; these tests hold it to zod's own runtime parse of the same schemas.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { z } from 'zod';
import { LEGACY_EVENTS, envelope, schemas, validateEvent } from '../src/intake/events.ts';
import { samplePayload } from '../src/samples.ts';

const NAMES = [...Object.keys(schemas), ...Object.keys(LEGACY_EVENTS), 'customer.renamed', '', 'toString', '__proto__'];

// Payload-shaped values with every field sometimes missing, null, of the wrong type, or extra.
const loose = fc.oneof(
  fc.string(),
  fc.integer(),
  fc.constant(null),
  fc.boolean(),
  fc.dictionary(fc.string(), fc.string()),
);
const customer = fc.record(
  {
    customer_id: fc.oneof(fc.string(), loose),
    connection_id: fc.oneof(fc.string(), loose),
    reference_id: fc.oneof(fc.string(), loose),
    contact: fc.oneof(fc.record({ email: fc.oneof(fc.string(), loose), phone: loose }, { requiredKeys: [] }), loose),
    subscription: fc.oneof(
      fc.record({ subscription_id: fc.oneof(fc.string(), loose), status: loose }, { requiredKeys: [] }),
      loose,
    ),
    metadata: fc.oneof(fc.dictionary(fc.string(), fc.jsonValue()), loose),
    created_at: loose,
    balance: loose,
  },
  { requiredKeys: [] },
);
const payload = fc.record(
  { event: fc.oneof(fc.constantFrom(...NAMES), loose), data: fc.oneof(customer, loose), id: loose },
  { requiredKeys: [] },
);

describe('validateEvent (compiled zod validators)', () => {
  test('gives the same verdict and the same output as zod’s runtime parse, on generated payloads', () => {
    fc.assert(
      fc.property(fc.oneof(payload, fc.jsonValue()), (json) => {
        const text = JSON.stringify(json ?? null);
        const input = JSON.parse(text);
        const got = validateEvent(input);
        // Given the text, a valid known event is only checked and keeps the parsed object: same verdict, same payload.
        const viaText = validateEvent(JSON.parse(text), text);
        assert.deepEqual(viaText, got);
        const env = envelope.safeParse(input);
        if (!env.success) {
          assert.equal(got.ok, false);
          return;
        }
        const legacy = Object.hasOwn(LEGACY_EVENTS, env.data.event);
        const name = legacy ? (LEGACY_EVENTS[env.data.event] as string) : env.data.event;
        const schema = Object.hasOwn(schemas, name) ? (schemas as Record<string, z.ZodType>)[name] : undefined;
        if (!schema) {
          assert.equal(got.ok, true);
          if (got.ok) assert.equal(got.known, false);
          return;
        }
        if (legacy) return; // the legacy mapping is covered by the intake tests
        const expected = schema.safeParse(input);
        assert.equal(got.ok, expected.success, JSON.stringify(input));
        if (got.ok && expected.success) assert.deepEqual(got.payload, expected.data);
        if (!got.ok && !expected.success) assert.deepEqual(got.issues, expected.error.issues);
      }),
      { numRuns: 2000 },
    );
  });

  test('a valid sample of every known event passes and keeps fields the schema does not name', () => {
    for (const name of Object.keys(schemas)) {
      const body = { ...samplePayload(name as keyof typeof schemas), extra: { kept: true } };
      const got = validateEvent(body);
      assert.equal(got.ok, true, name);
      if (got.ok) {
        assert.equal(got.name, name);
        assert.deepEqual((got.payload as { extra?: unknown }).extra, { kept: true });
      }
    }
  });

  test('a "__proto__" key never reaches a handler as an own property, however the body spells it', () => {
    for (const key of ['__proto__', '\\u005f_proto__']) {
      const text = `{"event":"customer.created","data":{"customer_id":"cus_p","${key}":{"polluted":true}},"${key}":{"x":1}}`;
      const json = JSON.parse(text);
      assert.ok(Object.hasOwn(json, '__proto__'), 'JSON.parse makes it an own property');
      const got = validateEvent(json, text);
      assert.equal(got.ok, true);
      if (got.ok) {
        assert.equal(Object.hasOwn(got.payload, '__proto__'), false);
        assert.equal(Object.hasOwn(got.payload.data as object, '__proto__'), false);
        assert.equal(({} as { polluted?: unknown }).polluted, undefined);
      }
    }
  });

  test('an event name that is an Object.prototype property is an unknown event, not a crash', () => {
    for (const name of ['toString', 'constructor', 'hasOwnProperty']) {
      const got = validateEvent({ event: name, data: { customer_id: 'cus_1' } });
      assert.equal(got.ok, true);
      if (got.ok) assert.equal(got.known, false);
    }
  });
});
