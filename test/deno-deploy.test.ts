// Deno Deploy's reclaim path, locally: an isolate claims an event and is evicted before finishing it; a fresh
// receiver on the same Deno KV database runs it once the lease expires, from a later request or from the drain cron.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { createLavaWebhooks, silentLogger } from '../src/mod.ts';
import type { HandlerMap } from '../src/mod.ts';
import {
  type CronFn,
  DRAIN_CRON_NAME,
  DRAIN_CRON_SCHEDULE,
  denoCron,
  scheduleDrainCron,
} from '../src/runtime/deno-cron.ts';
import { samplePayload } from '../src/samples.ts';
import { denoKvStore } from '../src/stores/deno-kv/mod.ts';
import { SECRET, signedRequest, sleep } from './helpers/lava.ts';

const deno = (globalThis as unknown as { Deno?: { openKv?: unknown } }).Deno;
const skip = !deno ? 'Deno KV needs Deno' : typeof deno.openKv !== 'function' ? 'Deno KV needs --unstable-kv' : false;
if (skip) console.log(`[skip] Deno Deploy reclaim tests: ${skip}`);

let dir: string | null = null;
after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});
function kvFile(name: string): string {
  dir ??= mkdtempSync(join(tmpdir(), 'lava-deploy-'));
  return join(dir, name);
}

const LEASE_MS = 300;
const enc = new TextEncoder();

/** Isolate A: records a delivery, claims it with a short lease, and is evicted (its handle closes, nothing finishes). */
async function evictedIsolate(path: string, customerId: string): Promise<string> {
  const store = denoKvStore({ path });
  const key = `evicted-${customerId}`;
  const now = Date.now();
  await store.insert({
    key,
    event: 'customer.created',
    customerId,
    body: enc.encode(JSON.stringify(samplePayload('customer.created', { customerId }))),
    headers: { 'content-type': 'application/json' },
    receivedAt: now,
    status: 'pending',
  });
  const claimed = await store.claim({ owner: 'isolate-a', limit: 10, leaseMs: LEASE_MS, now });
  assert.deepEqual(
    claimed.map((r) => r.key),
    [key],
  );
  await store.close();
  return key;
}

/** Isolate B: a fresh receiver on the same database, as Deno Deploy would start it (no loop, no waitUntil). */
function freshIsolate(path: string) {
  const runs: string[] = [];
  const log = (event: { data: { customer_id: string } }) => {
    runs.push(event.data.customer_id);
  };
  const handlers: HandlerMap = { 'customer.created': log };
  const lava = createLavaWebhooks({
    secret: SECRET,
    store: denoKvStore({ path }),
    handlers,
    logger: silentLogger,
    leaseMs: LEASE_MS,
  });
  return { lava, runs };
}

describe('Deno Deploy: events of an evicted isolate are reclaimed', { skip }, () => {
  test('a live lease is respected: a drain right after the eviction does not run the event', async () => {
    const path = kvFile('live.kv');
    const key = await evictedIsolate(path, 'cus_live_lease');
    const b = freshIsolate(path);
    try {
      assert.equal((await b.lava.drain()).processed, 0);
      assert.deepEqual(b.runs, []);
      assert.equal((await b.lava.store.get(key))?.leaseOwner, 'isolate-a');
    } finally {
      await b.lava.close();
    }
  });

  test('a later delivery to a fresh isolate also runs the evicted event once its lease expired', async () => {
    const path = kvFile('request.kv');
    const key = await evictedIsolate(path, 'cus_evicted');
    await sleep(LEASE_MS + 50);
    const b = freshIsolate(path);
    try {
      const body = JSON.stringify(samplePayload('customer.created', { customerId: 'cus_later' }));
      const res = await b.lava.fetch(signedRequest('http://deploy.test/webhooks/lava', body));
      assert.deepEqual(await res.json(), { received: true });
      // The post-ack processing (a drain, no loop running) reclaims the expired lease alongside the new event. A
      // handler has run a moment before its completion is committed, so the wait is for both.
      let record = await b.lava.store.get(key);
      for (let i = 0; i < 150 && (b.runs.length < 2 || record?.status !== 'done'); i++) {
        await sleep(20);
        record = await b.lava.store.get(key);
      }
      assert.deepEqual([...b.runs].sort(), ['cus_evicted', 'cus_later']);
      assert.equal(record?.status, 'done');
      assert.equal(record?.attempts, 2, 'the evicted attempt counts');
    } finally {
      await b.lava.close();
    }
  });

  test('with no traffic at all, the drain cron runs the evicted event', async () => {
    const path = kvFile('cron.kv');
    const key = await evictedIsolate(path, 'cus_cron');
    await sleep(LEASE_MS + 50);
    const b = freshIsolate(path);
    let registered: { name: string; schedule: string; handler: () => Promise<void> } | null = null;
    const fakeCron: CronFn = (name, schedule, _options, handler) => {
      registered = { name, schedule, handler };
    };
    try {
      assert.equal(
        scheduleDrainCron(() => b.lava, fakeCron),
        true,
      );
      const cron = registered as { name: string; schedule: string; handler: () => Promise<void> } | null;
      assert.equal(cron?.name, DRAIN_CRON_NAME);
      assert.equal(cron?.schedule, DRAIN_CRON_SCHEDULE);
      await cron?.handler(); // what Deno Deploy runs every minute
      assert.deepEqual(b.runs, ['cus_cron']);
      assert.equal((await b.lava.store.get(key))?.status, 'done');
    } finally {
      await b.lava.close();
    }
  });

  test("Deno.cron is there under deno.json's unstable list, and absent means no cron (Bun, Node)", () => {
    assert.equal(typeof denoCron(), 'function');
    assert.equal(
      scheduleDrainCron(() => {
        throw new Error('never called');
      }, null),
      false,
    );
  });
});
