// Fault and bad-input suite over a real HTTP server: generated hostile requests, duplicate storms, slow senders and
// failing stores. Invariants: no 5xx unless the store fails, no handler run without a valid signature, no stored
// record changed by a later request, memory bounded, nothing acknowledged that was not recorded.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import {
  type EventRecord,
  type LavaWebhooksOptions,
  type Store,
  createLavaWebhooks,
  jsonLogger,
  memoryStore,
} from '../src/mod.ts';
import { nativeSha256Hex, nativeVerifier } from '../src/runtime/verify-native.ts';
import { samplePayload } from '../src/samples.ts';
import type { SqliteConnection } from '../src/stores/sqlite-driver.ts';
import { sqliteStore, sqliteUnavailableReason } from '../src/stores/sqlite.ts';
import { SECRET, lavaSign, sleep, waitFor } from './helpers/lava.ts';
import { type Served, serveReceiver } from './helpers/serve.ts';

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== 'undefined';
// Bun is the fastest runner here; the others run fewer generated cases so the whole suite stays within minutes.
const RUNS = isBun ? 150 : 40;
const enc = new TextEncoder();
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** SQLite with group commit where the runtime has it (the server's own set-up), else the memory store. */
function durableStore(): { store: Store; kind: string } {
  if (sqliteUnavailableReason) return { store: memoryStore(), kind: 'memory' };
  const d = mkdtempSync(join(tmpdir(), 'lava-fault-'));
  dirs.push(d);
  return { store: sqliteStore({ path: join(d, 'events.db'), groupCommit: true }), kind: 'sqlite' };
}

interface Harness {
  served: Served;
  url: string;
  store: Store;
  runs: Array<{ key: string; body: string; deliveries: number }>;
  lava: ReturnType<typeof createLavaWebhooks>;
  close(): Promise<void>;
}

async function harness(options: Partial<LavaWebhooksOptions> = {}, delayMs = 0): Promise<Harness> {
  const runs: Harness['runs'] = [];
  const record = async (_e: unknown, ctx: { key: string; body: Uint8Array; deliveries: number }) => {
    if (delayMs) await sleep(delayMs);
    runs.push({ key: ctx.key, body: hex(ctx.body), deliveries: ctx.deliveries });
  };
  const store = options.store ?? memoryStore();
  const lava = createLavaWebhooks({
    secret: SECRET,
    store,
    verifier: nativeVerifier,
    digest: nativeSha256Hex,
    logger: jsonLogger({ level: 'silent' }),
    handlers: { 'customer.created': record, 'customer.wallet.balance.updated': record, 'customer.deleted': record },
    onUnknown: record,
    pollMs: 100,
    retry: { scheduleMs: [50, 100], jitter: 0 },
    ...options,
  });
  return { ...(await serveReceiver(lava)), store, runs, lava };
}

const balance = (customer: string, amount: string) =>
  JSON.stringify(samplePayload('customer.wallet.balance.updated', { customerId: customer, data: { balance: amount } }));

function post(url: string, body: string | Uint8Array, headers: Record<string, string> = {}) {
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-webhook-signature': lavaSign(SECRET, body), ...headers },
    body: body as BodyInit,
  });
}

/** The fields of a record that come from its delivery and must never change afterwards. */
function frozen(r: EventRecord) {
  return {
    key: r.key,
    event: r.event,
    customerId: r.customerId,
    body: hex(r.body),
    headers: JSON.stringify(r.headers),
    receivedAt: r.receivedAt,
    seq: r.seq,
  };
}

async function allRecords(store: Store): Promise<EventRecord[]> {
  const out: EventRecord[] = [];
  let afterSeq = 0;
  for (;;) {
    const page = await store.list({ afterSeq, limit: 500 });
    out.push(...page);
    if (page.length < 500) return out;
    afterSeq = (page[page.length - 1] as EventRecord).seq;
  }
}

const rss = () => (globalThis as { process?: { memoryUsage(): { rss: number } } }).process?.memoryUsage().rss ?? 0;

describe('bad input, generated', () => {
  test('generated hostile requests: never a 5xx, never a run without a valid signature, no stored record changed', async () => {
    const { store, kind } = durableStore();
    const LIMIT = 256 * 1024;
    const h = await harness({ store, bodyLimit: LIMIT, bodyTimeoutMs: 3000 });
    try {
      // Records that later requests (replays with other headers among them) must not change.
      const seeded = Array.from({ length: 6 }, (_, i) => balance(`cus_seed_${i}`, `${i}.00`));
      for (const b of seeded) assert.equal((await post(h.url, b, { 'x-request-id': 'original' })).status, 200);
      await waitFor(() => h.runs.length >= seeded.length, 5000, 'seeded runs');
      await h.lava.drain();
      const before = new Map((await allRecords(store)).map((r) => [r.key, frozen(r)]));

      const deep = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
      const huge = JSON.stringify({
        event: 'customer.created',
        data: { customer_id: 'cus_huge', ...Object.fromEntries(Array.from({ length: 9000 }, (_, i) => [`k${i}`, i])) },
      });
      const oversized = `{"event":"customer.created","data":{"customer_id":"x","pad":"${'x'.repeat(LIMIT)}"}}`;
      const validBody = fc
        .tuple(fc.constantFrom('customer.created', 'customer.deleted', 'customer.wallet.balance.updated'), fc.nat(1e6))
        .map(([event, n]) =>
          JSON.stringify(samplePayload(event, { customerId: `cus_gen_${n}`, data: { balance: `${n}` } })),
        );
      const bodyArb = fc.oneof(
        { arbitrary: fc.uint8Array({ maxLength: 2048 }), weight: 3 },
        { arbitrary: validBody.chain((b) => fc.nat(b.length).map((cut) => b.slice(0, cut))), weight: 2 },
        { arbitrary: validBody, weight: 3 },
        { arbitrary: fc.constantFrom(...seeded), weight: 2 },
        { arbitrary: fc.json({ maxDepth: 4 }), weight: 2 },
        {
          arbitrary: fc.constantFrom(
            deep,
            huge,
            oversized,
            '',
            'null',
            '[]',
            '{}',
            '"x"',
            '{"event":"customer.created"}',
          ),
          weight: 2,
        },
      );
      type SigKind =
        | 'valid'
        | 'upper'
        | 'spaced'
        | 'prefixed'
        | 'other-secret'
        | 'short'
        | 'long'
        | 'non-hex'
        | 'empty'
        | 'missing'
        | 'other-body';
      const sigArb = fc.constantFrom<SigKind>(
        'valid',
        'upper',
        'spaced',
        'prefixed',
        'other-secret',
        'short',
        'long',
        'non-hex',
        'empty',
        'missing',
        'other-body',
      );
      const requestArb = fc.record({
        body: bodyArb,
        sig: sigArb,
        contentType: fc.oneof(
          fc.constantFrom(
            'application/json',
            'application/json; charset=utf-8',
            'text/plain',
            'application/xml',
            'multipart/form-data; boundary=x',
            null,
          ),
          fc.string({ unit: fc.constantFrom('a', '/', ';', '=', ' ', 'j', 's', 'o', 'n'), maxLength: 300 }),
        ),
        method: fc.constantFrom('POST', 'POST', 'POST', 'POST', 'GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'),
        path: fc.constantFrom(
          '/webhooks/lava',
          '/webhooks/lava',
          '/webhooks/lava',
          '/webhooks/lava?x=1',
          '/webhooks/lava/',
          '/WEBHOOKS/LAVA',
          '/',
          '/healthz',
          '/metrics',
          '/webhooks/lava/../lava',
          '/%00',
          '/webhooks/lava%2F',
        ),
        extra: fc.constantFrom('none', 'none', 'none', 'big-header', 'many-headers', 'absurd-header'),
      });

      const signedOk = new Set<string>(); // hex bodies that were sent with a valid signature to the webhook path
      const rss0 = rss();
      await fc.assert(
        fc.asyncProperty(requestArb, async (r) => {
          const bytes = typeof r.body === 'string' ? enc.encode(r.body) : r.body;
          const good = lavaSign(SECRET, bytes);
          const sig: Record<SigKind, string | null> = {
            valid: good,
            upper: good.toUpperCase(),
            spaced: ` ${good} `,
            prefixed: `sha256=${good}`,
            'other-secret': lavaSign('another_secret', bytes),
            short: good.slice(0, 63),
            long: `${good}0`,
            'non-hex': `${good.slice(0, 63)}g`,
            empty: '',
            missing: null,
            'other-body': lavaSign(SECRET, `${r.body}x`),
          };
          const headers: Record<string, string> = {};
          if (r.contentType !== null) headers['content-type'] = r.contentType;
          const s = sig[r.sig];
          if (s !== null) headers['x-webhook-signature'] = s;
          if (r.extra === 'big-header') headers['x-padding'] = 'p'.repeat(6000);
          if (r.extra === 'absurd-header') headers['x-padding'] = 'p'.repeat(200_000);
          if (r.extra === 'many-headers') for (let i = 0; i < 150; i++) headers[`x-h-${i}`] = `${i}`;
          const hasBody = r.method !== 'GET' && r.method !== 'HEAD';
          const validSig = ['valid', 'upper', 'spaced'].includes(r.sig);
          // The path as the server sees it: fetch resolves dot segments (/webhooks/lava/../lava is /webhooks/lava).
          const onPath = new URL(`${h.served.url}${r.path}`).pathname === '/webhooks/lava';
          if (validSig && hasBody && r.method === 'POST' && onPath) signedOk.add(hex(bytes));
          let status: number;
          try {
            const res = await fetch(`${h.served.url}${r.path}`, {
              method: r.method,
              headers,
              body: hasBody ? (bytes as BodyInit) : undefined,
            });
            status = res.status;
            await res.arrayBuffer().catch(() => {});
          } catch (error) {
            // An absurd header may be refused by the server closing the connection: that is a refusal, not a crash.
            if (r.extra === 'absurd-header') return;
            throw error;
          }
          assert.ok(status < 500, `${r.method} ${r.path} (${r.sig}, ${r.contentType}) answered ${status}`);
          if (status === 200 && onPath && r.method === 'POST')
            assert.ok(validSig, `a 200 without a valid signature (${r.sig})`);
        }),
        { numRuns: RUNS },
      );
      await h.lava.drain();
      // The server still answers.
      assert.equal((await fetch(`${h.served.url}/healthz`)).status, 200);
      // Every handler run was for bytes sent with a valid signature.
      for (const run of h.runs) {
        assert.ok(
          signedOk.has(run.body) || seeded.some((b) => hex(enc.encode(b)) === run.body),
          `run ${run.key} without a valid signature`,
        );
      }
      // Nothing recorded before changed, whatever was sent since (replays with other headers included).
      const afterMap = new Map((await allRecords(store)).map((r) => [r.key, frozen(r)]));
      for (const [key, rec] of before) assert.deepEqual(afterMap.get(key), rec, `record ${key} changed (${kind})`);
      // Each key ran at most once.
      const counts = new Map<string, number>();
      for (const run of h.runs) counts.set(run.key, (counts.get(run.key) ?? 0) + 1);
      assert.deepEqual(
        [...counts].filter(([, n]) => n > 1),
        [],
      );
      const grown = (rss() - rss0) / 2 ** 20;
      assert.ok(grown < 400, `resident memory grew ${grown.toFixed(0)} MB over ${RUNS} hostile requests`);
    } finally {
      await h.close();
    }
  });

  test('a 100 000-deep JSON array with a valid signature is a 400 dead letter, not a crash', async () => {
    const h = await harness({ store: durableStore().store });
    try {
      const deep = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
      const res = await post(h.url, deep);
      assert.equal(res.status, 400);
      const dead = (await h.store.list({ status: 'dead' })).find((r) => r.body.byteLength === deep.length);
      assert.ok(dead, 'kept as a dead letter');
      assert.equal((await post(h.url, balance('cus_after_deep', '1'))).status, 200, 'still serving');
    } finally {
      await h.close();
    }
  });
});

const created = (customer: string) => JSON.stringify(samplePayload('customer.created', { customerId: customer }));

describe('duplicate storms', () => {
  test('concurrent storms of identical deliveries: once events give one accepted answer and one run each', async () => {
    const h = await harness({ store: durableStore().store }, 20);
    try {
      const bodies = Array.from({ length: 6 }, (_, i) => created(`cus_storm_${i}`));
      const answers = await Promise.all(
        bodies.flatMap((b) =>
          Array.from({ length: 25 }, async () => ({
            b,
            json: (await (await post(h.url, b)).json()) as Record<string, unknown>,
          })),
        ),
      );
      for (const b of bodies) {
        const mine = answers.filter((a) => a.b === b);
        assert.equal(mine.filter((a) => a.json.received === true && a.json.duplicate === undefined).length, 1);
        assert.equal(mine.filter((a) => a.json.duplicate === true).length, 24);
      }
      await waitFor(() => h.runs.length >= bodies.length, 5000, 'runs');
      await h.lava.drain();
      await sleep(150);
      assert.equal(h.runs.length, bodies.length, 'one run per event');
    } finally {
      await h.close();
    }
  });

  test('concurrent storms of identical balance updates: every copy is counted by exactly one run, none is a duplicate', async () => {
    const h = await harness({ store: durableStore().store }, 20);
    try {
      const bodies = Array.from({ length: 6 }, (_, i) => balance(`cus_sstorm_${i}`, `${i}.50`));
      const answers = await Promise.all(
        bodies.flatMap((b) =>
          Array.from({ length: 25 }, async () => ({
            b,
            json: (await (await post(h.url, b)).json()) as Record<string, unknown>,
          })),
        ),
      );
      assert.equal(
        answers.filter((a) => a.json.duplicate !== undefined).length,
        0,
        'a signal is never swallowed as a duplicate',
      );
      await h.lava.drain();
      await sleep(150);
      await h.lava.drain();
      for (const b of bodies) {
        const mine = h.runs.filter((r) => r.body === hex(new TextEncoder().encode(b)));
        const accepted = answers.filter((a) => a.b === b && a.json.coalesced === undefined).length;
        assert.equal(mine.length, accepted, 'one run per accepted copy');
        assert.equal(
          mine.reduce((n, r) => n + r.deliveries, 0),
          25,
          'the runs stand for all 25 deliveries',
        );
        assert.ok(mine.length < 25, `copies that waited coalesced (${mine.length} runs for 25 copies)`);
      }
    } finally {
      await h.close();
    }
  });

  test('the same deliveries spread over time (before, during and after the run): once events still run once', async () => {
    const h = await harness({ store: durableStore().store }, 80);
    try {
      const bodies = Array.from({ length: 4 }, (_, i) => created(`cus_spread_${i}`));
      const schedule = fc.sample(
        fc.array(fc.tuple(fc.nat(bodies.length - 1), fc.nat(1200)), { minLength: 60, maxLength: 60 }),
        {
          numRuns: 1,
          seed: 7,
        },
      )[0] as Array<[number, number]>;
      const statuses = await Promise.all(
        schedule.map(async ([i, at]) => {
          await sleep(at);
          return (await post(h.url, bodies[i] as string)).status;
        }),
      );
      assert.ok(statuses.every((s) => s === 200));
      await h.lava.drain();
      await sleep(200);
      const sent = new Set(schedule.map(([i]) => i));
      assert.equal(h.runs.length, sent.size, 'one run per distinct event');
      assert.equal(new Set(h.runs.map((r) => r.key)).size, sent.size);
    } finally {
      await h.close();
    }
  });

  test('balance updates spread over time: each copy after a run began gets a run, copies that waited coalesce', async () => {
    const h = await harness({ store: durableStore().store }, 80);
    try {
      const bodies = Array.from({ length: 4 }, (_, i) => balance(`cus_sspread_${i}`, `${i}.25`));
      const schedule = fc.sample(
        fc.array(fc.tuple(fc.nat(bodies.length - 1), fc.nat(1200)), { minLength: 60, maxLength: 60 }),
        {
          numRuns: 1,
          seed: 7,
        },
      )[0] as Array<[number, number]>;
      const answers = await Promise.all(
        schedule.map(async ([i, at]) => {
          await sleep(at);
          const res = await post(h.url, bodies[i] as string);
          return { i, status: res.status, json: (await res.json()) as Record<string, unknown> };
        }),
      );
      assert.ok(answers.every((a) => a.status === 200 && a.json.duplicate === undefined));
      await h.lava.drain();
      await sleep(200);
      await h.lava.drain();
      for (const [i, b] of bodies.entries()) {
        const copies = schedule.filter(([j]) => j === i).length;
        const mine = h.runs.filter((r) => r.body === hex(new TextEncoder().encode(b)));
        assert.equal(
          mine.reduce((n, r) => n + r.deliveries, 0),
          copies,
          `every copy of body ${i} is counted by one run`,
        );
        assert.equal(mine.length, answers.filter((a) => a.i === i && a.json.coalesced === undefined).length);
        assert.equal(new Set(mine.map((r) => r.key)).size, mine.length, 'each run has a key of its own');
      }
    } finally {
      await h.close();
    }
  });
});

/** Opens a raw connection, sends `head`, then hands the socket back; collects the status line. */
function rawRequest(port: number, head: string): { socket: ReturnType<typeof connect>; status: Promise<string> } {
  const socket = connect(port, '127.0.0.1');
  let data = '';
  const status = new Promise<string>((resolve) => {
    socket.on('data', (d) => {
      data += d.toString();
      if (data.includes('\r\n')) resolve(data.split('\r\n')[0] ?? '');
    });
    socket.on('error', () => resolve(data.split('\r\n')[0] || 'error'));
    socket.on('close', () => resolve(data.split('\r\n')[0] || 'closed'));
  });
  socket.write(head);
  return { socket, status };
}

describe('slow senders', () => {
  test('a body sent one byte at a time is accepted, and other deliveries are not held up meanwhile', async () => {
    const h = await harness({ bodyTimeoutMs: 5000 });
    try {
      const body = balance('cus_dribble', '9.99');
      const { socket, status } = rawRequest(
        h.served.port,
        `POST /webhooks/lava HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${enc.encode(body).length}\r\nX-Webhook-Signature: ${lavaSign(SECRET, body)}\r\nConnection: close\r\n\r\n`,
      );
      const dribble = (async () => {
        for (const ch of body) {
          socket.write(ch);
          await sleep(isBun ? 2 : 1);
        }
      })();
      // While it dribbles, normal deliveries go straight through.
      for (let i = 0; i < 10; i++) {
        const t0 = Date.now();
        assert.equal((await post(h.url, balance('cus_fast', `${i}`))).status, 200);
        assert.ok(Date.now() - t0 < 1000, 'not held up');
      }
      await dribble;
      assert.match(await status, /^HTTP\/1\.1 200/);
      socket.destroy();
    } finally {
      await h.close();
    }
  });

  test('thirty bodies that never finish are cut off with 408, and neither intake nor the worker is blocked', async () => {
    const h = await harness({ bodyTimeoutMs: 400, concurrency: 1 });
    try {
      const stalled = Array.from({ length: 30 }, (_, i) =>
        rawRequest(
          h.served.port,
          i % 2
            ? `POST /webhooks/lava HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 400\r\nX-Webhook-Signature: ${'a'.repeat(64)}\r\n\r\n{"event":`
            : `POST /webhooks/lava HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nX-Webhook-Signature: ${'a'.repeat(64)}\r\n\r\n5\r\n{"eve\r\n`,
        ),
      );
      const t0 = Date.now();
      const body = balance('cus_through', '1.00');
      assert.equal((await post(h.url, body)).status, 200);
      assert.ok(Date.now() - t0 < 1000, 'a normal delivery is not held up by stalled ones');
      await waitFor(() => h.runs.length >= 1, 2000, 'the handler ran with stalled connections open');
      const statuses = await Promise.all(
        stalled.map((s) => Promise.race([s.status, sleep(5000).then(() => 'still open')])),
      );
      for (const s of stalled) s.socket.destroy();
      assert.ok(
        statuses.every((s) => /^HTTP\/1\.1 408/.test(s)),
        `every stalled body answered 408: ${[...new Set(statuses)].join(', ')}`,
      );
    } finally {
      await h.close();
    }
  });
});

describe('store faults', () => {
  test('a store that fails at random: every 200 was recorded, every 503 was not', async () => {
    const inner = memoryStore();
    let calls = 0;
    const flaky: Store = {
      ...inner,
      name: inner.name,
      insert(event) {
        calls++;
        if (calls % 3 === 0) throw new Error('disk on fire');
        return inner.insert(event);
      },
    };
    const h = await harness({ store: flaky });
    try {
      const results = await Promise.all(
        Array.from({ length: 40 }, async (_, i) => {
          const body = JSON.stringify(samplePayload('customer.created', { customerId: `cus_flaky_${i}` }));
          return { key: `customer.created:cus_flaky_${i}`, status: (await post(h.url, body)).status };
        }),
      );
      assert.ok(results.some((r) => r.status === 503) && results.some((r) => r.status === 200));
      for (const r of results) {
        assert.ok(r.status === 200 || r.status === 503, `status ${r.status}`);
        const stored = await inner.get(r.key);
        assert.equal(
          stored !== null,
          r.status === 200,
          `${r.key}: ${r.status} but ${stored ? 'stored' : 'not stored'}`,
        );
      }
    } finally {
      await h.close();
    }
  });

  test('a hanging store: concurrent deliveries all answer 503 within the store timeout, none 200', async () => {
    const store = memoryStore();
    store.insert = () => new Promise(() => {});
    const h = await harness({ store, storeTimeoutMs: 300 });
    try {
      const t0 = Date.now();
      const statuses = await Promise.all(
        Array.from({ length: 20 }, async (_, i) => (await post(h.url, balance(`cus_hang_${i}`, '1'))).status),
      );
      assert.deepEqual([...new Set(statuses)], [503]);
      assert.ok(Date.now() - t0 < 3000, `answered within the bound (${Date.now() - t0} ms)`);
    } finally {
      await h.close();
    }
  });

  test('SQLite locked by another process: the group commit fails, every delivery of the batch is 503 and none stored', {
    skip: sqliteUnavailableReason ?? false,
  }, async () => {
    const d = mkdtempSync(join(tmpdir(), 'lava-fault-lock-'));
    dirs.push(d);
    const path = join(d, 'events.db');
    const store = sqliteStore({ path, groupCommit: true, busyTimeoutMs: 100 });
    const h = await harness({ store });
    const driver: { openDatabase(path: string): SqliteConnection } = isBun
      ? await import('../src/stores/sqlite-bun.ts')
      : await import('../src/stores/sqlite-node.ts');
    const other = driver.openDatabase(path);
    try {
      other.exec('BEGIN IMMEDIATE');
      const bodies = Array.from({ length: 12 }, (_, i) => balance(`cus_locked_${i}`, `${i}`));
      const t0 = Date.now();
      const statuses = await Promise.all(bodies.map(async (b) => (await post(h.url, b)).status));
      assert.deepEqual([...new Set(statuses)], [503]);
      assert.ok(Date.now() - t0 < 3000);
      other.exec('ROLLBACK');
      assert.equal((await allRecords(store)).length, 0, 'nothing stored from the failed batch');
      const again = await Promise.all(bodies.map(async (b) => (await post(h.url, b)).status));
      assert.deepEqual([...new Set(again)], [200], 'the retries are accepted once the lock is gone');
    } finally {
      other.close();
      await h.close();
    }
  });
});
