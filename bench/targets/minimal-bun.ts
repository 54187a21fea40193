// Benchmark target (m): the least a receiver can do and still keep what it acknowledges, on Bun. Native HMAC over the
// raw bytes, JSON.parse, and insert-if-absent into a Map keyed by the body's SHA-256; no framework, no validation,
// no handlers, no durability. It measures what keeping every event in the heap costs on this machine, so ours (c)
// can be read against it as well as against the bare server (a).
import { timingSafeEqual } from 'node:crypto';

const secret = process.env.LAVA_WEBHOOK_SECRET ?? '';
const received = new Map<string, { body: Uint8Array; at: number }>();
const decoder = new TextDecoder();
const encoder = new TextEncoder();
const json = { 'content-type': 'application/json' };

const server = Bun.serve({
  port: Number(process.env.PORT ?? 3000),
  hostname: process.env.HOSTNAME ?? '127.0.0.1',
  async fetch(request) {
    if (request.method !== 'POST' || new URL(request.url).pathname !== '/webhooks/lava') {
      return new Response('{"error":"not found"}', { status: 404, headers: json });
    }
    const body = new Uint8Array(await request.arrayBuffer());
    const given = encoder.encode(request.headers.get('x-webhook-signature') ?? '');
    const expected = encoder.encode(new Bun.CryptoHasher('sha256', secret).update(body).digest('hex'));
    if (given.byteLength !== expected.byteLength || !timingSafeEqual(given, expected)) {
      return new Response('{"error":"invalid signature"}', { status: 401, headers: json });
    }
    let event: { event?: unknown };
    try {
      event = JSON.parse(decoder.decode(body));
    } catch {
      return new Response('{"error":"invalid payload"}', { status: 400, headers: json });
    }
    const key = `${String(event.event)}:${new Bun.CryptoHasher('sha256').update(body).digest('hex')}`;
    if (received.has(key)) return new Response('{"received":true,"duplicate":true}', { headers: json });
    received.set(key, { body, at: Date.now() });
    return new Response('{"received":true}', { headers: json });
  },
});
console.log(`minimal bun receiver listening on ${server.port}`);
