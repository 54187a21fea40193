// The admin console inside workerd (through miniflare), bundled by esbuild as wrangler would: its .tsx pages and the
// lazy import of them bundle, and login, a page, the CSRF token and a requeue work on Workers as on Bun, Deno and Node.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SECRET, signedRequest } from './helpers/lava.ts';
import { ROOT } from './helpers/server-process.ts';

const WORKERD = join(ROOT, 'node_modules/.bin/workerd');
const skip = existsSync(WORKERD) ? false : 'node_modules/.bin/workerd is missing (run npm ci)';
if (skip) console.log(`[skip] admin console on Workers: ${skip}`);

const TOKEN = 'admin-token-for-the-workers-test-0123';

const WORKER = (root: string) => `
import { createLavaWebhooks } from ${JSON.stringify(join(root, 'src/receiver.ts'))};
import { memoryStore } from ${JSON.stringify(join(root, 'src/stores/memory.ts'))};
let lava;
export default {
  fetch(request, env, ctx) {
    lava ??= createLavaWebhooks({
      secret: env.LAVA_WEBHOOK_SECRET,
      adminToken: env.LAVA_WEBHOOK_ADMIN_TOKEN,
      store: memoryStore(),
      handlers: { 'customer.created': () => {}, 'customer.deleted': () => {}, 'customer.wallet.balance.updated': () => {} },
      logLevel: 'silent',
    });
    return lava.fetch(request, env, ctx);
  },
};
`;

interface MiniflareLike {
  dispatchFetch(url: string, init?: RequestInit): Promise<Response>;
  dispose(): Promise<void>;
}

describe('admin console on Cloudflare Workers (workerd)', { skip }, () => {
  let mf: MiniflareLike;
  let dir = '';
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lava-admin-workers-'));
    const entry = join(dir, 'worker.js');
    writeFileSync(entry, WORKER(ROOT));
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
    const { Miniflare } = await import('miniflare');
    mf = new Miniflare({
      modules: true,
      script: built.outputFiles[0]?.text ?? '',
      compatibilityDate: '2026-04-01',
      compatibilityFlags: ['nodejs_compat'],
      bindings: { LAVA_WEBHOOK_SECRET: SECRET, LAVA_WEBHOOK_ADMIN_TOKEN: TOKEN },
    }) as unknown as MiniflareLike;
  });
  after(async () => {
    await mf?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('login, the dead letters, an event page and a requeue work inside workerd', async () => {
    const origin = 'http://worker.test';
    // An invalid payload is kept as a dead letter: something to find and requeue.
    const bad = signedRequest(`${origin}/webhooks/lava`, JSON.stringify({ event: 'customer.created', data: {} }));
    assert.equal(
      (await mf.dispatchFetch(bad.url, { method: 'POST', headers: bad.headers, body: await bad.text() })).status,
      400,
    );

    // Sec-Fetch-Site rather than Origin: under Bun, miniflare hands the worker its own 127.0.0.1 URL, not worker.test.
    const form = { 'content-type': 'application/x-www-form-urlencoded', 'sec-fetch-site': 'same-origin' };
    const login = await mf.dispatchFetch(`${origin}/admin/login`, {
      method: 'POST',
      headers: form,
      body: new URLSearchParams({ token: TOKEN, next: '/admin/events?status=dead' }).toString(),
      redirect: 'manual',
    });
    assert.equal(login.status, 303, await login.clone().text());
    const cookie = /^(lava_admin_session=[^;]+)/.exec(login.headers.get('set-cookie') ?? '')?.[1];
    assert.ok(cookie, 'a session cookie');

    const list = await mf.dispatchFetch(`${origin}${login.headers.get('location')}`, { headers: { cookie } });
    assert.equal(list.status, 200);
    assert.match(list.headers.get('content-security-policy') ?? '', /default-src 'none'/);
    const html = await list.text();
    const seq = /href="\/admin\/events\/(\d+)"/.exec(html)?.[1];
    assert.ok(seq, 'the dead letter is listed');

    const detail = await mf.dispatchFetch(`${origin}/admin/events/${seq}`, { headers: { cookie } });
    const page = await detail.text();
    assert.match(page, /status-dead/);
    const csrf = /name="_csrf" value="([^"]+)"/.exec(page)?.[1] ?? '';
    const requeue = await mf.dispatchFetch(`${origin}/admin/events/${seq}/requeue`, {
      method: 'POST',
      headers: { ...form, cookie },
      body: new URLSearchParams({ _csrf: csrf }).toString(),
      redirect: 'manual',
    });
    assert.equal(requeue.status, 303);
    assert.equal(requeue.headers.get('location'), `/admin/events/${seq}?requeued=1`);
    const overview = await mf.dispatchFetch(`${origin}/admin`, { headers: { cookie } });
    assert.match(await overview.text(), /<svg[^>]*role="img"/);
  });
});
