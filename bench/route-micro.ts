// In-process microbenchmark of the two ways a delivery reaches intake: the receiver's fast path (default) and the
// idiomatic Hono chain (src/http/delivery-chain.ts). N signed requests through `lava.fetch` per batch, the two
// variants alternating batch by batch (the order flips each round) so a busy machine slows both alike; medians over
// the rounds and the median of the per-round ratios. No HTTP server: this is the routing and middleware cost alone.
// SQLite has group commit on, as the server opens it; the worker runs each batch's no-op handlers between batches,
// outside the clock.
//
//   bun bench/route-micro.ts            (also: deno run -A bench/route-micro.ts, node --import tsx bench/route-micro.ts)
//   MICRO_N=200 MICRO_ROUNDS=101 MICRO_STORES=memory,sqlite MICRO_CONCURRENCY=1,64
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deliveryChain } from '../src/http/delivery-chain.ts';
import { type LavaWebhooks, type Store, createLavaWebhooks, memoryStore } from '../src/mod.ts';
import { sqliteStore } from '../src/stores/sqlite.ts';

const node = (globalThis as { process?: { env: Record<string, string | undefined>; version: string } }).process;
const env = node?.env ?? {};
const N = Number(env.MICRO_N ?? 200);
const ROUNDS = Number(env.MICRO_ROUNDS ?? 101);
const STORES = (env.MICRO_STORES ?? 'memory,sqlite').split(',');
const CONCURRENCY = (env.MICRO_CONCURRENCY ?? '1,64').split(',').map(Number);
const SECRET = 'whsec_micro';
const noop = () => {};
const handlers = { 'customer.created': noop, 'customer.wallet.balance.updated': noop, 'customer.deleted': noop };
const dir = mkdtempSync(join(tmpdir(), 'route-micro-'));

function receiver(store: Store, chain: boolean): LavaWebhooks {
  const lava = createLavaWebhooks({
    secret: SECRET,
    store,
    handlers,
    logLevel: 'warn',
    ...(chain ? { deliveryRoute: deliveryChain } : {}),
  });
  lava.start();
  return lava;
}

let seq = 0;
/** A batch of unique signed deliveries, made before the clock starts. */
function batch(): Request[] {
  return Array.from({ length: N }, () => {
    const body = JSON.stringify({
      event: 'customer.created',
      data: { customer_id: `cus_${seq++}`, reference_id: 'ref_1', contact: { email: 'a@example.com' } },
    });
    const signature = createHmac('sha256', SECRET).update(body).digest('hex');
    return new Request('http://localhost/webhooks/lava', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-webhook-signature': signature },
      body,
    });
  });
}

/** µs per request for one batch, `concurrency` requests in flight. */
async function run(lava: LavaWebhooks, requests: Request[], concurrency: number): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < requests.length) {
        const res = await lava.fetch(requests[next++] as Request);
        if (res.status !== 200) throw new Error(`status ${res.status}: ${await res.text()}`);
      }
    }),
  );
  return ((performance.now() - t0) * 1000) / requests.length;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

const runtime = 'Bun' in globalThis ? 'bun' : 'Deno' in globalThis ? 'deno' : `node ${node?.version ?? ''}`.trim();
console.log(`route-micro on ${runtime}: ${ROUNDS} rounds × ${N} requests per variant, alternating`);
for (const storeName of STORES) {
  for (const concurrency of CONCURRENCY) {
    const open = (name: string) =>
      storeName === 'sqlite'
        ? sqliteStore({ path: join(dir, `${name}-${seq}.sqlite`), groupCommit: true })
        : memoryStore();
    const variants = { fast: receiver(open('fast'), false), chain: receiver(open('chain'), true) };
    const us: Record<keyof typeof variants, number[]> = { fast: [], chain: [] };
    const warm = Math.max(3, Math.ceil(ROUNDS / 20));
    for (let round = 0; round < ROUNDS + warm; round++) {
      const order = (round % 2 ? ['fast', 'chain'] : ['chain', 'fast']) as Array<keyof typeof variants>;
      for (const v of order) {
        const t = await run(variants[v], batch(), concurrency);
        if (round >= warm) us[v].push(t);
        // The worker runs the batch's no-op handlers now, not during the other variant's batch.
        await variants[v].drain();
      }
    }
    const ratios = us.chain.map((c, i) => c / (us.fast[i] as number));
    console.log(
      `  ${storeName.padEnd(6)} concurrency ${String(concurrency).padStart(2)}: fast ${median(us.fast).toFixed(2)} µs/req, ` +
        `chain ${median(us.chain).toFixed(2)} µs/req; chain ÷ fast, median of per-round ratios ${median(ratios).toFixed(3)}`,
    );
    await Promise.all([variants.fast.close(1000), variants.chain.close(1000)]);
  }
}
rmSync(dir, { recursive: true, force: true });
