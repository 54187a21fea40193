// Micro-benchmark of the Deno KV store's insert (the ack path) under concurrency, on a local file:
// `npx deno run -A --unstable-kv bench/kv-insert.ts [concurrency=64] [total=3000] [customers=50] [worker=0] [signals=0]`;
// signals=1 makes each insert a signal with a coalesce key of its own (the benchmark's balance updates);
// worker=1 also claims and completes events meanwhile, as the server's worker does (its commits race the inserts).
import { denoKvStore } from '../src/stores/deno-kv/mod.ts';

const [concurrency = 64, total = 3000, customers = 50, worker = 0, signals = 0] = Deno.args.map(Number);
const dir = await Deno.makeTempDir({ prefix: 'kv-bench-' });
const store = denoKvStore({ path: `${dir}/bench.kv` });
await store.ping();
const body = new TextEncoder().encode(JSON.stringify({ event: 'payment.succeeded', data: { amount: 100 } }));
let next = 0;
let failed = 0;
const latencies: number[] = [];
let completed = 0;
let inserting = true;
const working = (async () => {
  while (worker && inserting) {
    const got = await store.claim({ owner: 'w', limit: 32, leaseMs: 30_000, now: Date.now() });
    await Promise.all(got.map(async (r) => (await store.complete(r.key, 'w', Date.now())) && completed++));
    if (got.length === 0) await new Promise((r) => setTimeout(r, 5));
  }
})();
const t0 = performance.now();
await Promise.all(
  Array.from({ length: concurrency }, async () => {
    while (next < total) {
      const i = next++;
      const start = performance.now();
      await Promise.resolve(
        store.insert({
          key: `evt-${i}`,
          event: 'payment.succeeded',
          customerId: `cust-${i % customers}`,
          body,
          headers: { 'content-type': 'application/json' },
          receivedAt: Date.now(),
          status: 'pending',
          // signals=1: each a signal with a coalesce key of its own, as the benchmark's balance updates are.
          ...(signals ? { policy: 'signal' as const, coalesceKey: `balance:${i}` } : {}),
        }),
      ).catch(() => failed++);
      latencies.push(performance.now() - start);
    }
  }),
);
const seconds = (performance.now() - t0) / 1000;
inserting = false;
await working;
latencies.sort((a, b) => a - b);
const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))]!.toFixed(1);
const counts = await store.counts();
console.log(
  `${total} inserts, ${concurrency} concurrent, ${customers} customers: ${(total / seconds).toFixed(0)} inserts/s, ` +
    `p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms, max ${pct(1)} ms; failed ${failed}; pending=${counts.pending}, completed ${completed}`,
);
await store.close();
await Deno.remove(dir, { recursive: true });
