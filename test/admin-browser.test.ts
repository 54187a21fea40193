// The admin console in a real browser (Debian's chromium, headless, driven by playwright-core, with JavaScript off):
// log in, find a dead letter, open it, requeue it, see it done; no CSP violation on any page, nothing wider than a
// phone's screen. Screenshots of each page go to test-output/. Runs under Bun only (once per `npm test`), and is
// skipped, saying why, where /usr/bin/chromium is missing (apt-get update && apt-get install -y chromium).
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { silentLogger } from '../src/observability/log.ts';
import { NonRetryableError } from '../src/processing/retry.ts';
import { type LavaWebhooks, createLavaWebhooks } from '../src/receiver.ts';
import { samplePayload } from '../src/samples.ts';
import { memoryStore } from '../src/stores/memory.ts';
import type { Store } from '../src/stores/store.ts';
import { SECRET, signedRequest } from './helpers/lava.ts';
import { ROOT } from './helpers/server-process.ts';

const CHROMIUM = '/usr/bin/chromium';
const bun = (
  globalThis as unknown as {
    Bun?: { serve(o: Record<string, unknown>): { port: number; stop(force?: boolean): void } };
  }
).Bun;
const skip = !bun
  ? 'runs under Bun only (once per npm test); the route tests cover Deno and Node'
  : !existsSync(CHROMIUM)
    ? `${CHROMIUM} is missing (apt-get update && apt-get install -y chromium)`
    : false;
if (skip) console.log(`[skip] admin console in a browser: ${skip}`);

const TOKEN = 'browser-test-admin-token-0123456789';
const OUT = join(ROOT, 'test-output');
const MINUTE = 60_000;

/** An hour of history, written through the store contract with explicit times, so the chart has something to draw. */
function history(store: Store, now: number) {
  let n = 0;
  const events = ['customer.created', 'customer.wallet.balance.updated', 'customer.deleted'] as const;
  for (let m = 58; m >= 1; m--) {
    const burst = 2 + Math.round(3 + 3 * Math.sin(m / 6) + (m % 7 === 0 ? 6 : 0));
    for (let i = 0; i < burst; i++) {
      n++;
      const at = now - m * MINUTE + i * 1000;
      const event = events[n % 3] as string;
      const key = `history-${n}`;
      store.insert({
        key,
        event,
        customerId: `cus_${1000 + (n % 40)}`,
        body: new TextEncoder().encode(JSON.stringify(samplePayload(event, { customerId: `cus_${1000 + (n % 40)}` }))),
        headers: { 'content-type': 'application/json' },
        receivedAt: at,
        status: 'pending',
      });
      store.claim({ owner: 'history', limit: 100, leaseMs: MINUTE, now: at });
      if (n % 23 === 0) store.deadLetter(key, 'history', 'Error: upstream CRM answered 502', at + 2000);
      else store.complete(key, 'history', at + 400);
    }
  }
}

describe('admin console in a real browser', { skip }, () => {
  let lava: LavaWebhooks;
  let server: { port: number; stop(force?: boolean): void };
  let origin = '';
  const failing = new Set<string>();
  type Browser = Awaited<ReturnType<typeof import('playwright-core')['chromium']['launch']>>;
  let browser: Browser;

  before(async () => {
    mkdirSync(OUT, { recursive: true });
    const store = memoryStore();
    history(store, Date.now());
    lava = createLavaWebhooks({
      secret: SECRET,
      store,
      adminToken: TOKEN,
      logger: silentLogger,
      pollMs: 100,
      handlers: {
        'customer.created': (event) => {
          if (failing.has(event.data.customer_id))
            throw new NonRetryableError('CRM refused the customer: unknown plan');
        },
        'customer.deleted': () => {},
        'customer.wallet.balance.updated': () => {},
      },
    });
    lava.start();
    server = (bun as NonNullable<typeof bun>).serve({
      port: 0,
      hostname: '127.0.0.1',
      fetch: lava.fetch,
      development: false,
    });
    origin = `http://127.0.0.1:${server.port}`;
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      // Playwright gives each launch a fresh, temporary --user-data-dir of its own.
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  });

  after(async () => {
    await browser?.close();
    server?.stop(true);
    await lava?.close(1000);
  });

  test('an operator logs in, finds a dead letter, opens it, requeues it and sees it done, without JavaScript', async () => {
    // The dead letter to find: a delivery whose handler gives up.
    failing.add('cus_broken');
    const body = JSON.stringify(samplePayload('customer.created', { customerId: 'cus_broken' }));
    assert.equal((await fetch(signedRequest(`${origin}/webhooks/lava`, body))).status, 200);
    const deadKey = 'customer.created:cus_broken';
    for (let i = 0; i < 100 && (await lava.store.get(deadKey))?.status !== 'dead'; i++)
      await new Promise((r) => setTimeout(r, 50));
    assert.equal((await lava.store.get(deadKey))?.status, 'dead');

    const context = await browser.newContext({ javaScriptEnabled: false, viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(m.text());
    });
    page.on('pageerror', (e) => problems.push(String(e)));
    const shot = (name: string) => page.screenshot({ path: join(OUT, `admin-${name}.png`), fullPage: true });

    // Not logged in: the console sends the browser to its login page.
    await page.goto(`${origin}/admin`);
    assert.match(page.url(), /\/admin\/login\?next=%2Fadmin$/);
    await shot('login');
    await page.getByLabel('Admin token').fill(TOKEN);
    await page.keyboard.press('Enter');
    await page.waitForURL(`${origin}/admin`);
    assert.equal(await page.locator('h1').textContent(), 'Overview');
    assert.ok((await page.locator('svg[role="img"] rect.received').count()) > 30, 'the chart has bars');
    await shot('overview');

    // Find it: the dead letters, from the overview's count.
    await page.locator('a[href="/admin/events?status=dead"]').first().click();
    await page.waitForURL(/status=dead/);
    const row = page.locator('tr', { hasText: 'cus_broken' });
    assert.equal(await row.count(), 1);
    await shot('events');

    // Open it.
    await row.locator('a').first().click();
    await page.waitForURL(/\/admin\/events\/\d+$/);
    const detailUrl = page.url();
    assert.match((await page.locator('main').textContent()) ?? '', /CRM refused the customer/);
    assert.equal(await page.locator('h1 .status-dead').count(), 1);
    await shot('event');

    // Requeue it once the cause is fixed, and watch it finish.
    failing.delete('cus_broken');
    await page.getByRole('button', { name: 'Requeue this event' }).click();
    await page.waitForURL(/requeued=1$/);
    assert.match((await page.locator('[role="status"]').textContent()) ?? '', /Requeued/);
    for (let i = 0; i < 50 && (await page.locator('h1 .status-done').count()) === 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      await page.goto(detailUrl);
    }
    assert.equal(await page.locator('h1 .status-done').count(), 1, 'the event ran again and is done');
    await shot('event-done');

    // Requeue what a filter matches: the count first, on a page of its own.
    await page.goto(`${origin}/admin/requeue`);
    assert.match((await page.locator('main').textContent()) ?? '', /dead letters? match/);
    await shot('requeue-confirm');

    assert.deepEqual(problems, [], 'no console error (a CSP violation would be one)');
    await context.close();
  });

  test('on a phone the pages fit the screen, and the keyboard reaches every control with a visible focus', async () => {
    const context = await browser.newContext({
      viewport: { width: 390, height: 844 },
      deviceScaleFactor: 2,
      isMobile: true,
    });
    const page = await context.newPage();
    await page.goto(`${origin}/admin/login`);
    await page.getByLabel('Admin token').fill(TOKEN);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.waitForURL(`${origin}/admin`);
    for (const path of ['/admin', '/admin/events', '/admin/events?status=dead']) {
      await page.goto(`${origin}${path}`);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `${path} is ${overflow}px wider than the phone`);
    }
    await page.screenshot({ path: join(OUT, 'admin-phone-events.png') });
    // Tab from the top: the skip link first, then the navigation; each focused element shows an outline.
    await page.goto(`${origin}/admin`);
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Skip to content');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Overview');
    const outline = await page.evaluate(() => getComputedStyle(document.activeElement as Element).outlineStyle);
    assert.equal(outline, 'solid');
    await context.close();
  });
});
