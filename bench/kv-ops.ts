// Counts the Deno KV operations the store makes per event, by phase (insert, claim, completion), on a local file:
// `npx deno run -A --unstable-kv bench/kv-ops.ts [events=2000] [concurrency=64]`. Events are the benchmark's: a
// balance update each (a signal with a coalesce key of its own), customer i % 997. What KV's backend costs grows with
// the reads, commits and mutations counted here; the minimal KV receiver (k) makes one commit a batch, one check and
// one set an event.
import process from 'node:process';
import { identify } from '../src/intake/identity.ts';
import { body } from './events.mjs';
import { denoKvStore } from '../src/stores/deno-kv/mod.ts';
import type { DenoKvLike, KvAtomic } from '../src/stores/deno-kv/kv.ts';

const [events = 2000, concurrency = 64] = Deno.args.map(Number);
const dir = await Deno.makeTempDir({ prefix: 'kv-ops-' });
const real = (await Deno.openKv(`${dir}/ops.kv`)) as unknown as DenoKvLike;

type Tally = Record<'get' | 'getKeys' | 'list' | 'listed' | 'commit' | 'check' | 'set' | 'delete' | 'sum', number>;
const zero = (): Tally => ({ get: 0, getKeys: 0, list: 0, listed: 0, commit: 0, check: 0, set: 0, delete: 0, sum: 0 });
let t = zero();
let cpu = process.cpuUsage();
let wall = performance.now();
const spent = () => {
  const c = process.cpuUsage(cpu);
  const out = { cpu: (c.user + c.system) / events, wall: ((performance.now() - wall) * 1000) / events };
  cpu = process.cpuUsage();
  wall = performance.now();
  return out;
};
const kv: DenoKvLike = {
  get(key) {
    t.get++;
    t.getKeys++;
    return real.get(key);
  },
  getMany(keys) {
    t.get++;
    t.getKeys += keys.length;
    return real.getMany(keys);
  },
  list(selector, options) {
    t.list++;
    const it = real.list(selector, options);
    return (async function* () {
      for await (const e of it) {
        t.listed++;
        yield e;
      }
    })() as ReturnType<DenoKvLike['list']>;
  },
  atomic() {
    const op = real.atomic();
    const w: KvAtomic = {
      check(...c) {
        t.check += c.length;
        op.check(...c);
        return w;
      },
      set(k, v) {
        t.set++;
        op.set(k, v);
        return w;
      },
      delete(k) {
        t.delete++;
        op.delete(k);
        return w;
      },
      sum(k, n) {
        t.sum++;
        op.sum(k, n);
        return w;
      },
      commit() {
        t.commit++;
        return op.commit();
      },
    };
    return w;
  },
  close: () => real.close(),
};

const store = denoKvStore({ kv });
await store.ping();
const enc = new TextEncoder();
const report = (phase: string, time: { cpu: number; wall: number }) => {
  const per = (n: number) => (n / events).toFixed(2);
  const mut = t.set + t.delete + t.sum;
  console.log(
    `${phase.padEnd(10)} reads ${per(t.get)} (keys ${per(t.getKeys)}), lists ${per(t.list)} (entries ${per(t.listed)}), ` +
      `commits ${per(t.commit)}, checks ${per(t.check)}, mutations ${per(mut)} (set ${per(t.set)}, delete ${per(t.delete)}, sum ${per(t.sum)}); ` +
      `CPU ${time.cpu.toFixed(0)} µs, wall ${time.wall.toFixed(0)} µs`,
  );
  t = zero();
};

// Keyed as the receiver keys a balance update (a signal): identify() gives its key and coalesce key. Made before the
// insert phase is timed, which is the store's alone.
const event = 'customer.wallet.balance.updated';
const deliveries = await Promise.all(
  Array.from({ length: events }, async (_, i) => {
    // The body wrk sends as event i (bench/events.mjs): customer i % 997, balance i, so no two are copies.
    const customerId = `cus_bench_${i % 997}`;
    const bytes = enc.encode(body(i));
    const receivedAt = Date.now();
    const id = await identify({ event, customerId, payload: {}, body: bytes, headers: new Headers() }, { receivedAt });
    return { customerId, bytes, receivedAt, id };
  }),
);
spent();
t = zero();
let next = 0;
await Promise.all(
  Array.from({ length: concurrency }, async () => {
    while (next < events) {
      const { customerId, bytes, receivedAt, id } = deliveries[next++] as (typeof deliveries)[number];
      await store.insert({
        key: id.key,
        event,
        customerId,
        body: bytes,
        headers: { 'content-type': 'application/json' },
        receivedAt,
        status: 'pending',
        policy: id.policy,
        coalesceKey: id.coalesceKey,
      });
    }
  }),
);
report('insert', spent());
const claimed: string[] = [];
let claimT = zero();
let doneT = zero();
const claimTime = { cpu: 0, wall: 0 };
const doneTime = { cpu: 0, wall: 0 };
const addTime = (a: { cpu: number; wall: number }, b: { cpu: number; wall: number }) => {
  a.cpu += b.cpu;
  a.wall += b.wall;
};
spent();
for (;;) {
  const got = await store.claim({ owner: 'w', limit: 320, leaseMs: 30_000, now: Date.now() });
  claimT = add(claimT, t);
  addTime(claimTime, spent());
  t = zero();
  if (got.length === 0) break;
  await Promise.all(got.map((r) => store.complete(r.key, 'w', Date.now())));
  claimed.push(...got.map((r) => r.key));
  doneT = add(doneT, t);
  addTime(doneTime, spent());
  t = zero();
}
function add(a: Tally, b: Tally): Tally {
  const out = { ...a };
  for (const k of Object.keys(b) as (keyof Tally)[]) out[k] += b[k];
  return out;
}
t = claimT;
report('claim', claimTime);
t = doneT;
report('complete', doneTime);
console.log(`ran ${claimed.length} of ${events}; counts ${JSON.stringify(await store.counts())}`);
await store.close();
await Deno.remove(dir, { recursive: true });
