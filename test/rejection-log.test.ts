// Requests anyone can send (no or a wrong signature, oversized or stalled bodies) cannot flood the log: they are all
// counted in the metrics, but logged at a bounded rate, with one line saying how many similar lines were dropped.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { jsonLogger, rateLimited } from '../src/observability/log.ts';
import { samplePayload } from '../src/samples.ts';
import { SECRET, sleep, waitFor } from './helpers/lava.ts';
import { binAvailable, startServer } from './helpers/server-process.ts';

const skip = binAvailable('bun') ? false : 'node_modules/.bin/bun is missing (run npm ci)';
if (skip) console.log(`[skip] rejection log server test: ${skip}`);

type Line = { msg: string; suppressed?: number; lines?: Array<{ msg: string; count: number }> };
const parse = (out: string): Line[] =>
  out
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Line);

describe('rateLimited()', () => {
  test('writes at most perSecond lines a second, then one summary with what it dropped', async () => {
    const out: string[] = [];
    let now = 0;
    const log = rateLimited(jsonLogger({ write: (l) => out.push(l) }), {
      perSecond: 3,
      now: () => now,
      summaryAfterMs: 20,
    });
    for (let i = 0; i < 10; i++) log.warn('signature rejected', { i });
    log.warn('body too large');
    assert.equal(out.length, 3, 'a burst of perSecond lines');
    now += 1000;
    log.warn('signature rejected', { i: 10 });
    const lines = out.map((l) => JSON.parse(l) as Line);
    assert.equal(lines[3]?.msg, 'suppressed 8 similar lines');
    assert.deepEqual(lines[3]?.lines, [
      { msg: 'signature rejected', count: 7 },
      { msg: 'body too large', count: 1 },
    ]);
    assert.equal(lines[4]?.msg, 'signature rejected');
    // Dropped lines with nothing after them are still summarized, once the summary delay passes.
    for (let i = 0; i < 5; i++) log.warn('signature rejected');
    await sleep(60);
    assert.equal((JSON.parse(out.at(-1) as string) as Line).msg, 'suppressed 3 similar lines');
  });

  test('a rate of 0 writes nothing; a logger below the level costs no token', () => {
    const out: string[] = [];
    rateLimited(jsonLogger({ write: (l) => out.push(l) }), { perSecond: 0 }).warn('x');
    const quiet = rateLimited(jsonLogger({ level: 'error', write: (l) => out.push(l) }), { perSecond: 1 });
    quiet.warn('dropped by level, not by the bucket');
    quiet.error('written');
    assert.deepEqual(
      out.map((l) => (JSON.parse(l) as Line).msg),
      ['written'],
    );
  });
});

describe('server: a flood of unauthenticated requests', { skip }, () => {
  test('600 unsigned or oversized requests: all counted, a bounded number of lines, and a summary', async () => {
    const server = await startServer({
      env: { LAVA_WEBHOOK_SECRET: SECRET, LAVA_WEBHOOK_STORE: 'memory', LOG_LEVEL: 'warn' },
    });
    try {
      const hook = `${server.url}/webhooks/lava`;
      const body = JSON.stringify(samplePayload('customer.created', { customerId: 'cus_flood' }));
      const started = Date.now();
      for (let batch = 0; batch < 20; batch++) {
        await Promise.all(
          Array.from({ length: 30 }, async (_, i) => {
            const oversized = i % 10 === 0;
            const res = await fetch(hook, {
              method: 'POST',
              headers: { 'content-type': 'application/json', 'x-webhook-signature': 'f'.repeat(64) },
              body: oversized ? 'x'.repeat(300 * 1024) : body,
            });
            await res.body?.cancel();
            assert.equal(res.status, oversized ? 413 : 401);
          }),
        );
      }
      const seconds = (Date.now() - started) / 1000;
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      assert.match(metrics, /^lava_webhooks_deliveries_total\{outcome="invalid_signature"\} 540$/m);
      assert.match(metrics, /^lava_webhooks_deliveries_total\{outcome="too_large"\} 60$/m);
      const summaries = await waitFor(
        () => {
          const s = parse(server.output()).filter((l) => l.msg.startsWith('suppressed '));
          const total = parse(server.output()).filter(
            (l) => l.msg === 'signature rejected' || l.msg === 'body too large',
          ).length;
          return s.reduce((n, l) => n + (l.suppressed ?? 0), 0) + total === 600 ? s : null;
        },
        5000,
        'the summary of the dropped lines',
      );
      const written = parse(server.output()).filter(
        (l) => l.msg === 'signature rejected' || l.msg === 'body too large',
      );
      // 10 a second, a burst of 10 at the start: far fewer than 600.
      assert.ok(written.length <= 10 + Math.ceil(seconds * 10) + 1, `${written.length} lines in ${seconds} s`);
      assert.ok(summaries.length >= 1);
      assert.match(summaries[0]?.msg ?? '', /^suppressed \d+ similar lines$/);
    } finally {
      server.kill('SIGKILL');
      await server.exited;
    }
  });
});
