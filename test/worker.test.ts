// Processing after the ack: retries, dead letters, per-customer order, crash recovery, shutdown, drain.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  type HandlerMap,
  type LavaWebhooksOptions,
  NonRetryableError,
  type Store,
  StoreUnavailableError,
  createLavaWebhooks,
  jsonLogger,
  memoryStore,
} from '../src/mod.ts';
import { ParsedCache } from '../src/processing/dispatch.ts';
import { validateEvent } from '../src/intake/events.ts';
import { type Deadline, atMost, clear, deadline, expireNow, within } from '../src/intake/deadlines.ts';
import { nextAttemptDelay } from '../src/processing/retry.ts';
import { createWorker } from '../src/processing/worker.ts';
import { Metrics } from '../src/observability/metrics.ts';
import { samplePayload } from '../src/samples.ts';
import { SECRET, signedRequest, sleep, waitFor } from './helpers/lava.ts';

const URL_ = 'http://receiver.test/webhooks/lava';

function receiver(options: Partial<LavaWebhooksOptions>) {
  const logs: string[] = [];
  const lava = createLavaWebhooks({
    secret: SECRET,
    store: memoryStore(),
    logger: jsonLogger({ level: 'debug', write: (l) => logs.push(l) }),
    pollMs: 20,
    ...options,
  });
  return { lava, logs };
}

async function deliver(lava: { fetch: (r: Request) => Response | Promise<Response> }, payload: unknown) {
  const res = await lava.fetch(signedRequest(URL_, JSON.stringify(payload)));
  assert.equal(res.status, 200, await res.clone().text());
  return res;
}

const balance = (customerId: string, n: number) =>
  samplePayload('customer.wallet.balance.updated', { customerId, data: { balance: String(n) } });

/** Records n pending balance events (key `b<i>`, customer `cus_<i % customers>`) straight into the store. */
async function recordBalances(store: Store, n: number, customers: number) {
  for (let i = 0; i < n; i++) {
    await store.insert({
      key: `b${i}`,
      event: 'customer.wallet.balance.updated',
      customerId: `cus_${i % customers}`,
      body: new TextEncoder().encode(JSON.stringify(balance(`cus_${i % customers}`, i))),
      headers: {},
      receivedAt: Date.now(),
      status: 'pending',
    });
  }
}

describe('retry policy', () => {
  test('nextAttemptDelay() follows the schedule with bounded jitter, then gives up', () => {
    const policy = { scheduleMs: [1000, 5000, 30000], jitter: 0.2 };
    assert.equal(
      nextAttemptDelay(policy, 1, undefined, () => 0),
      800,
    );
    assert.equal(
      nextAttemptDelay(policy, 1, undefined, () => 1),
      1200,
    );
    assert.equal(
      nextAttemptDelay(policy, 2, undefined, () => 0.5),
      5000,
    );
    assert.equal(
      nextAttemptDelay(policy, 3, undefined, () => 0.5),
      30000,
    );
    assert.equal(nextAttemptDelay(policy, 4), null);
    assert.equal(
      nextAttemptDelay(policy, 1, { retryAfterMs: 9000 }, () => 0.5),
      9000,
      'Retry-After wins when later',
    );
  });
});

describe('deadlines (every timer the worker uses)', () => {
  test('atMost() resolves once its limit passed when the work never settles, and rejects as the work does', async () => {
    const t0 = Date.now();
    await atMost(new Promise(() => {}), 30);
    assert.ok(Date.now() - t0 >= 25, 'not before the limit');
    await assert.rejects(atMost(Promise.reject(new Error('store down')), 1000), /store down/);
    await atMost(Promise.resolve('answered'), 1000);
  });

  test('within() with its own timer rejects with the given error; the late answer is ignored', async () => {
    let answer!: (v: string) => void;
    const work = new Promise<string>((r) => {
      answer = r;
    });
    await assert.rejects(
      within(work, 20, () => new Error('claim did not answer'), true),
      /claim did not answer/,
    );
    answer('late');
    assert.equal(await within(Promise.resolve('on time'), 20, () => new Error('never'), true), 'on time');
  });

  test('expireNow() ends a wait at once and runs its expiry once; a cleared deadline never fires', async () => {
    let fired = 0;
    const d = deadline(10_000, () => fired++, true);
    expireNow(d);
    expireNow(d);
    assert.equal(fired, 1);
    assert.equal(d.expired, true);
    let cleared = 0;
    const own = deadline(10, () => cleared++, true);
    const watched = deadline(10, () => cleared++);
    clear(own);
    clear(watched);
    await sleep(120);
    assert.equal(cleared, 0);
  });
  test('watched deadlines fire once each, unless cleared, however they are added, cleared and fired', async () => {
    const fired: number[] = [];
    const ds = Array.from({ length: 6 }, (_, i) => deadline(10 + (i % 3) * 10, () => fired.push(i)));
    // The oldest, the newest and one between leave the list.
    clear(ds[0] as Deadline);
    clear(ds[5] as Deadline);
    clear(ds[3] as Deadline);
    // An expiry that clears another due deadline and adds one of its own, in the same tick.
    let added = 0;
    const clearer = deadline(5, () => {
      clear(ds[4] as Deadline);
      deadline(5, () => added++);
    });
    const later = deadline(400, () => fired.push(99));
    await sleep(250);
    assert.equal(clearer.expired, true);
    assert.equal(added, 1);
    assert.deepEqual(
      fired.filter((i) => i !== 4).sort(),
      [1, 2],
      'the uncleared ones fired, once each, the cleared ones never',
    );
    assert.ok(fired.filter((i) => i === 4).length <= 1, 'a deadline cleared by another expiry fires at most once');
    // Clearing one that fired, or twice, changes nothing; the one still due later is still watched.
    clear(ds[1] as Deadline);
    clear(ds[0] as Deadline);
    assert.equal(later.expired, false);
    await sleep(250);
    assert.equal(later.expired, true);
    assert.equal(fired.filter((i) => i === 99).length, 1);
  });
});

describe('ParsedCache', () => {
  const parsed = validateEvent(samplePayload('customer.created', { customerId: 'pc' }));
  if (!parsed.ok) throw new Error('sample must validate');
  const rec = (key: string, receivedAt = 1, bytes = 10, attempts = 1) =>
    ({ key, receivedAt, body: new Uint8Array(bytes), attempts }) as unknown as Parameters<ParsedCache['take']>[0];

  test('keeps at most max entries, drops the oldest first, and hands an entry out once', () => {
    const cache = new ParsedCache(4);
    for (let i = 0; i < 10; i++) cache.set(`k${i}`, 1, 10, parsed);
    assert.equal(cache.size, 4);
    assert.equal(cache.take(rec('k5')), undefined, 'evicted');
    assert.equal(cache.take(rec('k6')), parsed);
    assert.equal(cache.take(rec('k6')), undefined, 'taken once');
    // A key set again is kept by its new slot, not dropped when its old slot comes round.
    cache.set('k9', 1, 10, parsed);
    for (let i = 10; i < 13; i++) cache.set(`k${i}`, 1, 10, parsed);
    assert.equal(cache.take(rec('k9')), parsed);
    assert.ok(cache.size <= 4);
  });

  test('is used only for the very record it was made for (first attempt, same time and size)', () => {
    const cache = new ParsedCache(8);
    cache.set('a', 5, 10, parsed);
    assert.equal(cache.take(rec('a', 6, 10)), undefined);
    cache.set('b', 5, 10, parsed);
    assert.equal(cache.take(rec('b', 5, 11)), undefined);
    cache.set('c', 5, 10, parsed);
    assert.equal(cache.take(rec('c', 5, 10, 2)), undefined);
    cache.set('d', 5, 10, parsed);
    assert.equal(cache.take(rec('d', 5, 10, 1)), parsed);
  });
});

describe('worker', () => {
  test('a failing handler is retried with backoff, then becomes a dead letter with its last error', async () => {
    let calls = 0;
    const attempts: number[] = [];
    const { lava } = receiver({
      retry: { scheduleMs: [20, 40], jitter: 0 },
      handlers: {
        'customer.created': (_e, ctx) => {
          calls++;
          attempts.push(ctx.attempt);
          throw new Error(`boom ${calls}`);
        },
      },
    });
    lava.start();
    await deliver(lava, samplePayload('customer.created', { customerId: 'c1' }));
    const rec = await waitFor(
      async () => {
        const r = await lava.store.get('customer.created:c1');
        return r?.status === 'dead' ? r : null;
      },
      5000,
      'dead letter',
    );
    assert.equal(calls, 3, 'first run + 2 retries');
    assert.deepEqual(attempts, [1, 2, 3]);
    assert.equal(rec.lastError, 'Error: boom 3');
    assert.equal(rec.attempts, 3);
    const metrics = lava.metrics.render(null);
    assert.match(metrics, /handler_runs_total\{event="customer.created",outcome="retry"\} 2/);
    assert.match(metrics, /handler_runs_total\{event="customer.created",outcome="dead"\} 1/);
    await lava.close();
  });

  test('a NonRetryableError dead-letters at once; requeue() runs it again after the fix', async () => {
    let fixed = false;
    let ok = 0;
    const { lava } = receiver({
      handlers: {
        'customer.deleted': () => {
          if (!fixed) throw new NonRetryableError('customer unknown here');
          ok++;
        },
      },
    });
    lava.start();
    await deliver(lava, samplePayload('customer.deleted', { customerId: 'gone' }));
    const key = 'customer.deleted:gone';
    await waitFor(async () => (await lava.store.get(key))?.status === 'dead', 3000, 'dead');
    assert.equal((await lava.store.get(key))?.attempts, 1);
    assert.match((await lava.store.get(key))?.lastError ?? '', /NonRetryableError: customer unknown here/);
    fixed = true;
    assert.equal(await lava.store.requeue(key, Date.now()), true);
    await lava.drain();
    await waitFor(async () => (await lava.store.get(key))?.status === 'done', 3000, 'done after requeue');
    assert.equal(ok, 1);
    await lava.close();
  });

  test('events of one customer run one at a time in arrival order; customers run concurrently', async () => {
    const order = new Map<string, number[]>();
    let running = 0;
    let maxRunning = 0;
    const perCustomer = new Map<string, number>();
    const { lava } = receiver({
      concurrency: 4,
      handlers: {
        'customer.wallet.balance.updated': async (e) => {
          const c = e.data.customer_id;
          perCustomer.set(c, (perCustomer.get(c) ?? 0) + 1);
          assert.equal(perCustomer.get(c), 1, `two events of ${c} ran at once`);
          running++;
          maxRunning = Math.max(maxRunning, running);
          await sleep(Math.random() * 8);
          const list = order.get(c) ?? [];
          list.push(Number(e.data.balance));
          order.set(c, list);
          running--;
          perCustomer.set(c, (perCustomer.get(c) ?? 1) - 1);
        },
      },
    });
    lava.start();
    const customers = ['a', 'b', 'c', 'd', 'e', 'f'];
    // Arrival order per customer is 0..9; deliveries of different customers interleave, several in flight at once.
    for (let n = 0; n < 10; n++) {
      await Promise.all(customers.map((c) => deliver(lava, balance(c, n))));
    }
    await waitFor(() => [...order.values()].reduce((s, l) => s + l.length, 0) === 60, 10_000, 'all runs');
    for (const c of customers) assert.deepEqual(order.get(c), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], `order of ${c}`);
    assert.ok(maxRunning > 1, 'different customers ran concurrently');
    assert.ok(maxRunning <= 4, 'concurrency limit held');
    await lava.close();
  });

  test('a retrying event holds back the same customer’s later events; a dead letter releases them', async () => {
    const seen: string[] = [];
    let failFirst = true;
    const { lava } = receiver({
      retry: { scheduleMs: [60], jitter: 0 },
      handlers: {
        'customer.wallet.balance.updated': (e) => {
          if (e.data.balance === '1' && failFirst) {
            failFirst = false;
            throw new Error('transient');
          }
          seen.push(String(e.data.balance));
        },
      },
    });
    lava.start();
    await deliver(lava, balance('x', 1));
    await deliver(lava, balance('x', 2));
    await waitFor(() => seen.length === 2, 3000, 'both');
    assert.deepEqual(seen, ['1', '2']);
    await lava.close();
  });

  test('the handler context carries key, attempt, received-at, headers, a logger and an AbortSignal', async () => {
    let ctxSeen: Record<string, unknown> | null = null;
    const { lava, logs } = receiver({
      handlers: {
        'customer.created': (e, ctx) => {
          ctx.logger.info('hello from handler');
          ctxSeen = {
            key: ctx.key,
            attempt: ctx.attempt,
            receivedAt: ctx.receivedAt instanceof Date,
            header: ctx.headers['content-type'],
            signal: ctx.signal instanceof AbortSignal,
            id: e.data.customer_id,
          };
        },
      },
    });
    await deliver(lava, samplePayload('customer.created', { customerId: 'ctx1' }));
    await lava.drain();
    assert.deepEqual(ctxSeen, {
      key: 'customer.created:ctx1',
      attempt: 1,
      receivedAt: true,
      header: 'application/json',
      signal: true,
      id: 'ctx1',
    });
    const line = logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'hello from handler');
    assert.equal(line.key, 'customer.created:ctx1');
    assert.equal(line.customer_id, 'ctx1');
    await lava.close();
  });

  test('a handler that runs past its timeout is aborted and retried', async () => {
    let calls = 0;
    let aborted = false;
    const { lava } = receiver({
      handlerTimeoutMs: 80,
      retry: { scheduleMs: [10], jitter: 0 },
      handlers: {
        'customer.created': async (_e, ctx) => {
          calls++;
          if (calls === 1) {
            await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()));
            aborted = true;
          }
        },
      },
    });
    lava.start();
    await deliver(lava, samplePayload('customer.created', { customerId: 'slow' }));
    await waitFor(async () => (await lava.store.get('customer.created:slow'))?.status === 'done', 3000, 'done');
    assert.equal(calls, 2);
    assert.equal(aborted, true);
    assert.match((await lava.store.get('customer.created:slow'))?.lastError ?? '', /timed out/);
    await lava.close();
  });

  test('a completion the store refuses for a moment is tried again: the handler runs once', async () => {
    const store = memoryStore();
    const complete = store.complete.bind(store);
    let refusals = 2;
    store.complete = (...args) => {
      if (refusals-- > 0) throw new StoreUnavailableError('connection reset');
      return complete(...args);
    };
    let runs = 0;
    const { lava, logs } = receiver({ store, handlers: { 'customer.created': () => void runs++ } });
    lava.start();
    await deliver(lava, samplePayload('customer.created', { customerId: 'blip' }));
    const rec = await waitFor(
      async () => {
        const r = await store.get('customer.created:blip');
        return r?.status === 'done' ? r : null;
      },
      5000,
      'recorded as done',
    );
    assert.equal(runs, 1, 'the handler ran once');
    assert.equal(rec.attempts, 1);
    assert.equal(logs.filter((l) => l.includes('could not record the completion; trying again')).length, 2);
    assert.match(lava.metrics.render(null), /handler_runs_total\{event="customer.created",outcome="ok"\} 1/);
    assert.doesNotMatch(lava.metrics.render(null), /outcome="retry"/);
    await lava.close();
  });

  test('a completion committed but answered with an error is recognised when tried again (no lease-lost warning)', async () => {
    const store = memoryStore();
    const complete = store.complete.bind(store);
    let lostReplies = 1;
    store.complete = (...args) => {
      const ok = complete(...args);
      if (lostReplies-- > 0) throw new StoreUnavailableError('connection closed after COMMIT');
      return ok;
    };
    let runs = 0;
    const { lava, logs } = receiver({ store, handlers: { 'customer.created': () => void runs++ } });
    lava.start();
    await deliver(lava, samplePayload('customer.created', { customerId: 'lost-reply' }));
    await waitFor(() => logs.some((l) => l.includes('"msg":"handled"')), 5000, 'handled');
    assert.equal(runs, 1);
    assert.equal((await store.get('customer.created:lost-reply'))?.status, 'done');
    assert.ok(!logs.some((l) => l.includes('lease was lost')), 'not mistaken for a lost lease');
    await lava.close();
  });

  test('a completion the store keeps refusing is not recorded as a failure: the event runs again after its lease', async () => {
    const store = memoryStore();
    const complete = store.complete.bind(store);
    let refusals = 3;
    store.complete = (...args) => {
      if (refusals-- > 0) throw new StoreUnavailableError('database or disk is full');
      return complete(...args);
    };
    // Renewals fail too (the store is down for writes), so the lease bounds how long the completion is tried.
    store.renew = () => {
      throw new StoreUnavailableError('database or disk is full');
    };
    let retries = 0;
    const retry = store.retry.bind(store);
    store.retry = (...args) => {
      retries++;
      return retry(...args);
    };
    const attempts: number[] = [];
    const { lava, logs } = receiver({
      store,
      leaseMs: 300,
      handlers: { 'customer.created': (_e, ctx) => void attempts.push(ctx.attempt) },
    });
    lava.start();
    await deliver(lava, samplePayload('customer.created', { customerId: 'down' }));
    const rec = await waitFor(
      async () => {
        const r = await store.get('customer.created:down');
        return r?.status === 'done' ? r : null;
      },
      5000,
      'recorded as done',
    );
    assert.deepEqual(attempts, [1, 2], 'ran again once the first lease ran out');
    assert.equal(rec.attempts, 2);
    assert.equal(retries, 0, 'no retry was scheduled: the handler did not fail');
    assert.ok(
      logs.some((l) => l.includes('"outcome":"ok_unrecorded"') && l.includes('runs again once its lease expires')),
    );
    const metrics = lava.metrics.render(null);
    assert.doesNotMatch(metrics, /outcome="retry"/);
    assert.match(metrics, /handler_runs_total\{event="customer.created",outcome="unrecorded"\} 1/);
    assert.match(metrics, /handler_runs_total\{event="customer.created",outcome="ok"\} 1/);
    await lava.close();
  });

  test('a running handler whose lease cannot be renewed is aborted when the lease runs out, and runs again later', async () => {
    const store = memoryStore();
    // The store goes down for writes once the first run started, and comes back when that run ends.
    let storeDown = false;
    const renew = store.renew.bind(store);
    store.renew = (...args) => {
      if (storeDown) throw new StoreUnavailableError('connection refused');
      return renew(...args);
    };
    const claim = store.claim.bind(store);
    store.claim = (...args) => {
      if (storeDown) throw new StoreUnavailableError('connection refused');
      return claim(...args);
    };
    const runs: { attempt: number; start: number; end?: number; aborted?: string }[] = [];
    const { lava, logs } = receiver({
      store,
      leaseMs: 300,
      retry: { scheduleMs: [50], jitter: 0 },
      handlers: {
        'customer.created': async (_e, ctx) => {
          const run: (typeof runs)[number] = { attempt: ctx.attempt, start: Date.now() };
          runs.push(run);
          if (ctx.attempt > 1) {
            run.end = Date.now();
            return;
          }
          // The first run outlives its lease; it stops when told to.
          storeDown = true;
          await new Promise<void>((resolve) => {
            ctx.signal.addEventListener('abort', () => {
              run.aborted = String(ctx.signal.reason);
              resolve();
            });
          });
          run.end = Date.now();
          storeDown = false;
          throw ctx.signal.reason;
        },
      },
    });
    lava.start();
    const t0 = Date.now();
    await deliver(lava, samplePayload('customer.created', { customerId: 'unrenewed' }));
    await waitFor(async () => (await store.get('customer.created:unrenewed'))?.status === 'done', 5000, 'done');
    assert.deepEqual(
      runs.map((r) => r.attempt),
      [1, 2],
    );
    const [first, second] = runs as [(typeof runs)[number], (typeof runs)[number]];
    assert.match(first.aborted ?? '', /lease expired/);
    assert.ok((first.end ?? 0) - t0 >= 250, 'not before the lease ran out');
    assert.ok((first.end ?? 0) <= second.start, 'the runs never overlap');
    assert.ok(logs.some((l) => l.includes('lease ran out while the handler was running')));
    await lava.close();
  });

  test('an event claimed again while it is still running here is not started a second time', async () => {
    const store = memoryStore();
    const claim = store.claim.bind(store);
    let running: Awaited<ReturnType<typeof claim>> = [];
    // Every pass also hands back what the previous one claimed: what a re-claim of this worker's own expired lease
    // looks like from the worker's side.
    store.claim = async (options) => {
      const fresh = await claim(options);
      const open = [];
      for (const r of running) if ((await store.get(r.key))?.status === 'pending') open.push(r);
      reclaims += open.length;
      running = [...open, ...fresh];
      return [...fresh, ...open.map((r) => ({ ...r, leaseUntil: options.now + options.leaseMs }))];
    };
    let concurrent = 0;
    let maxConcurrent = 0;
    let runs = 0;
    let reclaims = 0;
    const { lava } = receiver({
      store,
      handlers: {
        'customer.created': async () => {
          runs++;
          maxConcurrent = Math.max(maxConcurrent, ++concurrent);
          await sleep(150);
          concurrent--;
        },
      },
    });
    lava.start();
    await deliver(lava, samplePayload('customer.created', { customerId: 'reclaimed' }));
    await waitFor(async () => (await store.get('customer.created:reclaimed'))?.status === 'done', 5000, 'done');
    assert.ok(reclaims > 0, 'the running event was handed back by a claim');
    assert.equal(maxConcurrent, 1);
    assert.equal(runs, 1);
    await lava.close();
  });

  test('crash recovery: an event whose worker died is taken over once its lease expires', async () => {
    const store = memoryStore();
    const ran: string[] = [];
    const body = new TextEncoder().encode(JSON.stringify(samplePayload('customer.created', { customerId: 'crash' })));
    await store.insert({
      key: 'customer.created:crash',
      event: 'customer.created',
      customerId: 'crash',
      body,
      headers: {},
      receivedAt: Date.now(),
      status: 'pending',
    });
    // What a process killed mid-run leaves behind: a claimed event whose lease nobody renews.
    const [claimed] = await store.claim({ owner: 'killed-process', limit: 1, leaseMs: 150, now: Date.now() });
    assert.equal(claimed?.key, 'customer.created:crash');
    const second = receiver({
      store,
      handlers: { 'customer.created': (e) => void ran.push(e.data.customer_id) },
    });
    second.lava.start();
    await sleep(80);
    assert.equal(ran.length, 0, 'a live lease is respected');
    await waitFor(() => ran.length === 1, 3000, 'taken over');
    const rec = await store.get('customer.created:crash');
    assert.equal(rec?.status, 'done');
    assert.equal(rec?.attempts, 2, 'the interrupted run counts as an attempt');
    assert.equal(await store.complete('customer.created:crash', 'killed-process', Date.now()), false);
    await second.lava.close();
  });

  test('close() drains: intake answers 503, running handlers finish within the deadline, the store closes', async () => {
    let finished = false;
    const { lava } = receiver({
      handlers: {
        'customer.created': async () => {
          await sleep(100);
          finished = true;
        },
      },
    });
    lava.start();
    await deliver(lava, samplePayload('customer.created', { customerId: 'drain' }));
    await waitFor(() => lava.worker.running === 1, 2000, 'running');
    await lava.close(2000);
    assert.equal(finished, true);
    const res = await lava.fetch(signedRequest(URL_, JSON.stringify(samplePayload('customer.created'))));
    assert.equal(res.status, 503);
    await assert.rejects(async () => {
      await lava.store.counts();
    });
  });

  test('close() past its deadline aborts running handlers through their signal', async () => {
    let abortedWith = '';
    const { lava } = receiver({
      handlers: {
        'customer.created': (_e, ctx) =>
          new Promise<void>((resolve) =>
            ctx.signal.addEventListener('abort', () => {
              abortedWith = String((ctx.signal.reason as Error)?.message);
              resolve();
            }),
          ),
      },
    });
    lava.start();
    await deliver(lava, samplePayload('customer.created', { customerId: 'stuck' }));
    await waitFor(() => lava.worker.running === 1, 2000, 'running');
    await lava.close(50);
    assert.equal(abortedWith, 'shutting down');
  });

  test('drain() processes everything due without a background loop (serverless)', async () => {
    const seen: string[] = [];
    const handlers: HandlerMap = { 'customer.created': (e) => void seen.push(e.data.customer_id) };
    const { lava } = receiver({ handlers });
    const store = lava.store;
    // Record without processing: insert directly, as a previous request would have.
    for (let i = 0; i < 5; i++) {
      const body = new TextEncoder().encode(JSON.stringify(samplePayload('customer.created', { customerId: `d${i}` })));
      await store.insert({
        key: `k${i}`,
        event: 'customer.created',
        customerId: `d${i}`,
        body,
        headers: {},
        receivedAt: Date.now(),
        status: 'pending',
      });
    }
    const { processed } = await lava.drain();
    assert.equal(processed, 5);
    assert.deepEqual(seen.sort(), ['d0', 'd1', 'd2', 'd3', 'd4']);
    await lava.close();
  });

  test('after the ack, processing is handed to executionCtx.waitUntil when the runtime has one', async () => {
    const seen: string[] = [];
    const { lava } = receiver({ handlers: { 'customer.created': (e) => void seen.push(e.data.customer_id) } });
    const waited: Promise<unknown>[] = [];
    const ctx = { waitUntil: (p: Promise<unknown>) => waited.push(p), passThroughOnException() {} };
    const req = signedRequest(URL_, JSON.stringify(samplePayload('customer.created', { customerId: 'wu' })));
    const res = await lava.fetch(req, {}, ctx);
    assert.equal(res.status, 200);
    assert.equal(waited.length, 1);
    await Promise.all(waited);
    assert.deepEqual(seen, ['wu']);
    await lava.close();
  });

  test('a burst of deliveries without a loop: each waitUntil promise ends only after its own event ran, once', async () => {
    const seen = new Map<string, number>();
    const { lava } = receiver({
      handlers: {
        'customer.wallet.balance.updated': async (e) => {
          await sleep(1);
          seen.set(e.data.balance as string, (seen.get(e.data.balance as string) ?? 0) + 1);
        },
      },
    });
    const N = 300;
    const checks: Promise<void>[] = [];
    const responses = await Promise.all(
      Array.from({ length: N }, (_, i) => {
        // Concurrent drains join the one already running; none may end before the event that asked for it ran.
        const ctx = {
          waitUntil: (p: Promise<unknown>) =>
            checks.push(
              p.then(() => assert.equal(seen.get(String(i)), 1, `event ${i} had not run when its drain ended`)),
            ),
          passThroughOnException() {},
        };
        return lava.fetch(signedRequest(URL_, JSON.stringify(balance(`cus_${i % 7}`, i))), {}, ctx);
      }),
    );
    assert.ok(responses.every((r) => r.status === 200));
    assert.equal(checks.length, N, 'every delivery handed its processing to waitUntil');
    await Promise.all(checks);
    assert.equal(seen.size, N);
    assert.ok([...seen.values()].every((n) => n === 1));
    await lava.close();
  });

  test('a synchronous store is claimed a batch at a time, not once per freed handler slot', async () => {
    const seen = new Map<string, number>();
    const { lava } = receiver({
      concurrency: 2,
      handlers: {
        'customer.wallet.balance.updated': async (e) => {
          await sleep(0);
          seen.set(e.data.balance as string, (seen.get(e.data.balance as string) ?? 0) + 1);
        },
      },
    });
    let claimsWithWork = 0;
    const claim = lava.store.claim.bind(lava.store);
    lava.store.claim = (o) => {
      const got = claim(o) as Awaited<ReturnType<typeof claim>>;
      if (got.length > 0) claimsWithWork++;
      return got;
    };
    const N = 200;
    // Recorded straight into the store (a delivery without a running loop would be processed at once).
    await recordBalances(lava.store, N, 100);
    lava.start();
    await waitFor(() => seen.size === N, 10_000, 'every event to run');
    assert.ok([...seen.values()].every((n) => n === 1));
    // 2 slots, 16 prefetched: a claim once fewer than 2 wait takes 14 or more.
    assert.ok(claimsWithWork <= 30, `${claimsWithWork} claims for ${N} events`);
    await lava.close();
  });

  test('a networked store (claims answered by a promise) is claimed ahead, more under a backlog, never past its bound', async () => {
    const inner = memoryStore();
    // Every method answers through a promise, as Postgres and Deno KV do.
    const store = Object.fromEntries(
      Object.entries(inner).map(([k, v]) => [
        k,
        typeof v === 'function' ? (...a: unknown[]) => Promise.resolve(v(...a)) : v,
      ]),
    ) as unknown as typeof inner;
    const limits: number[] = [];
    const seen = new Map<string, number>();
    let running = 0;
    let maxRunning = 0;
    const claim = store.claim;
    store.claim = (o) => {
      limits.push(o.limit);
      return claim(o);
    };
    const { lava } = receiver({
      store,
      concurrency: 2,
      handlers: {
        'customer.wallet.balance.updated': async (e) => {
          running++;
          maxRunning = Math.max(maxRunning, running);
          await sleep(1);
          running--;
          seen.set(e.data.balance as string, (seen.get(e.data.balance as string) ?? 0) + 1);
        },
      },
    });
    const N = 120;
    await recordBalances(store, N, 60);
    lava.start();
    await waitFor(() => seen.size === N, 10_000, 'every event to run');
    assert.ok([...seen.values()].every((n) => n === 1));
    assert.ok(maxRunning <= 2, 'the concurrency limit held');
    // 2 slots: the very first claim asks for the free slots only; once the worker has seen the store answer by
    // promise, claims ask for 4 × 2, and, while they come back full (a backlog of 60 customers' heads), for twice as
    // much each time, never past 32 × 2.
    assert.equal(limits[0], 2, `claim limits ${limits.join(',')}`);
    assert.ok(Math.max(...limits) > 8, `a backlog grows the claims: ${limits.join(',')}`);
    assert.ok(
      limits.every((l) => l >= 1 && l <= 64),
      `claim limits ${limits.join(',')}`,
    );
    assert.ok(
      limits.length <= N / 3,
      `${limits.length} claims for ${N} events (one per freed slot would be about ${N})`,
    );
    await lava.close();
  });

  test('retention: purge() removes completed events past retention, keeps tombstones of once events, not dead letters', async () => {
    let clock = 1_000_000;
    const { lava } = receiver({
      now: () => clock,
      retentionMs: 1000,
      tombstoneRetentionMs: 5000,
      ignore: ['customer.wallet.balance.updated'],
      handlers: {
        'customer.created': (e) => {
          if (e.data.customer_id === 'bad') throw new NonRetryableError('no');
        },
      },
    });
    await deliver(lava, samplePayload('customer.created', { customerId: 'good' }));
    await deliver(lava, samplePayload('customer.created', { customerId: 'bad' }));
    const withId = samplePayload('customer.wallet.balance.updated', { customerId: 'good', extra: { id: 'evt_r1' } });
    await deliver(lava, withId);
    await lava.drain();
    clock += 999;
    assert.equal(await lava.purge(), 0);
    clock += 2;
    assert.equal(await lava.purge(), 2, 'the once event became a tombstone, the id event was removed');
    assert.equal((await lava.store.get('customer.created:good'))?.tombstone, true);
    assert.equal(await lava.store.get('id:evt_r1'), null);
    assert.equal((await lava.store.get('customer.created:bad'))?.status, 'dead');
    // A redelivery of the once event after retention is still a duplicate; the id event's key is free again.
    const again = await deliver(lava, samplePayload('customer.created', { customerId: 'good' }));
    assert.deepEqual(await again.json(), { received: true, duplicate: true });
    assert.deepEqual(await (await deliver(lava, withId)).json(), { received: true });
    // Past the tombstone horizon the key goes too.
    clock += 5000;
    assert.ok((await lava.purge()) >= 1);
    assert.equal(await lava.store.get('customer.created:good'), null);
    await lava.close();
  });

  test('a claim that never answers does not stall the worker: the next pass goes ahead', async () => {
    const store = memoryStore();
    const realClaim = store.claim.bind(store);
    let calls = 0;
    store.claim = (o) => {
      calls++;
      return calls === 1 ? new Promise(() => {}) : realClaim(o);
    };
    const body = new TextEncoder().encode('{}');
    store.insert({
      key: 'k',
      event: 'e',
      customerId: 'c',
      body,
      headers: {},
      receivedAt: Date.now(),
      status: 'pending',
    });
    const ran: string[] = [];
    const worker = createWorker({
      store,
      process: (r) => void ran.push(r.key),
      concurrency: 2,
      leaseMs: 1000,
      pollMs: 30,
      claimTimeoutMs: 100,
      handlerTimeoutMs: 1000,
      retry: { scheduleMs: [10], jitter: 0 },
      logger: jsonLogger({ level: 'silent' }),
      metrics: new Metrics(),
    });
    worker.start();
    await waitFor(() => ran.length === 1, 3000, 'processed after the hung claim');
    assert.ok(calls >= 2);
    await worker.stop(100);
  });

  test('a waiting run whose lease renewal is answered "lost" is never started here: recorded as failed, run later', async () => {
    const store = memoryStore();
    const realRenew = store.renew.bind(store);
    let refused = 0;
    store.renew = (key, owner, until) => {
      if (key === 'b' && refused === 0) {
        refused++;
        return false;
      }
      return realRenew(key, owner, until);
    };
    const body = new TextEncoder().encode('{}');
    for (const key of ['a', 'b']) {
      store.insert({
        key,
        event: 'e',
        customerId: `c-${key}`,
        body,
        headers: {},
        receivedAt: Date.now(),
        status: 'pending',
      });
    }
    const ran: string[] = [];
    const logs: string[] = [];
    const worker = createWorker({
      store,
      // One slot: `a` holds it long enough for `b`, claimed meanwhile, to wait through a lease renewal.
      process: async (r) => {
        ran.push(r.key);
        if (r.key === 'a') await sleep(200);
      },
      concurrency: 1,
      leaseMs: 150,
      pollMs: 20,
      handlerTimeoutMs: 1000,
      retry: { scheduleMs: [10], jitter: 0 },
      logger: jsonLogger({ level: 'warn', write: (l) => logs.push(l) }),
      metrics: new Metrics(),
    });
    worker.start();
    await waitFor(async () => (await store.get('b'))?.status === 'done', 3000, 'b done after its lost lease');
    assert.equal(refused, 1);
    assert.deepEqual(ran, ['a', 'b'], 'b ran once, only after a, though it was aborted while it waited');
    assert.ok(logs.some((l) => l.includes('lease lost')));
    assert.ok(
      logs.some((l) => l.includes('will retry')),
      'its abort was recorded as a failed attempt',
    );
    await waitFor(() => worker.running === 0, 1000, 'no slot leaked');
    await worker.stop(100);
  });

  test('a completion that never answers frees its handler slot: it is tried again, and the event runs once', async () => {
    const store = memoryStore();
    const realComplete = store.complete.bind(store);
    let calls = 0;
    store.complete = (...args) => {
      calls++;
      return calls === 1 ? new Promise<boolean>(() => {}) : realComplete(...args);
    };
    const body = new TextEncoder().encode('{}');
    store.insert({
      key: 'k',
      event: 'e',
      customerId: 'c',
      body,
      headers: {},
      receivedAt: Date.now(),
      status: 'pending',
    });
    const ran: string[] = [];
    const logs: string[] = [];
    const worker = createWorker({
      store,
      process: (r) => void ran.push(r.key),
      concurrency: 1,
      leaseMs: 5000,
      pollMs: 30,
      claimTimeoutMs: 150,
      handlerTimeoutMs: 1000,
      retry: { scheduleMs: [10], jitter: 0 },
      logger: jsonLogger({ level: 'warn', write: (l) => logs.push(l) }),
      metrics: new Metrics(),
    });
    worker.start();
    await waitFor(async () => (await store.get('k'))?.status === 'done', 3000, 'recorded as done after the hung call');
    assert.deepEqual(ran, ['k']);
    assert.equal(calls, 2);
    assert.equal(worker.running, 0, 'the slot is free again');
    assert.ok(logs.some((l) => l.includes('completion did not answer within 150 ms')));
    await worker.stop(100);
  });

  test('a slot frees when its handler settles; handled runs whose outcome is not yet recorded stay bounded', async () => {
    const store = memoryStore();
    const realComplete = store.complete.bind(store);
    // Every completion waits until the test lets them through, as a slow store round trip would.
    const held: Array<() => void> = [];
    store.complete = (...args) =>
      new Promise<boolean>((resolve) => held.push(() => resolve(realComplete(...args) as boolean)));
    const body = new TextEncoder().encode('{}');
    for (let i = 0; i < 12; i++) {
      store.insert({
        key: `k${i}`,
        event: 'e',
        customerId: `c${i}`,
        body,
        headers: {},
        receivedAt: Date.now(),
        status: 'pending',
      });
    }
    const ran: string[] = [];
    let atOnce = 0;
    let mostAtOnce = 0;
    const worker = createWorker({
      store,
      process: async (r) => {
        mostAtOnce = Math.max(mostAtOnce, ++atOnce);
        await new Promise((r) => setTimeout(r, 2));
        atOnce--;
        ran.push(r.key);
      },
      concurrency: 1,
      leaseMs: 5000,
      pollMs: 20,
      claimTimeoutMs: 5000,
      handlerTimeoutMs: 1000,
      retry: { scheduleMs: [10], jitter: 0 },
      logger: jsonLogger({ level: 'warn', write: () => {} }),
      metrics: new Metrics(),
    });
    worker.start();
    // One slot, no completion answered yet: the slot was reused, up to 5 runs (1 + 4 per slot) not yet recorded.
    await waitFor(() => ran.length === 5, 3000, 'five handlers ran while their completions waited');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(ran.length, 5, 'no sixth run while five outcomes are unrecorded');
    assert.equal(held.length, 5);
    assert.equal(mostAtOnce, 1, 'never two handlers at once with concurrency 1');
    assert.equal(worker.running, 0);
    // Let completions through as they come: every event runs once and is recorded.
    const release = setInterval(() => {
      for (const go of held.splice(0)) go();
    }, 5);
    await waitFor(async () => (await store.counts()).done === 12, 3000, 'all twelve recorded as done');
    clearInterval(release);
    assert.deepEqual([...ran].sort(), Array.from({ length: 12 }, (_, i) => `k${i}`).sort());
    await worker.stop(100);
  });
});
