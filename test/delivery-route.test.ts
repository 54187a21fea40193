// The two ways a delivery reaches intake, held to the same answers: the receiver's fast path (default) and the Hono
// chain kept as the benchmark's comparison point (src/http/delivery-chain.ts). The intake suites run against both
// too (a second pass with src/http/use-delivery-chain.ts preloaded); this file needs no preload.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { deliveryChain } from '../src/http/delivery-chain.ts';
import { type LavaWebhooks, type LavaWebhooksOptions, jsonLogger, memoryStore } from '../src/mod.ts';
import { createLavaWebhooks, setDefaultDeliveryRoute } from '../src/receiver.ts';
import { SECRET, lavaSign, signedRequest, sleep } from './helpers/lava.ts';

const URL_ = 'http://localhost/webhooks/lava';
const enc = new TextEncoder();
const dec = new TextDecoder();
// Fixed bodies (samplePayload varies per call), so both routes' dead letters can be compared byte for byte.
const created = (customerId: string) =>
  JSON.stringify({
    event: 'customer.created',
    data: { customer_id: customerId, contact: { email: 'ada@example.com' } },
  });
const routes = { 'fast path': undefined, 'Hono chain': deliveryChain } as const;

function receiver(route: LavaWebhooksOptions['deliveryRoute'], options: Partial<LavaWebhooksOptions> = {}) {
  const lines: string[] = [];
  const lava = createLavaWebhooks({
    secret: SECRET,
    store: memoryStore(),
    logger: jsonLogger({ level: 'debug', write: (l) => lines.push(l) }),
    handlers: {
      'customer.created': () => {},
      'customer.wallet.balance.updated': () => {},
      'customer.deleted': () => {},
    },
    bodyLimit: 4096,
    deliveryRoute: route,
    ...options,
  });
  return { lava, lines };
}

/** The delivery counter by outcome, from the Prometheus text. */
function outcomes(lava: LavaWebhooks): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of lava.metrics.render(null).matchAll(/^lava_webhooks_deliveries_total\{outcome="(\w+)"\} (\d+)$/gm)) {
    if (m[2] !== '0') out[m[1] as string] = Number(m[2]);
  }
  return out;
}

/** A request signed over exactly `body`, with the headers given (bytes: a string body gets text/plain on Node). */
function raw(text: string | Uint8Array, headers: Record<string, string | null> = {}): Request {
  const body = typeof text === 'string' ? enc.encode(text) : text;
  const h: Record<string, string> = { 'x-webhook-signature': lavaSign(SECRET, body) };
  for (const [k, v] of Object.entries(headers)) {
    if (v === null) delete h[k];
    else h[k] = v;
  }
  return new Request(URL_, { method: 'POST', headers: h, body: body as BodyInit });
}

// Every kind of delivery intake answers differently; each case makes a fresh request (bodies are read once).
const cases: Array<[string, () => Request]> = [
  ['a valid delivery', () => signedRequest(URL_, created('cus_1'))],
  ['its duplicate', () => signedRequest(URL_, created('cus_1'))],
  ['no signature', () => raw(created('cus_2'), { 'x-webhook-signature': null, 'content-type': 'application/json' })],
  [
    'a malformed signature',
    () => raw(created('cus_2'), { 'x-webhook-signature': 'zz', 'content-type': 'application/json' }),
  ],
  ['a wrong signature', () => signedRequest(URL_, created('cus_2'), { secret: 'another secret' })],
  ['text/plain', () => raw(created('cus_3'), { 'content-type': 'text/plain' })],
  // Hono's JSON validator reads application/vnd.api+json as JSON; intake does not.
  ['application/vnd.api+json', () => raw(created('cus_4'), { 'content-type': 'application/vnd.api+json' })],
  ['no content type, valid', () => raw(created('cus_5'))],
  ['a blank content type, valid', () => raw(created('cus_6'), { 'content-type': ' ' })],
  // Hono's JSON validator validates `{}` for a request without a JSON content type: the issue must be this body's.
  ['no content type, invalid', () => raw('{"event":"customer.created","data":{}}')],
  ['not JSON', () => raw('{"event": nope', { 'content-type': 'application/json' })],
  [
    'not UTF-8',
    () =>
      raw(
        new Uint8Array([
          ...enc.encode('{"event":"customer.created","data":{"customer_id":"cus_'),
          0xff,
          ...enc.encode('"}}'),
        ]),
      ),
  ],
  ['an invalid envelope', () => raw('[1,2]', { 'content-type': 'application/json' })],
  [
    'a schema-invalid known event',
    () => raw('{"event":"customer.created","data":{"customer_id":""}}', { 'content-type': 'application/json' }),
  ],
  [
    'a legacy event',
    () => signedRequest(URL_, JSON.stringify({ event: 'connection.created', data: { connection_id: 'con_1' } })),
  ],
  [
    'an unknown event',
    () => signedRequest(URL_, JSON.stringify({ event: 'customer.renamed', data: { customer_id: 'cus_7' } })),
  ],
  ['a body over the limit', () => signedRequest(URL_, JSON.stringify({ event: 'x', data: { pad: 'x'.repeat(5000) } }))],
  ['an empty body', () => raw('', { 'content-type': 'application/json' })],
];

interface Answered {
  status: number;
  body: unknown;
  retryAfter: string | null;
}

async function answers(lava: LavaWebhooks): Promise<Answered[]> {
  const out: Answered[] = [];
  for (const [, make] of cases) {
    const res = await lava.fetch(make());
    out.push({ status: res.status, body: await res.json(), retryAfter: res.headers.get('retry-after') });
  }
  return out;
}

describe('delivery routes', () => {
  // The suites' second pass preloads the chain as every receiver's default; here each route is asked for by name.
  let preloaded: LavaWebhooksOptions['deliveryRoute'];
  before(() => {
    preloaded = setDefaultDeliveryRoute(undefined);
  });
  after(() => {
    setDefaultDeliveryRoute(preloaded);
  });

  test('createLavaWebhooks() routes deliveries on the fast path by default; deliveryRoute puts the Hono chain in its place', () => {
    const posts = (lava: LavaWebhooks) => lava.app.routes.filter((r) => r.method === 'POST').length;
    assert.equal(posts(receiver(undefined).lava), 1, 'one handler: the fast path (or the app, for paths it skips)');
    assert.equal(posts(receiver(deliveryChain).lava), 5, 'body, signature, content type, zValidator, record');
  });

  test('both routes give every kind of delivery the same status, body, metrics outcome and dead letter', async () => {
    const fast = receiver(undefined).lava;
    const chain = receiver(deliveryChain).lava;
    const [a, b] = [await answers(fast), await answers(chain)];
    for (const [i, [name]] of cases.entries()) assert.deepEqual(b[i], a[i], name);
    const statuses = Object.fromEntries(cases.map(([name], i) => [name, a[i]?.status]));
    assert.deepEqual(statuses, {
      'a valid delivery': 200,
      'its duplicate': 200,
      'no signature': 401,
      'a malformed signature': 401,
      'a wrong signature': 401,
      'text/plain': 415,
      'application/vnd.api+json': 415,
      'no content type, valid': 200,
      'a blank content type, valid': 200,
      'no content type, invalid': 400,
      'not JSON': 400,
      'not UTF-8': 400,
      'an invalid envelope': 400,
      'a schema-invalid known event': 400,
      'a legacy event': 200,
      'an unknown event': 200,
      'a body over the limit': 413,
      'an empty body': 400,
    });
    const invalid = a[cases.findIndex(([n]) => n === 'no content type, invalid')]?.body as {
      issues: Array<{ path: string[] }>;
    };
    assert.deepEqual(
      invalid.issues.map((i) => i.path.join('.')),
      ['data.customer_id'],
      'the issues are those of the body sent, not of {}',
    );
    assert.deepEqual(outcomes(chain), outcomes(fast));
    const dead = async (lava: LavaWebhooks) =>
      (await lava.store.list({ status: 'dead' }))
        .map((r) => ({ event: r.event, body: dec.decode(r.body), lastError: r.lastError, headers: r.headers }))
        .sort((x, y) => x.body.localeCompare(y.body));
    const kept = await dead(fast);
    assert.equal(kept.length, 8, 'every authenticated delivery that was refused is kept');
    assert.deepEqual(await dead(chain), kept);
    assert.ok(
      kept.some(
        (r) => /^body is not valid JSON: .+/.test(r.lastError ?? '') && !/Malformed JSON/.test(r.lastError ?? ''),
      ),
    );
    assert.equal(fast.metrics.bodyMemory?.used ?? 0, 0, 'the fast path gave back every body');
    assert.equal(chain.metrics.bodyMemory?.used ?? 0, 0, 'the chain gave back every body');
    await Promise.all([fast.close(), chain.close()]);
  });

  test('both routes answer 503 with Retry-After once closing, and the generic 500 for an unexpected error', async () => {
    for (const [name, route] of Object.entries(routes)) {
      const store = memoryStore();
      const { lava, lines } = receiver(route, {
        store: {
          ...store,
          name: store.name,
          insert: () => {
            throw Object.assign(new TypeError('boom'), { unexpected: true });
          },
        } as typeof store,
        identity: {
          'customer.created': {
            key: () => {
              throw new Error('key function failed');
            },
          },
        },
      });
      const res = await lava.fetch(signedRequest(URL_, created('cus_500')));
      assert.equal(res.status, 500, name);
      assert.deepEqual(await res.json(), { error: 'internal error' }, name);
      assert.ok(
        lines.some((l) => l.includes('unhandled error in request') && l.includes('key function failed')),
        name,
      );
      await lava.close();
      const closed = await lava.fetch(signedRequest(URL_, created('cus_closed')));
      assert.equal(closed.status, 503, name);
      assert.equal(closed.headers.get('retry-after'), '1', name);
    }
  });

  test('both routes: a flood of unauthenticated requests is all counted, in a bounded number of log lines', async () => {
    for (const [name, route] of Object.entries(routes)) {
      const { lava, lines } = receiver(route, { bodyLimit: 256 * 1024 });
      const body = created('cus_flood');
      const started = Date.now();
      for (let batch = 0; batch < 10; batch++) {
        await Promise.all(
          Array.from({ length: 30 }, async (_, i) => {
            const oversized = i % 10 === 0;
            const res = await lava.fetch(
              new Request(URL_, {
                method: 'POST',
                headers: { 'content-type': 'application/json', 'x-webhook-signature': 'f'.repeat(64) },
                body: oversized ? 'x'.repeat(300 * 1024) : body,
              }),
            );
            assert.equal(res.status, oversized ? 413 : 401, name);
          }),
        );
        await sleep(5);
      }
      const seconds = (Date.now() - started) / 1000;
      assert.deepEqual(outcomes(lava), { invalid_signature: 270, too_large: 30 }, name);
      const written = lines.filter((l) => l.includes('"signature rejected"') || l.includes('"body too large"'));
      assert.ok(written.length <= 10 + Math.ceil(seconds * 10) + 1, `${name}: ${written.length} lines in ${seconds} s`);
      assert.equal(lava.metrics.bodyMemory?.used ?? 0, 0, name);
      await lava.close();
    }
  });
});
