// The memory held by request bodies in flight is capped across all requests: a crowd of slow 256 KiB uploads gets
// 503 with Retry-After past the cap instead of growing the process, is counted and logged, and gives its bytes back.
import assert from 'node:assert/strict';
import { type Socket, connect } from 'node:net';
import { describe, test } from 'node:test';
import { ConfigError, createLavaWebhooks, jsonLogger, memoryStore } from '../src/mod.ts';
import { BodyBudget } from '../src/intake/budget.ts';
import { BodyMemoryError, readBody } from '../src/intake/body.ts';
import { samplePayload } from '../src/samples.ts';
import { SECRET, signedRequest, waitFor } from './helpers/lava.ts';
import { serveReceiver } from './helpers/serve.ts';

const KIB = 1024;

/** A raw upload over its own socket: headers, then what `send` writes; resolves with the status line answered. */
function rawUpload(port: number, head: string, send: (s: Socket) => void): { socket: Socket; status: Promise<string> } {
  let socket!: Socket;
  const status = new Promise<string>((resolve) => {
    socket = connect(port, '127.0.0.1', () => {
      socket.write(head);
      send(socket);
    });
    let data = '';
    socket.on('data', (d) => {
      data += d.toString();
      if (data.includes('\r\n')) resolve(data.split('\r\n')[0] ?? '');
    });
    socket.on('error', () => resolve(data.split('\r\n')[0] || 'error'));
    socket.on('close', () => resolve(data.split('\r\n')[0] || 'closed'));
  });
  return { socket, status };
}

const declaredHead = (length: number) =>
  `POST /webhooks/lava HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\nX-Webhook-Signature: ${'a'.repeat(64)}\r\n\r\n`;

async function gauge(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
}

describe('bodyMemoryLimit over HTTP', () => {
  test('slow uploads that hold the budget make the next delivery answer 503 with Retry-After; the bytes come back', async () => {
    const lines: string[] = [];
    const lava = createLavaWebhooks({
      secret: SECRET,
      store: memoryStore(),
      logger: jsonLogger({ level: 'warn', write: (l) => lines.push(l) }),
      handlers: { 'customer.created': () => {} },
      ignore: ['customer.deleted', 'customer.wallet.balance.updated'],
      bodyLimit: 256 * KIB,
      bodyMemoryLimit: 1024 * KIB,
      bodyTimeoutMs: 5000,
    });
    const h = await serveReceiver(lava);
    const base = h.served.url;
    const slow: ReturnType<typeof rawUpload>[] = [];
    try {
      // Four uploads declare 256 KiB each and send 1 KiB: the whole 1 MiB is spoken for.
      for (let i = 0; i < 4; i++)
        slow.push(rawUpload(h.served.port, declaredHead(256 * KIB), (s) => s.write('x'.repeat(KIB))));
      await waitFor(
        async () => (await gauge(base, 'lava_webhooks_body_memory_bytes')) === 1024 * KIB,
        5000,
        'four reservations',
      );

      const body = JSON.stringify(samplePayload('customer.created', { customerId: 'cus_budget' }));
      const refused = await fetch(signedRequest(h.url, body));
      assert.equal(refused.status, 503);
      assert.equal(refused.headers.get('retry-after'), '1');
      assert.deepEqual(await refused.json(), { error: 'too many deliveries in flight' });

      // A body without Content-Length is counted as it arrives, and refused once it no longer fits.
      const chunked = rawUpload(
        h.served.port,
        `POST /webhooks/lava HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nX-Webhook-Signature: ${'a'.repeat(64)}\r\n\r\n`,
        (s) => s.write(`400\r\n${'y'.repeat(KIB)}\r\n`),
      );
      assert.match(await chunked.status, /^HTTP\/1\.1 503/);
      chunked.socket.destroy();

      const metrics = await (await fetch(`${base}/metrics`)).text();
      assert.match(metrics, /^lava_webhooks_deliveries_total\{outcome="overloaded"\} 2$/m);
      assert.match(metrics, /^lava_webhooks_body_memory_limit_bytes 1048576$/m);
      assert.match(lines.join('\n'), /"msg":"body memory limit reached; answering 503"/);

      // The slow senders give up: their reservations are returned, and deliveries are accepted again.
      for (const s of slow) s.socket.destroy();
      await waitFor(
        async () => (await gauge(base, 'lava_webhooks_body_memory_bytes')) === 0,
        8000,
        'reservations returned',
      );
      const accepted = await fetch(signedRequest(h.url, body));
      assert.equal(accepted.status, 200, await accepted.text());
      assert.equal(await gauge(base, 'lava_webhooks_body_memory_bytes'), 0, 'an answered delivery holds nothing');
    } finally {
      for (const s of slow) s.socket.destroy();
      await h.close();
    }
  });

  test('every answer gives its bytes back: 200, duplicate, 401, 413, 400', async () => {
    const lava = createLavaWebhooks({
      secret: SECRET,
      store: memoryStore(),
      logger: jsonLogger({ level: 'silent' }),
      ignore: ['customer.created', 'customer.deleted', 'customer.wallet.balance.updated'],
      bodyLimit: 4 * KIB,
    });
    const h = await serveReceiver(lava);
    try {
      const body = JSON.stringify(samplePayload('customer.created', { customerId: 'cus_every_path' }));
      const answers = [
        await fetch(signedRequest(h.url, body)),
        await fetch(signedRequest(h.url, body)),
        await fetch(signedRequest(h.url, body, { secret: 'whsec_other' })),
        await fetch(signedRequest(h.url, 'z'.repeat(8 * KIB))),
        await fetch(signedRequest(h.url, '{"event":')),
      ];
      assert.deepEqual(
        answers.map((a) => a.status),
        [200, 200, 401, 413, 400],
      );
      for (const a of answers) await a.body?.cancel();
      assert.equal(await gauge(h.served.url, 'lava_webhooks_body_memory_bytes'), 0);
    } finally {
      await h.close();
    }
  });
});

describe('readBody() with a budget', () => {
  test('takes a declared length before reading, and the body as it arrives otherwise; a failure keeps nothing', async () => {
    const budget = new BodyBudget(100);
    const declared = new Request('http://x/', {
      method: 'POST',
      body: 'a'.repeat(60),
      headers: { 'content-length': '60' },
    });
    const first = await readBody(declared, { limit: 1000, timeoutMs: 1000, budget });
    assert.equal(budget.used, 60, 'held until the caller gives it back');
    const second = new Request('http://x/', {
      method: 'POST',
      body: 'b'.repeat(60),
      headers: { 'content-length': '60' },
    });
    await assert.rejects(readBody(second, { limit: 1000, timeoutMs: 1000, budget }), BodyMemoryError);
    assert.equal(budget.used, 60, 'a refused read takes nothing');
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new Uint8Array(30));
        c.enqueue(new Uint8Array(30));
        c.close();
      },
    });
    const streamed = new Request('http://x/', { method: 'POST', body: stream, duplex: 'half' } as RequestInit);
    await assert.rejects(readBody(streamed, { limit: 1000, timeoutMs: 1000, budget }), BodyMemoryError);
    assert.equal(budget.used, 60, 'the chunks taken before the refusal are given back');
    budget.give(first.byteLength);
    assert.equal(budget.used, 0);
  });

  test('createLavaWebhooks() refuses a bodyMemoryLimit below bodyLimit', () => {
    assert.throws(
      () => createLavaWebhooks({ secret: SECRET, store: memoryStore(), bodyLimit: 1024, bodyMemoryLimit: 512 }),
      (e: Error) =>
        e instanceof ConfigError && /bodyMemoryLimit \(512\) must be at least bodyLimit \(1024\)/.test(e.message),
    );
  });
});
