// Intake over a real HTTP server: every status the request path can answer, and what it stores for each.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import {
  type EventRecord,
  type HandlerMap,
  type LavaWebhooksOptions,
  type Logger,
  type Store,
  createLavaWebhooks,
  jsonLogger,
  memoryStore,
  sign,
  silentLogger,
} from '../src/mod.ts';
import { samplePayload } from '../src/samples.ts';
import { SECRET, lavaSign, signedRequest, waitFor } from './helpers/lava.ts';
import { type Served, serveReceiver } from './helpers/serve.ts';

interface Harness {
  served: Served;
  url: string;
  store: Store;
  logs: string[];
  lava: ReturnType<typeof createLavaWebhooks>;
  close(): Promise<void>;
}

// On Deno the intake runs against real Deno KV (in memory); elsewhere against the memory store.
async function defaultStore(): Promise<Store> {
  if (!('Deno' in globalThis)) return memoryStore();
  const { denoKvStore } = await import('../src/stores/deno-kv/mod.ts');
  return denoKvStore({ path: ':memory:' });
}

async function harness(options: Partial<LavaWebhooksOptions> = {}): Promise<Harness> {
  const logs: string[] = [];
  const store = options.store ?? (await defaultStore());
  const lava = createLavaWebhooks({
    secret: SECRET,
    store,
    logger: jsonLogger({ level: 'debug', write: (l) => logs.push(l) }),
    ...options,
  });
  return { ...(await serveReceiver(lava)), store, logs, lava };
}

function post(
  url: string,
  body: string | Uint8Array,
  init: { secret?: string; headers?: Record<string, string> } = {},
) {
  return fetch(signedRequest(url, body, init));
}

const created = (customerId: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify(samplePayload('customer.created', { customerId, extra }));

describe('intake over HTTP', () => {
  let h: Harness;
  const runs: Array<{ event: string; customer: string; key: string; deliveredAs: string }> = [];
  const handlers: HandlerMap = {
    'customer.created': (e, ctx) => {
      runs.push({ event: e.event, customer: e.data.customer_id, key: ctx.key, deliveredAs: ctx.deliveredAs });
    },
    'customer.wallet.balance.updated': (e, ctx) => {
      runs.push({ event: e.event, customer: e.data.customer_id, key: ctx.key, deliveredAs: ctx.deliveredAs });
    },
    'customer.deleted': (e, ctx) => {
      runs.push({ event: e.event, customer: e.data.customer_id, key: ctx.key, deliveredAs: ctx.deliveredAs });
    },
  };
  const unknown: string[] = [];
  before(async () => {
    h = await harness({
      handlers,
      onUnknown: (e) => {
        unknown.push(e.event);
      },
      bodyLimit: 4096,
      bodyTimeoutMs: 1000,
    });
  });
  after(async () => {
    await h.close();
  });

  test('POST /webhooks/lava accepts a delivery signed the way Lava documents it (createHmac hex)', async () => {
    const body = created('cus_accept');
    const res = await post(h.url, body);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/json');
    assert.deepEqual(await res.json(), { received: true });
    // 200s are built from shared constants: what a caller adds to one answer must not reach the next.
    const direct = await h.lava.fetch(signedRequest('http://x/webhooks/lava', created('cus_accept_2')));
    direct.headers.set('x-added-by-caller', '1');
    const next = await h.lava.fetch(signedRequest('http://x/webhooks/lava', created('cus_accept_3')));
    assert.equal(next.status, 200);
    assert.equal(next.headers.get('x-added-by-caller'), null);
    await waitFor(() => runs.find((r) => r.customer === 'cus_accept'), 3000, 'handler run');
    const rec = await h.store.get('customer.created:cus_accept');
    assert.ok(rec);
    assert.equal(new TextDecoder().decode(rec.body), body, 'raw bytes stored as received');
    assert.equal(rec.headers['content-type'], 'application/json');
  });

  test('the signature header is accepted in upper case and with surrounding white space', async () => {
    const body = created('cus_case');
    const sig = ` ${lavaSign(SECRET, body).toUpperCase()}\t`;
    const res = await fetch(h.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'X-Webhook-Signature': sig },
      body,
    });
    assert.equal(res.status, 200);
  });

  test('sign() from the library agrees with createHmac', async () => {
    const body = created('cus_sign');
    assert.equal(await sign(SECRET, body), lavaSign(SECRET, body));
  });

  test('missing, malformed and wrong signatures all answer one generic 401, and the reason is only logged', async () => {
    const body = created('cus_bad_sig');
    const bodies: string[] = [];
    const cases: Array<Record<string, string>> = [
      {},
      { 'x-webhook-signature': 'abc' },
      { 'x-webhook-signature': 'z'.repeat(64) },
      { 'x-webhook-signature': lavaSign('another-secret', body) },
      { 'x-webhook-signature': `sha256=${lavaSign(SECRET, body)}` },
      { 'x-webhook-signature': '' },
    ];
    for (const headers of cases) {
      const res = await fetch(h.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body,
      });
      assert.equal(res.status, 401);
      bodies.push(await res.text());
    }
    assert.equal(new Set(bodies).size, 1, 'one generic body for every signature failure');
    assert.deepEqual(JSON.parse(bodies[0] as string), { error: 'invalid signature' });
    assert.equal(await h.store.get('customer.created:cus_bad_sig'), null, 'nothing stored');
    const reasons = h.logs.filter((l) => l.includes('signature rejected')).join('\n');
    assert.match(reasons, /missing X-Webhook-Signature/);
    assert.match(reasons, /malformed signature/);
    assert.match(reasons, /does not match any configured secret/);
    const everything = h.logs.join('\n');
    assert.ok(!everything.includes(SECRET), 'the secret never reaches a log');
    assert.ok(!everything.includes(lavaSign('another-secret', body)), 'a signature never reaches a log');
  });

  test('a valid signature over a tampered body is rejected', async () => {
    const body = created('cus_tamper');
    const res = await fetch(h.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-webhook-signature': lavaSign(SECRET, body) },
      body: body.replace('cus_tamper', 'cus_tamp3r'),
    });
    assert.equal(res.status, 401);
  });

  test('content types: JSON with parameters or none at all is accepted; anything else is 415 and kept as a dead letter', async () => {
    for (const [i, ct] of ['application/json; charset=utf-8', 'APPLICATION/JSON', null].entries()) {
      const body = created(`cus_ct_${i}`);
      const headers: Record<string, string> = { 'x-webhook-signature': lavaSign(SECRET, body) };
      const bytes = new TextEncoder().encode(body);
      // A Uint8Array body gets no default content type from fetch.
      if (ct) headers['content-type'] = ct;
      const res = await fetch(h.url, { method: 'POST', headers, body: bytes });
      assert.equal(res.status, 200, `content type ${ct}`);
    }
    const body = created('cus_ct_text');
    const res = await post(h.url, body, { headers: { 'content-type': 'text/plain' } });
    assert.equal(res.status, 415);
    assert.deepEqual(await res.json(), { error: 'unsupported media type', expected: 'application/json' });
    const dead = await h.store.list({ status: 'dead' });
    const kept = dead.find((r) => new TextDecoder().decode(r.body) === body);
    assert.ok(kept, 'the authenticated delivery is kept');
    assert.match(kept.lastError ?? '', /unsupported content type "text\/plain"/);
  });

  test('a body that is not JSON is 400 and kept as a dead letter with its reason', async () => {
    const body = '{"event": "customer.created", "data": {';
    const res = await post(h.url, body);
    assert.equal(res.status, 400);
    const json = (await res.json()) as { error: string };
    assert.equal(json.error, 'invalid payload');
    const dead = (await h.store.list({ status: 'dead' })).find((r) => new TextDecoder().decode(r.body) === body);
    assert.ok(dead);
    assert.match(dead.lastError ?? '', /not valid JSON/);
  });

  test('a schema-invalid event is 400 with the issues, and kept as a dead letter with its reason', async () => {
    const body = JSON.stringify({ event: 'customer.deleted', data: { customer_id: 42 } });
    const res = await post(h.url, body);
    assert.equal(res.status, 400);
    const json = (await res.json()) as { issues: Array<{ path: string[]; message: string }> };
    assert.deepEqual(json.issues[0]?.path, ['data', 'customer_id']);
    const dead = (await h.store.list({ status: 'dead' })).find((r) => new TextDecoder().decode(r.body) === body);
    assert.ok(dead);
    assert.equal(dead.event, 'customer.deleted');
    assert.match(dead.lastError ?? '', /data\.customer_id/);
    // The same bad delivery twice is still one dead letter.
    assert.equal((await post(h.url, body)).status, 400);
    const all = (await h.store.list({ status: 'dead', limit: 1000 })).filter(
      (r) => new TextDecoder().decode(r.body) === body,
    );
    assert.equal(all.length, 1);
  });

  test('an envelope without data is 400; unknown fields are kept, not rejected', async () => {
    assert.equal((await post(h.url, JSON.stringify({ event: 'customer.created' }))).status, 400);
    assert.equal((await post(h.url, JSON.stringify([1, 2]))).status, 400);
    const body = created('cus_extra', { livemode: true, api_version: '2026-01' });
    assert.equal((await post(h.url, body)).status, 200);
  });

  test('a body over the limit is 413 when Content-Length says so', async () => {
    const big = JSON.stringify({ ...samplePayload('customer.created'), pad: 'x'.repeat(5000) });
    const res = await post(h.url, big);
    assert.equal(res.status, 413);
    assert.deepEqual(await res.json(), { error: 'payload too large', limit_bytes: 4096 });
  });

  test('a body over the limit is 413 when streamed without Content-Length', async () => {
    const chunk = new TextEncoder().encode('x'.repeat(1024));
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= 64) controller.close();
        else {
          sent++;
          controller.enqueue(chunk);
        }
      },
    });
    const res = await fetch(h.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-webhook-signature': 'a'.repeat(64) },
      body: stream,
      duplex: 'half',
    } as RequestInit);
    assert.equal(res.status, 413);
    await res.body?.cancel();
  });

  test('a chunked body without Content-Length is cut off at the limit (no header to trust or lie)', async () => {
    // Raw socket, chunked: the size is only known by counting, so the bound must hold while reading.
    const payload = 'x'.repeat(10_000);
    const status = await new Promise<string>((resolve, reject) => {
      const socket = connect(h.served.port, '127.0.0.1', () => {
        socket.write(
          `POST /webhooks/lava HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Webhook-Signature: ${'a'.repeat(64)}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`,
        );
        for (let i = 0; i < payload.length; i += 1000) {
          const part = payload.slice(i, i + 1000);
          socket.write(`${part.length.toString(16)}\r\n${part}\r\n`);
        }
        socket.write('0\r\n\r\n');
      });
      let data = '';
      socket.on('data', (d) => {
        data += d.toString();
      });
      socket.on('end', () => resolve(data.split('\r\n')[0] ?? ''));
      socket.on('error', (e) => (data ? resolve(data.split('\r\n')[0] ?? '') : reject(e)));
      setTimeout(() => {
        socket.destroy();
        resolve(data.split('\r\n')[0] ?? 'timeout');
      }, 4000);
    });
    assert.match(status, /^HTTP\/1\.1 413/);
  });

  test('identity: once per customer for created/deleted, an id field, else a balance signal; webhook-id is not trusted', async () => {
    // An unsigned webhook-id header does not name the event: a captured delivery replayed under new ids is a duplicate.
    let body = created('cus_key1');
    assert.deepEqual(await (await post(h.url, body, { headers: { 'webhook-id': 'msg_1' } })).json(), {
      received: true,
    });
    assert.deepEqual(await (await post(h.url, body, { headers: { 'webhook-id': 'msg_2' } })).json(), {
      received: true,
      duplicate: true,
    });
    assert.equal(await h.store.get('id:msg_1'), null);
    assert.equal((await h.store.get('customer.created:cus_key1'))?.policy, 'once');
    // Once per customer, whatever else the body holds: a second customer.created of the customer is a duplicate.
    body = created('cus_key1', { id: 'evt_other' });
    assert.deepEqual(await (await post(h.url, body)).json(), { received: true, duplicate: true });
    // An event that is not once-per-customer and carries an id is deduplicated by it.
    const withId = JSON.stringify(
      samplePayload('customer.wallet.balance.updated', { customerId: 'cus_id', extra: { id: 'evt_123' } }),
    );
    assert.deepEqual(await (await post(h.url, withId)).json(), { received: true });
    assert.equal((await h.store.get('id:evt_123'))?.policy, 'dedupe');
    assert.deepEqual(await (await post(h.url, withId)).json(), { received: true, duplicate: true });
    // Balance updates without an id are signals: a record of its own for each run, keyed under the body hash.
    const b1 = JSON.stringify(samplePayload('customer.wallet.balance.updated', { customerId: 'cus_bal' }));
    assert.deepEqual(await (await post(h.url, b1)).json(), { received: true });
    await waitFor(() => runs.find((r) => r.customer === 'cus_bal'), 3000, 'balance run');
    assert.deepEqual(await (await post(h.url, b1)).json(), { received: true }, 'after a run began, a copy runs again');
    await waitFor(() => runs.filter((r) => r.customer === 'cus_bal').length === 2, 3000, 'second balance run');
    const recs = await h.store.list({ customerId: 'cus_bal' });
    assert.equal(recs.length, 2);
    assert.ok(
      recs.every(
        (r) =>
          r.policy === 'signal' && /^customer\.wallet\.balance\.updated:sha256:[0-9a-f]{64}$/.test(r.coalesceKey ?? ''),
      ),
    );
    assert.equal(recs[0]?.coalesceKey, recs[1]?.coalesceKey);
    assert.notEqual(recs[0]?.key, recs[1]?.key);
    // A signal's own key is the event, then its arrival time: keys sort in arrival order, so a store's index of keys
    // grows at its end instead of taking each insert on a random page.
    assert.ok(recs.every((r) => /^customer\.wallet\.balance\.updated@[0-9a-z]+\.[0-9a-f]{8}[0-9a-z]+$/.test(r.key)));
    const [first, second] = recs as [EventRecord, EventRecord];
    assert.ok(first.seq < second.seq && first.key < second.key, `${first.key} sorts before ${second.key}`);
  });

  test('identity rules: a per-event policy and key function replace the declared ones, typed by event', async () => {
    const custom = await harness({
      logger: silentLogger,
      identity: {
        'customer.wallet.balance.updated': { policy: 'dedupe' },
        'customer.deleted': { key: (input) => `gone:${input.payload.data.customer_id}` },
      },
      idempotencyKey: { 'vendor.thing': (input) => String((input.payload as { ref?: string }).ref ?? '') || null },
    });
    try {
      const bal = JSON.stringify(samplePayload('customer.wallet.balance.updated', { customerId: 'cus_rule' }));
      assert.deepEqual(await (await post(custom.url, bal)).json(), { received: true });
      await custom.lava.drain();
      assert.deepEqual(
        await (await post(custom.url, bal)).json(),
        { received: true, duplicate: true },
        'deduplicated by body hash',
      );
      const del = JSON.stringify(samplePayload('customer.deleted', { customerId: 'cus_rule' }));
      assert.deepEqual(await (await post(custom.url, del)).json(), { received: true });
      const rec = await custom.store.get('custom:gone:cus_rule');
      assert.equal(rec?.policy, 'once', 'a key function alone keeps the event’s declared policy');
      const thing = JSON.stringify({ event: 'vendor.thing', data: { customer_id: 'cus_v' }, ref: 'r1' });
      assert.deepEqual(await (await post(custom.url, thing)).json(), { received: true });
      assert.equal((await custom.store.get('custom:r1'))?.policy, 'dedupe');
      assert.deepEqual(await (await post(custom.url, thing)).json(), { received: true, duplicate: true });
    } finally {
      await custom.close();
    }
  });

  test('trustWebhookIdHeader: a webhook-id header becomes the key of an event without its own identity', async () => {
    const trusting = await harness({ trustWebhookIdHeader: true, logger: silentLogger });
    try {
      const body = JSON.stringify(
        samplePayload('customer.wallet.balance.updated', { customerId: 'cus_trust', extra: { id: 'evt_body' } }),
      );
      assert.deepEqual(await (await post(trusting.url, body, { headers: { 'webhook-id': ' msg_9 ' } })).json(), {
        received: true,
      });
      assert.ok(await trusting.store.get('id:msg_9'));
      // Trusted, a new id is a new event even for the same body; without the header the body's id is the key.
      assert.deepEqual(await (await post(trusting.url, body, { headers: { 'webhook-id': 'msg_10' } })).json(), {
        received: true,
      });
      assert.deepEqual(await (await post(trusting.url, body)).json(), { received: true });
      assert.ok(await trusting.store.get('id:evt_body'));
      assert.deepEqual(await (await post(trusting.url, body, { headers: { 'webhook-id': 'msg_9' } })).json(), {
        received: true,
        duplicate: true,
      });
      // A once-per-customer event stays once per customer, whatever id the header gives.
      const c = created('cus_trust_once');
      await post(trusting.url, c, { headers: { 'webhook-id': 'msg_a' } });
      assert.deepEqual(await (await post(trusting.url, c, { headers: { 'webhook-id': 'msg_b' } })).json(), {
        received: true,
        duplicate: true,
      });
    } finally {
      await trusting.close();
    }
  });

  test('a duplicate delivery answers 200 duplicate:true and the handler runs once', async () => {
    const body = created('cus_dup');
    assert.deepEqual(await (await post(h.url, body)).json(), { received: true });
    assert.deepEqual(await (await post(h.url, body)).json(), { received: true, duplicate: true });
    await waitFor(() => runs.find((r) => r.customer === 'cus_dup'), 3000, 'handler run');
    await h.lava.drain();
    assert.equal(runs.filter((r) => r.customer === 'cus_dup').length, 1);
  });

  test('50 concurrent identical deliveries give exactly one handler run', async () => {
    const body = created('cus_storm');
    const answers = await Promise.all(
      Array.from({ length: 50 }, async () => (await post(h.url, body)).json() as Promise<Record<string, unknown>>),
    );
    assert.equal(answers.filter((a) => a.duplicate === undefined).length, 1);
    assert.equal(answers.filter((a) => a.duplicate === true).length, 49);
    await waitFor(() => runs.find((r) => r.customer === 'cus_storm'), 3000, 'handler run');
    await h.lava.drain();
    assert.equal(runs.filter((r) => r.customer === 'cus_storm').length, 1);
  });

  test('legacy connection.* events are mapped to the current handler, which sees the delivered name', async () => {
    const body = JSON.stringify(samplePayload('connection.created', { customerId: 'conn_1' }));
    assert.equal((await post(h.url, body)).status, 200);
    const run = await waitFor(() => runs.find((r) => r.customer === 'conn_1'), 3000, 'legacy run');
    assert.equal(run.event, 'customer.created');
    assert.equal(run.deliveredAs, 'connection.created');
    assert.equal(run.key, 'customer.created:conn_1');
  });

  test('an unknown event is recorded and handed to onUnknown (forward compatible)', async () => {
    const body = JSON.stringify({ event: 'customer.plan.changed', data: { customer_id: 'cus_new', plan: 'x' } });
    assert.equal((await post(h.url, body)).status, 200);
    await waitFor(() => unknown.includes('customer.plan.changed'), 3000, 'onUnknown');
    // The completion commits a moment after the handler ran (on Deno the store here is Deno KV, asynchronous).
    const rec = await waitFor(
      async () => (await h.store.list({ event: 'customer.plan.changed', status: 'done' }))[0],
      3000,
      'the unknown event to be done',
    );
    assert.equal(rec.status, 'done');
  });

  test('GET /healthz, GET /metrics, 405 with Allow, JSON 404', async () => {
    const health = await fetch(`${h.served.url}/healthz`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: 'ok', store: h.store.name });
    const metrics = await (await fetch(`${h.served.url}/metrics`)).text();
    assert.match(metrics, /lava_webhooks_deliveries_total\{outcome="accepted"\} [1-9]/);
    assert.match(metrics, /lava_webhooks_deliveries_total\{outcome="invalid_signature"\} [1-9]/);
    assert.match(metrics, /lava_webhooks_deliveries_total\{outcome="duplicate"\} [1-9]/);
    assert.match(metrics, /lava_webhooks_deliveries_total\{outcome="too_large"\} [1-9]/);
    assert.match(metrics, /lava_webhooks_deliveries_total\{outcome="unsupported_media_type"\} [1-9]/);
    assert.match(metrics, /lava_webhooks_deliveries_total\{outcome="invalid_payload"\} [1-9]/);
    assert.match(metrics, /lava_webhooks_handler_runs_total\{event="customer.created",outcome="ok"\} [1-9]/);
    assert.match(metrics, /^lava_webhooks_pending \d+$/m);
    assert.match(metrics, /^lava_webhooks_dead_letters [1-9]\d*$/m);
    assert.match(metrics, /^lava_webhooks_ack_latency_ms_count [1-9]\d*$/m);
    const get = await fetch(h.url);
    assert.equal(get.status, 405);
    assert.equal(get.headers.get('allow'), 'POST');
    assert.deepEqual(await get.json(), { error: 'method not allowed' });
    const put = await fetch(`${h.served.url}/healthz`, { method: 'PUT' });
    assert.equal(put.status, 405);
    const missing = await fetch(`${h.served.url}/nope`, { method: 'POST' });
    assert.equal(missing.status, 404);
    assert.deepEqual(await missing.json(), { error: 'not found' });
  });
});

describe('intake options', () => {
  test('secret rotation: deliveries signed with any configured secret pass, others fail', async () => {
    const h = await harness({ secrets: ['whsec_new', 'whsec_old'] });
    try {
      assert.equal((await post(h.url, created('r1'), { secret: 'whsec_new' })).status, 200);
      assert.equal((await post(h.url, created('r2'), { secret: 'whsec_old' })).status, 200);
      assert.equal((await post(h.url, created('r3'), { secret: SECRET })).status, 401);
    } finally {
      await h.close();
    }
  });

  test('an unexpected error on the delivery path answers the generic 500, and the error goes to the log', async () => {
    const lines: string[] = [];
    const base = jsonLogger({ level: 'debug', write: (l) => lines.push(l) });
    // A logger that fails when the accepted line is written: an error no part of intake expects.
    const logger: Logger = {
      debug: (m, f) => base.debug(m, f),
      info: (m, f) => {
        if (m === 'accepted') throw new Error('log sink is gone: /srv/internal/path.ts');
        base.info(m, f);
      },
      warn: (m, f) => base.warn(m, f),
      error: (m, f) => base.error(m, f),
      child: () => logger,
    };
    const h = await harness({ logger });
    try {
      // Over HTTP (the receiver's fast path, which skips Hono), and through the Hono app a larger app would mount.
      const answers = [
        await post(h.url, created('err_fast')),
        await h.lava.app.fetch(signedRequest('http://receiver.test/webhooks/lava', created('err_hono'))),
      ];
      for (const res of answers) {
        assert.equal(res.status, 500);
        assert.equal(res.headers.get('content-type'), 'application/json');
        const text = await res.text();
        assert.deepEqual(JSON.parse(text), { error: 'internal error' });
        assert.ok(!text.includes('/srv/internal'), 'the answer does not show the error');
      }
      assert.equal(
        lines.filter((l) => l.includes('unhandled error in request') && l.includes('log sink is gone')).length,
        2,
      );
    } finally {
      await h.close();
    }
  });

  test('a store that throws on insert answers 503, never 200', async () => {
    const store = memoryStore();
    store.insert = () => {
      throw new Error('disk full');
    };
    const h = await harness({ store });
    try {
      const res = await post(h.url, created('s1'));
      assert.equal(res.status, 503);
      assert.deepEqual(await res.json(), { error: 'store unavailable' });
      assert.ok(h.logs.some((l) => l.includes('store could not record') && l.includes('disk full')));
      // A schema-invalid delivery that cannot be dead-lettered is 503 too: nothing is silently lost.
      assert.equal((await post(h.url, '{"event":"customer.created","data":{}}')).status, 503);
    } finally {
      await h.close();
    }
  });

  test('a store that hangs on insert answers 503 within the store timeout', async () => {
    const store = memoryStore();
    store.insert = () => new Promise(() => {});
    const h = await harness({ store, storeTimeoutMs: 200 });
    try {
      const t0 = Date.now();
      const res = await post(h.url, created('s2'));
      assert.equal(res.status, 503);
      assert.ok(Date.now() - t0 < 2000);
      const health = await fetch(`${h.served.url}/healthz`);
      assert.equal(health.status, 200, 'ping still answers');
    } finally {
      await h.close();
    }
  });

  test('/healthz is 503 when the store does not answer', async () => {
    const store = memoryStore();
    store.ping = () => {
      throw new Error('gone');
    };
    const h = await harness({ store });
    try {
      assert.equal((await fetch(`${h.served.url}/healthz`)).status, 503);
    } finally {
      await h.close();
    }
  });

  test('a body that never finishes arriving is cut off with 408 and does not block other deliveries', async () => {
    const h = await harness({ bodyTimeoutMs: 300 });
    try {
      const stalled = new Promise<string>((resolve) => {
        const socket = connect(h.served.port, '127.0.0.1', () => {
          socket.write(
            `POST /webhooks/lava HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\nX-Webhook-Signature: ${'a'.repeat(64)}\r\n\r\n{"event":`,
          );
        });
        let data = '';
        socket.on('data', (d) => {
          data += d.toString();
          if (data.includes('\r\n\r\n')) {
            socket.destroy();
            resolve(data.split('\r\n')[0] ?? '');
          }
        });
        socket.on('error', () => resolve(data.split('\r\n')[0] ?? 'error'));
        setTimeout(() => {
          socket.destroy();
          resolve(data.split('\r\n')[0] ?? 'timeout');
        }, 5000);
      });
      // Meanwhile a normal delivery goes straight through.
      assert.equal((await post(h.url, created('fast'))).status, 200);
      assert.match(await stalled, /^HTTP\/1\.1 408/);
    } finally {
      await h.close();
    }
  });

  test('log levels: at info an accepted delivery and its handler run each write a line; at warn neither does', async () => {
    for (const level of ['info', 'warn'] as const) {
      const lines: string[] = [];
      const logger = jsonLogger({ level, write: (l) => lines.push(l) });
      assert.equal(logger.enabled?.('info'), level === 'info');
      assert.equal(logger.enabled?.('warn'), true);
      const lava = createLavaWebhooks({
        secret: SECRET,
        store: memoryStore(),
        logger,
        handlers: { 'customer.created': () => {} },
        // Stated, so construction has no unhandled events to warn about.
        ignore: ['customer.wallet.balance.updated', 'customer.deleted'],
      });
      const res = await lava.fetch(
        signedRequest(
          'http://x/webhooks/lava',
          JSON.stringify(samplePayload('customer.created', { customerId: `lv_${level}` })),
        ),
      );
      assert.equal(res.status, 200);
      await lava.drain();
      const msgs = lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
      if (level === 'info') {
        assert.ok(msgs.includes('accepted') && msgs.includes('handled'), msgs.join(', '));
        const accepted = JSON.parse(lines[msgs.indexOf('accepted')] as string);
        assert.equal(accepted.customer_id, 'lv_info');
        assert.equal(accepted.outcome, 'accepted');
      } else {
        assert.deepEqual(msgs, []);
      }
      await lava.close();
    }
  });

  test('createLavaWebhooks() refuses to start without a secret, with a message that says what to do', () => {
    assert.throws(() => createLavaWebhooks({ store: memoryStore() }), /no webhook secret.*webhook_secret/);
    assert.throws(() => createLavaWebhooks({ secret: '  ', store: memoryStore() }), /no webhook secret/);
  });
});
