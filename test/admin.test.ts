// The admin console (src/admin) through app.request-style calls to the receiver's fetch: off unless a token is set,
// login and its limit, sessions, CSRF, security headers, masking, paging, filters, and both requeue actions.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { adminRoutes } from '../src/admin/routes.ts';
import { loadConfig } from '../src/config.ts';
import { ConfigError } from '../src/errors.ts';
import { silentLogger } from '../src/observability/log.ts';
import { NonRetryableError } from '../src/processing/retry.ts';
import { type LavaWebhooksOptions, createLavaWebhooks } from '../src/receiver.ts';
import { samplePayload } from '../src/samples.ts';
import { memoryStore } from '../src/stores/memory.ts';
import type { EventRecord, NewEvent, Store } from '../src/stores/store.ts';
import { SECRET, signedRequest } from './helpers/lava.ts';

const TOKEN = 'admin-token-for-the-test-suite-0123456789';
const ORIGIN = 'http://lava.test';
const T0 = Date.UTC(2026, 11, 3, 12, 0, 0);
const EMAIL = 'ada.lovelace@example.com';
const PHONE = '+44 7911 123456';
const API_KEY = 'sk_live_do_not_show_me';

type Env = Record<string, unknown>;

/** A receiver with the console on (unless told otherwise), a settable clock and a handler that can be made to fail. */
function setup(options: Partial<LavaWebhooksOptions> = {}) {
  const clock = { now: T0 };
  const failing = new Set<string>();
  const store = memoryStore();
  const lava = createLavaWebhooks({
    secret: SECRET,
    store,
    adminToken: TOKEN,
    logger: silentLogger,
    now: () => clock.now,
    keepHeaders: ['content-type', 'x-api-key', 'x-request-id'],
    handlers: {
      'customer.created': (event) => {
        if (failing.has(event.data.customer_id)) {
          throw new NonRetryableError(`could not reach ${event.data.contact?.email} at ${event.data.contact?.phone}`);
        }
      },
      'customer.deleted': () => {},
      'customer.wallet.balance.updated': () => {},
    },
    ...options,
  });
  const call = (path: string, init: RequestInit = {}, env?: Env) =>
    Promise.resolve(lava.fetch(new Request(`${ORIGIN}${path}`, { redirect: 'manual', ...init }), env));
  return { lava, store, clock, failing, call };
}

type Setup = ReturnType<typeof setup>;

async function deliver(s: Setup, event: string, customerId: string, data: Record<string, unknown> = {}) {
  const body = JSON.stringify(
    samplePayload(event, {
      customerId,
      data: { contact: { email: EMAIL, phone: PHONE, first_name: 'Ada', last_name: 'Lovelace' }, ...data },
    }),
  );
  const res = await s.lava.fetch(signedRequest(`${ORIGIN}/webhooks/lava`, body, { headers: { 'x-api-key': API_KEY } }));
  assert.equal(res.status, 200, await res.clone().text());
  await s.lava.drain();
}

const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };

/** Logs in; returns the Cookie header to send. */
async function login(s: Setup, env?: Env): Promise<string> {
  const res = await s.call(
    '/admin/login',
    { method: 'POST', headers: { ...FORM, origin: ORIGIN }, body: form({ token: TOKEN }) },
    env,
  );
  assert.equal(res.status, 303, await res.text());
  const set = res.headers.get('set-cookie') ?? '';
  const m = /^(lava_admin_session=[^;]+)/.exec(set);
  assert.ok(m, `a session cookie: ${set}`);
  return m[1] as string;
}

async function page(s: Setup, cookie: string, path: string): Promise<{ res: Response; html: string }> {
  const res = await s.call(path, { headers: { cookie } });
  return { res, html: await res.text() };
}

const csrfOf = (html: string) => {
  const m = /name="_csrf" value="([^"]+)"/.exec(html);
  assert.ok(m, 'the page carries a CSRF token');
  return m[1] as string;
};

/** POSTs a console form the way a browser on the console's own page does. */
async function post(
  s: Setup,
  cookie: string,
  path: string,
  fields: Record<string, string>,
  headers: Record<string, string> = { origin: ORIGIN },
) {
  return s.call(path, { method: 'POST', headers: { ...FORM, cookie, ...headers }, body: form(fields) });
}

function insertEvents(store: Store, n: number, make: (i: number) => Partial<NewEvent> = () => ({})) {
  for (let i = 1; i <= n; i++) {
    store.insert({
      key: `k${i}`,
      event: 'customer.created',
      customerId: `cus_${i % 3}`,
      body: new TextEncoder().encode(
        JSON.stringify({ event: 'customer.created', data: { customer_id: `cus_${i % 3}` } }),
      ),
      headers: {},
      receivedAt: T0 + i * 1000,
      status: 'pending',
      ...make(i),
    });
  }
}

const seqsIn = (html: string) => [...html.matchAll(/href="\/admin\/events\/(\d+)"/g)].map((m) => Number(m[1]));

describe('admin console: off unless a token is set', () => {
  test('createLavaWebhooks() without adminToken serves nothing under /admin: 404, not even a login page', async () => {
    const s = setup({ adminToken: undefined });
    for (const path of ['/admin', '/admin/', '/admin/login', '/admin/events', '/admin/assets/admin.css']) {
      const res = await s.call(path);
      assert.equal(res.status, 404, path);
      assert.doesNotMatch(await res.text(), /<form|token/i);
    }
    const res = await s.call('/admin/login', {
      method: 'POST',
      headers: { ...FORM, origin: ORIGIN },
      body: form({ token: TOKEN }),
    });
    assert.equal(res.status, 404);
  });

  test('a short or empty adminToken, or LAVA_WEBHOOK_ADMIN_TOKEN, is refused at start-up', () => {
    for (const adminToken of ['', 'short', '               x']) {
      assert.throws(() => setup({ adminToken }), ConfigError, JSON.stringify(adminToken));
    }
    assert.throws(() => adminRoutes({ store: memoryStore(), token: TOKEN, basePath: '/' }), ConfigError);
    assert.throws(
      () => loadConfig({ LAVA_WEBHOOK_SECRET: 's', LAVA_WEBHOOK_ADMIN_TOKEN: 'short' }),
      /LAVA_WEBHOOK_ADMIN_TOKEN/,
    );
    assert.equal(
      loadConfig({ LAVA_WEBHOOK_SECRET: 's', LAVA_WEBHOOK_ADMIN_TOKEN: TOKEN }).LAVA_WEBHOOK_ADMIN_TOKEN,
      TOKEN,
    );
  });

  test('with the console on, a method it has no page for: 401 without a session, 403 without its CSRF token, else the app’s JSON 404', async () => {
    const s = setup();
    for (const method of ['PUT', 'DELETE', 'PATCH']) {
      assert.equal((await s.call('/admin/events', { method })).status, 401, method);
    }
    const cookie = await login(s);
    const { res: events, html } = await page(s, cookie, '/admin/events');
    assert.equal(events.status, 200);
    for (const method of ['PUT', 'DELETE', 'PATCH']) {
      // Without the session's CSRF token: refused before any routing.
      assert.equal((await s.call('/admin/events', { method, headers: { cookie, origin: ORIGIN } })).status, 403);
      const res = await s.call('/admin/events', {
        method,
        headers: { ...FORM, cookie, origin: ORIGIN },
        body: form({ _csrf: csrfOf(html) }),
      });
      assert.equal(res.status, 404, method);
      assert.deepEqual(await res.json(), { error: 'not found' });
    }
  });

  test('with the console on, deliveries are answered as before', async () => {
    const s = setup();
    await deliver(s, 'customer.created', 'cus_on');
    assert.deepEqual(await s.store.counts(), { pending: 0, retrying: 0, done: 1, dead: 0 });
  });
});

describe('admin console: login and sessions', () => {
  test('without a session a page redirects to the login page, keeping where it was going; a POST is 401', async () => {
    const s = setup();
    const res = await s.call('/admin/events?status=dead');
    assert.equal(res.status, 303);
    assert.equal(res.headers.get('location'), '/admin/login?next=%2Fadmin%2Fevents%3Fstatus%3Ddead');
    const root = await s.call('/admin');
    assert.equal(root.status, 303);
    insertEvents(s.store, 1, () => ({ status: 'dead', lastError: 'x' }));
    const posted = await s.call('/admin/requeue', {
      method: 'POST',
      headers: { ...FORM, origin: ORIGIN },
      body: form({}),
    });
    assert.equal(posted.status, 401);
    assert.equal((await s.store.counts()).dead, 1, 'nothing was requeued');
  });

  test('the login page is served with strict security headers and no script', async () => {
    const s = setup();
    const res = await s.call('/admin/login');
    assert.equal(res.status, 200);
    const csp = res.headers.get('content-security-policy') ?? '';
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /style-src 'self'/);
    assert.match(csp, /form-action 'self'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|script-src/);
    assert.equal(res.headers.get('x-frame-options'), 'DENY');
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(res.headers.get('referrer-policy'), 'no-referrer');
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const html = await res.text();
    assert.match(html, /^<!doctype html>/);
    assert.doesNotMatch(html, /<script|style="|\son[a-z]+=/i);
    assert.match(html, /<label for="token">/);
    const css = await s.call('/admin/assets/admin.css');
    assert.equal(css.status, 200);
    assert.match(css.headers.get('content-type') ?? '', /^text\/css/);
    assert.match(await css.text(), /:focus-visible/);
  });

  test('the right token sets an HttpOnly, SameSite=Strict session cookie for the console path, and goes to next', async () => {
    const s = setup();
    const res = await s.call('/admin/login', {
      method: 'POST',
      headers: { ...FORM, origin: ORIGIN },
      body: form({ token: TOKEN, next: '/admin/events?status=dead' }),
    });
    assert.equal(res.status, 303);
    assert.equal(res.headers.get('location'), '/admin/events?status=dead');
    const cookie = res.headers.get('set-cookie') ?? '';
    assert.match(cookie, /HttpOnly/);
    assert.match(cookie, /SameSite=Strict/);
    assert.match(cookie, /Path=\/admin/);
    assert.match(cookie, /Max-Age=28800/);
    assert.doesNotMatch(cookie, /Secure/, 'plain http: a Secure cookie would not be kept');
    assert.ok(!cookie.includes(TOKEN), 'the cookie does not carry the token');
  });

  test('over https (or behind a proxy saying so) the cookie is Secure', async () => {
    const s = setup();
    const direct = await s.lava.fetch(
      new Request('https://lava.test/admin/login', {
        method: 'POST',
        headers: { ...FORM, origin: 'https://lava.test' },
        body: form({ token: TOKEN }),
      }),
    );
    assert.match(direct.headers.get('set-cookie') ?? '', /; Secure/);
    const proxied = await s.call('/admin/login', {
      method: 'POST',
      headers: { ...FORM, origin: 'https://lava.test', 'x-forwarded-proto': 'https' },
      body: form({ token: TOKEN }),
    });
    assert.equal(proxied.status, 303);
    assert.match(proxied.headers.get('set-cookie') ?? '', /; Secure/);
  });

  test('next never leads off the console', async () => {
    const s = setup();
    for (const next of ['//evil.example/x', 'https://evil.example', '/adminx', '/healthz', '/admin\\@evil']) {
      const res = await s.call('/admin/login', {
        method: 'POST',
        headers: { ...FORM, origin: ORIGIN },
        body: form({ token: TOKEN, next }),
      });
      assert.equal(res.headers.get('location'), '/admin', next);
    }
  });

  test('a wrong token is 401, and after 5 failures the client gets 429 (even with the right token) until its window ends', async () => {
    const s = setup();
    const from = (address: string): Env => ({ requestIP: () => ({ address }) });
    const attempt = (token: string, env: Env) =>
      s.call('/admin/login', { method: 'POST', headers: { ...FORM, origin: ORIGIN }, body: form({ token }) }, env);
    for (let i = 0; i < 5; i++) {
      const res = await attempt(`${TOKEN}-wrong`, from('10.0.0.1'));
      assert.equal(res.status, 401);
      assert.equal(res.headers.get('set-cookie'), null);
    }
    const limited = await attempt(TOKEN, from('10.0.0.1'));
    assert.equal(limited.status, 429);
    assert.equal(limited.headers.get('retry-after'), '900');
    assert.equal(limited.headers.get('set-cookie'), null);
    assert.match(await limited.text(), /Too many failed logins/);
    // Another client is not held back by the first one's failures.
    assert.equal((await attempt(TOKEN, from('10.0.0.2'))).status, 303);
    s.clock.now += 15 * 60_000;
    assert.equal((await attempt(TOKEN, from('10.0.0.1'))).status, 303, 'the window ended');
    const refused = s.lava.metrics.render(null);
    assert.match(refused, /lava_webhooks_admin_logins_total\{outcome="wrong_token"\} 5/);
    assert.match(refused, /lava_webhooks_admin_logins_total\{outcome="rate_limited"\} 1/);
  });

  test('a login POST from another site (or with no Origin at all) is refused', async () => {
    const s = setup();
    const refused: Record<string, string>[] = [
      { origin: 'https://evil.example' },
      {},
      { 'sec-fetch-site': 'cross-site' },
    ];
    for (const headers of refused) {
      const res = await s.call('/admin/login', {
        method: 'POST',
        headers: { ...FORM, ...headers },
        body: form({ token: TOKEN }),
      });
      assert.equal(res.status, 403, JSON.stringify(headers));
      assert.equal(res.headers.get('set-cookie'), null);
    }
  });

  test('a forged, altered or expired session cookie is no session; logging out ends the session', async () => {
    const s = setup();
    const cookie = await login(s);
    assert.equal((await page(s, cookie, '/admin')).res.status, 200);
    const value = cookie.split('=')[1] as string;
    const parts = value.split('.');
    const altered = `lava_admin_session=${[parts[0], parts[1], String(Number(parts[2]) + 1e9), parts[3]].join('.')}`;
    for (const bad of [altered, 'lava_admin_session=v1.x.1.y', `lava_admin_session=${value}x`]) {
      assert.equal((await page(s, bad, '/admin')).res.status, 303, bad);
    }
    // Another token's session is not this one's.
    const other = setup({ adminToken: `${TOKEN}-other` });
    assert.equal((await page(other, cookie, '/admin')).res.status, 303);

    s.clock.now += 8 * 3_600_000 + 1;
    assert.equal((await page(s, cookie, '/admin')).res.status, 303, 'expired');
    s.clock.now = T0;
    const { html } = await page(s, cookie, '/admin');
    const out = await post(s, cookie, '/admin/logout', { _csrf: csrfOf(html) });
    assert.equal(out.status, 303);
    assert.equal(out.headers.get('location'), '/admin/login');
    assert.match(out.headers.get('set-cookie') ?? '', /lava_admin_session=;.*Max-Age=0/);
    assert.equal((await page(s, cookie, '/admin')).res.status, 303, 'the old cookie no longer works');
  });
});

describe('admin console: CSRF', () => {
  test('a POST without the same Origin or without the session’s CSRF token changes nothing (403)', async () => {
    const s = setup();
    s.failing.add('cus_bad');
    await deliver(s, 'customer.created', 'cus_bad');
    const cookie = await login(s);
    const dead = (await s.store.list({ status: 'dead' }))[0] as EventRecord;
    const { html } = await page(s, cookie, `/admin/events/${dead.seq}`);
    const csrf = csrfOf(html);
    const otherCsrf = csrfOf((await page(s, await login(s), '/admin')).html);
    assert.notEqual(csrf, otherCsrf, 'each session has its own token');
    const path = `/admin/events/${dead.seq}/requeue`;
    const refused: Array<[string, Record<string, string>, Record<string, string>]> = [
      ['another origin', { _csrf: csrf }, { origin: 'https://evil.example' }],
      ['no origin, no sec-fetch-site', { _csrf: csrf }, {}],
      ['sec-fetch-site cross-site', { _csrf: csrf }, { 'sec-fetch-site': 'cross-site' }],
      ['no token', {}, { origin: ORIGIN }],
      ['another session’s token', { _csrf: otherCsrf }, { origin: ORIGIN }],
      ['a made-up token', { _csrf: 'A'.repeat(43) }, { origin: ORIGIN }],
    ];
    for (const [why, fields, headers] of refused) {
      const res = await post(s, cookie, path, fields, headers);
      assert.equal(res.status, 403, why);
      assert.equal((await s.store.get(dead.key))?.status, 'dead', `${why}: nothing changed`);
    }
    const json = await s.call(path, {
      method: 'POST',
      headers: { cookie, origin: ORIGIN, 'content-type': 'application/json' },
      body: JSON.stringify({ _csrf: csrf }),
    });
    assert.equal(json.status, 403, 'a JSON body carries no form token');
    // A browser that sends only Sec-Fetch-Site (no Origin) from the page itself is let through.
    const ok = await post(s, cookie, path, { _csrf: csrf }, { 'sec-fetch-site': 'same-origin' });
    assert.equal(ok.status, 303);
    assert.equal((await s.store.get(dead.key))?.status, 'pending');
  });
});

describe('admin console: what it shows', () => {
  test('lists and the event page never show an email, a phone number or a secret', async () => {
    const s = setup();
    s.failing.add('cus_bad');
    await deliver(s, 'customer.created', 'cus_bad', { metadata: { api_key: API_KEY, note: `write to ${EMAIL}` } });
    await deliver(s, 'customer.created', 'cus_ok');
    // A delivery refused as invalid is kept as a dead letter with its raw bytes: they are not shown at all.
    const raw = `{"event": "customer.created", "data": {"email": "${EMAIL}"`;
    assert.equal((await s.lava.fetch(signedRequest(`${ORIGIN}/webhooks/lava`, raw))).status, 400);
    const cookie = await login(s);
    const pages = ['/admin', '/admin/events', '/admin/events?status=dead', '/admin/requeue'];
    for (const r of await s.store.list()) pages.push(`/admin/events/${r.seq}`);
    for (const path of pages) {
      const { res, html } = await page(s, cookie, path);
      assert.equal(res.status, 200, path);
      for (const secret of [EMAIL, 'example.com', PHONE, '7911', API_KEY, 'Lovelace', TOKEN]) {
        assert.ok(!html.includes(secret), `${path} shows ${secret}`);
      }
    }
    const bad = (await s.store.list({ status: 'dead', event: 'customer.created' })).find(
      (r) => r.customerId === 'cus_bad',
    )!;
    const { html } = await page(s, cookie, `/admin/events/${bad.seq}`);
    assert.match(html, /cus_bad/);
    assert.match(html, /&quot;email&quot;: &quot;\[redacted\]&quot;|"email": "\[redacted\]"/);
    assert.match(html, /x-api-key/);
    assert.match(
      html,
      /could not reach \[redacted\] at \[redacted\]/,
      'the error is shown with contact details taken out',
    );
    const rawRecord = (await s.store.list({ status: 'dead' })).find((r) => r.key.includes('sha256'))!;
    const shown = (await page(s, cookie, `/admin/events/${rawRecord.seq}`)).html;
    assert.match(shown, /not JSON: not shown/);
  });

  test('the event page shows status, attempts, policy, timings, tombstones and what a coalesced signal stood for', async () => {
    const s = setup();
    // Three identical balance updates while the first still waits: one record standing for three deliveries.
    for (let i = 0; i < 3; i++) {
      insertEvents(s.store, 1, () => ({
        key: `sig${i}`,
        event: 'customer.wallet.balance.updated',
        customerId: 'cus_sig',
        policy: 'signal',
        coalesceKey: 'customer.wallet.balance.updated:sha256:same',
        receivedAt: T0,
      }));
    }
    await s.lava.drain();
    await deliver(s, 'customer.created', 'cus_once');
    const cookie = await login(s);
    const signal = (await s.store.list({ event: 'customer.wallet.balance.updated' }))[0]!;
    assert.equal(signal.deliveries, 3);
    let html = (await page(s, cookie, `/admin/events/${signal.seq}`)).html;
    assert.match(html, /signal: identical copies/);
    assert.match(html, /stands for 3 deliveries/);
    assert.match(html, /status-done/);
    assert.match(html, /<dt>Attempts<\/dt><dd>1<\/dd>/);
    assert.match(html, /2026-12-03 12:00:00 UTC/);

    const once = (await s.store.list({ event: 'customer.created' }))[0]!;
    s.clock.now += 60_000;
    await s.store.purge({ before: s.clock.now });
    html = (await page(s, cookie, `/admin/events/${once.seq}`)).html;
    assert.match(html, /once: runs once per customer/);
    assert.match(html, /<dt>Tombstone<\/dt><dd>yes<\/dd>/);
    assert.match(html, /No payload is kept for a tombstone/);
    assert.doesNotMatch(html, /Requeue this event/, 'a tombstone cannot be requeued');

    assert.equal((await page(s, cookie, '/admin/events/999')).res.status, 404);
    const unknown = await page(s, cookie, '/admin/events/abc');
    assert.equal(unknown.res.status, 404);
    assert.match(unknown.html, /There is no such page/, 'a page of the console, not the app’s JSON');
    const slash = await page(s, cookie, '/admin/events/?status=dead');
    assert.equal(slash.res.status, 301);
    assert.equal(slash.res.headers.get('location'), '/admin/events?status=dead');
  });

  test('the overview shows counts, an SVG chart of the last hour, the oldest waiting event and the dead letters', async () => {
    const s = setup();
    s.failing.add('cus_bad');
    await deliver(s, 'customer.created', 'cus_bad');
    s.clock.now += 5 * 60_000;
    await deliver(s, 'customer.created', 'cus_ok');
    // A pending event another instance is running (in the same turn, so this receiver's worker cannot take it).
    insertEvents(s.store, 1, () => ({ key: 'waiting', receivedAt: s.clock.now - 30_000 }));
    assert.equal(
      (s.store.claim({ owner: 'elsewhere', limit: 1, leaseMs: 3_600_000, now: s.clock.now }) as EventRecord[]).length,
      1,
    );
    s.clock.now += 60_000;
    const cookie = await login(s);
    const { html } = await page(s, cookie, '/admin');
    assert.match(html, /<svg[^>]*role="img"/);
    assert.equal((html.match(/<rect class="received"/g) ?? []).length, 3, 'three minutes with deliveries');
    assert.equal((html.match(/<rect class="done"/g) ?? []).length, 1);
    assert.equal((html.match(/<rect class="dead"/g) ?? []).length, 1);
    assert.match(html, /<title>12:00 UTC: 1 delivery<\/title>/);
    assert.match(html, /3 deliveries received/);
    assert.match(html, /has waited <strong>1 min 30 s<\/strong>/);
    assert.match(html, /1 dead letter:/);
    for (const [status, n] of [
      ['pending', 1],
      ['done', 1],
      ['dead', 1],
      ['retrying', 0],
    ] as const) {
      assert.match(html, new RegExp(`href="/admin/events\\?status=${status}"><span class="n">${n}</span>`));
    }
  });
});

describe('admin console: events list', () => {
  test('pages newest first with older and newer links, keeping the filters', async () => {
    const s = setup();
    insertEvents(s.store, 120);
    const cookie = await login(s);
    const first = await page(s, cookie, '/admin/events');
    const range = (from: number, to: number) => Array.from({ length: from - to + 1 }, (_, i) => from - i);
    assert.deepEqual(seqsIn(first.html), range(120, 71));
    assert.doesNotMatch(first.html, /Newer/);
    const older = /href="(\/admin\/events\?before=71)"/.exec(first.html);
    assert.ok(older, 'an Older link');
    const second = await page(s, cookie, older[1] as string);
    assert.deepEqual(seqsIn(second.html), range(70, 21));
    const third = await page(s, cookie, '/admin/events?before=21');
    assert.deepEqual(seqsIn(third.html), range(20, 1));
    assert.doesNotMatch(third.html, /Older/);
    const newer = /href="(\/admin\/events\?after=20)"/.exec(third.html);
    assert.ok(newer, 'a Newer link');
    assert.deepEqual(seqsIn((await page(s, cookie, newer[1] as string)).html), range(70, 21));
    const small = await page(s, cookie, '/admin/events?customer=cus_1&limit=10');
    assert.deepEqual(seqsIn(small.html), [118, 115, 112, 109, 106, 103, 100, 97, 94, 91]);
    assert.match(small.html, /href="\/admin\/events\?customer=cus_1&amp;limit=10&amp;before=91"/);
  });

  test('filters by status, event, customer and received time; a bad filter is reported, not applied', async () => {
    const s = setup();
    insertEvents(s.store, 12, (i) => ({
      event: i % 2 ? 'customer.created' : 'customer.deleted',
      status: i > 9 ? 'dead' : 'pending',
      lastError: i > 9 ? 'boom' : null,
    }));
    const cookie = await login(s);
    const seqs = async (q: string) => seqsIn((await page(s, cookie, `/admin/events?${q}`)).html);
    assert.deepEqual(await seqs('status=dead'), [12, 11, 10]);
    assert.deepEqual(await seqs('event=customer.deleted&status=pending'), [8, 6, 4, 2]);
    assert.deepEqual(await seqs('customer=cus_0'), [12, 9, 6, 3]);
    // Received 12:00:03 up to (not including) 12:00:06.
    assert.deepEqual(await seqs('since=2026-12-03T12:00:03&until=2026-12-03T12:00:06'), [5, 4, 3]);
    const bad = await page(s, cookie, '/admin/events?status=sideways&since=yesterday');
    assert.match(bad.html, /status must be one of/);
    assert.match(bad.html, /since is not a date/);
    assert.equal(seqsIn(bad.html).length, 12);
    const filtered = (await page(s, cookie, '/admin/events?status=dead&event=customer.created')).html;
    assert.match(filtered, /<option value="dead" selected="">/);
    assert.match(filtered, /id="f-event" name="event" list="event-names" value="customer.created"/);
  });
});

describe('admin console: requeue', () => {
  test('requeue one dead letter: it goes back to pending and runs again', async () => {
    const s = setup();
    s.failing.add('cus_bad');
    await deliver(s, 'customer.created', 'cus_bad');
    const dead = (await s.store.list({ status: 'dead' }))[0]!;
    const cookie = await login(s);
    const { html } = await page(s, cookie, `/admin/events/${dead.seq}`);
    assert.match(html, /Requeue this event/);
    s.failing.delete('cus_bad');
    const res = await post(s, cookie, `/admin/events/${dead.seq}/requeue`, { _csrf: csrfOf(html) });
    assert.equal(res.status, 303);
    assert.equal(res.headers.get('location'), `/admin/events/${dead.seq}?requeued=1`);
    assert.equal((await s.store.get(dead.key))?.status, 'pending');
    assert.match((await page(s, cookie, res.headers.get('location') as string)).html, /Requeued: it waits/);
    await s.lava.drain();
    assert.equal((await s.store.get(dead.key))?.status, 'done');
    assert.equal((await post(s, cookie, '/admin/events/999/requeue', { _csrf: csrfOf(html) })).status, 404);
  });

  test('requeue what a filter matches: a count and a confirmation first, then only the matching dead letters', async () => {
    const s = setup();
    insertEvents(s.store, 9, (i) => ({
      event: i <= 6 ? 'customer.created' : 'customer.deleted',
      status: i % 3 === 0 ? 'pending' : 'dead',
      lastError: 'boom',
    }));
    // Dead letters: 1, 2, 4, 5 (created) and 7, 8 (deleted); customers cus_1: 1, 4, 7; cus_2: 2, 5, 8.
    const cookie = await login(s);
    const confirm = await page(s, cookie, '/admin/requeue?event=customer.created');
    assert.equal(confirm.res.status, 200);
    assert.match(confirm.html, /4 dead letters match/);
    assert.match(confirm.html, /Requeue 4 dead letters/);
    assert.equal((await s.store.counts()).dead, 6, 'asking is not doing');
    const res = await post(s, cookie, '/admin/requeue', { _csrf: csrfOf(confirm.html), event: 'customer.created' });
    assert.equal(res.status, 303);
    assert.equal(res.headers.get('location'), '/admin/events?event=customer.created&requeued=4');
    assert.match((await page(s, cookie, res.headers.get('location') as string)).html, /Requeued 4 dead letters/);
    assert.deepEqual(
      (await s.store.list({ status: 'dead' })).map((r) => r.key),
      ['k7', 'k8'],
    );

    // A customer and time filter: listed and requeued one by one.
    const q = 'customer=cus_2&since=2026-12-03T12:00:06';
    const second = await page(s, cookie, `/admin/requeue?${q}`);
    assert.match(second.html, /1 dead letter matches/);
    const done = await post(s, cookie, '/admin/requeue', {
      _csrf: csrfOf(second.html),
      customer: 'cus_2',
      since: '2026-12-03T12:00:06',
    });
    assert.equal(done.headers.get('location'), `/admin/events?${q.replace(/:/g, '%3A')}&requeued=1`);
    assert.deepEqual(
      (await s.store.list({ status: 'dead' })).map((r) => r.key),
      ['k7'],
    );

    // A filter that does not parse requeues nothing; one that matches nothing says so.
    const refused = await post(s, cookie, '/admin/requeue', { _csrf: csrfOf(second.html), since: 'soon' });
    assert.equal(refused.status, 400);
    assert.deepEqual(
      (await s.store.list({ status: 'dead' })).map((r) => r.key),
      ['k7'],
    );
    const none = await page(s, cookie, '/admin/requeue?customer=nobody');
    assert.match(none.html, /No dead letters match/);
    assert.doesNotMatch(none.html, /name="_csrf"[^>]*>\s*<button class="danger"/);
  });
});
