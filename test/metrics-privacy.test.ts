// /metrics stays bounded and can stay private: event labels are capped however many names signed deliveries invent,
// a bearer token guards it (LAVA_WEBHOOK_METRICS_TOKEN), and it can move to a port of its own
// (LAVA_WEBHOOK_METRICS_PORT), on Bun and on Deno.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createLavaWebhooks, jsonLogger, memoryStore } from '../src/mod.ts';
import { MAX_OTHER_EVENT_LABELS, Metrics } from '../src/observability/metrics.ts';
import { SECRET, signedRequest, waitFor } from './helpers/lava.ts';
import { binAvailable, freePort, startServer } from './helpers/server-process.ts';
import { serveReceiver } from './helpers/serve.ts';

const TOKEN = 'metrics-token-for-the-suite-0123456789';

describe('Metrics: bounded event labels', () => {
  test('handlerRun() gives the known events and the first others a label; the rest count as event="other"', () => {
    const m = new Metrics();
    for (let i = 0; i < 5000; i++) m.handlerRun(`invented.${i}`, 'ok');
    m.handlerRun('customer.created', 'ok');
    const events = new Set([...m.handlerRuns.values.values()].map((v) => v.labels.event));
    assert.ok(events.has('customer.created'), 'a known event keeps its label even after the cap is reached');
    assert.ok(events.has('other'));
    assert.equal(events.size, MAX_OTHER_EVENT_LABELS + 2);
    assert.match(m.render(null), new RegExp(`event="other",outcome="ok"\\} ${5000 - MAX_OTHER_EVENT_LABELS}`));
  });

  test('over HTTP: signed deliveries of 60 invented event names leave a bounded /metrics', async () => {
    const lava = createLavaWebhooks({
      secret: SECRET,
      store: memoryStore(),
      logger: jsonLogger({ level: 'silent' }),
      handlers: {
        'customer.created': () => {},
        'customer.wallet.balance.updated': () => {},
        'customer.deleted': () => {},
      },
      onUnknown: () => {},
      pollMs: 20,
    });
    const h = await serveReceiver(lava);
    try {
      for (let i = 0; i < 60; i++) {
        const body = JSON.stringify({
          id: `evt_${i}`,
          event: `invented.event.${i}`,
          data: { customer_id: `cus_${i}` },
        });
        const res = await fetch(signedRequest(h.url, body));
        assert.equal(res.status, 200, await res.text());
      }
      const text = await waitFor(
        async () => {
          const t = await (await fetch(`${h.served.url}/metrics`)).text();
          return /^lava_webhooks_pending 0$/m.test(t) ? t : null;
        },
        5000,
        'all processed',
      );
      const labels = [...text.matchAll(/^lava_webhooks_handler_runs_total\{event="([^"]*)"/gm)].map((m) => m[1]);
      assert.equal(labels.length, MAX_OTHER_EVENT_LABELS + 1, labels.join(', '));
      assert.match(
        text,
        new RegExp(
          `^lava_webhooks_handler_runs_total\\{event="other",outcome="ok"\\} ${60 - MAX_OTHER_EVENT_LABELS}$`,
          'm',
        ),
      );
    } finally {
      await h.close();
    }
  });
});

describe('metricsToken', () => {
  test('GET /metrics answers 401 without the bearer token or with a wrong one, and counts the refusals', async () => {
    const lava = createLavaWebhooks({
      secret: SECRET,
      store: memoryStore(),
      logger: jsonLogger({ level: 'silent' }),
      metricsToken: TOKEN,
    });
    const h = await serveReceiver(lava);
    try {
      const url = `${h.served.url}/metrics`;
      const none = await fetch(url);
      assert.equal(none.status, 401);
      assert.equal(none.headers.get('www-authenticate'), 'Bearer realm="metrics"');
      assert.deepEqual(await none.json(), { error: 'unauthorized' });
      const wrong = await fetch(url, { headers: { authorization: `Bearer ${TOKEN.slice(0, -1)}x` } });
      assert.equal(wrong.status, 401);
      await wrong.body?.cancel();
      const basic = await fetch(url, { headers: { authorization: `Basic ${btoa(`u:${TOKEN}`)}` } });
      assert.equal(basic.status, 401);
      await basic.body?.cancel();
      const ok = await fetch(url, { headers: { authorization: `Bearer ${TOKEN}` } });
      assert.equal(ok.status, 200);
      assert.match(await ok.text(), /^lava_webhooks_metrics_unauthorized_total 3$/m);
      // The webhook route and /healthz need no token.
      assert.equal((await fetch(`${h.served.url}/healthz`)).status, 200);
    } finally {
      await h.close();
    }
  });
});

const runtimes = (['bun', 'deno'] as const).filter((r) => binAvailable(r));
if (runtimes.length < 2) console.log('[skip] some server runtimes are missing from node_modules/.bin (run npm ci)');

for (const runtime of runtimes) {
  describe(`server: private /metrics (${runtime})`, () => {
    test('LAVA_WEBHOOK_METRICS_TOKEN: 401 without the token, 200 with it', async () => {
      const server = await startServer({
        runtime,
        env: { LAVA_WEBHOOK_SECRET: SECRET, LAVA_WEBHOOK_STORE: 'memory', LAVA_WEBHOOK_METRICS_TOKEN: TOKEN },
      });
      try {
        const none = await fetch(`${server.url}/metrics`);
        assert.equal(none.status, 401);
        await none.body?.cancel();
        const ok = await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
        assert.equal(ok.status, 200);
        assert.match(await ok.text(), /lava_webhooks_deliveries_total/);
      } finally {
        server.kill('SIGKILL');
        await server.exited;
      }
    });

    test('LAVA_WEBHOOK_METRICS_PORT: /metrics is served there only, and nothing else is', async () => {
      const metricsPort = await freePort();
      const server = await startServer({
        runtime,
        env: {
          LAVA_WEBHOOK_SECRET: SECRET,
          LAVA_WEBHOOK_STORE: 'memory',
          LAVA_WEBHOOK_METRICS_PORT: String(metricsPort),
          LAVA_WEBHOOK_METRICS_HOST: '127.0.0.1',
        },
      });
      try {
        const publicMetrics = await fetch(`${server.url}/metrics`);
        assert.equal(publicMetrics.status, 404);
        await publicMetrics.body?.cancel();
        const metricsUrl = `http://127.0.0.1:${metricsPort}`;
        const text = await waitFor(
          async () => {
            const r = await fetch(`${metricsUrl}/metrics`).catch(() => null);
            return r?.status === 200 ? r.text() : null;
          },
          5000,
          'the metrics port',
        );
        assert.match(text, /^lava_webhooks_deliveries_total\{outcome="accepted"\} 0$/m);
        const hook = await fetch(signedRequest(`${metricsUrl}/webhooks/lava`, '{}'));
        assert.equal(hook.status, 404, 'deliveries are not taken on the metrics port');
        await hook.body?.cancel();
      } finally {
        server.kill('SIGKILL');
        await server.exited;
      }
    });
  });
}
