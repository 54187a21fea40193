// Baseline target (q): the least a durable receiver on Bun and Postgres must do. Native HMAC over the raw bytes
// (Bun's CryptoHasher, as ours on Bun), JSON.parse, then `INSERT … ON CONFLICT DO NOTHING` of (SHA-256 of the body,
// body) with Bun's SQL client (as ours on Bun; the same pool size, 10). The inserts made in one turn of the event loop
// go as one multi-row statement (as ours batches them), committed on its own (the server's synchronous_commit, the
// same for both), and each delivery is acked only after that statement returned.
//   DATABASE_URL  BENCH_PG_SCHEMA=<a schema of its own: created here, dropped by the runner>
//   BENCH_RUNS=1  also the least a receiver that runs each event must add (target qr): once an insert is acked its
//                 (no-op) run is recorded, `UPDATE … SET done = true`, in the next insert statement (a data-modifying
//                 WITH), or on its own when nothing else is being inserted, so a restart runs again only what had not
//                 finished. Without it nothing is ever run or marked.
import { SQL } from 'bun';

const secret = new TextEncoder().encode(process.env.LAVA_WEBHOOK_SECRET ?? '');
const schema = process.env.BENCH_PG_SCHEMA ?? '';
if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`BENCH_PG_SCHEMA=${schema}: a plain lower-case name, please`);
const sql = new SQL(process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test', { max: 10 });
await sql.unsafe(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
const runs = process.env.BENCH_RUNS === '1';
await sql.unsafe(
  `CREATE TABLE IF NOT EXISTS ${schema}.events (key text PRIMARY KEY, body bytea NOT NULL${runs ? ', done boolean NOT NULL DEFAULT false' : ''})`,
);
/** Keys whose run finished since the last statement went out: recorded by the next one (BENCH_RUNS). */
let ran: string[] = [];
/** The runs recorded by a statement that also inserts: keys joined by commas (hex digests hold none) as `$p`. */
const marking = (p: number) =>
  `WITH done AS (UPDATE ${schema}.events SET done = true WHERE key = ANY(string_to_array($${p}, ','))) `;

// Rows per statement (two parameters each, far below Postgres' 65 535); ours sends at most 256 too.
const MAX_ROWS = 256;
const statements: string[] = [];
/** `INSERT … VALUES ($1, $2), … ON CONFLICT DO NOTHING RETURNING key` for n rows, built once per n. */
function statement(n: number): string {
  let text = statements[n];
  if (!text) {
    const rows = Array.from({ length: n }, (_, i) => `($${2 * i + 1}, $${2 * i + 2})`).join(', ');
    text = `${runs ? marking(2 * n + 1) : ''}INSERT INTO ${schema}.events (key, body) VALUES ${rows} ON CONFLICT DO NOTHING RETURNING key`;
    statements[n] = text;
  }
  return text;
}
const markOnly = `UPDATE ${schema}.events SET done = true WHERE key = ANY(string_to_array($1, ','))`;

/** Each new event runs (a no-op) once acked; its run is recorded by the next statement. */
function finished(keys: string[]): void {
  if (keys.length === 0) return;
  ran.push(...keys);
  if (!scheduled) {
    scheduled = true;
    setImmediate(flush);
  }
}

type Queued = { key: string; body: Uint8Array; resolve: (inserted: boolean) => void; reject: (e: unknown) => void };
let queue: Queued[] = [];
let scheduled = false;

/** Sends what this turn queued as one statement per MAX_ROWS, then answers each insert. */
function flush(): void {
  scheduled = false;
  const all = queue;
  queue = [];
  if (runs && all.length === 0 && ran.length > 0) {
    const done = ran;
    ran = [];
    sql.unsafe(markOnly, [done.join(',')]).catch(() => {
      ran = done.concat(ran);
    });
    return;
  }
  for (let i = 0; i < all.length; i += MAX_ROWS) {
    const batch = all.slice(i, i + MAX_ROWS);
    // A key twice in one batch: the first is inserted, the second hears it is a duplicate.
    const params: unknown[] = [];
    for (const q of batch) params.push(q.key, q.body);
    const done = ran;
    if (runs) {
      ran = [];
      params.push(done.join(','));
    }
    sql.unsafe(statement(batch.length), params).then(
      (rows: { key: string }[]) => {
        const fresh = new Set(rows.map((r) => r.key));
        const inserted: string[] = [];
        for (const q of batch) {
          const isNew = fresh.delete(q.key);
          if (isNew) inserted.push(q.key);
          q.resolve(isNew);
        }
        if (runs) finished(inserted);
      },
      (error: unknown) => {
        if (runs) ran = done.concat(ran);
        for (const q of batch) q.reject(error);
      },
    );
  }
}

function record(key: string, body: Uint8Array): Promise<boolean> {
  return new Promise((resolve, reject) => {
    queue.push({ key, body, resolve, reject });
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  });
}

const json = { 'content-type': 'application/json' };
const answer = (status: number, text: string) => new Response(text, { status, headers: json });
const hex = (s: string) => (/^[0-9a-f]{64}$/i.test(s) ? Uint8Array.fromHex(s) : null);

const server = Bun.serve({
  port: Number(process.env.PORT ?? 3000),
  hostname: process.env.HOSTNAME ?? '127.0.0.1',
  async fetch(request) {
    if (request.method !== 'POST' || new URL(request.url).pathname !== '/webhooks/lava') {
      return answer(404, '{"error":"not found"}');
    }
    const body = new Uint8Array(await request.arrayBuffer());
    const given = hex(request.headers.get('x-webhook-signature') ?? '');
    const expected = new Bun.CryptoHasher('sha256', secret).update(body).digest();
    if (!given || !crypto.timingSafeEqual(given, expected)) return answer(401, '{"error":"invalid signature"}');
    try {
      JSON.parse(new TextDecoder().decode(body));
    } catch {
      return answer(400, '{"error":"invalid payload"}');
    }
    try {
      const inserted = await record(Bun.SHA256.hash(body, 'hex'), body);
      return answer(200, inserted ? '{"received":true}' : '{"received":true,"duplicate":true}');
    } catch {
      return answer(503, '{"error":"store unavailable"}');
    }
  },
});
console.log(`minimal postgres receiver (schema ${schema}${runs ? ', records runs' : ''}) listening on ${server.port}`);
