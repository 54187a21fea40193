// examples/cloudflare-workers run for real inside workerd (through miniflare): signed deliveries get the usual
// answers, processing is handed to ctx.waitUntil, and the handler's write to a KV binding shows after the 200.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { samplePayload } from '../../src/samples.ts';
import { SECRET, signedRequest, waitFor } from '../helpers/lava.ts';
import { ROOT } from '../helpers/server-process.ts';

const WORKERD = join(ROOT, 'node_modules/.bin/workerd');
const skip = existsSync(WORKERD) ? false : 'node_modules/.bin/workerd is missing (run npm ci)';
if (skip) console.log(`[skip] Cloudflare Workers example: ${skip}`);

// A probe around the example: counts the promises the example hands to ctx.waitUntil, answers them on /__probe.
const PROBE = (workerPath: string) => `
import worker from ${JSON.stringify(workerPath)};
let handed = 0;
export default {
  fetch(request, env, ctx) {
    if (new URL(request.url).pathname === '/__probe') return Response.json({ handed });
    const counted = {
      waitUntil(p) { handed++; ctx.waitUntil(p); },
      passThroughOnException() { ctx.passThroughOnException(); },
    };
    return worker.fetch(request, env, counted);
  },
  scheduled(controller, env, ctx) { return worker.scheduled(controller, env, ctx); },
};
`;

interface MiniflareLike {
  dispatchFetch(url: string, init?: RequestInit): Promise<Response>;
  getKVNamespace(name: string): Promise<{ get(key: string): Promise<string | null> }>;
  getWorker(): Promise<{ scheduled(options: { cron: string }): Promise<{ outcome: string }> }>;
  dispose(): Promise<void>;
}

describe('examples/cloudflare-workers inside workerd (miniflare)', { skip }, () => {
  let mf: MiniflareLike;
  let dir = '';
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lava-workers-'));
    const entry = join(dir, 'probe.js');
    writeFileSync(entry, PROBE(join(ROOT, 'examples/cloudflare-workers/src/worker.ts')));
    const esbuild = await import('esbuild');
    const built = await esbuild.build({
      entryPoints: [entry],
      bundle: true,
      format: 'esm',
      platform: 'neutral',
      target: 'es2022',
      conditions: ['workerd', 'worker', 'browser'],
      mainFields: ['module', 'main'],
      write: false,
      logLevel: 'silent',
    });
    const script = built.outputFiles[0]?.text ?? '';
    const { Miniflare } = await import('miniflare');
    mf = new Miniflare({
      modules: true,
      script,
      compatibilityDate: '2026-04-01',
      compatibilityFlags: ['nodejs_compat'],
      bindings: { LAVA_WEBHOOK_SECRET: SECRET },
      kvNamespaces: ['CUSTOMERS'],
    }) as unknown as MiniflareLike;
  });
  after(async () => {
    await mf?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const probe = async () =>
    ((await (await mf.dispatchFetch('http://worker.test/__probe')).json()) as { handed: number }).handed;

  test('a signed delivery is acknowledged, handed to ctx.waitUntil, and its handler writes to KV after the 200', async () => {
    const hook = 'http://worker.test/webhooks/lava';
    const body = JSON.stringify(samplePayload('customer.created', { customerId: 'cus_workerd' }));
    const request = signedRequest(hook, body);
    let res = await mf.dispatchFetch(hook, { method: 'POST', headers: request.headers, body });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { received: true });
    assert.equal(await probe(), 1, 'the processing promise went to ctx.waitUntil');
    const kv = await mf.getKVNamespace('CUSTOMERS');
    const stored = await waitFor(() => kv.get('customer:cus_workerd'), 5000, 'the handler to write to KV');
    assert.equal((JSON.parse(stored) as { customer_id: string }).customer_id, 'cus_workerd');

    res = await mf.dispatchFetch(hook, { method: 'POST', headers: request.headers, body });
    assert.deepEqual(await res.json(), { received: true, duplicate: true });
    const forged = signedRequest(hook, body, { secret: 'whsec_not_ours' });
    res = await mf.dispatchFetch(hook, { method: 'POST', headers: forged.headers, body });
    assert.equal(res.status, 401);
    await res.text();
    assert.equal(await probe(), 1, 'nothing new to process: no more waitUntil');
    res = await mf.dispatchFetch('http://worker.test/healthz');
    assert.deepEqual(await res.json(), { status: 'ok', store: 'memory' });
  });

  test('the Cron Trigger drains inside workerd', async () => {
    const worker = await mf.getWorker();
    const result = await worker.scheduled({ cron: '* * * * *' });
    assert.equal(result.outcome, 'ok');
  });
});
