// The JSON logger's masking: secrets and personal data never reach a line, at any depth, and what identifies an
// event (its key, the customer id) always does.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { REDACTED, isPersonalName, isSecretName, jsonLogger, redact } from '../src/observability/log.ts';
import { samplePayload } from '../src/samples.ts';

function capture() {
  const lines: string[] = [];
  const logger = jsonLogger({ level: 'debug', write: (l) => lines.push(l) });
  return { logger, lines, last: () => JSON.parse(lines.at(-1) as string) as Record<string, unknown> };
}

describe('isSecretName() and isPersonalName()', () => {
  test('secret-like names match in any case; key and customer_id do not', () => {
    for (const name of [
      'secret',
      'token',
      'password',
      'passwd',
      'authorization',
      'cookie',
      'api_key',
      'apikey',
      'signature',
      'connection_secret',
      'webhook_secret',
      'private_key',
      'Access_Token',
      'DB_PASSWORD',
      'X-Webhook-Signature',
      'set-cookie',
      'stripe_key',
      'x-api-key',
      'apiKey',
    ]) {
      assert.equal(isSecretName(name), true, name);
    }
    for (const name of ['key', 'customer_id', 'reference_id', 'event', 'keys', 'monkey', 'key_slot', 'email']) {
      assert.equal(isSecretName(name), false, name);
    }
  });

  test('personal names are the contact fields, exactly', () => {
    for (const name of ['email', 'Email', 'phone', 'first_name', 'last_name'])
      assert.equal(isPersonalName(name), true, name);
    for (const name of ['contact', 'customer_id', 'email_verified', 'name'])
      assert.equal(isPersonalName(name), false, name);
  });
});

describe('redact()', () => {
  test('masks secrets at depth 3 and inside arrays, and returns the input itself when nothing matches', () => {
    const value = { a: { b: { c: { token: 't0k', ok: 1 } } }, list: [{ password: 'p' }, 'plain', [{ api_key: 'k' }]] };
    assert.deepEqual(redact(value), {
      a: { b: { c: { token: REDACTED, ok: 1 } } },
      list: [{ password: REDACTED }, 'plain', [{ api_key: REDACTED }]],
    });
    assert.equal(value.a.b.c.token, 't0k', 'the input is not changed');
    const clean = { a: { b: [1, 2, { c: 'x' }] } };
    assert.equal(redact(clean), clean);
  });

  test('personal data is masked unless personal: false; null stays null', () => {
    const data = { customer_id: 'cus_1', contact: { email: 'ada@example.com', phone: null, first_name: 'Ada' } };
    assert.deepEqual(redact(data), {
      customer_id: 'cus_1',
      contact: { email: REDACTED, phone: null, first_name: REDACTED },
    });
    assert.equal(redact(data, { personal: false }), data);
  });

  test('cycles, depth and size are bounded', () => {
    const a: Record<string, unknown> = { name: 'a', secret: 's' };
    a.self = a;
    a.list = [a];
    assert.deepEqual(redact(a), { name: 'a', secret: REDACTED, self: '[circular]', list: ['[circular]'] });
    const shared = { v: 1 };
    assert.deepEqual(
      redact({ x: shared, y: shared, token: 't' }),
      { x: { v: 1 }, y: { v: 1 }, token: REDACTED },
      'a DAG is not a cycle',
    );
    let deep: unknown = { token: 'bottom' };
    for (let i = 0; i < 20; i++) deep = { next: deep };
    assert.match(JSON.stringify(redact(deep)), /"\[too deep\]"/);
    assert.doesNotMatch(JSON.stringify(redact(deep)), /bottom/);
    const wide = Array.from({ length: 5 }, () => ({ token: 'x' }));
    assert.deepEqual(redact(wide, { maxNodes: 3 }), [
      { token: REDACTED },
      { token: REDACTED },
      '[truncated]',
      '[truncated]',
      '[truncated]',
    ]);
  });

  test('a parsed payload owning a __proto__ field is copied without touching the prototype', () => {
    const parsed = JSON.parse('{"__proto__":{"polluted":true},"secret":"s"}') as Record<string, unknown>;
    const out = redact(parsed) as Record<string, unknown>;
    assert.equal(Object.getPrototypeOf(out), Object.prototype);
    assert.equal(JSON.stringify(out), '{"__proto__":{"polluted":true},"secret":"[redacted]"}');
  });
});

describe('jsonLogger() masking', () => {
  test('a whole Lava payload logs with its contact and connection secret masked, its customer id and key kept', () => {
    const { logger, lines, last } = capture();
    const payload = samplePayload('customer.created', { customerId: 'cus_log_1' });
    const email = (payload.data as { contact: { email: string } }).contact.email;
    logger.info('event', { key: 'customer.created:cus_log_1', customer_id: 'cus_log_1', payload });
    const line = last();
    assert.equal(line.key, 'customer.created:cus_log_1');
    assert.equal(line.customer_id, 'cus_log_1');
    const data = (line.payload as { data: { customer_id: string; contact: Record<string, unknown> } }).data;
    assert.equal(data.customer_id, 'cus_log_1');
    assert.equal(data.contact.email, REDACTED);
    assert.equal(data.contact.first_name, REDACTED);
    assert.ok(!(lines[0] as string).includes(email));

    logger.info('legacy', { data: samplePayload('connection.created').data });
    assert.equal((last().data as Record<string, unknown>).connection_secret, REDACTED);
    assert.ok(!lines.join('\n').includes('cs_sample_not_a_real_secret'));
  });

  test('top-level and child fields named like secrets are masked; undefined fields are left out', () => {
    const { logger, last } = capture();
    logger.child({ authorization: 'Bearer abc', svc: 'x' }).warn('m', { webhook_secret: 'w', n: 1, gone: undefined });
    assert.deepEqual(
      { ...last(), time: null },
      { time: null, level: 'warn', msg: 'm', authorization: REDACTED, svc: 'x', webhook_secret: REDACTED, n: 1 },
    );
  });

  test('a cyclic field logs instead of throwing', () => {
    const { logger, last } = capture();
    const req: Record<string, unknown> = { id: 1, headers: { cookie: 'c=1' } };
    req.self = req;
    logger.error('cyclic', { req });
    assert.deepEqual(last().req, { id: 1, headers: { cookie: REDACTED }, self: '[circular]' });
  });

  test('an Error value still logs its name and message, at the top and nested', () => {
    const { logger, last } = capture();
    logger.error('failed', { error: new TypeError('boom'), context: { cause: new Error('inner') } });
    const line = last();
    assert.deepEqual(line.error, { name: 'TypeError', message: 'boom' });
    assert.deepEqual(line.context, { cause: { name: 'Error', message: 'inner' } });
  });

  test('a Date logs as its ISO string', () => {
    const { logger, last } = capture();
    logger.info('at', { when: { at: new Date(0) } });
    assert.deepEqual(last().when, { at: '1970-01-01T00:00:00.000Z' });
  });
});
