// Baseline target (k): the least a durable receiver on Deno and Deno KV must do. Native HMAC over the raw bytes
// (node:crypto's createHmac, as ours on Deno), JSON.parse, then an atomic insert-if-absent of the body under the
// SHA-256 of the body: `check({ key, versionstamp: null })` and `set`. Group commit, as ours: inserts that arrive
// while a commit is under way (or in the same turn of the event loop) wait for the next, which writes up to
// MAX_BATCH of them in one atomic commit; each delivery is acked only after the commit holding it returned.
//   BENCH_KV=path (a fresh local KV file: the same storage as ours' LAVA_WEBHOOK_KV)
//   BENCH_RUNS=1  also the least a receiver that runs each event must add (target kr): once an insert is acked its
//                 (no-op) run is recorded, a `set(['done', key], true)`, in the next commit (up to MAX_DONE a commit),
//                 so a restart runs again only what had not finished. Without it nothing is ever run or marked.
// KV's limits per atomic commit: 100 checks, 1000 mutations, 800 KiB of keys and values, 80 KiB of keys; a batch takes
// one check and one mutation an insert, and stops at MAX_BATCH_BYTES of bodies.
import { Buffer } from 'node:buffer';
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

const secret = new TextEncoder().encode(Deno.env.get('LAVA_WEBHOOK_SECRET') ?? '');
const kv = await Deno.openKv(Deno.env.get('BENCH_KV') ?? 'bench-minimal.kv');
const MAX_BATCH = 100;
const MAX_BATCH_BYTES = 512 * 1024;
const runs = Deno.env.get('BENCH_RUNS') === '1';
/** Runs recorded per commit at most: with MAX_BATCH inserts, inside KV's 1000 mutations and 80 KiB of keys. */
const MAX_DONE = 300;
/** Keys whose run finished since the last commit: recorded in the next one (BENCH_RUNS). */
const ran: string[] = [];

type Queued = { key: string; body: Uint8Array; resolve: (inserted: boolean) => void; reject: (e: unknown) => void };
const queue: Queued[] = [];
let flushing = false;

const put = (op: Deno.AtomicOperation, q: Queued) =>
  op.check({ key: ['events', q.key], versionstamp: null }).set(['events', q.key], q.body);

/** One insert alone: how a batch that failed a check (a duplicate in it) finds out which one it was. */
async function alone(q: Queued): Promise<void> {
  try {
    const ok = (await put(kv.atomic(), q).commit()).ok;
    q.resolve(ok);
    if (ok && runs) ran.push(q.key);
  } catch (error) {
    q.reject(error);
  }
}

function takeBatch(): Queued[] {
  const keys = new Set<string>();
  let bytes = 0;
  let n = 0;
  for (const q of queue) {
    if (n >= MAX_BATCH || keys.has(q.key) || (n > 0 && bytes + q.body.byteLength > MAX_BATCH_BYTES)) break;
    keys.add(q.key);
    bytes += q.body.byteLength;
    n++;
  }
  return queue.splice(0, n);
}

async function flush(): Promise<void> {
  flushing = true;
  try {
    while (queue.length > 0 || ran.length > 0) {
      const batch = takeBatch();
      const done = ran.splice(0, MAX_DONE);
      const op = kv.atomic();
      for (const q of batch) put(op, q);
      for (const key of done) op.set(['done', key], true);
      let ok = false;
      try {
        ok = (await op.commit()).ok;
      } catch {
        // Over a limit after all, or storage trouble: each on its own says which.
      }
      if (ok) {
        for (const q of batch) q.resolve(true);
        // Each new event runs (a no-op) once acked; its run is recorded by the next commit.
        if (runs) for (const q of batch) ran.push(q.key);
        continue;
      }
      ran.unshift(...done);
      if (batch.length === 0) break;
      for (const q of batch) await alone(q);
    }
  } finally {
    flushing = false;
  }
}

function record(key: string, body: Uint8Array): Promise<boolean> {
  return new Promise((resolve, reject) => {
    queue.push({ key, body, resolve, reject });
    // Started at the end of this turn, so what arrived in it shares the first commit too.
    if (!flushing) {
      flushing = true;
      setTimeout(flush, 0);
    }
  });
}

const json = { 'content-type': 'application/json' };
const answer = (status: number, text: string) => new Response(text, { status, headers: json });
const hex = (s: string) => (/^[0-9a-f]{64}$/i.test(s) ? Buffer.from(s, 'hex') : null);

Deno.serve(
  {
    port: Number(Deno.env.get('PORT') ?? 3000),
    hostname: Deno.env.get('HOSTNAME') ?? '127.0.0.1',
    onListen: ({ port }) =>
      console.log(`minimal deno kv receiver${runs ? ' (records runs)' : ''} listening on ${port}`),
  },
  async (request) => {
    if (request.method !== 'POST' || new URL(request.url).pathname !== '/webhooks/lava') {
      return answer(404, '{"error":"not found"}');
    }
    const body = new Uint8Array(await request.arrayBuffer());
    const given = hex(request.headers.get('x-webhook-signature') ?? '');
    const expected = createHmac('sha256', secret).update(body).digest();
    if (!given || !timingSafeEqual(given, expected)) return answer(401, '{"error":"invalid signature"}');
    try {
      JSON.parse(new TextDecoder().decode(body));
    } catch {
      return answer(400, '{"error":"invalid payload"}');
    }
    try {
      const inserted = await record(createHash('sha256').update(body).digest('hex'), body);
      return answer(200, inserted ? '{"received":true}' : '{"received":true,"duplicate":true}');
    } catch {
      return answer(503, '{"error":"store unavailable"}');
    }
  },
);
