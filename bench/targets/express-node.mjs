// Benchmark target (b): the receiver as Lava's documentation writes it for Express on Node: express.raw() for the
// raw body, createHmac hex over it, timingSafeEqual, JSON.parse, 200.
import { createHmac, timingSafeEqual } from 'node:crypto';
import express from 'express';

const secret = process.env.LAVA_WEBHOOK_SECRET ?? '';
const app = express();

app.post('/webhooks/lava', express.raw({ type: 'application/json', limit: '256kb' }), (req, res) => {
  const signature = req.get('x-webhook-signature');
  const expected = createHmac('sha256', secret).update(req.body).digest('hex');
  if (
    typeof signature !== 'string' ||
    signature.length !== expected.length ||
    !timingSafeEqual(Buffer.from(signature), Buffer.from(expected))
  ) {
    res.status(401).json({ error: 'invalid signature' });
    return;
  }
  const event = JSON.parse(req.body.toString('utf8'));
  void event;
  res.status(200).json({ received: true });
});

app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => console.log('express listening'));
