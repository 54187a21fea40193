// Relay mode against a real downstream HTTP server that verifies every request with the `standardwebhooks` library.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { loadConfig } from '../../src/config.ts';
import {
  ConfigError,
  DEFAULT_KEEP_HEADERS,
  Metrics,
  createLavaWebhooks,
  jsonLogger,
  memoryStore,
} from '../../src/mod.ts';
import { parseRetryAfter, redactUrl, relay, webhookId } from '../../src/relay/relay.ts';
import { decodeSecret } from '../../src/relay/standard-webhooks.ts';
import { samplePayload } from '../../src/samples.ts';
import { SECRET, lavaSign, signedRequest, sleep, waitFor } from '../helpers/lava.ts';
import { binAvailable, freePort, startServer } from '../helpers/server-process.ts';

const RELAY_SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const verifier = new Webhook(RELAY_SECRET);

interface Arrival {
  id: string;
  at: number;
  body: string;
  verified: boolean;
  lavaSignature: string | null;
  event: string | null;
}

/** A downstream app: verifies each request, records it, answers what `respond` says. */
class Downstream {
  arrivals: Arrival[] = [];
  respond: (
    a: Arrival,
    n: number,
  ) => { status: number; headers?: Record<string, string>; hang?: boolean; stallBody?: boolean } = () => ({
    status: 200,
  });
  server: Server | null = null;
  port = 0;
  private sockets = new Set<import('node:net').Socket>();

  async start(port = 0): Promise<this> {
    this.server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string') headers[k] = v;
        let verified = false;
        try {
          verifier.verify(body, headers);
          verified = true;
        } catch {
          verified = false;
        }
        const a: Arrival = {
          id: headers['webhook-id'] ?? '',
          at: Date.now(),
          body,
          verified,
          lavaSignature: headers['x-webhook-signature'] ?? null,
          event: headers['x-lava-event'] ?? null,
        };
        this.arrivals.push(a);
        const r = this.respond(a, this.arrivals.length);
        if (r.hang) return; // never answers
        if (r.stallBody) {
          // The status line and headers go out at once; the body never comes.
          res.writeHead(r.status, { 'content-type': 'text/plain', 'content-length': '100', ...r.headers });
          res.flushHeaders();
          return;
        }
        res.writeHead(r.status, { 'content-type': 'text/plain', ...r.headers });
        res.end(r.status < 300 ? 'ok' : `nope ${r.status} ${'x'.repeat(400)}`);
      });
    });
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((r) => this.server?.listen(port, '127.0.0.1', () => r()));
    const addr = this.server.address();
    this.port = typeof addr === 'object' && addr ? addr.port : 0;
    return this;
  }

  get url() {
    return `http://127.0.0.1:${this.port}/hooks/lava`;
  }

  uniqueIds(): Set<string> {
    return new Set(this.arrivals.filter((a) => a.verified).map((a) => a.id));
  }

  async stop() {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.server = null;
  }
}

const downstreams: Downstream[] = [];
const dirs: string[] = [];
after(async () => {
  for (const d of downstreams) await d.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function downstream(port = 0) {
  const d = await new Downstream().start(port);
  downstreams.push(d);
  return d;
}

function relayReceiver(
  url: string,
  extra: { timeoutMs?: number; scheduleMs?: number[]; handlerTimeoutMs?: number; forwardSignature?: boolean } = {},
) {
  const logs: string[] = [];
  const logger = jsonLogger({ level: 'debug', write: (l) => logs.push(l) });
  const metrics = new Metrics();
  const lava = createLavaWebhooks({
    secret: SECRET,
    store: memoryStore(),
    logger,
    metrics,
    pollMs: 20,
    handlerTimeoutMs: extra.handlerTimeoutMs,
    retry: { scheduleMs: extra.scheduleMs ?? [50, 100, 200, 400], jitter: 0 },
    // Kept whatever the default list says, so the relay alone decides whether it is forwarded.
    keepHeaders: [...DEFAULT_KEEP_HEADERS, 'x-webhook-signature'],
    process: relay({
      url,
      secret: RELAY_SECRET,
      timeoutMs: extra.timeoutMs ?? 2000,
      forwardSignature: extra.forwardSignature,
      logger,
      metrics,
    }),
  });
  lava.start();
  return { lava, logs, metrics };
}

async function send(lava: { fetch: (r: Request) => Response | Promise<Response> }, customerId: string) {
  const body = JSON.stringify(samplePayload('customer.created', { customerId }));
  const res = await lava.fetch(signedRequest('http://receiver/webhooks/lava', body));
  assert.equal(res.status, 200);
  return body;
}

describe('relay()', () => {
  test('delivers the original body, signed so the standardwebhooks library verifies it, without Lava’s signature', async () => {
    const d = await downstream();
    const { lava, metrics } = relayReceiver(d.url);
    const body = await send(lava, 'cus_relay_ok');
    await waitFor(async () => (await lava.store.get('customer.created:cus_relay_ok'))?.status === 'done', 5000, 'done');
    assert.equal(d.arrivals.length, 1);
    const a = d.arrivals[0] as Arrival;
    assert.equal(a.verified, true);
    assert.equal(a.id, 'customer.created:cus_relay_ok');
    assert.equal(a.body, body, 'byte-for-byte the body Lava sent');
    const kept = await lava.store.get('customer.created:cus_relay_ok');
    assert.equal(kept?.headers['x-webhook-signature'], lavaSign(SECRET, body), 'the store kept it');
    assert.equal(a.lavaSignature, null, 'Lava’s own signature is not forwarded by default');
    assert.equal(a.event, 'customer.created');
    assert.match(metrics.render(null), /lava_webhooks_relay_attempts_total\{outcome="ok"\} 1/);
    assert.match(metrics.render(null), /lava_webhooks_relay_latency_ms_count 1/);
    await lava.close();
  });

  test('forwardSignature: Lava’s own signature is forwarded when the record kept it', async () => {
    const d = await downstream();
    const { lava } = relayReceiver(d.url, { forwardSignature: true });
    const body = await send(lava, 'cus_relay_fwd');
    await waitFor(
      async () => (await lava.store.get('customer.created:cus_relay_fwd'))?.status === 'done',
      5000,
      'done',
    );
    const a = d.arrivals[0] as Arrival;
    assert.equal(a.verified, true, 'still signed with the relay secret');
    assert.equal(a.lavaSignature, lavaSign(SECRET, body));
    await lava.close();
  });

  test('LAVA_RELAY_FORWARD_SIGNATURE is a boolean, off by default', () => {
    const base = { LAVA_WEBHOOK_SECRET: 's', LAVA_RELAY_URL: 'https://a.example/x', LAVA_RELAY_SECRET: RELAY_SECRET };
    assert.equal(loadConfig(base).LAVA_RELAY_FORWARD_SIGNATURE, false);
    assert.equal(loadConfig({ ...base, LAVA_RELAY_FORWARD_SIGNATURE: 'true' }).LAVA_RELAY_FORWARD_SIGNATURE, true);
    assert.equal(loadConfig({ ...base, LAVA_RELAY_FORWARD_SIGNATURE: '1' }).LAVA_RELAY_FORWARD_SIGNATURE, true);
    assert.throws(
      () => loadConfig({ ...base, LAVA_RELAY_FORWARD_SIGNATURE: 'yes' }),
      /LAVA_RELAY_FORWARD_SIGNATURE: expected true or false/,
    );
  });

  test('downstream down, then up: delivered after retries, exactly once per key as the downstream sees it', async () => {
    const port = await freePort();
    const { lava, metrics } = relayReceiver(`http://127.0.0.1:${port}/hooks/lava`, {
      scheduleMs: [100, 100, 200, 200, 400, 400],
    });
    for (const c of ['down_a', 'down_b', 'down_c']) await send(lava, c);
    await waitFor(() => /relay_attempts_total\{outcome="retry"\} [3-9]/.test(metrics.render(null)), 5000, 'retries');
    const d = await downstream(port);
    await waitFor(async () => (await lava.store.counts()).done === 3, 8000, 'all delivered');
    assert.equal(d.uniqueIds().size, 3);
    assert.equal(d.arrivals.length, 3, 'no key arrived twice');
    assert.ok(d.arrivals.every((a) => a.verified));
    await lava.close();
  });

  test('a 400 answer is a dead letter with the status; requeued after the fix it is delivered', async () => {
    const d = await downstream();
    let broken = true;
    d.respond = () => ({ status: broken ? 400 : 204 });
    const { lava } = relayReceiver(d.url);
    await send(lava, 'cus_400');
    const key = 'customer.created:cus_400';
    const dead = await waitFor(
      async () => {
        const r = await lava.store.get(key);
        return r?.status === 'dead' ? r : null;
      },
      5000,
      'dead letter',
    );
    assert.match(dead.lastError ?? '', /answered 400: nope 400 x+/);
    assert.ok((dead.lastError ?? '').length < 400, 'only the first bytes of the answer are kept');
    assert.equal(dead.attempts, 1, 'no retries for a 4xx');
    broken = false;
    await lava.store.requeue(key, Date.now());
    await waitFor(async () => (await lava.store.get(key))?.status === 'done', 5000, 'delivered after requeue');
    assert.equal(d.arrivals.length, 2);
    await lava.close();
  });

  test('429 with Retry-After is retried no sooner than asked', async () => {
    const d = await downstream();
    d.respond = (_a, n) => (n === 1 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 200 });
    const { lava } = relayReceiver(d.url, { scheduleMs: [20, 20] });
    await send(lava, 'cus_429');
    await waitFor(() => d.arrivals.length === 2, 5000, 'second attempt');
    const gap = (d.arrivals[1] as Arrival).at - (d.arrivals[0] as Arrival).at;
    assert.ok(gap >= 950, `waited ${gap} ms`);
    await lava.close();
  });

  test('a Retry-After longer than an hour is held to an hour', async () => {
    const d = await downstream();
    d.respond = () => ({ status: 503, headers: { 'retry-after': String(7 * 86_400) } });
    const { lava } = relayReceiver(d.url, { scheduleMs: [20, 20] });
    await send(lava, 'cus_retry_week');
    const r = await waitFor(
      async () => {
        const rec = await lava.store.get('customer.created:cus_retry_week');
        return rec?.status === 'retrying' ? rec : null;
      },
      5000,
      'retrying',
    );
    const wait = r.nextAttemptAt - Date.now();
    assert.ok(wait > 3_500_000 && wait <= 3_600_000, `waits about an hour, not a week (${wait} ms)`);
    await lava.close(100);
  });

  test('5xx is retried; 410 is a dead letter with a warning that the endpoint is gone', async () => {
    const d = await downstream();
    d.respond = (a) => (a.body.includes('cus_gone') ? { status: 410 } : { status: 502 });
    const { lava, logs } = relayReceiver(d.url, { scheduleMs: [30] });
    await send(lava, 'cus_gone');
    await send(lava, 'cus_502');
    await waitFor(async () => (await lava.store.counts()).dead === 2, 5000, 'both dead');
    assert.equal((await lava.store.get('customer.created:cus_gone'))?.attempts, 1);
    assert.equal((await lava.store.get('customer.created:cus_502'))?.attempts, 2, '502 was retried once');
    assert.ok(logs.some((l) => l.includes('"level":"warn"') && l.includes('endpoint is gone (410)')));
    await lava.close();
  });

  test('a hanging downstream times out and the attempt is retried', async () => {
    const d = await downstream();
    d.respond = (_a, n) => (n === 1 ? { status: 200, hang: true } : { status: 200 });
    const { lava } = relayReceiver(d.url, { timeoutMs: 200 });
    await send(lava, 'cus_hang');
    const key = 'customer.created:cus_hang';
    await waitFor(async () => (await lava.store.get(key))?.status === 'done', 5000, 'done after timeout');
    const r = await lava.store.get(key);
    assert.equal(r?.attempts, 2);
    assert.match(r?.lastError ?? '', /timed out after 200 ms/);
    await lava.close();
  });

  test('per-event endpoints: each event goes to its own URL, the rest to the default', async () => {
    const main = await downstream();
    const deleted = await downstream();
    const metrics = new Metrics();
    const lava = createLavaWebhooks({
      secret: SECRET,
      store: memoryStore(),
      logLevel: 'silent',
      process: relay({ url: main.url, urls: { 'customer.deleted': deleted.url }, secret: RELAY_SECRET, metrics }),
    });
    await send(lava, 'cus_route');
    const body = JSON.stringify(samplePayload('customer.deleted', { customerId: 'cus_route' }));
    assert.equal((await lava.fetch(signedRequest('http://receiver/webhooks/lava', body))).status, 200);
    await lava.drain();
    assert.deepEqual(
      main.arrivals.map((a) => a.event),
      ['customer.created'],
    );
    assert.deepEqual(
      deleted.arrivals.map((a) => a.event),
      ['customer.deleted'],
    );
    await lava.close();
  });

  test('configuration mistakes are refused with a message that says what is expected', () => {
    assert.throws(() => relay({ url: 'http://x', secret: 'not-a-secret' }), /whsec_/);
    assert.throws(() => relay({ url: 'http://x', secret: 'whsec_!!!' }), /not valid base64/);
    assert.throws(() => relay({ url: 'ftp://x', secret: RELAY_SECRET }), /http\(s\) URL/);
    assert.throws(() => relay({ secret: RELAY_SECRET }), /no endpoint/);
    assert.equal(decodeSecret(RELAY_SECRET).length, 24);
  });

  test('an answer whose body stalls after its headers is cut at the attempt timeout, not the handler timeout', async () => {
    const d = await downstream();
    d.respond = (_a, n) => (n === 1 ? { status: 503, stallBody: true } : { status: 200 });
    const { lava } = relayReceiver(d.url, { timeoutMs: 200, handlerTimeoutMs: 30_000 });
    const started = Date.now();
    await send(lava, 'cus_stall');
    const key = 'customer.created:cus_stall';
    await waitFor(async () => (await lava.store.get(key))?.status === 'done', 5000, 'done after the stalled answer');
    assert.ok(Date.now() - started < 5000);
    const r = await lava.store.get(key);
    assert.equal(r?.attempts, 2);
    assert.match(r?.lastError ?? '', /answered 503/);
    await lava.close();
  });

  test('a key a header cannot carry is sent percent-encoded in webhook-id, and the signature still verifies', async () => {
    const d = await downstream();
    const { lava } = relayReceiver(d.url);
    const body = JSON.stringify(
      samplePayload('customer.wallet.balance.updated', { customerId: 'cus_odd', extra: { id: 'évt 😀\n1' } }),
    );
    assert.equal((await lava.fetch(signedRequest('http://receiver/webhooks/lava', body))).status, 200);
    const key = 'id:évt 😀\n1';
    await waitFor(async () => (await lava.store.get(key))?.status === 'done', 5000, 'done');
    const a = d.arrivals[0] as Arrival;
    assert.equal(a.verified, true);
    assert.equal(a.id, webhookId(key));
    assert.equal(decodeURIComponent(a.id.slice('enc:'.length)), key, 'the downstream can recover the key');
    assert.equal(webhookId('customer.created:cus_1'), 'customer.created:cus_1', 'plain keys are sent as they are');
    await lava.close();
  });

  test('a redirect is a dead letter that names where it points; URLs in errors and logs lose their query', async () => {
    const d = await downstream();
    d.respond = () => ({ status: 302, headers: { location: '/elsewhere?token=abc' } });
    const { lava, logs, metrics } = relayReceiver(`${d.url}?token=s3cret`);
    await send(lava, 'cus_redirect');
    const dead = await waitFor(
      async () => {
        const r = await lava.store.get('customer.created:cus_redirect');
        return r?.status === 'dead' ? r : null;
      },
      5000,
      'dead letter',
    );
    assert.match(
      dead.lastError ?? '',
      /answered 302 \(redirects are not followed; set the URL it points to: http:\/\/127\.0\.0\.1:\d+\/elsewhere\?…\)/,
    );
    assert.equal(d.arrivals.length, 1, 'not followed');
    assert.ok(!(dead.lastError ?? '').includes('s3cret') && !logs.some((l) => l.includes('s3cret')), 'no token leaks');
    assert.equal(redactUrl('https://u:p@app.example/hook?x=1'), 'https://app.example/hook?…');
    assert.match(metrics.render(null), /lava_webhooks_relay_attempts_total\{outcome="dead"\} 1/);
    assert.match(metrics.render(null), /lava_webhooks_relay_latency_ms_bucket\{le="\+Inf"\} 1/);
    await lava.close();
  });

  test('configuration mistakes are ConfigErrors; a misspelt or legacy LAVA_RELAY_URL_<EVENT> is refused', () => {
    assert.throws(() => relay({ url: 'http://x', secret: 'nope' }), ConfigError);
    const base = { LAVA_WEBHOOK_SECRET: 's', LAVA_RELAY_URL: 'https://a.example/x', LAVA_RELAY_SECRET: RELAY_SECRET };
    assert.throws(
      () => loadConfig({ ...base, LAVA_RELAY_URL_CUSTOMER_CREATD: 'http://a/y' }),
      /LAVA_RELAY_URL_CUSTOMER_CREATD: not a known event; expected one of LAVA_RELAY_URL_CUSTOMER_CREATED/,
    );
    assert.throws(
      () => loadConfig({ ...base, LAVA_RELAY_URL_CONNECTION_DELETED: 'http://a/y' }),
      /use LAVA_RELAY_URL_CUSTOMER_DELETED/,
    );
    assert.throws(
      () => loadConfig({ ...base, LAVA_RELAY_URL_CUSTOMER_DELETED: 'a/y' }),
      /CUSTOMER_DELETED: expected an http\(s\) URL/,
    );
    assert.doesNotThrow(() => loadConfig({ ...base, LAVA_RELAY_URL_CUSTOMER_DELETED: 'https://b.example/y' }));
  });

  test('relay() refuses plain http:// to another machine unless allowInsecureHttp; loopback needs no opt-in', () => {
    for (const url of ['http://app.example/hooks', 'http://10.0.0.7:8080/hooks', 'http://localhost.example.com/x']) {
      assert.throws(
        () => relay({ url, secret: RELAY_SECRET }),
        (e: Error) =>
          e instanceof ConfigError && /plain http:\/\/ to another machine .*allowInsecureHttp: true/.test(e.message),
        url,
      );
      assert.doesNotThrow(() => relay({ url, secret: RELAY_SECRET, allowInsecureHttp: true }));
    }
    assert.throws(
      () => relay({ urls: { 'customer.deleted': 'http://app.example/d' }, secret: RELAY_SECRET }),
      /urls\[customer\.deleted\]/,
    );
    for (const url of [
      'http://127.0.0.1:3000/x',
      'http://127.8.9.10/x',
      'http://localhost:3000/x',
      'http://api.localhost/x',
      'http://[::1]:3000/x',
      'https://app.example/x',
    ]) {
      assert.doesNotThrow(() => relay({ url, secret: RELAY_SECRET }), url);
    }
    // The same rule names the variable at start-up.
    const env = { LAVA_WEBHOOK_SECRET: 's', LAVA_RELAY_SECRET: RELAY_SECRET };
    assert.throws(
      () => loadConfig({ ...env, LAVA_RELAY_URL: 'http://app.example/x' }),
      /LAVA_RELAY_URL: plain http:\/\//,
    );
    assert.throws(
      () =>
        loadConfig({
          ...env,
          LAVA_RELAY_URL: 'https://app.example/x',
          LAVA_RELAY_URL_CUSTOMER_DELETED: 'http://app.example/d',
        }),
      /LAVA_RELAY_URL_CUSTOMER_DELETED: plain http:\/\//,
    );
    assert.equal(
      loadConfig({ ...env, LAVA_RELAY_URL: 'http://app.example/x', LAVA_RELAY_ALLOW_HTTP: 'true' })
        .LAVA_RELAY_ALLOW_HTTP,
      true,
    );
    assert.doesNotThrow(() => loadConfig({ ...env, LAVA_RELAY_URL: 'http://127.0.0.1:3000/x' }));
  });

  test('parseRetryAfter() reads seconds and HTTP dates', () => {
    assert.equal(parseRetryAfter('3', 0), 3000);
    assert.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4_000), 6000);
    assert.equal(parseRetryAfter('soon', 0), null);
    assert.equal(parseRetryAfter(null, 0), null);
  });
});

const skip = binAvailable('bun') ? false : 'node_modules/.bin/bun is missing (run npm ci)';
if (skip) console.log(`[skip] relay server process: ${skip}`);

describe('relay server process', { skip }, () => {
  test('LAVA_RELAY_FORWARD_SIGNATURE=true: the server keeps Lava’s signature and the relay forwards it', async () => {
    const d = await downstream();
    const dir = mkdtempSync(join(tmpdir(), 'lava-relay-fwd-'));
    dirs.push(dir);
    const server = await startServer({
      env: {
        LAVA_WEBHOOK_SECRET: SECRET,
        LAVA_WEBHOOK_DB: join(dir, 'lava.sqlite'),
        LAVA_RELAY_URL: d.url,
        LAVA_RELAY_SECRET: RELAY_SECRET,
        LAVA_RELAY_FORWARD_SIGNATURE: 'true',
        LAVA_WEBHOOK_POLL: '100ms',
      },
    });
    try {
      const body = JSON.stringify(samplePayload('customer.created', { customerId: 'cus_relay_fwd_env' }));
      const res = await fetch(signedRequest(`${server.url}/webhooks/lava`, body));
      assert.equal(res.status, 200, await res.text());
      await waitFor(() => d.arrivals.length >= 1, 10_000, 'the relayed request');
      const a = d.arrivals[0] as Arrival;
      assert.equal(a.verified, true);
      assert.equal(a.lavaSignature, lavaSign(SECRET, body));
    } finally {
      server.kill('SIGTERM');
      await server.exited;
    }
  });

  test('kill -9 of the relay under load: after a restart every acknowledged event reaches the downstream', async () => {
    const d = await downstream();
    d.respond = () => ({ status: 200 });
    const dir = mkdtempSync(join(tmpdir(), 'lava-relay-'));
    dirs.push(dir);
    const env = {
      LAVA_WEBHOOK_SECRET: SECRET,
      LAVA_WEBHOOK_DB: join(dir, 'lava.sqlite'),
      LAVA_RELAY_URL: d.url,
      LAVA_RELAY_SECRET: RELAY_SECRET,
      LAVA_WEBHOOK_LEASE: '1s',
      LAVA_WEBHOOK_POLL: '100ms',
      LAVA_WEBHOOK_RETRY_SCHEDULE: '100ms,200ms,400ms',
    };
    let server = await startServer({ env });
    const acked: string[] = [];
    let n = 0;
    let killed = false;
    await Promise.all(
      Array.from({ length: 8 }, async (_, lane) => {
        for (let i = 0; i < 40 && !killed; i++) {
          const customer = `cus_relay_${lane}_${i}`;
          const body = JSON.stringify(samplePayload('customer.created', { customerId: customer }));
          if (++n === 150) {
            killed = true;
            server.kill('SIGKILL');
          }
          try {
            const res = await fetch(signedRequest(`${server.url}/webhooks/lava`, body));
            if (res.status === 200) acked.push(`customer.created:${customer}`);
            else await res.body?.cancel();
          } catch {
            // not acknowledged
          }
        }
      }),
    );
    await server.exited;
    assert.ok(acked.length >= 60, `load before the kill (${acked.length})`);
    server = await startServer({ env });
    try {
      await waitFor(() => acked.every((k) => d.uniqueIds().has(k)), 20_000, 'every acked event relayed');
      const raw = d.arrivals.length;
      const unique = d.uniqueIds().size;
      assert.ok(
        d.arrivals.every((a) => a.verified),
        'every request verified',
      );
      assert.ok(
        d.arrivals.every((a) => a.lavaSignature === null),
        'Lava’s signature is not forwarded by default',
      );
      // Only relays in flight at the kill repeat: running or with their outcome still being written, at most five
      // times LAVA_WEBHOOK_CONCURRENCY (8 by default), as docs/operations.md says.
      assert.ok(raw - unique <= 5 * 8, `repeats only for requests in flight at the kill (${raw - unique})`);
      console.log(`[info] relay kill -9: ${acked.length} acknowledged, ${unique} relayed, ${raw - unique} repeated`);
      await sleep(200);
    } finally {
      server.kill('SIGKILL');
      await server.exited;
    }
  });
});
