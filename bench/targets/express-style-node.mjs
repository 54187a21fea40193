// Benchmark target (n): Lava's documented receiver logic (raw body, createHmac hex, timingSafeEqual, JSON.parse,
// 200) on bare node:http, without Express: shows how much of (b) is Express itself.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';

const secret = process.env.LAVA_WEBHOOK_SECRET ?? '';
const server = createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/webhooks/lava') {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const raw = Buffer.concat(chunks);
    const signature = req.headers['x-webhook-signature'];
    const expected = createHmac('sha256', secret).update(raw).digest('hex');
    if (
      typeof signature !== 'string' ||
      signature.length !== expected.length ||
      !timingSafeEqual(Buffer.from(signature), Buffer.from(expected))
    ) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"invalid signature"}');
      return;
    }
    const event = JSON.parse(raw.toString('utf8'));
    void event;
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"received":true}');
  });
});
server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => console.log('express-style node listening'));
